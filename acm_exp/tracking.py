"""Experiment tracking with Weights & Biases (the local results table lives in acm_exp.results).

``logger.wandb.mode`` is ``offline`` by default: the run is written under ``<run_dir>/wandb/`` and
needs no account (``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later); ``disabled``
imports nothing. A run logs the resolved config and the merge manifest (W&B config), per-model
and per-benchmark metrics (W&B summary, plus a ``metrics`` table of every row), the ACM
coefficient plot and a per-sample table per benchmark.

A sweep is one W&B group (``logger.wandb.group``, else the Hydra multirun's id) whose runs are named
by their method and swept values (``acm_ties t=0.7``; ``run_name``): the keys a sweep varies are read
from its ``multirun.yaml``, so SLURM array tasks name their runs the same way; outside a sweep, the
merge parameters given on the command line. A point skipped because its results are complete still
appears in the group as a short run carrying its recorded metrics, tagged ``reused``
(``log_reused_run``). The results table's run id is in each run's config (``results_run_id``).

W&B's own console lines (banners, sync hints, its warnings) go to the run's log file (the job's
``<run dir>/__main__.log`` under the CLI, else ``<run_dir>/wandb/console.log``), never to the
terminal, so a failed run's one-line error stays the only line on stderr.

Tracking never fails a run: a W&B error becomes a warning. Invalid config values do fail, up front,
in ``validate_logger_config``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")
METRICS = ("accuracy", "mean_tokens", "truncation_rate", "reflections")
# Per-sample record fields shown in the samples tables, in this order (others are left out:
# prompts repeat the few-shot exemplars and would dwarf everything else).
SAMPLE_FIELDS = ("id", "correct", "tokens", "finish_reason", "reflections", "extracted", "gold", "response")
# The tag of a run that only reports results recorded by an earlier run (a sweep point skipped as complete).
REUSED_TAG = "reused"
# Override keys that never name a run: the method is its first word; the rest place or log it.
_UNNAMED_KEYS = ("merge", "experiment", "cache_dir", "data_dir", "force")
_UNNAMED_SECTIONS = ("logger", "hydra")
# W&B's own limits, checked up front so that a typo fails before any GPU time is spent.
_MAX_TAG_LENGTH = 64
_MAX_NAME_LENGTH = 128
_PROJECT_FORBIDDEN = set("/\\#?%:")


# ---------------------------------------------------------------------------------------------
# Validation


def cost_summary(costs: Mapping[str, Any]) -> dict[str, Any]:
    """W&B summary metrics of a run's stage costs: ``cost/<stage>[/<model>/<benchmark>]/<measure>``."""
    summary: dict[str, Any] = {f"hardware/{key}": value for key, value in (costs.get("hardware") or {}).items()}
    for stage in costs.get("stages", []):
        details = stage.get("details") or {}
        parts = [stage["stage"], *(str(details[key]) for key in ("model", "benchmark") if details.get(key))]
        if details.get("seed") not in (None, 0):
            parts.append(f"seed{details['seed']}")
        prefix = "cost/" + "/".join(parts)
        summary.update(
            {
                f"{prefix}/wall_s": stage["wall_s"],
                f"{prefix}/cpu_s": stage["cpu_s"],
                f"{prefix}/peak_rss_gb": stage["peak_rss_bytes"] / 1024**3,
                f"{prefix}/cached": stage["cached"],
            }
        )
        if stage.get("tokens_per_s") is not None:
            summary[f"{prefix}/tokens_per_s"] = stage["tokens_per_s"]
        if stage.get("original"):
            summary[f"{prefix}/original_wall_s"] = stage["original"].get("wall_s")
        for device, peak in (stage.get("cuda_peak_bytes") or {}).items():
            summary[f"{prefix}/peak_{device.replace(':', '')}_gb"] = peak / 1024**3
    return summary


