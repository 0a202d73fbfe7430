"""The Python API: calibration, ACM coefficients, merges and evaluations from plain Python values.

Each function builds the config that ``python -m acm_exp`` would run for the same settings (Hydra's
compose API over the package's ``conf/`` directory, with the arguments as command-line overrides),
validates it with the CLI's own checks (the same one-line ``acm_exp.errors.ConfigError``) and runs
the CLI's own stage functions from ``acm_exp.pipeline``: same caches, same run-directory layout,
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

import html
import logging
import math
import numbers
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from acm_exp.config import (
    AcmConfig,
    CalibrationConfig,
    EvalConfig,
    MergeConfig,
    register_configs,
)
from acm_exp.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from acm_exp.acm import Coefficients as LayerCoefficients
    from acm_exp.pipeline import CoefficientPlan

log = logging.getLogger("acm_exp")

PathLike = Union[str, "os.PathLike[str]"]
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CUSTOM_PAIR = "custom"
EVAL_OFF = "eval=none"
HTML_TEXT_CHARS = 160
HTML_MAX_ROWS = 40

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
        return _quoted(value)
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


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
        raise ConfigError(_one_line(error)) from None
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


class _Stages:
    """One notebook-friendly progress bar over a call's stages; each stage also tags a failure with
    its name (acm_exp.failures.stage), as in the CLI."""

    def __init__(self, title: str, names: Sequence[str]):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=len(names), desc=title, unit="stage")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        from acm_exp.failures import stage

        self._bar.set_postfix_str(name)
        log.info("%s", name)
        with stage(name):
            yield
        self._bar.update(1)

    def close(self) -> None:
        self._bar.set_postfix_str("done")
        self._bar.close()


@contextmanager
def _progress(title: str, names: Sequence[str]) -> Iterator[_Stages]:
    stages = _Stages(title, names)
    try:
        yield stages
    finally:
        stages.close()


def _timings(costs: Mapping[str, Any]) -> dict[str, float]:
    """Seconds per stage (stages measured several times, e.g. per model, add up)."""
    seconds: dict[str, float] = {}
    for stage in costs.get("stages", []):
        seconds[stage["stage"]] = round(seconds.get(stage["stage"], 0.0) + float(stage["wall_s"]), 3)
    return seconds


# ---------------------------------------------------------------------------------------------
# Rendering


def _short(text: Any, limit: int = HTML_TEXT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _html_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows[:HTML_MAX_ROWS]
    )
    more = f"<p>… {len(rows) - HTML_MAX_ROWS} more rows</p>" if len(rows) > HTML_MAX_ROWS else ""
    note_html = f"<p>{html.escape(note)}</p>" if note else ""
    return (
        f"<div><strong>{html.escape(title)}</strong>{note_html}<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{more}</div>"
    )


def _key_value_html(title: str, items: Mapping[str, Any]) -> str:
    return _html_table(title, ("", ""), [(key, value) for key, value in items.items()])


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Calibration:
    """A calibration selection: the texts fed to the models, the corpus rows they came from and the
    settings that picked them (``settings``: the resolved ``calibration`` config).

    Example:
        >>> calibration = acm_exp.select_calibration("toy", per_cluster=2)
        >>> len(calibration), calibration.spec
        (8, 'toy[:400]:cluster(k=4,per=2,seed=42)')
        >>> calibration.texts[0]
        '8 + 3 + 4 + 8'
    """

    texts: list[str]
    indices: list[int]
    spec: str
    selection_hash: str
    corpus_size: int
    settings: dict[str, Any]
    cluster_labels: list[int] | None = None
    overrides: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (
            f"Calibration({self.spec}: {len(self.texts)} of {self.corpus_size} rows, selection {self.selection_hash})"
        )

    def _repr_html_(self) -> str:
        labels = self.cluster_labels or [""] * len(self.texts)
        rows = [
            (index, label, _short(text)) for index, label, text in zip(self.indices, labels, self.texts, strict=False)
        ]
        return _html_table(repr(self), ("row", "cluster", "text"), rows)


@dataclass(frozen=True)
class Coefficients:
    """ACM's λ per capture point (embedding, each decoder layer, final norm, head) and fine-tuned
    model, from the MI between the base's and that model's activations on the calibration texts.

    ``lambdas[model][point]``; ``for_parameter(name)`` gives the λ a checkpoint tensor is merged
    with. The run directory holds ``coefficients.json`` (``path``; λ, MI summary and per-sample MI,
    the same file the CLI writes), ``coefficients.png`` and ``calibration.json``.

    Example:
        >>> calibration = acm_exp.select_calibration("toy", per_cluster=2)
        >>> coefficients = acm_exp.acm_coefficients("toy:base", "toy:finetuned", calibration, t=0.7)
        >>> coefficients.for_parameter("model.layers.1.mlp.up_proj.weight")  # layer 1's λ
        0.5099...
        >>> coefficients.to_dict()["models"][0]["points"]["lm_head"]["lambda"]
        0.5663...
    """

    base: str
    finetuned: tuple[str, ...]
    acm: LayerCoefficients = field(repr=False)
    calibration: Calibration = field(repr=False)
    against: str
    method: str
    run_dir: Path
    path: Path
    timings: dict[str, float] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    # The CLI overrides that fix how these coefficients were computed (t, shift, reduce, acm.*,
    # calibration.*): a merge with these coefficients composes them too.
    settings_overrides: tuple[str, ...] = field(default=(), repr=False)
    plan: CoefficientPlan | None = field(default=None, repr=False, compare=False)

    @property
    def t(self) -> float:
        return self.acm.t

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(self.acm.point_names)

    @property
    def lambdas(self) -> dict[str, dict[str, float]]:
        return {
            model: {point: self.acm.for_point(index, point) for point in self.points}
            for index, model in enumerate(self.acm.model_names)
        }

    @property
    def mi_cache_key(self) -> str | None:
        return self.acm.statistics.metadata.get("cache_key")

    def for_point(self, point: str, model: int = 0) -> float:
        """λ of capture point ``point`` (``layers.3``, ``embed_tokens``, ``norm``, ``lm_head``)."""
        return self.acm.for_point(model, point)

    def for_parameter(self, name: str, model: int = 0) -> float:
        """λ of the checkpoint tensor ``name`` (every tensor of decoder layer i takes layer i's λ)."""
        return self.acm.for_parameter(model, name)

    def to_dict(self) -> dict[str, Any]:
        """What ``coefficients.json`` holds: t, shift, reduce, and per model and point λ and MI."""
        return self.acm.to_dict()

    def plot(self, path: PathLike | None = None) -> Path:
        """Draw λ per layer (one line per fine-tuned model) to ``path`` (default: the run's
        ``coefficients.png``); returns the PNG's path (``IPython.display.Image(path)`` shows it)."""
        return self.acm.plot(Path(path) if path is not None else self.run_dir / "coefficients.png")

    def __repr__(self) -> str:
        values = [value for model in self.lambdas.values() for value in model.values()]
        return (
            f"Coefficients(t={self.t:g}, {self.acm.shift}, {self.acm.reduce}, {len(self.points)} points "
            f"x {len(self.finetuned)} model(s), λ in [{min(values):.4f}, {max(values):.4f}], {self.path})"
        )

    def _repr_html_(self) -> str:
        models = list(self.acm.model_names)
        mean_mi = {
            (index, point): self.acm.statistics.summary(index)[point]
            for index in range(len(models))
            for point in self.points
        }
        rows = [
            (
                point,
                *(f"{self.acm.for_point(index, point):.4f}" for index in range(len(models))),
                *(_short(mean_mi[index, point], 40) for index in range(len(models))),
            )
            for point in self.points
        ]
        header = ("point", *(f"λ {model}" for model in models), *(f"MI {model}" for model in models))
        return _html_table(repr(self), header, rows)


@dataclass(frozen=True)
class MergeResult:
    """A finished merge: its output directory, ``merge_manifest.json`` (method, parameters, inputs
    with content hashes, ``request_fingerprint``), seconds per stage and the run directory.

    Example:
        >>> merged = acm_exp.merge_models("toy:base", "toy:finetuned", "ties", k=0.5)
        >>> merged.output_dir.name, merged.manifest["parameters"]["k"]
        ('merged', 0.5)
        >>> sorted(merged.timings)
        ['coefficients', 'merge']
    """

    output_dir: Path
    manifest: dict[str, Any] = field(repr=False)
    timings: dict[str, float]
    run_dir: Path
    method: str
    reused: bool = False
    coefficients: Coefficients | None = field(default=None, repr=False)
    coefficients_path: Path | None = field(default=None, repr=False)
    costs: dict[str, Any] = field(default_factory=dict, repr=False)
    overrides: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str | None:
        """What identifies the merge's result (method, parameters, inputs, coefficient settings)."""
        return self.manifest.get("request_fingerprint")

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.manifest.get("parameters") or {})

    def __repr__(self) -> str:
        parameters = ", ".join(f"{key}={value}" for key, value in self.parameters.items())
        status = "reused" if self.reused else f"{sum(self.timings.values()):.1f} s"
        return (
            f"MergeResult({self.method}({parameters}) -> {self.output_dir}, {status}, fingerprint {self.fingerprint})"
        )

    def _repr_html_(self) -> str:
        inputs = {
            entry.get("role", "?"): f"{entry.get('path')} ({entry.get('content_hash')})"
            for entry in self.manifest.get("inputs", [])
        }
        items = {
            "method": self.method,
            **{f"merge.{k}": v for k, v in self.parameters.items()},
            **inputs,
            "output": self.output_dir,
            "fingerprint": self.fingerprint,
            "reused": self.reused,
            **{f"{stage} (s)": seconds for stage, seconds in self.timings.items()},
            "run_dir": self.run_dir,
        }
        return _key_value_html(f"MergeResult: {self.method}", items)


