"""The pipeline: validate, resolve models, compute coefficients, merge, evaluate, record.

The one place that sequences the stages and decides what runs, what is reused and where outputs go:
- a run whose config hash already has complete results is skipped (``force=true`` redoes it);
- a complete merge with the same request is reused; MI statistics come from their cache;
- evaluation reuses complete per-benchmark sample files, and input models' evaluations are shared
  across runs through the cache (a sweep over t evaluates the base and fine-tuned models once).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from acm_exp import costs
from acm_exp.config import MergeConfig, merge_hyper_parameters
from acm_exp.costs import measure, note_cache_hit
from acm_exp.errors import ConfigError
from acm_exp.failures import stage
from acm_exp.merge import Adjustment, MergeMethod, MergeSettings, get_method, open_inputs, run_merge, used_parameters
from acm_exp.merge.checkpoint import parse_dtype, parse_shard_size
from acm_exp.merge.dare import check_combine
from acm_exp.merge.engine import (
    TIED_HEAD_MODES,
    MergeInputs,
    check_output_location,
    output_lock,
    preflight,
    read_manifest,
    request_fingerprint,
    validate_device,
)
from acm_exp.merge.registry import get_wrapped_method
from acm_exp.models import ModelRef, check_model_id, model_refs, resolve_model
from acm_exp.paths import atomic_write, cache_root, check_writable_dir, shared_data_dir

log = logging.getLogger("acm_exp")

TOKENIZER_SOURCES = ("base", "finetuned")
METHOD_FIELDS = tuple(merge_hyper_parameters())


def run_directory() -> Path:
    from hydra.core.hydra_config import HydraConfig

    # Hydra (version_base=None) does not chdir: the run directory must be asked for explicitly.
    return Path(HydraConfig.get().runtime.output_dir)


# ---------------------------------------------------------------------------------------------
# Validation: everything cheap, before any weight is read


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"merge.{name}={value}; expected a fraction in [0, 1)")


def validate_merge_config(merge: DictConfig) -> MergeMethod:
    method = get_method(merge.method)
    if not math.isfinite(merge.scale):
        raise ConfigError(f"merge.scale={merge.scale}; expected a finite number")
    for name in ("k", "p", "gamma"):
        _check_fraction(name, merge[name])
    check_combine(merge.combine)
    if method.coefficients == "acm":
        from acm_exp.acm import check_coefficient_settings

        check_coefficient_settings(merge.t, merge.shift, merge.reduce)
    if method.wraps_base_method:
        get_wrapped_method(merge.base_method)
    if method.coefficients == "aim":
        from acm_exp.acm.importance import check_omega, check_relax

        check_omega(merge.omega)
        check_relax(merge.relax)
    if method.coefficients == "sens":
        from acm_exp.acm.sensitivity import check_sens_settings

        check_sens_settings(merge.alpha, merge.temperature)
    if merge.dtype is not None:
        parse_dtype(merge.dtype)
    validate_device(merge.device)
    parse_shard_size(merge.shard_size)
    used = used_parameters(method, merge.base_method)
    _warn_unused_parameters(merge, used)
    if "scale" in used and merge.scale < 0:
        log.warning(
            "merge.scale=%s is negative: the merge subtracts the task vectors (task-vector negation) instead "
            "of adding them",
            merge.scale,
        )
    return method


def _warn_unused_parameters(merge: DictConfig, used: tuple[str, ...]) -> None:
    defaults = MergeConfig()
    for name in METHOD_FIELDS:
        if name not in used and merge[name] != getattr(defaults, name):
            log.warning(
                "merge.%s=%s is not used by merge=%s (it uses: %s)",
                name,
                merge[name],
                merge.method,
                ", ".join(used) or "no parameters",
            )


def _evaluated_prompts(cfg: DictConfig) -> list[str]:
    prompts = {
        "base": cfg.model_pair.base_prompt,
        "finetuned": cfg.model_pair.finetuned_prompt,
        "merged": cfg.model_pair.merged_prompt,
    }
    return sorted({prompts[role] for role in cfg.eval.models if role in prompts})


def validate(cfg: DictConfig) -> MergeMethod:
    """Raise ConfigError on any bad value before heavy work starts."""
    from acm_exp.tracking import validate_logger_config

    method = validate_merge_config(cfg.merge)
    if cfg.model_pair.tokenizer_from not in TOKENIZER_SOURCES:
        raise ConfigError(
            f"model_pair.tokenizer_from={cfg.model_pair.tokenizer_from!r}; expected one of {TOKENIZER_SOURCES}"
        )
    if cfg.model_pair.tied_head not in TIED_HEAD_MODES:
        raise ConfigError(f"model_pair.tied_head={cfg.model_pair.tied_head!r}; expected one of {TIED_HEAD_MODES}")
    for ref in model_refs(cfg.model_pair):
        check_model_id(ref.name, ref.role)
    if cfg.merge.output_dir:
        check_output_location(Path(cfg.merge.output_dir).expanduser().resolve(), overwrite=cfg.merge.overwrite)
    if method.coefficients is not None:
        from acm_exp.acm import validate_acm_config
        from acm_exp.calibration import validate_config

        validate_config(cfg.calibration)
        validate_acm_config(cfg.acm)
    if method.coefficients == "sens":
        validate_sens_config(cfg)
    if cfg.eval.benchmarks:
        from acm_exp.eval.runner import validate_eval_config

        validate_eval_config(cfg.eval, data_dir(cfg), prompts=_evaluated_prompts(cfg))
    validate_logger_config(cfg.logger)
    if cfg.eval.benchmarks:
        from acm_exp.results import resolve_results_dir

        check_writable_dir(resolve_results_dir(cfg.logger.results_dir), "logger.results_dir")
    return method


def validate_sens_config(cfg: DictConfig) -> None:
    from acm_exp.acm import placement_of, resolve_dtype
    from acm_exp.calibration import validate_answer_templates

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


def data_dir(cfg: DictConfig) -> Path | None:
    return shared_data_dir(cfg.data_dir)


# ---------------------------------------------------------------------------------------------
# Coefficients: calibration -> statistics of the models (cached) -> per-tensor weights
# ACM: MI between activations -> λ per layer; AIM: the base's input importance -> a relaxation
# factor per input channel; Sens-Merging: gradient sensitivity -> per-layer base and delta weights.


@dataclass
class CoefficientPlan:
    """What the merge needs from a coefficient provider, and what the manifest should record."""

    method: MergeMethod
    adjust: Callable[[str], Adjustment] | None = None
    manifest: dict = field(default_factory=dict)
    coefficients_path: Path | None = None


def _select_calibration(cfg: DictConfig, run_dir: Path):
    from acm_exp.calibration import select_calibration, write_calibration_record

    with measure("calibration"):
        calibration = select_calibration(cfg.calibration, data_dir=data_dir(cfg), cache_dir=cfg.cache_dir)
    record_path = write_calibration_record(calibration, cfg.calibration, run_dir)
    log.info(
        "calibration: %s, %d samples (selection %s), recorded in %s",
        calibration.spec,
        len(calibration.texts),
        calibration.selection_hash,
        record_path,
    )
    return calibration


def _calibration_manifest(calibration) -> dict:
    return {"spec": calibration.spec, "selection_hash": calibration.selection_hash, "samples": len(calibration.texts)}


def acm_stage(
    cfg: DictConfig, method: MergeMethod, refs: list[ModelRef], model_dirs: list[Path], run_dir: Path
) -> CoefficientPlan:
    from acm_exp.acm import compute_coefficients, compute_mi_statistics

    calibration = _select_calibration(cfg, run_dir)
    if cfg.acm.against == "finetuned":
        compared, names, final_method = model_dirs[1:], [ref.name for ref in refs[1:]], method
    else:
        # The circulating script's reading: MI between the base and the plain method's merge, whose
        # delta is then rescaled layer by layer: θ0 + λ (θ_merged − θ0).
        final_method = get_method(method.plain)
        plain_dir = merge_stage(cfg, final_method, model_dirs, run_dir / "plain_merge")
        compared, names = [plain_dir], [f"{final_method.name} merge"]
    statistics = compute_mi_statistics(
        model_dirs[0],
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
        "calibration": _calibration_manifest(calibration),
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
    return CoefficientPlan(final_method, adjust, manifest, coefficients_path)


def aim_stage(
    cfg: DictConfig, method: MergeMethod, refs: list[ModelRef], model_dirs: list[Path], run_dir: Path
) -> CoefficientPlan:
    from acm_exp.acm.importance import compute_input_importance
    from acm_exp.merge.checkpoint import open_checkpoint

    calibration = _select_calibration(cfg, run_dir)
    # The same capture settings (device, dtype, cache) as ACM: an ACM run's capture pass over the
    # same base and calibration already stored this importance.
    importance = compute_input_importance(
        model_dirs[0],
        calibration.texts,
        device=cfg.acm.device,
        max_memory=cfg.acm.max_memory,
        offload_dir=cfg.acm.offload_dir,
        dtype=cfg.acm.dtype,
        max_tokens=calibration.max_tokens,
        cache_dir=cfg.acm.cache_dir or cfg.cache_dir,
        trust_remote_code=cfg.model_pair.trust_remote_code,
    )
    with open_checkpoint(model_dirs[0], allow_pickle=cfg.model_pair.allow_pickle) as base:
        shapes = {name: tuple(base.info(name).shape) for name in importance.importance if base.has(name)}
    omega = cfg.merge.omega
    factors = {name: importance.factor_for(name, shape, omega, cfg.merge.relax) for name, shape in shapes.items()}
    log.info(
        "AIM: %d weights relaxed (omega=%s, relax=%s) on top of %s",
        sum(f is not None for f in factors.values()),
        omega,
        cfg.merge.relax,
        cfg.merge.base_method,
    )

    def adjust(name: str) -> Adjustment:
        factor = factors.get(name)
        return Adjustment() if factor is None else Adjustment(delta_factor=factor)

    manifest = {
        "calibration": _calibration_manifest(calibration),
        "aim": {
            "omega": omega,
            "base_method": cfg.merge.base_method,
            "relax": cfg.merge.relax,
            "capture_dtype": cfg.acm.dtype,
            "importance_cache_key": importance.metadata.get("cache_key"),
            "importance_statistics": importance.metadata.get("cache_dir"),
        },
    }
    return CoefficientPlan(method, adjust, manifest)


def sens_stage(
    cfg: DictConfig, method: MergeMethod, refs: list[ModelRef], model_dirs: list[Path], run_dir: Path
) -> CoefficientPlan:
    from acm_exp.acm.sensitivity import compute_layer_sensitivity, compute_sens_coefficients
    from acm_exp.calibration import sens_examples

    calibration = _select_calibration(cfg, run_dir)
    sensitivities, texts = [], {}
    for role, model_dir in (("base", model_dirs[0]), ("finetuned", model_dirs[1])):
        examples, texts[role] = sens_examples(calibration, cfg.calibration, cfg.sens, role)
        log.info("Sens-Merging: sensitivity of the %s model on %d examples, %s texts", role, len(examples), texts[role])
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
        "calibration": _calibration_manifest(calibration),
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
    return CoefficientPlan(method, adjust, manifest, coefficients_path)


COEFFICIENT_STAGES = {"acm": acm_stage, "aim": aim_stage, "sens": sens_stage}


def coefficient_stage(
    cfg: DictConfig, method: MergeMethod, refs: list[ModelRef], model_dirs: list[Path], run_dir: Path
) -> CoefficientPlan:
    if method.coefficients is None:
        return CoefficientPlan(method)
    return COEFFICIENT_STAGES[method.coefficients](cfg, method, refs, model_dirs, run_dir)


# ---------------------------------------------------------------------------------------------
# Merge


def merged_output_dir(cfg: DictConfig, run_dir: Path) -> Path:
    return Path(cfg.merge.output_dir).expanduser().resolve() if cfg.merge.output_dir else run_dir / "merged"


# Where a coefficient provider left its files (the run's coefficients.json, the statistics cache):
# not what the merge computes, so not part of its fingerprint; the cache keys and settings are.
COEFFICIENT_LOCATION_KEYS = ("coefficients", "mi_statistics", "importance_statistics")


def coefficient_identity(manifest: dict) -> dict:
    """The coefficient manifest without file locations: equal for runs that merge with equal weights."""
    return {
        provider: (
            {key: value for key, value in entry.items() if key not in COEFFICIENT_LOCATION_KEYS}
            if isinstance(entry, dict)
            else entry
        )
        for provider, entry in manifest.items()
    }


def merge_stage(
    cfg: DictConfig,
    method: MergeMethod,
    model_dirs: list[Path],
    output_dir: Path,
    plan: CoefficientPlan | None = None,
    inputs: MergeInputs | None = None,
) -> Path:
    """Merge into ``output_dir``, or reuse an identical complete merge there; ``inputs``: the models as
    ``check_merge_inputs`` opened and validated them (opened and validated here otherwise)."""
    from acm_exp.eval.runner import code_sandbox_record

    refs = model_refs(cfg.model_pair)
    extra = {
        "dtype": cfg.merge.dtype,
        "seed": cfg.merge.seed,
        "coefficients": coefficient_identity(plan.manifest if plan else {}),
        "tokenizer_from": cfg.model_pair.tokenizer_from,
        "tied_head": cfg.model_pair.tied_head,
    }
    fingerprint = request_fingerprint(method, cfg.merge, refs[0].name, [r.name for r in refs[1:]], extra)
    # Checked even when an identical earlier merge is reused: the inputs and settings must still be sound.
    inputs = inputs or open_merge_inputs(cfg, model_dirs)
    try:
        settings = merge_settings(
            cfg,
            output_dir,
            manifest_extra={
                "request_fingerprint": fingerprint,
                "models": {ref.role: {"id": ref.name, "revision": ref.revision} for ref in refs},
                "side_files_from": cfg.model_pair.tokenizer_from,
                "tied_head": cfg.model_pair.tied_head,
                # How model-written code will be run when this merge is evaluated (an opt-out shows here).
                "code_sandbox": code_sandbox_record(cfg.eval) if cfg.eval.benchmarks else None,
                **(plan.manifest if plan else {}),
            },
        )
        preflight(inputs, settings)
        # A second identical run waits here for the first, then reuses its output.
        with output_lock(output_dir):
            existing = read_manifest(output_dir)
            if existing is not None and existing.get("request_fingerprint") == fingerprint and not cfg.merge.overwrite:
                log.info("reusing the complete merge in %s (same method, parameters and inputs)", output_dir)
                note_cache_hit(existing.get("cost") or {"wall_s": existing.get("seconds")})
                return output_dir
            return run_merge(inputs, method, cfg.merge, settings, adjust=plan.adjust if plan else None).output_dir
    finally:
        inputs.close()


def merged_model_evaluated(cfg: DictConfig) -> bool:
    return bool(cfg.eval.benchmarks) and "merged" in cfg.eval.models


def open_merge_inputs(cfg: DictConfig, model_dirs: list[Path]) -> MergeInputs:
    return open_inputs(
        model_dirs[0],
        model_dirs[1:],
        allow_pickle=cfg.model_pair.allow_pickle,
        dtype=cfg.merge.dtype,
        tied_head=cfg.model_pair.tied_head,
    )


def merge_settings(cfg: DictConfig, output_dir: Path, manifest_extra: dict | None = None) -> MergeSettings:
    return MergeSettings(
        output_dir=output_dir,
        shard_size=cfg.merge.shard_size,
        device=cfg.merge.device,
        dtype=cfg.merge.dtype,
        overwrite=cfg.merge.overwrite,
        seed=cfg.merge.seed,
        tokenizer_from=cfg.model_pair.tokenizer_from,
        require_tokenizer=merged_model_evaluated(cfg),
        manifest_extra=manifest_extra or {},
    )


def check_merge_inputs(cfg: DictConfig, model_dirs: list[Path], output_dir: Path) -> MergeInputs:
    """Before any heavy stage: the models' shards, vocabularies and tokenizer, and the output's place.

    Returns the opened models (headers only) for the merge stage."""
    inputs = open_merge_inputs(cfg, model_dirs)
    preflight(inputs, merge_settings(cfg, output_dir))
    return inputs


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class EvalTarget:
    label: str
    role: str
    path: Path
    prompt: str


def evaluation_targets(cfg: DictConfig, model_dirs: list[Path], merged_dir: Path) -> list[EvalTarget]:
    targets = []
    if "base" in cfg.eval.models:
        targets.append(EvalTarget("base", "base", model_dirs[0], cfg.model_pair.base_prompt))
    if "finetuned" in cfg.eval.models:
        several = len(model_dirs) > 2
        for index, path in enumerate(model_dirs[1:]):
            label = f"finetuned[{index}]" if several else "finetuned"
            targets.append(EvalTarget(label, "finetuned", path, cfg.model_pair.finetuned_prompt))
    if "merged" in cfg.eval.models:
        targets.append(EvalTarget("merged", "merged", merged_dir, cfg.model_pair.merged_prompt))
    return targets


def input_eval_dir(cfg: DictConfig, target: EvalTarget) -> Path:
    """Where an input model's evaluation lives: shared by every run with the same model and eval."""
    from acm_exp.acm import model_identity

    eval_spec = OmegaConf.to_container(cfg.eval, resolve=True)
    eval_spec.pop("models", None)
    key_source = {
        "model": model_identity(target.path),
        "prompt": cfg.eval.prompt or target.prompt,
        "role": target.role,
        "eval": eval_spec,
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_root(cfg.cache_dir) / "evaluations" / f"{target.role}-{key}"


def evaluation_stage(cfg: DictConfig, model_dirs: list[Path], merged_dir: Path, run_dir: Path) -> list[dict]:
    from filelock import FileLock

    from acm_exp.eval.runner import evaluate_model

    rows: list[dict] = []
    for target in evaluation_targets(cfg, model_dirs, merged_dir):
        shared = target.role != "merged"
        out_dir = input_eval_dir(cfg, target) if shared else run_dir / "eval" / target.label
        log.info("evaluating %s (%s) -> %s", target.label, target.path, out_dir)
        evaluate = functools.partial(
            evaluate_model,
            target.path,
            label=target.label,
            role=target.role,
            prompt=target.prompt,
            eval_cfg=cfg.eval,
            out_dir=out_dir,
            data_dir=data_dir(cfg),
        )
        with measure("evaluation", model=target.label):
            if not shared:
                rows += evaluate()
                continue
            # Sweep tasks share an input model's evaluation: the first generates it, the others wait and
            # then reuse its complete sample files instead of generating the same answers again.
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(out_dir.with_name(out_dir.name + ".lock"))):
                rows += evaluate()
    return rows