def validate_logger_config(logger_cfg: DictConfig | Any) -> None:
    """Raise ConfigError on a bad ``logger`` value (call before heavy work; takes ``cfg.logger``)."""
    wandb_cfg = logger_cfg.wandb
    if wandb_cfg.mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={wandb_cfg.mode!r}; expected one of {WANDB_MODES}")
    project = wandb_cfg.project
    if not project or len(project) > _MAX_NAME_LENGTH or _PROJECT_FORBIDDEN & set(project):
        raise ConfigError(
            f"logger.wandb.project={project!r}; expected a non-empty name of at most "
            f"{_MAX_NAME_LENGTH} characters without any of {''.join(sorted(_PROJECT_FORBIDDEN))}"
        )
    entity = wandb_cfg.entity
    if entity is not None and (not entity or "/" in entity):
        raise ConfigError(f"logger.wandb.entity={entity!r}; expected null or a W&B user/team name")
    group = wandb_cfg.group
    if group is not None and not 0 < len(group) <= _MAX_NAME_LENGTH:
        raise ConfigError(f"logger.wandb.group={group!r}; expected null or 1 to {_MAX_NAME_LENGTH} characters")
    for tag in wandb_cfg.tags:
        if not isinstance(tag, str) or not 0 < len(tag) <= _MAX_TAG_LENGTH:
            raise ConfigError(f"logger.wandb.tags has {tag!r}; expected strings of 1 to {_MAX_TAG_LENGTH} characters")
    if (
        isinstance(wandb_cfg.samples_logged, bool)
        or not isinstance(wandb_cfg.samples_logged, int)
        or wandb_cfg.samples_logged < 0
    ):
        raise ConfigError(f"logger.wandb.samples_logged={wandb_cfg.samples_logged!r}; expected an integer >= 0")
    results_dir = logger_cfg.get("results_dir")
    if (
        results_dir is not None
        and Path(results_dir).expanduser().exists()
        and not Path(results_dir).expanduser().is_dir()
    ):
        raise ConfigError(f"logger.results_dir={results_dir!r} is a file; expected a directory (created if missing)")


# ---------------------------------------------------------------------------------------------
# What gets logged (pure functions of the evaluation rows)


def summary_metrics(frame: Any) -> dict[str, float]:
    """W&B summary: ``<model>/<benchmark>/<metric>`` (mean over seeds; ``_std`` with several seeds),
    plus ``<model>/average/<metric>`` over the model's benchmarks and its ``relative_length``."""
    summary: dict[str, float] = {}
    for (model, benchmark), group in frame.groupby(["model", "benchmark"], sort=True):
        for metric in (*METRICS, "relative_length", "n"):
            summary[f"{model}/{benchmark}/{metric}"] = float(group[metric].mean())
        if group["seed"].nunique() > 1:
            for metric in ("accuracy", "mean_tokens"):
                summary[f"{model}/{benchmark}/{metric}_std"] = float(group[metric].std(ddof=1))
    per_benchmark = frame.groupby(["model", "benchmark"], sort=True)[list(METRICS)].mean()
    averages = per_benchmark.groupby(level="model").mean()
    reference = _reference_average_tokens(frame, per_benchmark)
    for model, values in averages.iterrows():
        for metric in METRICS:
            summary[f"{model}/average/{metric}"] = float(values[metric])
        if reference:
            summary[f"{model}/average/relative_length"] = 100.0 * (values["mean_tokens"] - reference) / reference
    return summary


def _reference_average_tokens(frame: Any, per_benchmark: Any) -> float | None:
    finetuned = sorted(frame.loc[frame["role"] == "finetuned", "model"].unique())
    if not finetuned:
        return None
    value = per_benchmark.loc[finetuned[0], "mean_tokens"].mean()
    return None if math.isnan(value) or value == 0 else float(value)


def sample_ids(ids: Iterable[str], count: int, salt: str = "") -> list[str]:
    """A deterministic, order-independent sample: the ``count`` ids with the smallest hashes.

    Hashing spreads the sample over the benchmark (its first rows are often the easiest) and picks
    the same questions for every model and every rerun, so their answers can be compared.
    """

    def key(identifier: str) -> str:
        return hashlib.sha256(f"{salt}\x00{identifier}".encode()).hexdigest()

    return sorted(set(ids), key=key)[:count]


