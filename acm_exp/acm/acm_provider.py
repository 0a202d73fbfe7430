"""ACM's coefficient provider: MI between the base's and each fine-tuned model's activations on the
calibration texts (cached per model pair and calibration set) -> λ per layer -> per-tensor weights."""

from __future__ import annotations

import logging

from acm_exp.acm.provider import (
    CalibratedProvider,
    CoefficientPlan,
    CoefficientRequest,
    calibration_manifest,
    select_calibration,
)

log = logging.getLogger("acm_exp")


class ACMProvider(CalibratedProvider):
    name = "acm"

    def plan(self, request: CoefficientRequest) -> CoefficientPlan:
        from acm_exp.acm import compute_coefficients, compute_mi_statistics
        from acm_exp.merge import Adjustment, get_method

        cfg, run_dir = request.cfg, request.run_dir
        calibration = select_calibration(cfg, run_dir)
        if cfg.acm.against == "finetuned":
            final_method = request.method
            compared, names = request.model_dirs[1:], [ref.name for ref in request.refs[1:]]
        else:
            # The circulating script's reading: MI between the base and the plain method's merge, whose
            # delta is then rescaled layer by layer: θ0 + λ (θ_merged − θ0).
            final_method = get_method(request.method.plain)
            compared = [request.merge_plain(final_method, run_dir / "plain_merge")]
            names = [f"{final_method.name} merge"]
        statistics = compute_mi_statistics(
            request.model_dirs[0],
            compared,
            calibration.texts,
            acm_cfg=cfg.acm,
            max_tokens=calibration.max_tokens,
            cache_dir=cfg.acm.cache_dir or cfg.cache_dir,
            model_names=names,
            trust_remote_code=cfg.model_pair.trust_remote_code,
        )
        coefficients = compute_coefficients(statistics, t=cfg.merge.t, shift=cfg.merge.shift, reduce=cfg.merge.reduce)
        coefficients_path = coefficients.to_json(run_dir / "coefficients.json")
        coefficients.plot(run_dir / "coefficients.png")
        log.info("ACM coefficients (t=%s) written to %s", cfg.merge.t, coefficients_path)
        if cfg.acm.against == "finetuned":

            def adjust(name: str) -> Adjustment:
                return Adjustment(model_weights=coefficients.model_weights(name))

        else:

            def adjust(name: str) -> Adjustment:
                return Adjustment(delta_factor=coefficients.for_parameter(0, name))

        manifest = {
            "calibration": calibration_manifest(calibration),
            "acm": {
                "against": cfg.acm.against,
                "estimator": cfg.acm.estimator,
                "bins": cfg.acm.bins,
                "capture_dtype": cfg.acm.dtype,
                "mi_cache_key": statistics.metadata.get("cache_key"),
                "mi_statistics": statistics.metadata.get("cache_dir"),
                "coefficients": str(coefficients_path),
                "t": cfg.merge.t,
                "shift": cfg.merge.shift,
                "reduce": cfg.merge.reduce,
            },
        }
        return CoefficientPlan(final_method, adjust, manifest, coefficients_path, calibration)


# The name every provider class had before the registry named each one (acm_exp.acm.provider.PROVIDERS).
Provider = ACMProvider