def check_generation_inputs(cfg: DictConfig, model_dirs: list[Path]) -> None:
    """Before any heavy stage: every tokenizer that will generate can represent its stop strings."""
    if not cfg.eval.benchmarks:
        return
    from acm_exp.eval.backends import load_tokenizer
    from acm_exp.eval.prompts import stop_strings, unencodable_stops

    # The merged model generates with the tokenizer it is saved with.
    merged_tokenizer_dir = model_dirs[0] if cfg.model_pair.tokenizer_from == "base" else model_dirs[1]
    for target in evaluation_targets(cfg, model_dirs, merged_tokenizer_dir):
        tokenizer = load_tokenizer(target.path)
        prompt = cfg.eval.prompt or target.prompt
        for key, benchmark in cfg.eval.benchmarks.items():
            bad = unencodable_stops(tokenizer, stop_strings(prompt, benchmark))
            if bad:
                raise ConfigError(
                    f"the tokenizer in {target.path} (used for {target.label}) cannot encode the stop "
                    f"string(s) {bad} of prompt {prompt!r} on eval.benchmarks.{key}; expected a "
                    "tokenizer that represents them (or another eval.prompt)"
                )


def write_costs(book: costs.CostLedger, run_dir: Path) -> Path:
    """``<run dir>/costs.json``: every stage's wall and CPU time, peak memory, cache use and the hardware."""
    text = json.dumps(book.to_dict(), indent=2, sort_keys=True) + "\n"
    return atomic_write(run_dir / "costs.json", lambda handle: handle.write(text.encode()))