def read_samples(path: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The records of a samples JSONL file; [] when it is missing or unreadable (with a warning)."""
    if not path or not Path(path).is_file():
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (OSError, json.JSONDecodeError) as error:
        log.warning("W&B: cannot read samples %s (%s)", path, error)
        return []


def sample_table_rows(frame: Any, benchmark: str, count: int) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of one benchmark's samples table: ``count`` questions x every model.

    Each model contributes its lowest seed's records.
    """
    rows_of = frame[frame["benchmark"] == benchmark].sort_values(["model", "seed"])
    records_by_model: dict[str, tuple[str, int, dict[str, dict]]] = {}
    for model, group in rows_of.groupby("model", sort=True):
        first = group.iloc[0]
        records = read_samples(first["samples_path"])
        records_by_model[model] = (first["role"], int(first["seed"]), {str(r.get("id")): r for r in records})
    all_ids = [i for _, _, by_id in records_by_model.values() for i in by_id]
    chosen = sample_ids(all_ids, count, salt=benchmark)
    columns = ["model", "role", "seed", *SAMPLE_FIELDS]
    rows = []
    for identifier in chosen:
        for model, (role, seed, by_id) in records_by_model.items():
            if identifier in by_id:
                record = by_id[identifier]
                rows.append([model, role, seed, identifier, *(_plain(record.get(name)) for name in SAMPLE_FIELDS[1:])])
    return columns, rows


def _plain(value: Any) -> Any:
    # W&B tables want one type per column: structured values (lists of tests, dicts) become JSON.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def table_data(frame: Any) -> tuple[list[str], list[list[Any]]]:
    """A DataFrame as W&B table columns and rows of plain Python values (NaN -> None)."""
    columns = [str(c) for c in frame.columns]
    rows = []
    for values in frame.itertuples(index=False):
        rows.append([None if _is_missing(v) else (v.item() if hasattr(v, "item") else v) for v in values])
    return columns, rows


def _is_missing(value: Any) -> bool:
    try:
        return bool(value != value) or value is None  # NaN, pd.NA and None
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Run names


def _split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _short_key(key: str) -> str:
    # Merge parameters are what sweeps vary most: t=0.7 rather than merge.t=0.7.
    return key.removeprefix("merge.")


def run_name(method: str, overrides: Sequence[str] = (), swept: Sequence[str] | None = None) -> str:
    """``<method> key=value ...``: the values of ``swept`` keys (a sweep's), else of the merge
    parameters among ``overrides``; W&B shows it as the run's name.

    Example:
        >>> run_name("acm_ties", ["merge=acm_ties", "merge.t=0.7", "eval.limit=5"], swept=["merge.t"])
        'acm_ties t=0.7'
    """
    values = dict(_split_override(o) for o in overrides if "=" in o)
    if swept is not None:
        keys = [key.lstrip("+~") for key in swept]
    else:
        keys = [key for key in values if key.startswith("merge.")]
    parts = [
        f"{_short_key(key)}={values[key]}" if "." in key else values[key]
        for key in keys
        if key in values and key not in _UNNAMED_KEYS and key.split(".")[0] not in _UNNAMED_SECTIONS
    ]
    name = " ".join([method, *parts])
    return name if len(name) <= _MAX_NAME_LENGTH else name[: _MAX_NAME_LENGTH - 1] + "…"


def sweep_swept_keys(sweep_dir: str | os.PathLike | None) -> list[str] | None:
    """The keys a Hydra multirun varies (``a=x,y``, ``range(...)``, ... on its command line or in
    ``hydra.sweeper.params``), read from the ``multirun.yaml`` Hydra writes in the sweep directory
    before any job starts; None when it cannot be read."""
    if sweep_dir is None:
        return None
    path = Path(sweep_dir) / "multirun.yaml"
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        sweep = OmegaConf.load(path)
        params = OmegaConf.to_container(sweep.hydra.sweeper.get("params") or {}, resolve=False)
        arguments = [f"{key}={value}" for key, value in params.items()] + list(sweep.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(arguments)
    except Exception as error:  # naming a run must never fail it
        log.debug("W&B: no sweep definition at %s (%s)", path, error)
        return None
    return list(dict.fromkeys(o.get_key_element() for o in parsed if o.is_sweep_override()))


# ---------------------------------------------------------------------------------------------
# W&B's console lines into the run's log file


class _LineSink(io.TextIOBase):
    """A text stream that hands each complete line to ``emit`` (W&B writes its lines to stderr)."""

    def __init__(self, emit: Any) -> None:
        self._emit = emit
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self._emit(self._pending)
        self._pending = ""

    def isatty(self) -> bool:
        return False


def _log_files() -> list[logging.FileHandler]:
    return [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.FileHandler) and handler.baseFilename != os.devnull
    ]


@contextlib.contextmanager
def wandb_console_to_log(run_dir: Path) -> Iterator[None]:
    """While W&B runs, its console lines go to the log files of the root logger (the job's log under
    Hydra), else to ``<run_dir>/wandb/console.log``; nothing reaches the terminal."""
    handlers = _log_files()

    def emit(line: str) -> None:
        if handlers:
            record = logging.LogRecord("wandb", logging.INFO, __file__, 0, line, None, None)
            for handler in handlers:
                handler.handle(record)
            return
        target = run_dir / "wandb" / "console.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    sink = _LineSink(emit)
    with contextlib.redirect_stderr(sink):
        try:
            yield
        finally:
            sink.flush()


# ---------------------------------------------------------------------------------------------
# The W&B run


class WandbLogger:
    """One W&B run; a context manager that never raises for W&B's own failures.

    ``with WandbLogger.from_config(cfg, run_dir) as tracker: ...; tracker.log_results(rows, ...)``.
    Wrapping the whole run records its duration and system metrics; wrapping only the final
    logging step keeps W&B out of the way of the GPU work. Both are fine.
    """

    def __init__(
        self,
        wandb_cfg: DictConfig | Any,
        run_dir: str | os.PathLike,
        *,
        name: str | None = None,
        group: str | None = None,
        config: Mapping[str, Any] | None = None,
        job_type: str | None = None,
    ) -> None:
        self.mode: str = wandb_cfg.mode
        self.project: str = wandb_cfg.project
        self.entity: str | None = wandb_cfg.entity
        self.tags: list[str] = list(wandb_cfg.tags)
        self.samples_logged: int = int(wandb_cfg.samples_logged)
        self.group = group if group is not None else wandb_cfg.group
        self.run_dir = Path(run_dir)
        self.name = name
        self.config = dict(config or {})
        self.job_type = job_type
        self.run: Any = None
        self._wandb: Any = None

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        run_dir: str | os.PathLike,
        *,
        run_id: str | None = None,
        sweep_id: str | None = None,
        overrides: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        extra_config: Mapping[str, Any] | None = None,
    ) -> WandbLogger:
        """The run of a job: named by its method and swept values (``run_name``; ``overrides``: the
        job's, default Hydra's), grouped by logger.wandb.group or the sweep id, with the results
        table's ``run_id`` (default: the config's) in its config."""
        import acm_exp.run_identity as run_identity  # not the table (pandas): a merge-only run has none

        hash_ = run_identity.config_hash(cfg)
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        config = {
            **container,
            "config_hash": hash_,
            "git_commit": run_identity.git_commit(),
            "results_run_id": run_id or run_identity.default_run_id(cfg, hash_),
            **dict(extra_config or {}),
        }
        sweep_dir = run_identity.detect_sweep_dir()
        if overrides is None:
            overrides = run_identity.job_overrides() or []
        swept = sweep_swept_keys(sweep_dir) if sweep_dir is not None else None
        logger = cls(
            cfg.logger.wandb,
            run_dir,
            name=run_name(str(cfg.merge.method), overrides, swept),
            group=cfg.logger.wandb.group or sweep_id or run_identity.detect_sweep_id(),
            config=config,
            job_type=str(cfg.merge.method),
        )
        logger.tags = list(dict.fromkeys([*logger.tags, *tags]))
        return logger

    @property
    def active(self) -> bool:
        return self.run is not None

    def __enter__(self) -> WandbLogger:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def start(self) -> bool:
        """Start the W&B run (files under ``<run_dir>/wandb``); False when disabled or failed."""
        if self.mode == "disabled" or self.run is not None:
            return self.run is not None
        try:
            import wandb

            self.run_dir.mkdir(parents=True, exist_ok=True)
            with wandb_console_to_log(self.run_dir):
                self.run = wandb.init(
                    mode=self.mode,
                    project=self.project,
                    entity=self.entity,
                    group=self.group,
                    tags=self.tags or None,
                    name=self.name,
                    job_type=self.job_type,
                    dir=str(self.run_dir),
                    config=self.config,
                    # The job's own output stays in its log file, not mirrored into W&B's.
                    settings=wandb.Settings(console="off"),
                )
            self._wandb = wandb
        except Exception as error:  # W&B must never fail an experiment
            log.warning("W&B disabled for this run: init failed (%s: %s)", type(error).__name__, error)
            self.run = None
        return self.run is not None

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        self._guard("finish", lambda: run.finish(exit_code=exit_code))

    def _guard(self, what: str, action: Any) -> None:
        try:
            with wandb_console_to_log(self.run_dir):
                action()
        except Exception as error:
            log.warning("W&B: could not log %s (%s: %s)", what, type(error).__name__, error)

    def log_results(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        manifest: Mapping[str, Any] | None = None,
        coefficients_path: str | os.PathLike | None = None,
        costs: Mapping[str, Any] | None = None,
    ) -> None:
        """Log a run's evaluation rows (the ones given to ``results.record_run``), its stage costs
        (``CostLedger.to_dict()``, as summary metrics) and artifacts."""
        if self.run is None:
            return
        from acm_exp.results import metric_frame

        if costs:
            self._guard("the stage costs", lambda: self.run.summary.update(cost_summary(costs)))
        frame = metric_frame(rows)
        if manifest is not None:
            self._guard(
                "the merge manifest",
                lambda: self.run.config.update({"merge_manifest": dict(manifest)}, allow_val_change=True),
            )
        if not frame.empty:
            self._guard("the metrics", lambda: self._log_metrics(frame))
        if coefficients_path:
            self._guard("the coefficients", lambda: self._log_coefficients(Path(coefficients_path)))
        if self.samples_logged and not frame.empty:
            for benchmark in sorted(frame["benchmark"].unique()):
                self._guard(f"the {benchmark} samples", lambda b=benchmark: self._log_samples(frame, b))

    def _log_metrics(self, frame: Any) -> None:
        self.run.summary.update(summary_metrics(frame))
        columns, data = table_data(frame.drop(columns=["samples_path"]))
        self.run.log({"metrics": self._wandb.Table(columns=columns, data=data)})

    def _log_coefficients(self, path: Path) -> None:
        from acm_exp.coefficients_file import LAMBDA_COLUMNS, AcmCoefficientsFile, read_coefficients

        image, document = path.with_suffix(".png"), path.with_suffix(".json")
        if image.is_file():
            self.run.log({"acm/coefficients": self._wandb.Image(str(image))})
        if document.is_file():
            coefficients = read_coefficients(document)
            # Sens-Merging's per-layer weights are in its plot; the table is ACM's λ.
            if isinstance(coefficients, AcmCoefficientsFile):
                data = coefficients.lambda_rows()
                self.run.log({"acm/lambda": self._wandb.Table(columns=list(LAMBDA_COLUMNS), data=data)})
        if not image.is_file() and not document.is_file():
            log.warning("W&B: no coefficients at %s (.png/.json)", path)

    def _log_samples(self, frame: Any, benchmark: str) -> None:
        columns, data = sample_table_rows(frame, benchmark, self.samples_logged)
        if data:
            self.run.log({f"samples/{benchmark}": self._wandb.Table(columns=columns, data=data)})


def log_reused_run(
    cfg: DictConfig, run_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]], **from_config: Any
) -> None:
    """Put a sweep point skipped as complete into its W&B group: a short run, tagged ``reused``,
    carrying the metrics its recorded ``rows`` (the results table's, of its config hash) hold and the
    run id, directory and finish time of the run that recorded them."""
    if cfg.logger.wandb.mode == "disabled" or not rows:
        return
    first = rows[0]
    reused = {key: first.get(key) for key in ("run_id", "run_dir", "finished_at", "git_commit")}
    tracker = WandbLogger.from_config(
        cfg, run_dir, run_id=reused["run_id"], tags=[REUSED_TAG], extra_config={"reused": reused}, **from_config
    )
    tracker.samples_logged = 0  # the numbers only: the samples are in the recording run
    with tracker:
        tracker.log_results(rows)
