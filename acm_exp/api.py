"""The Python API: calibration, ACM coefficients, merges and evaluations from plain Python values.

Each function builds the config that ``python -m acm_exp`` would run for the same settings (Hydra's
compose API over the package's ``conf/`` directory, with the arguments as command-line overrides),
validates it with the CLI's own checks (the same one-line ``acm_exp.errors.ConfigError``) and runs
the CLI's own stage functions from ``acm_exp.stages``: same caches, same run-directory layout,
same manifests and metrics. Every result carries ``overrides``, the CLI arguments that reproduce it.

    >>> import acm_exp
    >>> coefficients = acm_exp.acm_coefficients("toy:base", "toy:finetuned", acm_exp.select_calibration("toy"))
    >>> merged = acm_exp.merge_models("toy:base", "toy:finetuned", "acm_ties", coefficients=coefficients)
    >>> acm_exp.evaluate(merged, limit=5).accuracy    # % per benchmark of the pair's suite
    {'toy': ...}

Arguments left at None keep the CLI's default (which may depend on the model pair: the toy pair
calibrates on its own corpus and evaluates on its own task).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from acm_exp import _API_NAMES
from acm_exp.acm.provider import CoefficientPlan
from acm_exp.config import (
    AcmConfig,
    CalibrationConfig,
    EvalConfig,
    MergeConfig,
    register_configs,
)
from acm_exp.costs import measure
from acm_exp.errors import ConfigError, DataError
from acm_exp.failures import config_error_line
from acm_exp.merge.engine import read_manifest
from acm_exp.outcomes import Calibration, Coefficients, EvalResult, MergeResult
from acm_exp.paths import shared_data_dir
from acm_exp.stages import (
    Models,
    Steps,
    check_generation_inputs,
    check_merge_inputs,
    coefficient_stage,
    evaluation_stage,
    evaluation_targets,
    merge_stage,
    merged_output_dir,
    resolve_models,
    validate,
    write_costs,
)

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from acm_exp.calibration import CalibrationSet
    from acm_exp.merge import MergeMethod
    from acm_exp.merge.engine import MergeInputs

log = logging.getLogger("acm_exp")

PathLike = Union[str, "os.PathLike[str]"]
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CUSTOM_PAIR = "custom"
EVAL_OFF = "eval=none"

# Keyword settings each function accepts, by config section (the fields its arguments do not cover).
CALIBRATION_SETTINGS = tuple(f.name for f in fields(CalibrationConfig) if f.name != "source")
ACM_SETTINGS = tuple(f.name for f in fields(AcmConfig))
MERGE_PARAMETERS = tuple(f.name for f in fields(MergeConfig) if f.name not in ("method", "output_dir"))
PAIR_SETTINGS = (
    "base_revision",
    "finetuned_revisions",
    "tokenizer_from",
    "tied_head",
    "trust_remote_code",
    "allow_pickle",
)
EVAL_SETTINGS = tuple(f.name for f in fields(EvalConfig) if f.name not in ("name", "benchmarks", "models"))


# ---------------------------------------------------------------------------------------------
# The CLI's config from plain values


def _quoted(text: str) -> str:
    """A Hydra override string literal: taken verbatim (no type guessing, commas and colons kept)."""
    # Backslashes right before a quote (or the closing quote) are doubled, then quotes are escaped.
    text = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


# Words Hydra's override grammar reads as something other than a string.
HYDRA_KEYWORDS = ("null", "true", "false", "inf", "nan")


def _is_plain_word(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) is not None and text.lower() not in HYDRA_KEYWORDS


def override_value(key: str, value: Any) -> str:
    """``value`` in Hydra's override grammar, as it would be typed after ``key=`` on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return repr(number)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        # A plain word is written bare, as typed on the command line (Hydra echoes it in its errors).
        return value if _is_plain_word(value) else _quoted(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(key, item) for item in value) + "]"
    raise ConfigError(
        f"{key}={value!r} is a {type(value).__name__}; expected a number, string, bool, path, None or a list of them"
    )