@dataclass(frozen=True)
class EvalResult:
    """One model's evaluation: metric rows (accuracy %, mean response tokens, truncation rate, per
    benchmark and seed, plus the seed mean with several seeds) and the per-sample records (prompt,
    response, extracted and gold answer, correctness, tokens) per benchmark.

    Example:
        >>> result = acm_exp.evaluate("toy:finetuned", ("toy",), limit=5)
        >>> result.accuracy
        {'toy': ...}
        >>> sorted(result.samples["toy"][0])[:4]
        ['correct', 'extracted', 'finish_reason', 'generated_tokens']
    """

    model: str
    role: str
    path: Path
    rows: list[dict[str, Any]] = field(repr=False)
    samples: dict[str, list[dict[str, Any]]] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    results_file: Path | None = None
    overrides: tuple[str, ...] = ()

    def _summary_rows(self) -> list[dict[str, Any]]:
        several = {row["benchmark"] for row in self.rows if row.get("seed") is None}
        return [row for row in self.rows if (row.get("seed") is None) == (row["benchmark"] in several)]

    @property
    def metrics(self) -> pd.DataFrame:
        """The metric rows as a table (one row per benchmark and seed, and the seed mean)."""
        import pandas as pd

        return pd.DataFrame(self.rows).drop(columns=["samples_path"], errors="ignore")

    @property
    def accuracy(self) -> dict[str, float]:
        """Accuracy (%) per benchmark (the seed mean when several seeds ran)."""
        return {row["benchmark"]: float(row["accuracy"]) for row in self._summary_rows()}

    def __repr__(self) -> str:
        cells = ", ".join(
            f"{row['benchmark']}: {row['accuracy']:.1f}% / {row['mean_tokens']:.0f} tok (n={row['n']})"
            for row in self._summary_rows()
        )
        return f"EvalResult({self.model} [{self.role}]: {cells})"

    def _repr_html_(self) -> str:
        columns = ("benchmark", "seed", "n", "accuracy", "mean_tokens", "truncation_rate", "reflections")
        rows = [tuple(_short(row.get(column), 40) for column in columns) for row in self.rows]
        return _html_table(f"EvalResult: {self.model} [{self.role}]", columns, rows, note=str(self.path))


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


