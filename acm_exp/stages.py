"""The pipeline's stages, each a function of the job config: validate, resolve the models, coefficients,
merge, evaluate.

The CLI's job (``acm_exp.pipeline.run``) and the Python API (``acm_exp.api``) sit side by side above
this module and run the same functions (``merge_configured``, ``evaluate_configured``), so a run and an
API call with the same settings share caches, manifests and metrics:
- a complete merge with the same request is reused; coefficient statistics come from their cache;
- evaluation reuses complete per-benchmark sample files, and input models' evaluations are shared
  across runs through the cache (a sweep over t evaluates the base and fine-tuned models once).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

import acm_exp.costs as costs
from acm_exp.acm.provider import CoefficientPlan, CoefficientRequest, get_provider
from acm_exp.costs import measure, note_cache_hit
from acm_exp.errors import ConfigError
from acm_exp.failures import stage
from acm_exp.merge.validation import TIED_HEAD_MODES, check_output_location, validate_merge_config
from acm_exp.models import ModelRef, check_model_id, model_refs, resolve_model
from acm_exp.paths import atomic_write, cache_root, check_writable_dir, resolve_results_dir
from acm_exp.paths import data_dir as resolve_data_dir

if TYPE_CHECKING:
    # The merge engine imports torch: the stages import it when they run, so validation stays light.
    from acm_exp.merge import MergeInputs, MergeMethod, MergeSettings

log = logging.getLogger("acm_exp")

TOKENIZER_SOURCES = ("base", "finetuned")


class Steps:
    """The stages of one job or API call. Each logs its name and tags an escaping exception with it
    (acm_exp.failures.stage: the CLI's one-line error names the stage); with a title (the API) a
    notebook-friendly progress bar advances once per stage."""

    def __init__(self, title: str | None = None, total: int | None = None):
        self._bar = None
        if title is not None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=title, unit="stage")

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        log.info("%s", name)
        with stage(name):
            yield
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str("done")
            self._bar.close()


# ---------------------------------------------------------------------------------------------
# Validation: everything cheap, before any weight is read


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
        get_provider(method.coefficients).validate(cfg)
    if cfg.eval.benchmarks:
        from acm_exp.eval.runner import validate_eval_config

        validate_eval_config(cfg.eval, data_dir(cfg), prompts=_evaluated_prompts(cfg))
    validate_logger_config(cfg.logger)
    if cfg.eval.benchmarks:
        check_writable_dir(resolve_results_dir(cfg.logger.results_dir), "logger.results_dir")
    return method


def data_dir(cfg: DictConfig) -> Path | None:
    return resolve_data_dir(cfg.data_dir)


# ---------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class Models:
    """The job's input models, base first: their references and their local directories."""

    refs: list[ModelRef]
    dirs: list[Path]


def resolve_models(cfg: DictConfig) -> Models:
    """Download (or build, for the toy pair) the input models; returns their local directories."""
    refs = model_refs(cfg.model_pair)
    return Models(refs, [resolve_model(ref, cache_dir=cfg.cache_dir, toy_seed=cfg.seed) for ref in refs])


# ---------------------------------------------------------------------------------------------
# Coefficients: calibration -> statistics of the models (cached) -> per-tensor weights, from the
# method's provider (acm_exp/acm/provider.py)


def coefficient_stage(
    cfg: DictConfig, method: MergeMethod, refs: list[ModelRef], model_dirs: list[Path], run_dir: Path
) -> CoefficientPlan:
    if method.coefficients is None:
        return CoefficientPlan(method)

    def merge_plain(plain: MergeMethod, output_dir: Path) -> Path:
        return merge_stage(cfg, plain, model_dirs, output_dir)

    request = CoefficientRequest(cfg, method, refs, model_dirs, run_dir, merge_plain)
    return get_provider(method.coefficients).plan(request)


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
    from acm_exp.merge.engine import output_lock, preflight, read_manifest, request_fingerprint, run_merge

    refs = model_refs(cfg.model_pair)
    extra = {
        "dtype": cfg.merge.dtype,
        "seed": cfg.merge.seed,
        "coefficients": coefficient_identity(plan.manifest if plan else {}),
        "tokenizer_from": cfg.model_pair.tokenizer_from,
        "tied_head": cfg.model_pair.tied_head,
        # Only when not the default: merges fingerprinted before the setting keep their fingerprint.
        **({"vocabulary": str(cfg.model_pair.vocabulary)} if cfg.model_pair.vocabulary != "base" else {}),
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
                "code_sandbox": _code_sandbox_record(cfg.eval) if cfg.eval.benchmarks else None,
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


def _code_sandbox_record(eval_cfg: DictConfig) -> dict:
    from acm_exp.eval.runner import code_sandbox_record  # lazy: a merge-only run imports no evaluation

    return code_sandbox_record(eval_cfg)


def merged_model_evaluated(cfg: DictConfig) -> bool:
    return bool(cfg.eval.benchmarks) and "merged" in cfg.eval.models


def open_merge_inputs(cfg: DictConfig, model_dirs: list[Path]) -> MergeInputs:
    from acm_exp.merge import open_inputs

    return open_inputs(
        model_dirs[0],
        model_dirs[1:],
        allow_pickle=cfg.model_pair.allow_pickle,
        dtype=cfg.merge.dtype,
        tied_head=cfg.model_pair.tied_head,
        vocabulary=cfg.model_pair.vocabulary,
    )


def merge_settings(cfg: DictConfig, output_dir: Path, manifest_extra: dict | None = None) -> MergeSettings:
    from acm_exp.merge import MergeSettings

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
    from acm_exp.merge.engine import preflight

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


# ---------------------------------------------------------------------------------------------
# The runs the CLI's job and the Python API share: checked inputs -> coefficients -> merge; evaluation


@dataclass(frozen=True)
class MergedModel:
    """What the merge run produced: the merged model's directory and manifest, the coefficient plan
    it merged with, and the input models' directories (base first)."""

    output_dir: Path
    manifest: dict
    plan: CoefficientPlan
    inputs: tuple[Path, ...]
    reused: bool

    @property
    def coefficients_path(self) -> Path | None:
        return self.plan.coefficients_path


@dataclass(frozen=True)
class ModelEvaluation:
    """One evaluated model's results rows (one per benchmark and seed, plus seed summaries)."""

    label: str
    role: str
    path: Path
    rows: list[dict]
    run_dir: Path | None


def prepare_models(cfg: DictConfig, run_dir: Path, steps: Steps) -> tuple[Models, MergeInputs]:
    """Resolve the input models and check them before any heavy stage: shards, vocabularies, the merge
    output's place and, when the job evaluates, every generating tokenizer's stop strings."""
    with steps("resolving the models"):
        models = resolve_models(cfg)
    with steps("checking the models and the merge output"):
        inputs = check_merge_inputs(cfg, models.dirs, merged_output_dir(cfg, run_dir))
    try:
        with steps("checking the models' tokenizers"):
            check_generation_inputs(cfg, models.dirs)
    except BaseException:
        inputs.close()
        raise
    return models, inputs


def plan_coefficients(
    cfg: DictConfig, method: MergeMethod, models: Models, run_dir: Path, steps: Steps
) -> CoefficientPlan:
    """The method's coefficient plan (nothing to compute for a plain method)."""
    provider = method.coefficients
    with steps(f"computing {provider} coefficients" if provider else "planning"):
        with measure("coefficients", provider=provider):
            return coefficient_stage(cfg, method, models.refs, models.dirs, run_dir)


def merge_configured(
    cfg: DictConfig, method: MergeMethod, run_dir: Path, steps: Steps, *, plan: CoefficientPlan | None = None
) -> MergedModel:
    """Resolve and check the models, compute the method's coefficients (unless ``plan`` brings them)
    and merge into the configured output (an identical complete merge there is reused)."""
    models, inputs = prepare_models(cfg, run_dir, steps)
    try:
        plan = plan or plan_coefficients(cfg, method, models, run_dir, steps)
        with steps("the merge"), measure("merge", method=plan.method.name) as merge_cost:
            merged_dir = merge_stage(
                cfg, plan.method, models.dirs, merged_output_dir(cfg, run_dir), plan, inputs=inputs
            )
    finally:
        inputs.close()
    log.info("merged model: %s", merged_dir)
    from acm_exp.merge.engine import read_manifest

    return MergedModel(merged_dir, read_manifest(merged_dir) or {}, plan, tuple(models.dirs), merge_cost.cached)


def evaluate_configured(
    cfg: DictConfig, model_dirs: list[Path], merged_dir: Path, run_dir: Path, steps: Steps
) -> list[ModelEvaluation]:
    """Evaluate every model of ``cfg.eval.models`` on the configured benchmarks: one entry per model.

    The per-sample records stay in the files the rows name (``samples_path``)."""
    with steps("evaluation"):
        rows = evaluation_stage(cfg, list(model_dirs), merged_dir, run_dir)
    return [
        ModelEvaluation(
            label=target.label,
            role=target.role,
            path=Path(target.path),
            rows=[row for row in rows if row.get("model") == target.label],
            run_dir=run_dir if target.role == "merged" else None,
        )
        for target in evaluation_targets(cfg, list(model_dirs), merged_dir)
    ]


def write_costs(book: costs.CostLedger, run_dir: Path) -> Path:
    """``<run dir>/costs.json``: every stage's wall and CPU time, peak memory, cache use and the hardware."""
    text = json.dumps(book.to_dict(), indent=2, sort_keys=True) + "\n"
    return atomic_write(run_dir / "costs.json", lambda handle: handle.write(text.encode()))