def summary_table(rows: list[dict]) -> str:
    """Accuracy and mean response tokens per model and benchmark (seed means when several)."""
    import pandas as pd

    frame = pd.DataFrame([row for row in rows if row.get("seed") is not None])
    if frame.empty:
        return ""
    grouped = frame.groupby(["model", "benchmark"], sort=False)[["accuracy", "mean_tokens"]].mean().reset_index()
    grouped["cell"] = [
        f"{acc:5.1f}% / {tokens:6.1f} tok" for acc, tokens in zip(grouped.accuracy, grouped.mean_tokens, strict=False)
    ]
    table = grouped.pivot(index="model", columns="benchmark", values="cell")
    order = [m for m in dict.fromkeys(frame["model"])]
    return table.loc[order].to_string()


# ---------------------------------------------------------------------------------------------
# The run


def _label_pair(cfg: DictConfig) -> None:
    from acm_exp.toy import is_toy_id

    # The toy pair's name must not stick to other models given on the command line.
    if cfg.model_pair.name == "toy" and not is_toy_id(cfg.model_pair.base):
        cfg.model_pair.name = "custom"


def run(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """Run one configured job; returns the merged model's directory."""
    from acm_exp.results import config_hash, has_complete_results, record_run, resolve_results_dir
    from acm_exp.tracking import WandbLogger

    _label_pair(cfg)
    method = validate(cfg)
    run_dir = Path(run_dir or run_directory()).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory: %s", run_dir)
    OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
    results_dir = resolve_results_dir(cfg.logger.results_dir)
    benchmarks = list(cfg.eval.benchmarks)
    if (
        benchmarks
        and not cfg.force
        and has_complete_results(results_dir, config_hash(cfg), benchmarks, seeds=list(cfg.eval.seeds))
    ):
        log.info(
            "skipping: results for config %s are complete in %s (force=true redoes the run)",
            config_hash(cfg),
            results_dir,
        )
        print(f"skipped: complete results already in {results_dir}")
        return merged_output_dir(cfg, run_dir)

    started = datetime.now(timezone.utc)
    refs = model_refs(cfg.model_pair)
    with WandbLogger.from_config(cfg, run_dir) as tracker, costs.ledger() as book:
        with stage("resolving the models"):
            model_dirs = [resolve_model(ref, cache_dir=cfg.cache_dir, toy_seed=cfg.seed) for ref in refs]
        with stage("checking the models and the merge output"):
            merge_inputs = check_merge_inputs(cfg, model_dirs, merged_output_dir(cfg, run_dir))
        with stage("checking the models' tokenizers"):
            check_generation_inputs(cfg, model_dirs)
        with (
            stage(f"computing {method.coefficients} coefficients" if method.coefficients else "planning"),
            measure("coefficients", provider=method.coefficients),
        ):
            plan = coefficient_stage(cfg, method, refs, model_dirs, run_dir)
        with stage("the merge"), measure("merge", method=plan.method.name):
            merged_dir = merge_stage(
                cfg, plan.method, model_dirs, merged_output_dir(cfg, run_dir), plan, inputs=merge_inputs
            )
        print(f"merged model: {merged_dir}")
        with stage("evaluation"):
            rows = evaluation_stage(cfg, model_dirs, merged_dir, run_dir) if benchmarks else []
        manifest = read_manifest(merged_dir)
        costs_path = write_costs(book, run_dir)
        if rows:
            with stage("recording the results"):
                table_path = record_run(
                    cfg,
                    run_dir,
                    rows,
                    manifest=manifest,
                    coefficients_path=plan.coefficients_path,
                    started_at=started,
                    results_dir=results_dir,
                    costs=book.to_dict(),
                )
                tracker.log_results(
                    rows, manifest=manifest, coefficients_path=plan.coefficients_path, costs=book.to_dict()
                )
            print(summary_table(rows))
            print(f"results: {table_path}")
    log.info("stage costs: %s", costs_path)
    return merged_dir
