"""AIM's coefficient provider: the base model's input importance on the calibration texts (cached; the
same capture pass as ACM's) -> a relaxation factor per input channel of every weight it covers."""

from __future__ import annotations

import logging

from acm_exp.acm.provider import (
    CalibratedProvider,
    CoefficientPlan,
    CoefficientRequest,
    calibration_manifest,
    select_calibration,
)
from acm_exp.merge import Adjustment

log = logging.getLogger("acm_exp")


class Provider(CalibratedProvider):
    name = "aim"

    def plan(self, request: CoefficientRequest) -> CoefficientPlan:
        from acm_exp.acm.importance import compute_input_importance
        from acm_exp.merge.checkpoint import open_checkpoint

        cfg = request.cfg
        calibration = select_calibration(cfg, request.run_dir)
        # The same capture settings (device, dtype, cache) as ACM: an ACM run's capture pass over the
        # same base and calibration already stored this importance.
        importance = compute_input_importance(
            request.model_dirs[0],
            calibration.texts,
            device=cfg.acm.device,
            max_memory=cfg.acm.max_memory,
            offload_dir=cfg.acm.offload_dir,
            dtype=cfg.acm.dtype,
            max_tokens=calibration.max_tokens,
            cache_dir=cfg.acm.cache_dir or cfg.cache_dir,
            trust_remote_code=cfg.model_pair.trust_remote_code,
        )
        with open_checkpoint(request.model_dirs[0], allow_pickle=cfg.model_pair.allow_pickle) as base:
            shapes = {name: tuple(base.info(name).shape) for name in importance.importance if base.has(name)}
        omega, relax = cfg.merge.omega, cfg.merge.relax
        factors = {name: importance.factor_for(name, shape, omega, relax) for name, shape in shapes.items()}
        log.info(
            "AIM: %d weights relaxed (omega=%s, relax=%s) on top of %s",
            sum(f is not None for f in factors.values()),
            omega,
            relax,
            cfg.merge.base_method,
        )

        def adjust(name: str) -> Adjustment:
            factor = factors.get(name)
            return Adjustment() if factor is None else Adjustment(delta_factor=factor)

        manifest = {
            "calibration": calibration_manifest(calibration),
            "aim": {
                "omega": omega,
                "base_method": cfg.merge.base_method,
                "relax": relax,
                "capture_dtype": cfg.acm.dtype,
                "importance_cache_key": importance.metadata.get("cache_key"),
                "importance_statistics": importance.metadata.get("cache_dir"),
            },
        }
        return CoefficientPlan(request.method, adjust, manifest, calibration=calibration)