def _calibration_from(cfg: DictConfig, overrides: Sequence[str]) -> Calibration:
    """The selection the pipeline's calibration stage makes for ``cfg`` (the same call, same caches)."""
    from omegaconf import OmegaConf

    from acm_exp.calibration import select_calibration as select
    from acm_exp.pipeline import data_dir

    selected = select(cfg.calibration, data_dir=data_dir(cfg), cache_dir=cfg.cache_dir)
    return Calibration(
        texts=list(selected.texts),
        indices=[int(i) for i in selected.indices],
        spec=selected.spec,
        selection_hash=selected.selection_hash,
        corpus_size=selected.corpus_size,
        settings=OmegaConf.to_container(cfg.calibration, resolve=True),
        cluster_labels=selected.cluster_labels,
        overrides=tuple(overrides),
    )


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
    from acm_exp.calibration import validate_config

    overrides = _calibration_overrides(source, settings) + _place_overrides(cache_dir, data_dir)
    cfg, _ = compose_config(overrides)
    validate_config(cfg.calibration)
    with _progress("calibration", ["selecting the calibration set"]) as progress:
        with progress.stage("selecting the calibration set"):
            return _calibration_from(cfg, overrides)


# ---------------------------------------------------------------------------------------------
# Models and coefficients


def _resolve_models(cfg: DictConfig) -> tuple[list, list[Path]]:
    from acm_exp.models import model_refs, resolve_model

    refs = model_refs(cfg.model_pair)
    return refs, [resolve_model(ref, cache_dir=cfg.cache_dir, toy_seed=cfg.seed) for ref in refs]


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


