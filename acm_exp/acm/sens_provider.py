"""Sens-Merging's coefficient provider: each model's gradient sensitivity per layer on its own answer
texts (cached) -> per-layer weights of the base and of the task vector.

Calibration samples that cannot be scored (no answer text or final answer, or a prompt that leaves
no answer token within ``sens.max_tokens``) are skipped; how many, and why, is logged and recorded
in ``coefficients.json`` (``metadata.samples``) and the manifest. The stage fails, with one line,
only when a model has no usable sample.
"""

from __future__ import annotations

import logging

from acm_exp.acm.provider import (
    CalibratedProvider,
    CoefficientPlan,
    CoefficientRequest,
    calibration_manifest,
    select_calibration,
)
from acm_exp.errors import ConfigError, DataError

log = logging.getLogger("acm_exp")


def validate_sens_config(cfg) -> None:
    """Raise ConfigError on a bad ``sens`` config group or a pair Sens-Merging cannot merge."""
    from acm_exp.acm.sens_texts import validate_answer_templates
    from acm_exp.devices import check_placement, dtype_name

    if len(cfg.model_pair.finetuned) != 1:
        raise ConfigError(
            f"merge=sens merges one fine-tuned model; model_pair.finetuned has {len(cfg.model_pair.finetuned)}"
        )
    validate_answer_templates(cfg.sens)
    max_tokens = cfg.sens.max_tokens
    if max_tokens is not None and max_tokens < 2:
        raise ConfigError(f"sens.max_tokens={max_tokens}; expected an integer >= 2 or null")
    dtype_name(cfg.sens.dtype, "sens.dtype")
    check_placement(cfg.sens, "sens")


def sample_counts(records: int, text_skips: dict[str, int], sensitivity_metadata: dict) -> dict:
    """One model's calibration samples: how many were scored, and the skipped ones by reason."""
    skipped = {**text_skips}
    for reason, count in (sensitivity_metadata.get("skipped") or {}).items():
        skipped[reason] = skipped.get(reason, 0) + count
    return {"records": records, "scored": records - sum(skipped.values()), "skipped": skipped}


class SensProvider(CalibratedProvider):
    name = "sens"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        validate_sens_config(cfg)

    def plan(self, request: CoefficientRequest) -> CoefficientPlan:
        from acm_exp.acm.sens_texts import describe_skipped, sens_texts
        from acm_exp.acm.sensitivity import compute_layer_sensitivity, compute_sens_coefficients
        from acm_exp.merge import Adjustment

        cfg, run_dir = request.cfg, request.run_dir
        calibration = select_calibration(cfg, run_dir)
        sensitivities, texts, samples = [], {}, {}
        for role, model_dir in (("base", request.model_dirs[0]), ("finetuned", request.model_dirs[1])):
            chosen = sens_texts(calibration.records, cfg.calibration, cfg.sens, role)
            texts[role] = chosen.description
            if not chosen.examples:
                raise DataError(
                    f"Sens-Merging: none of the {chosen.records} calibration samples gives the {role} model an "
                    f"answer to score ({describe_skipped(chosen.skipped)}); expected at least one"
                )
            log.info(
                "Sens-Merging: sensitivity of the %s model on %d examples, %s texts",
                role,
                len(chosen.examples),
                chosen.description,
            )
            sensitivity = compute_layer_sensitivity(
                model_dir,
                chosen.examples,
                device=cfg.sens.device,
                max_memory=cfg.sens.max_memory,
                offload_dir=cfg.sens.offload_dir,
                dtype=cfg.sens.dtype,
                max_tokens=cfg.sens.max_tokens,
                gradient_checkpointing=cfg.sens.gradient_checkpointing,
                cache_dir=cfg.sens.cache_dir or cfg.cache_dir,
                trust_remote_code=cfg.model_pair.trust_remote_code,
            )
            sensitivities.append(sensitivity)
            samples[role] = sample_counts(chosen.records, chosen.skipped, sensitivity.metadata)
            if samples[role]["skipped"]:
                log.warning(
                    "Sens-Merging: the %s model was scored on %d of %d calibration samples; skipped %s",
                    role,
                    samples[role]["scored"],
                    chosen.records,
                    describe_skipped(samples[role]["skipped"], cfg.sens.max_tokens),
                )
        coefficients = compute_sens_coefficients(
            *sensitivities, cfg.merge.alpha, cfg.merge.temperature, metadata={"samples": samples}
        )
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
                "samples": samples,
                "max_tokens": cfg.sens.max_tokens,
                "dtype": cfg.sens.dtype,
                "coefficients": str(coefficients_path),
                "sensitivity_cache_keys": [s.metadata.get("cache_key") for s in sensitivities],
            },
        }
        return CoefficientPlan(request.method, adjust, manifest, coefficients_path, calibration)


# The name every provider class had before the registry named each one (acm_exp.acm.provider.PROVIDERS).
Provider = SensProvider