def _assignments(section: str, values: Mapping[str, Any]) -> list[str]:
    """``section.key=value`` overrides; a mapping value sets its keys one by one (merged, not replaced)."""
    overrides = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            overrides += _assignments(f"{section}.{key}", value)
        else:
            overrides.append(f"{section}.{key}={override_value(f'{section}.{key}', value)}")
    return overrides


def _check_names(what: str, given: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"{what}: unknown setting {unknown[0]!r}; expected one of {', '.join(known)}")


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (_conf_dir() / group).glob("*.yaml"))


def _conf_dir() -> Path:
    if not (CONF_DIR / "config.yaml").is_file():
        raise ConfigError(
            f"the config directory {CONF_DIR} is missing; expected the package's checkout "
            "(pip install -e .), which holds conf/ beside acm_exp/"
        )
    return CONF_DIR


def compose_config(overrides: Sequence[str]) -> tuple[DictConfig, str]:
    """The job config ``python -m acm_exp <overrides>`` runs, and its default run directory.

    Hydra's own message for an unknown key or a wrongly typed value becomes a one-line ConfigError.

    Example:
        >>> cfg, run_dir = compose_config(["model_pair=toy", "merge=ties", "merge.k=0.5"])
        >>> cfg.merge.k
        0.5
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    conf_dir = _conf_dir()
    # Called from inside another Hydra app: compose ours, then hand the app its own state back.
    outer = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None, job_name="acm_exp"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
            run_dir = str(cfg.hydra.run.dir)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(config_error_line(error)) from None
    finally:
        restore_gh_from_backup(outer)
    # As the CLI's task function sees it: the hydra node lives apart (HydraConfig).
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


def _model_name(value: Any, role: str) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"model_pair.{role}={value!r}; expected a hub id, a local directory or toy:<role>")
    return value


def _finetuned_names(finetuned: Any) -> list[str]:
    models = [finetuned] if isinstance(finetuned, (str, os.PathLike)) else list(finetuned or [])
    if not models:
        raise ConfigError(
            "model_pair.finetuned is empty; expected one or more hub ids, local directories or toy:<role>"
        )
    return [_model_name(model, f"finetuned[{index}]") for index, model in enumerate(models)]


def _named_pairs() -> dict[str, tuple[str, list[str]]]:
    """conf/model_pair/<name>.yaml -> (base, finetuned) for every pair that names its models."""
    from omegaconf import OmegaConf

    pairs = {}
    for name in _options("model_pair"):
        loaded = OmegaConf.load(_conf_dir() / "model_pair" / f"{name}.yaml")
        node = loaded.get("model_pair", loaded)
        base, finetuned = node.get("base"), node.get("finetuned")
        if isinstance(base, str) and finetuned is not None:
            pairs[name] = (base, [str(model) for model in finetuned])
    return pairs


def pair_overrides(base: Any, finetuned: Any) -> list[str]:
    """``model_pair=<name>`` when a configured pair holds exactly these models (so its prompts, size and
    paper defaults apply, as on the command line), else ``model_pair=custom`` with the models.

    Example:
        >>> pair_overrides("toy:base", "toy:finetuned")
        ['model_pair=toy']
    """
    base_name, finetuned_names = _model_name(base, "base"), _finetuned_names(finetuned)
    for name, models in _named_pairs().items():
        if models == (base_name, finetuned_names):
            return [f"model_pair={name}"]
    return [
        f"model_pair={CUSTOM_PAIR}",
        f"model_pair.base={override_value('model_pair.base', base_name)}",
        f"model_pair.finetuned={override_value('model_pair.finetuned', finetuned_names)}",
    ]


def _pair_of_model(model: str) -> tuple[str, str] | None:
    """(pair, role) of the configured pair that holds ``model`` as its base or a fine-tuned model."""
    for name, (base, finetuned) in _named_pairs().items():
        if model == base:
            return name, "base"
        if model in finetuned:
            return name, "finetuned"
    return None


def _place_overrides(cache_dir: PathLike | None, data_dir: PathLike | None) -> list[str]:
    overrides = []
    if cache_dir is not None:
        overrides.append(f"cache_dir={override_value('cache_dir', Path(cache_dir).expanduser().absolute())}")
    if data_dir is not None:
        overrides.append(f"data_dir={override_value('data_dir', Path(data_dir).expanduser().absolute())}")
    return overrides


def _method_overrides(method: str) -> list[str]:
    """``merge=<option>`` for a configured method (its YAML sets its defaults), else ``merge.method=``."""
    if not isinstance(method, str) or not method:
        raise ConfigError(f"merge.method={method!r}; expected a merge method name such as 'acm_ties'")
    if method in _options("merge"):
        return [f"merge={method}"]
    return [f"merge.method={override_value('merge.method', method)}"]


def _new_run_dir(run_dir: PathLike | None, default: str) -> Path:
    """The given run directory, else the CLI's (``hydra.run.dir``) made unique: calls within the
    same second must not share one."""
    if run_dir is not None:
        chosen = Path(run_dir).expanduser().absolute()
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen
    candidate = Path(default).absolute()
    candidate.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        path = candidate if attempt == 0 else candidate.with_name(f"{candidate.name}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise DataError(f"no free run directory beside {candidate}; pass run_dir=")


# ---------------------------------------------------------------------------------------------
# Progress and costs


@contextmanager
def _steps(title: str, total: int) -> Iterator[Steps]:
    steps = Steps(title, total)
    try:
        yield steps
    finally:
        steps.close()


def _timings(costs: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per stage (stages measured several times, e.g. per model, add up)."""
    seconds: dict[str, float] = {}
    for stage in costs.get("stages", []):
        seconds[stage["stage"]] = round(seconds.get(stage["stage"], 0.0) + float(stage["wall_s"]), 3)
    return seconds