def _compute_coefficients(
    cfg: DictConfig,
    method,
    refs,
    model_dirs: list[Path],
    run_dir: Path,
    calibration: Calibration | None,
    overrides: Sequence[str],
    settings_overrides: Sequence[str],
    progress: _Stages,
) -> Coefficients:
    """The pipeline's ACM stage (calibration, cached MI statistics, λ), wrapped as a Coefficients."""
    from acm_exp.acm import Coefficients as LayerCoefficients
    from acm_exp.costs import measure
    from acm_exp.pipeline import coefficient_stage

    with progress.stage("selecting the calibration set"):
        if calibration is None:
            calibration = _calibration_from(cfg, [item for item in overrides if item.startswith("calibration")])
    with progress.stage("computing acm coefficients"), measure("coefficients", provider=method.coefficients):
        plan = coefficient_stage(cfg, method, refs, model_dirs, run_dir)
    selected = plan.manifest["calibration"]["selection_hash"]
    if selected != calibration.selection_hash:
        raise DataError(
            f"the calibration selection changed while computing the coefficients ({selected} != "
            f"{calibration.selection_hash}); the corpus or its cache was modified, select it again"
        )
    return Coefficients(
        base=str(cfg.model_pair.base),
        finetuned=tuple(str(m) for m in cfg.model_pair.finetuned),
        acm=LayerCoefficients.from_json(plan.coefficients_path),
        calibration=calibration,
        against=str(cfg.acm.against),
        method=str(cfg.merge.method),
        run_dir=run_dir,
        path=Path(plan.coefficients_path),
        overrides=tuple(overrides),
        settings_overrides=tuple(settings_overrides),
        plan=plan,
    )


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
    from acm_exp.pipeline import check_merge_inputs, merged_output_dir, validate

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
        raise ConfigError(
            f"method={method!r} takes no ACM coefficients; expected an ACM method "
            "(acm_ta, acm_ties, acm_dare, acm_average)"
        )
    run_directory = _new_run_dir(run_dir, default_run_dir)
    stages = [
        "resolving the models",
        "checking the models",
        "selecting the calibration set",
        "computing acm coefficients",
    ]
    with _progress("ACM coefficients", stages) as progress, ledger() as book:
        with progress.stage("resolving the models"):
            refs, model_dirs = _resolve_models(cfg)
        with progress.stage("checking the models"):
            check_merge_inputs(cfg, model_dirs, merged_output_dir(cfg, run_directory))
        given = calibration if isinstance(calibration, Calibration) else None
        coefficients = _compute_coefficients(
            cfg, checked, refs, model_dirs, run_directory, given, overrides, settings_overrides, progress
        )
    return _with_timings(coefficients, _timings(book.to_dict()))


def _with_timings(coefficients: Coefficients, timings: dict[str, float]) -> Coefficients:
    from dataclasses import replace

    return replace(coefficients, timings=timings)


# ---------------------------------------------------------------------------------------------
# Merge


def _split_merge_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    _check_names("merge_models", params, MERGE_PARAMETERS + PAIR_SETTINGS)
    pair = {key: value for key, value in params.items() if key in PAIR_SETTINGS}
    return {key: value for key, value in params.items() if key not in PAIR_SETTINGS}, pair


