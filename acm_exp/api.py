"""The Python API: calibration, ACM coefficients, merges and evaluations from plain Python values.

Each function builds the config that ``python -m acm_exp`` would run for the same settings (the
arguments become command-line overrides, ``acm_exp.overrides``), validates it with the CLI's own
checks (the same one-line ``acm_exp.errors.ConfigError``) and runs the stage functions the CLI runs
(``acm_exp.stages``): same caches, same run-directory layout, same manifests and metrics. Every result
carries ``overrides``, the CLI arguments that reproduce it.

    >>> import acm_exp
    >>> coefficients = acm_exp.acm_coefficients("toy:base", "toy:finetuned", acm_exp.select_calibration("toy"))
    >>> merged = acm_exp.merge_models("toy:base", "toy:finetuned", "acm_ties", coefficients=coefficients)
    >>> acm_exp.evaluate(merged, limit=5).accuracy    # % per benchmark of the pair's suite
    {'toy': ...}

Arguments left at None keep the CLI's default (which may depend on the model pair: the toy pair
calibrates on its own corpus and evaluates on its own task).
"""

# No `from __future__ import annotations` and every helper or imported name private: the module's
# namespace is exactly its __all__, so `dir(acm_exp.api)` and tab completion show the API alone.
import logging as _logging
import os as _os
from collections.abc import Iterator as _Iterator
from collections.abc import Mapping as _Mapping
from collections.abc import Sequence as _Sequence
from contextlib import contextmanager as _contextmanager
from dataclasses import fields as _fields
from dataclasses import replace as _replace
from datetime import datetime as _datetime
from datetime import timezone as _timezone
from pathlib import Path as _Path
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any
from typing import Union as _Union

import acm_exp.overrides as _overrides
import acm_exp.stages as _stages
from acm_exp.api_names import API_NAMES as _API_NAMES
from acm_exp.config import AcmConfig as _AcmConfig
from acm_exp.config import CalibrationConfig as _CalibrationConfig
from acm_exp.config import EvalConfig as _EvalConfig
from acm_exp.config import MergeConfig as _MergeConfig
from acm_exp.errors import ConfigError as _ConfigError
from acm_exp.errors import DataError as _DataError
from acm_exp.outcomes import Calibration, Coefficients, EvalResult, MergeResult

if _TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from acm_exp.acm.provider import CoefficientPlan
    from acm_exp.calibration import CalibrationSet

_log = _logging.getLogger("acm_exp")

_PathLike = _Union[str, "_os.PathLike[str]"]
_ACM_METHODS = "acm_ta, acm_ties, acm_dare, acm_average"

# Keyword settings each function accepts, by config section (the fields its arguments do not cover).
_CALIBRATION_SETTINGS = tuple(f.name for f in _fields(_CalibrationConfig) if f.name != "source")
_ACM_SETTINGS = tuple(f.name for f in _fields(_AcmConfig))
_MERGE_PARAMETERS = tuple(f.name for f in _fields(_MergeConfig) if f.name not in ("method", "output_dir"))
_PAIR_SETTINGS = (
    "base_revision",
    "finetuned_revisions",
    "tokenizer_from",
    "tied_head",
    "vocabulary",
    "trust_remote_code",
    "allow_pickle",
)
_EVAL_SETTINGS = tuple(f.name for f in _fields(_EvalConfig) if f.name not in ("name", "benchmarks", "models"))