# ---------------------------------------------------------------------------------------------
# The stages on a composed config: the CLI's job (acm_exp.pipeline.run) is these calls in order


def calibration_of(selected: CalibrationSet, cfg: DictConfig, overrides: Sequence[str]) -> Calibration:
    """A calibration selection as the API returns it."""
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


def coefficients_of(
    plan: CoefficientPlan, cfg: DictConfig, run_dir: Path, overrides: Sequence[str], settings_overrides: Sequence[str]
) -> Coefficients:
    """The ACM provider's plan as the API returns it: λ per point and model, and the calibration."""
    from acm_exp.acm import Coefficients as LayerCoefficients

    return Coefficients(
        base=str(cfg.model_pair.base),
        finetuned=tuple(str(m) for m in cfg.model_pair.finetuned),
        acm=LayerCoefficients.from_json(plan.coefficients_path),
        calibration=calibration_of(plan.calibration, cfg, overrides),
        against=str(cfg.acm.against),
        method=str(cfg.merge.method),
        run_dir=run_dir,
        path=Path(plan.coefficients_path),
        overrides=tuple(overrides),
        settings_overrides=tuple(settings_overrides),
        plan=plan,
    )


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


def plan_coefficients(cfg: DictConfig, method: MergeMethod, models: Models, run_dir: Path, steps: Steps):
    """The method's coefficient plan (nothing to compute for a plain method)."""
    provider = method.coefficients
    with steps(f"computing {provider} coefficients" if provider else "planning"):
        with measure("coefficients", provider=provider):
            return coefficient_stage(cfg, method, models.refs, models.dirs, run_dir)