def _plan_from(coefficients: Coefficients, cfg: DictConfig, method, merge_params: Mapping[str, Any]) -> CoefficientPlan:
    """The CLI's coefficient plan for ``method`` from coefficients computed earlier."""
    from acm_exp.pipeline import METHOD_FIELDS, CoefficientPlan

    if method.coefficients != "acm":
        raise ConfigError(
            f"coefficients= given, but merge method {method.name!r} takes no ACM coefficients; "
            "expected an ACM method (acm_ta, acm_ties, acm_dare, acm_average)"
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
        changed = sorted(set(merge_params) & set(METHOD_FIELDS) - {"t", "shift", "reduce"})
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
    from acm_exp.costs import ledger, measure
    from acm_exp.merge import get_method
    from acm_exp.merge.engine import read_manifest
    from acm_exp.pipeline import (
        check_merge_inputs,
        coefficient_stage,
        merge_stage,
        merged_output_dir,
        validate,
        write_costs,
    )

    merge_params, pair_settings = _split_merge_params(params)
    if coefficients is not None and not isinstance(coefficients, Coefficients):
        raise ConfigError(f"coefficients={type(coefficients).__name__}; expected the result of acm_coefficients()")
    if coefficients is not None and calibration is not None:
        raise ConfigError(
            "both coefficients= and calibration= given; expected one (the coefficients already "
            "fix their calibration set)"
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
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, run_directory / "resolved_config.yaml", resolve=True)
    computes_acm = checked.coefficients == "acm" and coefficients is None
    stages = ["resolving the models", "checking the models and the merge output"]
    stages += (
        ["selecting the calibration set", "computing acm coefficients"]
        if computes_acm
        else [f"computing {checked.coefficients} coefficients"]
        if checked.coefficients and coefficients is None
        else []
    )
    stages += ["merging"]
    with _progress(f"merge {get_method(cfg.merge.method).name}", stages) as progress, ledger() as book:
        with progress.stage("resolving the models"):
            refs, model_dirs = _resolve_models(cfg)
        output_dir = merged_output_dir(cfg, run_directory)
        with progress.stage("checking the models and the merge output"):
            check_merge_inputs(cfg, model_dirs, output_dir)
        if computes_acm:
            calibration_given = calibration if isinstance(calibration, Calibration) else None
            coefficients = _compute_coefficients(
                cfg, checked, refs, model_dirs, run_directory, calibration_given, overrides, settings, progress
            )
        if coefficients is not None:
            plan = _plan_from(coefficients, cfg, checked, merge_params)
        else:
            with (
                progress.stage(
                    f"computing {checked.coefficients} coefficients" if checked.coefficients else "planning"
                ),
                measure("coefficients", provider=checked.coefficients),
            ):
                plan = coefficient_stage(cfg, checked, refs, model_dirs, run_directory)
        with progress.stage("merging"), measure("merge", method=plan.method.name) as merge_cost:
            merged_dir = merge_stage(cfg, plan.method, model_dirs, output_dir, plan)
    costs = book.to_dict()
    write_costs(book, run_directory)
    manifest = read_manifest(merged_dir) or {}
    log.info("merged model: %s", merged_dir)
    return MergeResult(
        output_dir=merged_dir,
        manifest=manifest,
        timings=_timings(costs),
        run_dir=run_directory,
        method=str(cfg.merge.method),
        reused=merge_cost.cached,
        coefficients=coefficients,
        coefficients_path=plan.coefficients_path,
        costs=costs,
        overrides=tuple(overrides),
    )


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
    from acm_exp.eval.samples import read_records
    from acm_exp.models import ModelRef, resolve_model
    from acm_exp.pipeline import check_generation_inputs, evaluation_stage, validate

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
    stages = ["resolving the model", "checking the model's tokenizer", "evaluating"]
    stages += ["recording the results"] if recording else []
    started = datetime.now(timezone.utc)
    run_directory: Path | None = None
    if model_role == "merged":
        run_directory = (
            merged.run_dir if merged is not None and run_dir is None else _new_run_dir(run_dir, default_run_dir)
        )
    with _progress("evaluate", stages) as progress, ledger() as book:
        with progress.stage("resolving the model"):
            if merged is not None:
                path = merged.output_dir
            else:
                path = resolve_model(
                    ModelRef(model_role, _model_name(model, "model")), cache_dir=cfg.cache_dir, toy_seed=cfg.seed
                )
        # The evaluated model stands in every role's place, so the CLI's stages see only it.
        model_dirs = [path, path]
        with progress.stage("checking the model's tokenizer"):
            check_generation_inputs(cfg, model_dirs)
        with progress.stage("evaluating"):
            # Input roles evaluate into the shared cache; only a merged model writes into a run directory.
            rows = evaluation_stage(cfg, model_dirs, path, run_directory or Path.cwd())
        results_file = None
        if recording:
            from acm_exp.results import record_run, resolve_results_dir

            with progress.stage("recording the results"):
                results_file = record_run(
                    cfg,
                    run_directory,
                    rows,
                    manifest=merged.manifest,
                    coefficients_path=merged.coefficients_path,
                    started_at=started,
                    results_dir=resolve_results_dir(cfg.logger.results_dir),
                    costs=book.to_dict(),
                )
    samples: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("samples_path"):
            samples.setdefault(row["benchmark"], []).extend(read_records(Path(row["samples_path"])) or [])
    return EvalResult(
        model=str(model.output_dir if merged is not None else model),
        role=model_role,
        path=Path(path),
        rows=rows,
        samples=samples,
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


__all__ = [
    "Calibration",
    "Coefficients",
    "EvalResult",
    "MergeResult",
    "acm_coefficients",
    "evaluate",
    "load_results",
    "merge_models",
    "select_calibration",
]