def _check_names(what: str, given: _Mapping[str, _Any], known: _Sequence[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise _ConfigError(f"{what}: unknown setting {unknown[0]!r}; expected one of {', '.join(known)}")


def _new_run_dir(run_dir: "_PathLike | None", default: str) -> _Path:
    """The given run directory, else the CLI's (``hydra.run.dir``) made unique: calls within the
    same second must not share one."""
    if run_dir is not None:
        chosen = _Path(run_dir).expanduser().absolute()
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen
    candidate = _Path(default).absolute()
    candidate.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        path = candidate if attempt == 0 else candidate.with_name(f"{candidate.name}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise _DataError(f"no free run directory beside {candidate}; pass run_dir=")


@_contextmanager
def _steps(title: str, total: int) -> "_Iterator[_stages.Steps]":
    steps = _stages.Steps(title, total)
    try:
        yield steps
    finally:
        steps.close()


def _timings(costs: _Mapping[str, _Any]) -> dict[str, float]:
    """Seconds per stage (stages measured several times, e.g. per model, add up)."""
    seconds: dict[str, float] = {}
    for stage in costs.get("stages", []):
        seconds[stage["stage"]] = round(seconds.get(stage["stage"], 0.0) + float(stage["wall_s"]), 3)
    return seconds


# ---------------------------------------------------------------------------------------------
# The stages' results as the API returns them


def _calibration_of(selected: "CalibrationSet", cfg: "DictConfig", overrides: _Sequence[str]) -> Calibration:
    from omegaconf import OmegaConf

    return Calibration(
        texts=list(selected.texts),
        indices=[int(i) for i in selected.indices],
        spec=selected.spec,
        selection_hash=selected.selection_hash,
        corpus_size=selected.corpus_size,
        settings=OmegaConf.to_container(cfg.calibration, resolve=True),
        cluster_labels=selected.cluster_labels,
        overrides=tuple(item for item in overrides if item.startswith("calibration")),
    )


def _coefficients_of(
    plan: "CoefficientPlan",
    cfg: "DictConfig",
    run_dir: _Path,
    overrides: _Sequence[str],
    settings_overrides: _Sequence[str],
) -> Coefficients:
    """The ACM provider's plan: λ per point and model, and the calibration."""
    from acm_exp.acm import LayerCoefficients

    return Coefficients(
        base=str(cfg.model_pair.base),
        finetuned=tuple(str(m) for m in cfg.model_pair.finetuned),
        acm=LayerCoefficients.from_json(plan.coefficients_path),
        calibration=_calibration_of(plan.calibration, cfg, overrides),
        against=str(cfg.acm.against),
        method=str(cfg.merge.method),
        run_dir=run_dir,
        path=_Path(plan.coefficients_path),
        overrides=tuple(overrides),
        settings_overrides=tuple(settings_overrides),
        plan=plan,
    )


def _samples_of(rows: _Sequence[_Mapping[str, _Any]]) -> dict[str, list[dict[str, _Any]]]:
    """The per-sample records of every benchmark the rows describe, read from their sample files."""
    from acm_exp.eval.samples import read_records

    samples: dict[str, list[dict[str, _Any]]] = {}
    for row in rows:
        if row.get("samples_path"):
            samples.setdefault(row["benchmark"], []).extend(read_records(_Path(row["samples_path"])) or [])
    return samples


# ---------------------------------------------------------------------------------------------
# Calibration


def _calibration_choice(calibration: "Calibration | str | None") -> list[str]:
    """The overrides that select ``calibration``: a selection's own, a source's, or none (the model
    pair's default corpus, as on the command line)."""
    if isinstance(calibration, Calibration):
        return [item for item in calibration.overrides if item.startswith("calibration")]
    return [] if calibration is None else _overrides.calibration_overrides(calibration, {})


def select_calibration(
    source: str = "s1k", *, cache_dir: "_PathLike | None" = None, data_dir: "_PathLike | None" = None, **settings: _Any
) -> Calibration:
    """Select a calibration set as ``python -m acm_exp calibration=<source> calibration.<key>=<value>``.

    ``source``: a configured corpus (``s1k``, ``limo``, ``toy``), a ``.json``/``.jsonl`` file or a hub
    dataset id (selected with s1K's settings). ``settings``: any ``calibration`` key, e.g.
    ``num_clusters``, ``per_cluster``, ``selection`` (``cluster``/``random``/``all``), ``cluster_pick``,
    ``seed``, ``include_solution``, ``max_tokens``. Embeddings and the selection are cached under
    ``cache_dir`` as in the CLI.

    Example:
        >>> calibration = acm_exp.select_calibration("toy", per_cluster=2)
        >>> len(calibration), calibration.spec
        (8, 'toy[:400]:cluster(k=4,per=2,seed=42)')
    """
    from acm_exp.calibration import select_calibration as select
    from acm_exp.calibration import validate_config
    from acm_exp.paths import data_dir as resolve_data_dir

    _check_names("select_calibration", settings, _CALIBRATION_SETTINGS)
    overrides = _overrides.calibration_overrides(source, settings) + _overrides.place_overrides(cache_dir, data_dir)
    cfg, _ = _overrides.compose_config(overrides)
    validate_config(cfg.calibration)
    with _steps("calibration", 1) as steps, steps("selecting the calibration set"):
        selected = select(cfg.calibration, data_dir=resolve_data_dir(cfg.data_dir), cache_dir=cfg.cache_dir)
    return _calibration_of(selected, cfg, overrides)


# ---------------------------------------------------------------------------------------------
# Coefficients


def acm_coefficients(
    base: "_PathLike",
    finetuned: "_PathLike | _Sequence[_PathLike]",
    calibration: "Calibration | str | None" = None,
    t: float = 0.7,
    *,
    shift: str = "per_point_max",
    reduce: str = "mean_of_sigmoids",
    method: str = "acm_ties",
    run_dir: "_PathLike | None" = None,
    cache_dir: "_PathLike | None" = None,
    data_dir: "_PathLike | None" = None,
    **acm_settings: _Any,
) -> Coefficients:
    """ACM's λ per layer for merging ``finetuned`` into ``base``, computed as the CLI computes them.

    ``base``/``finetuned``: hub ids, local directories or ``toy:base``/``toy:finetuned``.
    ``calibration``: a ``select_calibration`` result, a source name, or None for the pair's default
    corpus. ``t``, ``shift``, ``reduce``: ``merge.t|shift|reduce``. ``acm_settings``: any ``acm`` key
    (``against``, ``estimator``, ``bins``, ``binning``, ``device``, ``dtype``, ``cache_dir``); with
    ``against="merged"`` the MI is taken against ``method``'s plain merge. MI statistics come from
    (and go to) the CLI's cache: a second call with another ``t`` runs no forward pass.

    Example:
        >>> coefficients = acm_exp.acm_coefficients("toy:base", "toy:finetuned", "toy", t=0.9)
        >>> sorted(coefficients.lambdas["toy:finetuned"])
        ['embed_tokens', 'layers.0', 'layers.1', 'lm_head', 'norm']
    """
    from acm_exp.costs import ledger

    _check_names("acm_coefficients", acm_settings, _ACM_SETTINGS)
    settings_overrides = (
        _calibration_choice(calibration)
        + _overrides.assignments("merge", {"t": t, "shift": shift, "reduce": reduce})
        + _overrides.assignments("acm", acm_settings)
    )
    overrides = (
        _overrides.pair_overrides(base, finetuned)
        + _overrides.method_overrides(method)
        + settings_overrides
        + [_overrides.EVAL_OFF]
        + _overrides.place_overrides(cache_dir, data_dir)
    )
    cfg, default_run_dir = _overrides.compose_config(overrides)
    checked = _stages.validate(cfg)
    if checked.coefficients != "acm":
        raise _ConfigError(f"method={method!r} takes no ACM coefficients; expected an ACM method ({_ACM_METHODS})")
    run_directory = _new_run_dir(run_dir, default_run_dir)
    with _steps("ACM coefficients", 4) as steps, ledger() as book:
        models, inputs = _stages.prepare_models(cfg, run_directory, steps)
        inputs.close()
        plan = _stages.plan_coefficients(cfg, checked, models, run_directory, steps)
    coefficients = _coefficients_of(plan, cfg, run_directory, overrides, settings_overrides)
    if isinstance(calibration, Calibration) and coefficients.calibration.selection_hash != calibration.selection_hash:
        raise _DataError(
            f"the calibration selection changed while computing the coefficients "
            f"({coefficients.calibration.selection_hash} != {calibration.selection_hash}); the corpus or its "
            "cache was modified, select it again"
        )
    return _replace(coefficients, timings=_timings(book.to_dict()))


# ---------------------------------------------------------------------------------------------
# Merge


def _split_merge_params(params: _Mapping[str, _Any]) -> tuple[dict[str, _Any], dict[str, _Any]]:
    _check_names("merge_models", params, _MERGE_PARAMETERS + _PAIR_SETTINGS)
    pair = {key: value for key, value in params.items() if key in _PAIR_SETTINGS}
    return {key: value for key, value in params.items() if key not in _PAIR_SETTINGS}, pair


def _plan_from(
    coefficients: Coefficients, cfg: "DictConfig", method, merge_params: _Mapping[str, _Any]
) -> "CoefficientPlan":
    """The CLI's coefficient plan for ``method`` from coefficients computed earlier."""
    import acm_exp.merge_parameters as merge_parameters
    from acm_exp.acm.provider import CoefficientPlan

    if method.coefficients != "acm":
        raise _ConfigError(
            f"coefficients= given, but merge method {method.name!r} takes no ACM coefficients; "
            f"expected an ACM method ({_ACM_METHODS})"
        )
    models = (str(cfg.model_pair.base), tuple(str(m) for m in cfg.model_pair.finetuned))
    if models != (coefficients.base, coefficients.finetuned):
        raise _ConfigError(
            f"coefficients were computed for {coefficients.base} + {list(coefficients.finetuned)}; "
            f"expected the merged models {models[0]} + {list(models[1])}"
        )
    if coefficients.plan is None:
        raise _ConfigError(
            "these coefficients carry no merge plan (loaded, not computed); compute them with acm_coefficients()"
        )
    for key, value in (
        ("t", coefficients.t),
        ("shift", coefficients.acm.shift),
        ("reduce", coefficients.acm.reduce),
        ("against", coefficients.against),
    ):
        configured = cfg.acm.against if key == "against" else cfg.merge[key]
        if configured != value:
            raise _ConfigError(
                f"merge {key}={configured!r} differs from the coefficients' {key}={value!r}; expected "
                "the same value (or compute coefficients with it)"
            )
    if coefficients.against == "merged":
        # λ then rescales that method's plain merge: it was built with the coefficients.
        if method.name != coefficients.method:
            raise _ConfigError(
                f"coefficients with against='merged' rescale a {coefficients.method} merge; expected "
                f"method={coefficients.method!r}, got {method.name!r}"
            )
        acm_settings = {parameter.name for parameter in merge_parameters.ACM_PARAMETERS}
        changed = sorted(set(merge_params) & set(merge_parameters.MERGE_PARAMETERS) - acm_settings)
        if changed:
            raise _ConfigError(
                f"coefficients with against='merged' rescale the plain merge built with the method's "
                f"configured parameters; expected no {', '.join(changed)} here"
            )
        return coefficients.plan
    plan = coefficients.plan
    return CoefficientPlan(method, plan.adjust, plan.manifest, plan.coefficients_path)


def merge_models(
    base: "_PathLike",
    finetuned: "_PathLike | _Sequence[_PathLike]",
    method: str = "acm_ties",
    out: "_PathLike | None" = None,
    *,
    coefficients: "Coefficients | None" = None,
    calibration: "Calibration | str | None" = None,
    run_dir: "_PathLike | None" = None,
    cache_dir: "_PathLike | None" = None,
    data_dir: "_PathLike | None" = None,
    **params: _Any,
) -> MergeResult:
    """Merge ``finetuned`` into ``base`` with any registered method, as
    ``python -m acm_exp merge=<method> merge.<param>=<value> merge.output_dir=<out> eval=none``.

    ``params``: the method's hyper-parameters and merge settings (``scale``, ``k``, ``p``, ``combine``,
    ``gamma``, ``t``, ``omega``, ``base_method``, ``alpha``, ``temperature``, ``dtype``, ``device``,
    ``shard_size``, ``seed``, ``overwrite``, ...) and the pair's ``tokenizer_from``, ``tied_head``,
    ``vocabulary``, ``allow_pickle``, ``trust_remote_code``, revisions. ``out``: the output directory (default
    ``<run_dir>/merged``). ``coefficients``: ACM coefficients from ``acm_coefficients`` (default: computed
    here, like AIM's and Sens-Merging's statistics, from ``calibration``). An identical earlier merge in
    ``out`` is reused.

    Example:
        >>> merged = acm_exp.merge_models("toy:base", "toy:finetuned", "acm_ties", coefficients=coefficients)
        >>> merged.manifest["acm"]["t"], merged.output_dir.name
        (0.7, 'merged')
    """
    from omegaconf import OmegaConf

    from acm_exp.costs import ledger

    merge_params, pair_settings = _split_merge_params(params)
    if coefficients is not None and not isinstance(coefficients, Coefficients):
        raise _ConfigError(f"coefficients={type(coefficients).__name__}; expected the result of acm_coefficients()")
    if coefficients is not None and calibration is not None:
        raise _ConfigError(
            "both coefficients= and calibration= given; "
            "expected one (the coefficients already fix their calibration set)"
        )
    if coefficients is not None:
        settings = list(coefficients.settings_overrides)
    else:
        coefficient_params = {key: value for key, value in merge_params.items() if key in ("t", "shift", "reduce")}
        settings = _calibration_choice(calibration) + _overrides.assignments("merge", coefficient_params)
    output = (
        []
        if out is None
        else [f"merge.output_dir={_overrides.override_value('merge.output_dir', _Path(out).expanduser().absolute())}"]
    )
    overrides = (
        _overrides.pair_overrides(base, finetuned)
        + _overrides.assignments("model_pair", pair_settings)
        + _overrides.method_overrides(method)
        + settings
        + _overrides.assignments("merge", merge_params)
        + output
        + [_overrides.EVAL_OFF]
        + _overrides.place_overrides(cache_dir, data_dir)
    )
    cfg, default_run_dir = _overrides.compose_config(overrides)
    checked = _stages.validate(cfg)
    plan = _plan_from(coefficients, cfg, checked, merge_params) if coefficients is not None else None
    run_directory = (
        _new_run_dir(run_dir, default_run_dir) if run_dir is not None or coefficients is None else coefficients.run_dir
    )
    OmegaConf.save(cfg, run_directory / "resolved_config.yaml", resolve=True)
    # resolve, check the models, check the tokenizers, [coefficients or planning,] merge
    total = 4 if coefficients is not None else 5
    with _steps(f"merge {checked.name}", total) as steps, ledger() as book:
        merged = _stages.merge_configured(cfg, checked, run_directory, steps, plan=plan)
    if coefficients is None and checked.coefficients == "acm":
        coefficients = _coefficients_of(merged.plan, cfg, run_directory, overrides, settings)
    costs = book.to_dict()
    _stages.write_costs(book, run_directory)
    return MergeResult(
        output_dir=merged.output_dir,
        manifest=merged.manifest,
        timings=_timings(costs),
        run_dir=run_directory,
        method=str(cfg.merge.method),
        reused=merged.reused,
        coefficients=coefficients,
        coefficients_path=merged.coefficients_path,
        overrides=tuple(overrides),
        inputs=merged.inputs,
        costs=costs,
    )


# ---------------------------------------------------------------------------------------------
# Evaluation


def _eval_overrides(
    role: str,
    backend: "str | None",
    limit: "int | None",
    max_new_tokens: "int | None",
    seeds: "_Sequence[int] | None",
    prompt: "str | None",
    eval_settings: _Mapping[str, _Any],
) -> list[str]:
    _check_names("evaluate", eval_settings, _EVAL_SETTINGS)
    values: dict[str, _Any] = {"models": [role]}
    chosen = {
        "backend": backend,
        "limit": limit,
        "seeds": list(seeds) if seeds is not None else None,
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "base_max_new_tokens": max_new_tokens,
    }
    values.update({key: value for key, value in chosen.items() if value is not None})
    values.update(eval_settings)
    return _overrides.assignments("eval", values)


def _evaluated_model(model: _Any, role: "str | None") -> "tuple[list[str], str, MergeResult | None]":
    """(the model's pair overrides, its role, the merge it came from) for a model or a MergeResult."""
    if isinstance(model, MergeResult):
        return [item for item in model.overrides if item != _overrides.EVAL_OFF], role or "merged", model
    name = _overrides.model_name(model, "model")
    found = _overrides.pair_of_model(name)
    if found is not None:
        pair, pair_role = found
        return [f"model_pair={pair}"], role or pair_role, None
    return _overrides.pair_overrides(name, [name]), role or "finetuned", None


def evaluate(
    model: "_PathLike | MergeResult",
    benchmarks: "_Sequence[str] | str | None" = None,
    backend: "str | None" = None,
    limit: "int | None" = None,
    *,
    role: "str | None" = None,
    max_new_tokens: "int | None" = None,
    seeds: "_Sequence[int] | None" = None,
    prompt: "str | None" = None,
    run_dir: "_PathLike | None" = None,
    results_dir: "_PathLike | None" = None,
    record: bool = True,
    logger: "str | None" = None,
    cache_dir: "_PathLike | None" = None,
    data_dir: "_PathLike | None" = None,
    **eval_settings: _Any,
) -> EvalResult:
    """Evaluate one model as the CLI evaluates it (same prompts, generation, grading and caches).

    ``model``: a ``merge`` result, a hub id, a local directory or ``toy:base``/``toy:finetuned``.
    ``benchmarks``: names under ``conf/eval/benchmark`` (``gsm8k``, ``math500``, ..., ``toy``); None
    runs the pair's default suite (``eval=toy`` for the toy pair, ``eval=l2s`` otherwise), as do
    ``backend`` (``auto``, ``hf``, ``vllm``) and ``limit`` (the first N problems of a fixed subset)
    when None. ``max_new_tokens`` sets ``eval.max_new_tokens`` and ``eval.base_max_new_tokens``;
    ``eval_settings``: any other ``eval`` key (``batch_size``, ``device``, ``dtype``, ``vllm={...}``).
    ``role`` (``base``, ``finetuned``, ``merged``) picks the prompt and token budget: by default the
    model's role in a configured pair, ``merged`` for a merge result, else ``finetuned``. Input
    models' evaluations are shared with the CLI's through the cache; a merge result's evaluation goes
    to ``<run_dir>/eval/merged`` and, with ``record``, into the results table (``load_results``) and to
    W&B as the CLI logs it: ``logger`` picks the logger config (``default``: offline, as the CLI;
    ``online``; ``disabled``: no W&B run).

    Example:
        >>> result = acm_exp.evaluate(merged, ("toy",), limit=5, max_new_tokens=64)
        >>> list(result.metrics[["benchmark", "n"]].itertuples(index=False, name=None))
        [('toy', 5)]
    """
    from acm_exp.costs import ledger
    from acm_exp.models import ModelRef, resolve_model

    model_overrides, model_role, merged = _evaluated_model(model, role)
    if results_dir is not None:
        results = _Path(results_dir).expanduser().absolute()
        model_overrides = model_overrides + [
            f"logger.results_dir={_overrides.override_value('logger.results_dir', results)}"
        ]
    if logger is not None:
        model_overrides = model_overrides + [f"logger={_overrides.override_value('logger', logger)}"]
    place = _overrides.place_overrides(cache_dir, data_dir)
    base_cfg, _ = _overrides.compose_config(model_overrides + place)
    overrides = (
        model_overrides
        + _overrides.benchmark_overrides(base_cfg, benchmarks)
        + _eval_overrides(model_role, backend, limit, max_new_tokens, seeds, prompt, eval_settings)
        + place
    )
    cfg, default_run_dir = _overrides.compose_config(overrides)
    _stages.validate(cfg)
    if not cfg.eval.benchmarks:
        raise _ConfigError("the chosen evaluation suite has no benchmarks; expected benchmarks=(...)")
    # Only a merge has the run config a results row describes (method, parameters, calibration).
    recording = record and merged is not None and model_role == "merged"
    started = _datetime.now(_timezone.utc)
    run_directory: _Path | None = None
    if model_role == "merged":
        run_directory = (
            merged.run_dir if merged is not None and run_dir is None else _new_run_dir(run_dir, default_run_dir)
        )
    with _steps("evaluate", 4 if recording else 3) as steps, ledger() as book:
        with steps("resolving the model"):
            if merged is not None:
                path = merged.output_dir
            else:
                ref = ModelRef(model_role, _overrides.model_name(model, "model"))
                path = resolve_model(ref, cache_dir=cfg.cache_dir, toy_seed=cfg.seed)
        # The evaluated model stands in every role's place, so the CLI's stages see only it.
        model_dirs = [path, path]
        with steps("checking the model's tokenizer"):
            _stages.check_generation_inputs(cfg, model_dirs)
        # Input roles evaluate into the shared cache; only a merged model writes into a run directory.
        (evaluation,) = _stages.evaluate_configured(cfg, model_dirs, path, run_directory or _Path.cwd(), steps)
        results_file = None
        if recording:
            from acm_exp.results import record_run, resolve_results_dir

            with steps("recording the results"):
                results_file = record_run(
                    cfg,
                    run_directory,
                    evaluation.rows,
                    manifest=merged.manifest,
                    coefficients_path=merged.coefficients_path,
                    started_at=started,
                    results_dir=resolve_results_dir(cfg.logger.results_dir),
                    costs=book.to_dict(),
                )
                from acm_exp.tracking import WandbLogger

                with WandbLogger.from_config(cfg, run_directory, overrides=merged.overrides) as tracker:
                    tracker.log_results(
                        evaluation.rows,
                        manifest=merged.manifest,
                        coefficients_path=merged.coefficients_path,
                        costs=book.to_dict(),
                    )
    return EvalResult(
        model=str(model.output_dir if merged is not None else model),
        role=evaluation.role,
        path=evaluation.path,
        rows=evaluation.rows,
        samples=_samples_of(evaluation.rows),
        timings=_timings(book.to_dict()),
        run_dir=run_directory,
        results_file=results_file,
        overrides=tuple(overrides),
    )


# ---------------------------------------------------------------------------------------------
# Results


def load_results(results_dir: "_PathLike | None" = None, **filters: _Any) -> "pd.DataFrame":
    """The results table (every recorded run's rows, one per model, benchmark and seed) as a DataFrame,
    as ``python -m acm_exp.results`` prints it. ``results_dir``: default ``$ACM_EXP_RESULTS_DIR``, else
    ``./outputs/results``. ``filters``: ``column=value`` (a list keeps any of its values).

    Example:
        >>> table = acm_exp.load_results(method="acm_ties", benchmark="toy")
        >>> table[["model", "t", "accuracy", "mean_tokens"]]   # one row per evaluated run
            model    t   accuracy  mean_tokens
        0  merged  0.7  66.666667         31.0
    """
    from acm_exp.results import load_results as load

    return load(results_dir, **filters)


# The package's public names (acm_exp/__init__.py lists them once, so that importing it stays lazy).
__all__ = list(_API_NAMES)

# Names this module had before its helpers moved to their own homes; they keep working, outside the
# namespace: the config composition in acm_exp.overrides, the runs the CLI shares in acm_exp.stages.
_MOVED = {
    "compose_config": _overrides,
    "override_value": _overrides,
    "pair_overrides": _overrides,
    "merge_configured": _stages,
    "evaluate_configured": _stages,
    "prepare_models": _stages,
    "plan_coefficients": _stages,
}
_RENAMED = {"calibration_of": "_calibration_of", "coefficients_of": "_coefficients_of"}


def __getattr__(name: str) -> _Any:
    if name in _MOVED:
        return getattr(_MOVED[name], name)
    if name in _RENAMED:
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module 'acm_exp.api' has no attribute {name!r}")
