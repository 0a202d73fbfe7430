"""Sens-Merging's coefficient provider: each model's gradient sensitivity per layer on its own answer
texts (cached) -> per-layer weights of the base and of the task vector."""

from __future__ import annotations

import logging

from acm_exp.acm.provider import (
    CalibratedProvider,
    CoefficientPlan,
    CoefficientRequest,
    calibration_manifest,
    select_calibration,
)
from acm_exp.errors import ConfigError
from acm_exp.merge import Adjustment

log = logging.getLogger("acm_exp")


def validate_sens_config(cfg) -> None:
    """Raise ConfigError on a bad ``sens`` config group or a pair Sens-Merging cannot merge."""
    from acm_exp.calibration import validate_answer_templates
    from acm_exp.devices import placement_of, resolve_dtype

    if len(cfg.model_pair.finetuned) != 1:
        raise ConfigError(
            f"merge=sens merges one fine-tuned model; model_pair.finetuned has {len(cfg.model_pair.finetuned)}"
        )
    validate_answer_templates(cfg.sens)
    max_tokens = cfg.sens.max_tokens
    if max_tokens is not None and max_tokens < 2:
        raise ConfigError(f"sens.max_tokens={max_tokens}; expected an integer >= 2 or null")
    resolve_dtype(cfg.sens.dtype, "sens.dtype")
    placement_of(cfg.sens, "sens")


class Provider(CalibratedProvider):
    name = "sens"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        validate_sens_config(cfg)

    def plan(self, request: CoefficientRequest) -> CoefficientPlan:
        from acm_exp.acm.sensitivity import compute_layer_sensitivity, compute_sens_coefficients
        from acm_exp.calibration import sens_examples

        cfg, run_dir = request.cfg, request.run_dir
        calibration = select_calibration(cfg, run_dir)
        sensitivities, texts = [], {}
        for role, model_dir in (("base", request.model_dirs[0]), ("finetuned", request.model_dirs[1])):
            examples, texts[role] = sens_examples(calibration, cfg.calibration, cfg.sens, role)
            log.info(
                "Sens-Merging: sensitivity of the %s model on %d examples, %s texts", role, len(examples), texts[role]
            )
            sensitivities.append(
                compute_layer_sensitivity(
                    model_dir,
                    examples,
                    device=cfg.sens.device,
                    max_memory=cfg.sens.max_memory,
                    offload_dir=cfg.sens.offload_dir,
                    dtype=cfg.sens.dtype,
                    max_tokens=cfg.sens.max_tokens,
                    gradient_checkpointing=cfg.sens.gradient_checkpointing,
                    cache_dir=cfg.sens.cache_dir or cfg.cache_dir,
                    trust_remote_code=cfg.model_pair.trust_remote_code,
                )
            )
        coefficients = compute_sens_coefficients(*sensitivities, cfg.merge.alpha, cfg.merge.temperature)
        coefficients_path = coefficients.to_json(run_dir / "coefficients.json")
        coefficients.plot(run_dir / "coefficients.png")
        log.info(
            "Sens-Merging layer weights (alpha=%s, T=%s) written to %s",
            cfg.merge.alpha,
            cfg.merge.temperature,
            coefficients_path,
        )

        def adjust(name: str) -> Adjustment:
            base_factor, delta_factor = coefficients.adjustment_for(name)
            return Adjustment(base_factor=base_factor, delta_factor=delta_factor)

        manifest = {
            "calibration": calibration_manifest(calibration),
            "sens": {
                "alpha": cfg.merge.alpha,
                "temperature": cfg.merge.temperature,
                "base_answers": cfg.sens.base_answers,
                "finetuned_answers": cfg.sens.finetuned_answers,
                "texts": texts,
                "dtype": cfg.sens.dtype,
                "coefficients": str(coefficients_path),
                "sensitivity_cache_keys": [s.metadata.get("cache_key") for s in sensitivities],
            },
        }
        return CoefficientPlan(request.method, adjust, manifest, coefficients_path, calibration)