def merge_configured(
    cfg: DictConfig,
    method: MergeMethod,
    run_dir: Path,
    steps: Steps,
    *,
    coefficients: Coefficients | None = None,
    overrides: Sequence[str] = (),
    settings_overrides: Sequence[str] = (),
    merge_params: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Resolve and check the models, compute the method's coefficients (or take ``coefficients``) and
    merge into the configured output (an identical complete merge there is reused)."""
    models, inputs = prepare_models(cfg, run_dir, steps)
    try:
        if coefficients is not None:
            plan = _plan_from(coefficients, cfg, method, merge_params or {})
        else:
            plan = plan_coefficients(cfg, method, models, run_dir, steps)
            if method.coefficients == "acm":
                coefficients = coefficients_of(plan, cfg, run_dir, overrides, settings_overrides)
        with steps("the merge"), measure("merge", method=plan.method.name) as merge_cost:
            merged_dir = merge_stage(
                cfg, plan.method, models.dirs, merged_output_dir(cfg, run_dir), plan, inputs=inputs
            )
    finally:
        inputs.close()
    log.info("merged model: %s", merged_dir)
    return MergeResult(
        output_dir=merged_dir,
        manifest=read_manifest(merged_dir) or {},
        timings={},
        run_dir=run_dir,
        method=str(cfg.merge.method),
        reused=merge_cost.cached,
        coefficients=coefficients,
        coefficients_path=plan.coefficients_path,
        overrides=tuple(overrides),
        inputs=tuple(models.dirs),
    )


def evaluate_configured(
    cfg: DictConfig, model_dirs: Sequence[Path], merged_dir: Path, run_dir: Path, steps: Steps
) -> list[EvalResult]:
    """Evaluate every model of ``cfg.eval.models`` on the configured benchmarks: one result per model.

    The per-sample records stay in the files the rows name (``samples_path``); ``evaluate`` reads
    them into its result, the CLI's job needs only the rows."""
    with steps("evaluation"):
        rows = evaluation_stage(cfg, list(model_dirs), merged_dir, run_dir)
    return [
        EvalResult(
            model=target.label,
            role=target.role,
            path=Path(target.path),
            rows=[row for row in rows if row.get("model") == target.label],
            samples={},
            timings={},
            run_dir=run_dir if target.role == "merged" else None,
        )
        for target in evaluation_targets(cfg, list(model_dirs), merged_dir)
    ]


def _samples_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The per-sample records of every benchmark the rows describe, read from their sample files."""
    from acm_exp.eval.samples import read_records

    samples: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("samples_path"):
            samples.setdefault(row["benchmark"], []).extend(read_records(Path(row["samples_path"])) or [])
    return samples


# ---------------------------------------------------------------------------------------------
# Calibration


def _calibration_overrides(source: str, settings: Mapping[str, Any]) -> list[str]:
    """``calibration=<option>`` for a configured corpus, else the CLI default's selection settings
    with ``calibration.source`` pointing at the file or hub dataset (named after it)."""
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ConfigError(
            f"calibration.source={source!r}; expected 's1k', 'limo', 'toy', a .json/.jsonl path or a hub dataset id"
        )
    _check_names("select_calibration", settings, CALIBRATION_SETTINGS)
    source = os.fspath(source)
    if source in _options("calibration"):
        overrides = [f"calibration={source}"]
    else:
        name = settings.get("name") or Path(source).stem.lower()
        overrides = [
            "calibration=s1k",
            f"calibration.source={override_value('calibration.source', source)}",
            f"calibration.name={override_value('calibration.name', name)}",
        ]
    return overrides + _assignments(
        "calibration", {k: v for k, v in settings.items() if k != "name" or source in _options("calibration")}
    )


def _calibration_choice(calibration: Calibration | str | None) -> list[str]:
    """The overrides that select ``calibration``: a selection's own, a source's, or none (the model
    pair's default corpus, as on the command line)."""
    if isinstance(calibration, Calibration):
        return [item for item in calibration.overrides if item.startswith("calibration")]
    return [] if calibration is None else _calibration_overrides(calibration, {})


def _coefficient_overrides(
    calibration: Calibration | str | None, t: float, shift: str, reduce: str, acm_settings: Mapping[str, Any]
) -> list[str]:
    _check_names("acm_coefficients", acm_settings, ACM_SETTINGS)
    merge_settings = {"t": t, "shift": shift, "reduce": reduce}
    return _calibration_choice(calibration) + _assignments("merge", merge_settings) + _assignments("acm", acm_settings)


def select_calibration(
    source: str = "s1k", *, cache_dir: PathLike | None = None, data_dir: PathLike | None = None, **settings: Any
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

    overrides = _calibration_overrides(source, settings) + _place_overrides(cache_dir, data_dir)
    cfg, _ = compose_config(overrides)
    validate_config(cfg.calibration)
    with _steps("calibration", 1) as steps, steps("selecting the calibration set"):
        selected = select(cfg.calibration, data_dir=shared_data_dir(cfg.data_dir), cache_dir=cfg.cache_dir)
    return calibration_of(selected, cfg, overrides)


# ---------------------------------------------------------------------------------------------
# Models and coefficients


ACM_METHODS = "acm_ta, acm_ties, acm_dare, acm_average"


def acm_coefficients(
    base: PathLike,
    finetuned: PathLike | Sequence[PathLike],
    calibration: Calibration | str | None = None,
    t: float = 0.7,
    *,
    shift: str = "per_point_max",
    reduce: str = "mean_of_sigmoids",
    method: str = "acm_ties",
    run_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    data_dir: PathLike | None = None,
    **acm_settings: Any,
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

    settings_overrides = _coefficient_overrides(calibration, t, shift, reduce, acm_settings)
    overrides = (
        pair_overrides(base, finetuned)
        + _method_overrides(method)
        + settings_overrides
        + [EVAL_OFF]
        + _place_overrides(cache_dir, data_dir)
    )
    cfg, default_run_dir = compose_config(overrides)
    checked = validate(cfg)
    if checked.coefficients != "acm":
        raise ConfigError(f"method={method!r} takes no ACM coefficients; expected an ACM method ({ACM_METHODS})")
    run_directory = _new_run_dir(run_dir, default_run_dir)
    with _steps("ACM coefficients", 4) as steps, ledger() as book:
        models, inputs = prepare_models(cfg, run_directory, steps)
        inputs.close()
        plan = plan_coefficients(cfg, checked, models, run_directory, steps)
    coefficients = coefficients_of(plan, cfg, run_directory, overrides, settings_overrides)
    if isinstance(calibration, Calibration) and coefficients.calibration.selection_hash != calibration.selection_hash:
        raise DataError(
            f"the calibration selection changed while computing the coefficients "
            f"({coefficients.calibration.selection_hash} != {calibration.selection_hash}); the corpus or its "
            "cache was modified, select it again"
        )
    return replace(coefficients, timings=_timings(book.to_dict()))


# ---------------------------------------------------------------------------------------------
# Merge


def _split_merge_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    _check_names("merge_models", params, MERGE_PARAMETERS + PAIR_SETTINGS)
    pair = {key: value for key, value in params.items() if key in PAIR_SETTINGS}
    return {key: value for key, value in params.items() if key not in PAIR_SETTINGS}, pair


def _plan_from(coefficients: Coefficients, cfg: DictConfig, method, merge_params: Mapping[str, Any]) -> CoefficientPlan:
    """The CLI's coefficient plan for ``method`` from coefficients computed earlier."""
    from acm_exp import merge_parameters

    if method.coefficients != "acm":
        raise ConfigError(
            f"coefficients= given, but merge method {method.name!r} takes no ACM coefficients; "
            f"expected an ACM method ({ACM_METHODS})"
        )
    models = (str(cfg.model_pair.base), tuple(str(m) for m in cfg.model_pair.finetuned))
    if models != (coefficients.base, coefficients.finetuned):
        raise ConfigError(
            f"coefficients were computed for {coefficients.base} + {list(coefficients.finetuned)}; "
            f"expected the merged models {models[0]} + {list(models[1])}"
        )
    if coefficients.plan is None:
        raise ConfigError(
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
            raise ConfigError(
                f"merge {key}={configured!r} differs from the coefficients' {key}={value!r}; expected "
                "the same value (or compute coefficients with it)"
            )
    if coefficients.against == "merged":
        # λ then rescales that method's plain merge: it was built with the coefficients.
        if method.name != coefficients.method:
            raise ConfigError(
                f"coefficients with against='merged' rescale a {coefficients.method} merge; expected "
                f"method={coefficients.method!r}, got {method.name!r}"
            )
        acm_settings = {parameter.name for parameter in merge_parameters.ACM_PARAMETERS}
        changed = sorted(set(merge_params) & set(merge_parameters.MERGE_PARAMETERS) - acm_settings)
        if changed:
            raise ConfigError(
                f"coefficients with against='merged' rescale the plain merge built with the method's "
                f"configured parameters; expected no {', '.join(changed)} here"
            )
        return coefficients.plan
    plan = coefficients.plan
    return CoefficientPlan(method, plan.adjust, plan.manifest, plan.coefficients_path)


def merge_models(
    base: PathLike,
    finetuned: PathLike | Sequence[PathLike],
    method: str = "acm_ties",
    out: PathLike | None = None,
    *,
    coefficients: Coefficients | None = None,
    calibration: Calibration | str | None = None,
    run_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    data_dir: PathLike | None = None,
    **params: Any,
) -> MergeResult:
    """Merge ``finetuned`` into ``base`` with any registered method, as
    ``python -m acm_exp merge=<method> merge.<param>=<value> merge.output_dir=<out> eval=none``.

    ``params``: the method's hyper-parameters and merge settings (``scale``, ``k``, ``p``, ``combine``,
    ``gamma``, ``t``, ``omega``, ``base_method``, ``alpha``, ``temperature``, ``dtype``, ``device``,
    ``shard_size``, ``seed``, ``overwrite``, ...) and the pair's ``tokenizer_from``, ``tied_head``,
    ``allow_pickle``, ``trust_remote_code``, revisions. ``out``: the output directory (default
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
        raise ConfigError(f"coefficients={type(coefficients).__name__}; expected the result of acm_coefficients()")
    if coefficients is not None and calibration is not None:
        raise ConfigError(
            "both coefficients= and calibration= given; "
            "expected one (the coefficients already fix their calibration set)"
        )
    if coefficients is not None:
        settings = list(coefficients.settings_overrides)
    else:
        coefficient_params = {key: value for key, value in merge_params.items() if key in ("t", "shift", "reduce")}
        settings = _calibration_choice(calibration) + _assignments("merge", coefficient_params)
    output = (
        []
        if out is None
        else [f"merge.output_dir={override_value('merge.output_dir', Path(out).expanduser().absolute())}"]
    )
    overrides = (
        pair_overrides(base, finetuned)
        + _assignments("model_pair", pair_settings)
        + _method_overrides(method)
        + settings
        + _assignments("merge", merge_params)
        + output
        + [EVAL_OFF]
        + _place_overrides(cache_dir, data_dir)
    )
    cfg, default_run_dir = compose_config(overrides)
    checked = validate(cfg)
    if coefficients is not None:
        _plan_from(coefficients, cfg, checked, merge_params)  # refuse a mismatch before any work
    run_directory = (
        _new_run_dir(run_dir, default_run_dir) if run_dir is not None or coefficients is None else coefficients.run_dir
    )
    OmegaConf.save(cfg, run_directory / "resolved_config.yaml", resolve=True)
    # resolve, check the models, check the tokenizers, [coefficients or planning,] merge
    total = 4 if coefficients is not None else 5
    with _steps(f"merge {checked.name}", total) as steps, ledger() as book:
        merged = merge_configured(
            cfg,
            checked,
            run_directory,
            steps,
            coefficients=coefficients,
            overrides=overrides,
            settings_overrides=settings,
            merge_params=merge_params,
        )
    costs = book.to_dict()
    write_costs(book, run_directory)
    return replace(merged, timings=_timings(costs), costs=costs)


# ---------------------------------------------------------------------------------------------
# Evaluation


def _benchmark_overrides(cfg: DictConfig, benchmarks: Sequence[str] | str | None) -> list[str]:
    """Turn the suite the config chose into exactly ``benchmarks`` (conf/eval/benchmark/<name>.yaml)."""
    if benchmarks is None:
        return []
    wanted = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    available = _options("eval/benchmark")
    for name in wanted:
        if name not in available:
            raise ConfigError(f"benchmark {name!r} is unknown; expected any of {', '.join(available)}")
    if not wanted:
        raise ConfigError("benchmarks is empty; expected one or more of " + ", ".join(available))
    chosen = list(cfg.eval.benchmarks)
    return [f"~eval.benchmarks.{name}" for name in chosen if name not in wanted] + [
        f"+eval/benchmark@eval.benchmarks.{name}={name}" for name in wanted if name not in chosen
    ]


def _eval_overrides(
    role: str,
    backend: str | None,
    limit: int | None,
    max_new_tokens: int | None,
    seeds: Sequence[int] | None,
    prompt: str | None,
    eval_settings: Mapping[str, Any],
) -> list[str]:
    _check_names("evaluate", eval_settings, EVAL_SETTINGS)
    values: dict[str, Any] = {"models": [role]}
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
    return _assignments("eval", values)


def _evaluated_model(model: Any, role: str | None) -> tuple[list[str], str, MergeResult | None]:
    """(the model's pair overrides, its role, the merge it came from) for a model or a MergeResult."""
    if isinstance(model, MergeResult):
        return [item for item in model.overrides if item != EVAL_OFF], role or "merged", model
    name = _model_name(model, "model")
    found = _pair_of_model(name)
    if found is not None:
        pair, pair_role = found
        return [f"model_pair={pair}"], role or pair_role, None
    return pair_overrides(name, [name]), role or "finetuned", None


def evaluate(
    model: PathLike | MergeResult,
    benchmarks: Sequence[str] | str | None = None,
    backend: str | None = None,
    limit: int | None = None,
    *,
    role: str | None = None,
    max_new_tokens: int | None = None,
    seeds: Sequence[int] | None = None,
    prompt: str | None = None,
    run_dir: PathLike | None = None,
    results_dir: PathLike | None = None,
    record: bool = True,
    cache_dir: PathLike | None = None,
    data_dir: PathLike | None = None,
    **eval_settings: Any,
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
    to ``<run_dir>/eval/merged`` and, with ``record``, into the results table (``load_results``).

    Example:
        >>> result = acm_exp.evaluate(merged, ("toy",), limit=5, max_new_tokens=64)
        >>> list(result.metrics[["benchmark", "n"]].itertuples(index=False, name=None))
        [('toy', 5)]
    """
    from acm_exp.costs import ledger
    from acm_exp.models import ModelRef, resolve_model

    model_overrides, model_role, merged = _evaluated_model(model, role)
    if results_dir is not None:
        results = Path(results_dir).expanduser().absolute()
        model_overrides = model_overrides + [f"logger.results_dir={override_value('logger.results_dir', results)}"]
    place = _place_overrides(cache_dir, data_dir)
    base_cfg, _ = compose_config(model_overrides + place)
    overrides = (
        model_overrides
        + _benchmark_overrides(base_cfg, benchmarks)
        + _eval_overrides(model_role, backend, limit, max_new_tokens, seeds, prompt, eval_settings)
        + place
    )
    cfg, default_run_dir = compose_config(overrides)
    validate(cfg)
    if not cfg.eval.benchmarks:
        raise ConfigError("the chosen evaluation suite has no benchmarks; expected benchmarks=(...)")
    # Only a merge has the run config a results row describes (method, parameters, calibration).
    recording = record and merged is not None and model_role == "merged"
    started = datetime.now(timezone.utc)
    run_directory: Path | None = None
    if model_role == "merged":
        run_directory = (
            merged.run_dir if merged is not None and run_dir is None else _new_run_dir(run_dir, default_run_dir)
        )
    with _steps("evaluate", 4 if recording else 3) as steps, ledger() as book:
        with steps("resolving the model"):
            if merged is not None:
                path = merged.output_dir
            else:
                ref = ModelRef(model_role, _model_name(model, "model"))
                path = resolve_model(ref, cache_dir=cfg.cache_dir, toy_seed=cfg.seed)
        # The evaluated model stands in every role's place, so the CLI's stages see only it.
        model_dirs = [path, path]
        with steps("checking the model's tokenizer"):
            check_generation_inputs(cfg, model_dirs)
        # Input roles evaluate into the shared cache; only a merged model writes into a run directory.
        (result,) = evaluate_configured(cfg, model_dirs, path, run_directory or Path.cwd(), steps)
        results_file = None
        if recording:
            from acm_exp.results import record_run, resolve_results_dir

            with steps("recording the results"):
                results_file = record_run(
                    cfg,
                    run_directory,
                    result.rows,
                    manifest=merged.manifest,
                    coefficients_path=merged.coefficients_path,
                    started_at=started,
                    results_dir=resolve_results_dir(cfg.logger.results_dir),
                    costs=book.to_dict(),
                )
    return replace(
        result,
        model=str(model.output_dir if merged is not None else model),
        samples=_samples_of(result.rows),
        timings=_timings(book.to_dict()),
        run_dir=run_directory,
        results_file=results_file,
        overrides=tuple(overrides),
    )


# ---------------------------------------------------------------------------------------------
# Results


def load_results(results_dir: PathLike | None = None, **filters: Any) -> pd.DataFrame:
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
