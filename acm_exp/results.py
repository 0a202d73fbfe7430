"""The local results table: one parquet file per run, merged on read, independent of W&B.

Every run writes its rows (one per evaluated model, benchmark and seed) to
``<results_dir>/<run_id>.parquet`` through a temporary file and ``os.replace``, so concurrent
SLURM tasks never see or leave half a file, and a rerun of the same run id replaces its own rows.
``load_results`` reads every file back into one DataFrame, filtered by any column.

Every row says what it rests on: ``n`` questions of the benchmark's ``benchmark_size``, ``subset``
when ``eval.limit`` took part of it, and the run's ``eval_limit``; rows written before these columns
existed get them inferred on read (``acm_exp.coverage``).

The default run id is derived from the config hash, which covers everything that changes results
(not paths, ``force``, the logger or Hydra settings, nor merge parameters the method ignores):
rerunning an identical configuration replaces its rows instead of duplicating them.

Run identity (config hash, run id, sweep id, git commit) lives in ``acm_exp.run_identity``; its
names stay importable from here.

Command line: ``python -m acm_exp.results [column=value ...] [--columns a,b] [--format text]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig

from acm_exp.costs import COST_COLUMNS, cost_columns
from acm_exp.coverage import fill_sizes, is_subset
from acm_exp.errors import ConfigError
from acm_exp.merge_parameters import MERGE_PARAMETERS
from acm_exp.paths import RESULTS_DIR_ENV, atomic_write, resolve_results_dir  # noqa: F401 (validation reads it from paths)
from acm_exp.run_identity import (
    HASH_EXCLUDED_KEYS,  # noqa: F401 (re-exported)
    HASH_EXCLUDED_WHEN_NULL_KEYS,  # noqa: F401 (re-exported)
    config_hash,
    default_run_id,
    detect_sweep_id,
    git_commit,
    hashable_config,  # noqa: F401 (re-exported)
    method_usage,
    sweep_id_from_dir,  # noqa: F401 (re-exported)
    timestamp,
)

log = logging.getLogger(__name__)

# Merge hyper-parameters (acm_exp.merge_parameters). A method records only those it uses; the others
# are null, so filtering on t=0.7 never matches a TIES run that ignores t.
HYPER_PARAMETERS = tuple(MERGE_PARAMETERS)
ACM_COLUMNS = ("acm_against", "estimator", "bins")
CALIBRATION_COLUMNS = (
    "calibration",
    "calibration_selection",
    "num_clusters",
    "per_cluster",
    "num_samples",
    "include_solution",
    "calibration_samples",
    "selection_hash",
)
METRIC_COLUMNS = ("accuracy", "accuracy_norm", "mean_tokens", "truncation_rate", "reflections", "n", "relative_length")
# Columns that describe the configuration of a run (what distinguishes one method row of a paper
# table from another): the merge, its calibration, and eval.limit (a subset evaluation).
CONFIG_COLUMNS = (
    "model_pair",
    "base_model",
    "finetuned_models",
    "method",
    *HYPER_PARAMETERS,
    *ACM_COLUMNS,
    *CALIBRATION_COLUMNS,
    "eval_limit",
)

_STRING, _FLOAT, _INT, _BOOL = pa.string(), pa.float64(), pa.int64(), pa.bool_()
SCHEMA = pa.schema(
    [
        ("run_id", _STRING),
        ("sweep_id", _STRING),
        ("model_pair", _STRING),
        ("base_model", _STRING),
        ("finetuned_models", _STRING),
        ("method", _STRING),
        *((p.name, _FLOAT if p.kind is float else _STRING) for p in MERGE_PARAMETERS.values()),
        ("acm_against", _STRING),
        ("estimator", _STRING),
        ("bins", _INT),
        ("calibration", _STRING),
        ("calibration_selection", _STRING),
        ("num_clusters", _INT),
        ("per_cluster", _INT),
        ("num_samples", _INT),
        ("include_solution", _BOOL),
        ("calibration_samples", _INT),
        ("selection_hash", _STRING),
        ("model", _STRING),
        ("role", _STRING),
        ("benchmark", _STRING),
        ("seed", _INT),
        ("accuracy", _FLOAT),
        # Multiple-choice benchmarks: lm-evaluation-harness's acc_norm (null elsewhere).
        ("accuracy_norm", _FLOAT),
        ("mean_tokens", _FLOAT),
        ("truncation_rate", _FLOAT),
        ("reflections", _FLOAT),
        ("n", _INT),
        # What n rests on (acm_exp.coverage): the benchmark's size, whether n is part of it only, and
        # the run's eval.limit.
        ("benchmark_size", _INT),
        ("subset", _BOOL),
        ("eval_limit", _INT),
        ("relative_length", _FLOAT),
        ("config_hash", _STRING),
        ("git_commit", _STRING),
        ("started_at", _STRING),
        ("finished_at", _STRING),
        ("run_dir", _STRING),
        ("samples_path", _STRING),
        ("coefficients_path", _STRING),
        ("sandbox", _STRING),
        ("code_grading", _STRING),
        ("lcb_release", _STRING),
        ("lcb_start_date", _STRING),
        ("lcb_end_date", _STRING),
        ("math_numeric", _STRING),
        *((name, {float: _FLOAT, int: _INT, bool: _BOOL, str: _STRING}[kind]) for name, kind in COST_COLUMNS.items()),
    ]
)
# How a benchmark's rows were graded (grading_columns); null on benchmarks they do not apply to.
GRADING_COLUMNS = ("sandbox", "code_grading", "lcb_release", "lcb_start_date", "lcb_end_date", "math_numeric")
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_INT_COLUMNS = tuple(f.name for f in SCHEMA if f.type == _INT)
_BOOL_COLUMNS = tuple(f.name for f in SCHEMA if f.type == _BOOL)
_FLOAT_COLUMNS = tuple(f.name for f in SCHEMA if f.type == _FLOAT)

# Deterministic row order of every table this module returns.
SORT_COLUMNS = ("model_pair", "method", "t", "run_id", "role", "model", "benchmark", "seed")
# What `python -m acm_exp.results` shows unless --columns says otherwise.
DEFAULT_DISPLAY_COLUMNS = (
    "run_id",
    "method",
    "t",
    "model",
    "benchmark",
    "seed",
    "accuracy",
    "mean_tokens",
    "relative_length",
    "truncation_rate",
    "n",
    "benchmark_size",
    "subset",
)

_REQUIRED_ROW_KEYS = ("model", "role", "benchmark", "seed", "accuracy", "mean_tokens", "n")
# What metric_frame keeps of an evaluation row (benchmark_size: when the evaluator recorded it).
_METRIC_FRAME_COLUMNS = (
    "model",
    "role",
    "benchmark",
    "seed",
    "accuracy",
    "mean_tokens",
    "truncation_rate",
    "reflections",
    "n",
    "benchmark_size",
    "subset",
    "samples_path",
)
_RUN_ID_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


# ---------------------------------------------------------------------------------------------
# Where the table lives


def results_file(results_dir: Path, run_id: str) -> Path:
    """``<results_dir>/<run_id>.parquet``; ids with unsafe characters get a hash so two never collide."""
    safe = _RUN_ID_SAFE.sub("_", run_id)
    if safe != run_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    return Path(results_dir) / f"{safe}.parquet"


# ---------------------------------------------------------------------------------------------
# Building a run's rows


def metric_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The evaluation rows as a table with ``relative_length``; per-seed rows only.

    Rows with ``seed`` None are the evaluator's across-seed aggregates; the table keeps the seeds
    and aggregates on read, so those are dropped here.
    """
    kept = []
    for row in rows:
        missing = [key for key in _REQUIRED_ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"evaluation row {dict(row)!r} lacks {missing}")
        if row["seed"] is None:
            continue
        size = _optional_int(row.get("benchmark_size"))
        kept.append(
            {
                "model": str(row["model"]),
                "role": str(row["role"]),
                "benchmark": str(row["benchmark"]),
                "seed": int(row["seed"]),
                "accuracy": _float(row["accuracy"]),
                "mean_tokens": _float(row["mean_tokens"]),
                "truncation_rate": _float(row.get("truncation_rate")),
                "reflections": _float(row.get("reflections")),
                "n": int(row["n"]),
                "benchmark_size": size,
                "subset": is_subset(row["n"], size),
                "samples_path": _optional_str(row.get("samples_path")),
            }
        )
    frame = pd.DataFrame(kept, columns=list(_METRIC_FRAME_COLUMNS))
    duplicated = frame.duplicated(["model", "benchmark", "seed"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(
            f"two evaluation rows for model {first.model!r}, benchmark {first.benchmark!r}, seed {first.seed}"
        )
    frame["relative_length"] = relative_lengths(frame)
    return frame


def relative_lengths(frame: pd.DataFrame) -> pd.Series:
    """Percent change of mean_tokens against the run's (first) fine-tuned model on the same benchmark.

    The same seed's length when that seed was evaluated, else the mean over its seeds; NaN when the
    run evaluated no fine-tuned model on that benchmark.
    """
    reference = frame[frame["role"] == "finetuned"]
    if reference.empty:
        return pd.Series(math.nan, index=frame.index, dtype="float64")
    reference = reference[reference["model"] == sorted(reference["model"].unique())[0]]
    by_seed = {
        (b, s): t for b, s, t in zip(reference["benchmark"], reference["seed"], reference["mean_tokens"], strict=False)
    }
    by_benchmark = reference.groupby("benchmark")["mean_tokens"].mean().to_dict()

    def change(benchmark: str, seed: int, tokens: float) -> float:
        ref = by_seed.get((benchmark, seed), by_benchmark.get(benchmark, math.nan))
        if not ref or math.isnan(ref):
            return math.nan
        return 100.0 * (tokens - ref) / ref

    values = [change(b, s, t) for b, s, t in zip(frame["benchmark"], frame["seed"], frame["mean_tokens"], strict=False)]
    return pd.Series(values, index=frame.index, dtype="float64")


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def calibration_size(
    selection: str | None, num_clusters: int | None, per_cluster: int | None, num_samples: int | None
) -> int | None:
    """Number of calibration samples a selection takes; None for 'all' (the corpus size)."""
    if selection == "random" and num_samples is not None:
        return int(num_samples)
    if selection in ("cluster", "random") and num_clusters is not None and per_cluster is not None:
        return int(num_clusters) * int(per_cluster)
    return None


def run_columns(
    cfg: DictConfig, *, run_id: str, sweep_id: str | None, hash_: str, selection_hash: str | None = None
) -> dict[str, Any]:
    """The columns shared by every row of a run (identity and merge configuration)."""
    merge, pair = cfg.merge, cfg.model_pair
    used, coefficients = method_usage(merge)
    columns: dict[str, Any] = {
        "run_id": run_id,
        "sweep_id": sweep_id,
        "model_pair": pair.name,
        "base_model": str(pair.base),
        "finetuned_models": ",".join(str(m) for m in pair.finetuned),
        "method": merge.method,
        "eval_limit": _optional_int(cfg.eval.get("limit")) if cfg.get("eval") is not None else None,
    }
    for name in HYPER_PARAMETERS:
        columns[name] = merge[name] if name in used else None
    acm = cfg.get("acm")
    uses_acm = coefficients == "acm" and acm is not None
    columns.update(
        {
            "acm_against": acm.against if uses_acm else None,
            "estimator": acm.estimator if uses_acm else None,
            "bins": _optional_int(acm.bins) if uses_acm else None,
        }
    )
    calibration = cfg.get("calibration") if coefficients is not None else None
    if calibration is not None:
        num_samples = _optional_int(calibration.get("num_samples"))
        columns.update(
            {
                "calibration": calibration.name,
                "calibration_selection": calibration.selection,
                "num_clusters": int(calibration.num_clusters),
                "per_cluster": int(calibration.per_cluster),
                "num_samples": num_samples,
                "include_solution": bool(calibration.include_solution),
                "calibration_samples": calibration_size(
                    calibration.selection, calibration.num_clusters, calibration.per_cluster, num_samples
                ),
                "selection_hash": selection_hash,
            }
        )
    else:
        columns.update({name: None for name in CALIBRATION_COLUMNS})
    columns["config_hash"] = hash_
    return columns


def build_rows(
    cfg: DictConfig,
    run_dir: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    *,
    run_id: str | None = None,
    sweep_id: str | None = None,
    coefficients_path: str | os.PathLike | None = None,
    selection_hash: str | None = None,
    started_at: datetime | str | None = None,
    finished_at: datetime | str | None = None,
    commit: str | None = None,
    costs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A run's table rows: its evaluation rows joined with the run's identity and configuration, and
    with what its stages cost (``costs``: a ``CostLedger.to_dict()``; see acm_exp.costs)."""
    hash_ = config_hash(cfg)
    shared = run_columns(
        cfg, run_id=run_id or default_run_id(cfg, hash_), sweep_id=sweep_id, hash_=hash_, selection_hash=selection_hash
    )
    shared.update(
        {
            "git_commit": commit or git_commit(),
            "started_at": timestamp(started_at),
            "finished_at": timestamp(finished_at or datetime.now(timezone.utc)),
            "run_dir": str(Path(run_dir).absolute()),
            "coefficients_path": str(Path(coefficients_path).absolute()) if coefficients_path else None,
        }
    )
    metrics = metric_frame(rows)
    records = []
    for row in metrics.to_dict("records"):
        record = {**shared, **grading_columns(cfg, str(row["benchmark"])), **row}
        if costs:
            record.update(
                cost_columns(dict(costs), model=str(row["model"]), benchmark=str(row["benchmark"]), seed=row["seed"])
            )
        if isinstance(record["samples_path"], str):
            record["samples_path"] = str(Path(record["samples_path"]).absolute())
        records.append({name: _cell(name, record.get(name)) for name in COLUMNS})
    return records


def grading_columns(cfg: DictConfig, benchmark: str) -> dict[str, Any]:
    """A code benchmark's sandbox isolation ("bwrap", or "none" when explicitly waived) and grading
    mode; LiveCodeBench's release and contest-date window; a math benchmark's numeric rule
    (eval.grading.numeric). Nulls where they do not apply."""
    columns: dict[str, Any] = dict.fromkeys(GRADING_COLUMNS)
    eval_cfg = cfg.get("eval")
    benchmark_cfg = (eval_cfg.get("benchmarks") or {}).get(benchmark) if eval_cfg is not None else None
    if benchmark_cfg is None:
        return columns
    from acm_exp.eval.grading import DEFAULT_NUMERIC_RULE
    from acm_exp.eval.sandbox import resolve_isolation
    from acm_exp.eval.tasks import GRADERS, families, grader_name, task_name

    grader = grader_name(benchmark_cfg)
    if grader in GRADERS and GRADERS[grader].runs_code:
        columns["sandbox"] = resolve_isolation(eval_cfg.get("sandbox"))
        columns["code_grading"] = eval_cfg.get("code_grading", "official")
    if grader in GRADERS and not GRADERS[grader].runs_code:
        columns["math_numeric"] = (eval_cfg.get("grading") or {}).get("numeric", DEFAULT_NUMERIC_RULE)
    family = families().get(task_name(benchmark_cfg))
    if family is not None and family.result_columns is not None:
        columns.update(family.result_columns(benchmark_cfg))
    return columns


def _cell(column: str, value: Any) -> Any:
    """A plain Python value of the column's type (pandas hands back numpy scalars and NaN for missing text)."""
    if hasattr(value, "item"):
        value = value.item()
    if SCHEMA.field(column).type == _STRING and not isinstance(value, str):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Writing and reading


def write_rows(results_dir: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write one run's rows to its own file, atomically: a reader sees the old file or the new one."""
    run_ids = {record["run_id"] for record in records}
    if len(run_ids) != 1:
        raise ValueError(f"expected the rows of exactly one run, got run ids {sorted(map(str, run_ids))}")
    target = results_file(Path(results_dir), run_ids.pop())
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([dict(r) for r in records], schema=SCHEMA)
    atomic_write(target, lambda handle: pq.write_table(table, handle))
    return target


def record_run(
    cfg: DictConfig,
    run_dir: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    *,
    manifest: Mapping[str, Any] | None = None,
    coefficients_path: str | os.PathLike | None = None,
    selection_hash: str | None = None,
    started_at: datetime | str | None = None,
    finished_at: datetime | str | None = None,
    run_id: str | None = None,
    sweep_id: str | None = None,
    results_dir: str | os.PathLike | None = None,
    costs: Mapping[str, Any] | None = None,
) -> Path | None:
    """Write a finished run's rows to the results table; returns the run's file (None: no rows).

    ``sweep_id`` defaults to the Hydra multirun's (None outside one); ``results_dir`` to
    ``cfg.logger.results_dir`` resolved by ``resolve_results_dir``. A ``selection_hash`` missing
    from the arguments is looked up in the manifest (``calibration.selection_hash``).
    """
    rows = list(rows)
    if selection_hash is None and manifest:
        calibration = manifest.get("calibration")
        if isinstance(calibration, Mapping):
            selection_hash = calibration.get("selection_hash")
    records = build_rows(
        cfg,
        run_dir,
        rows,
        run_id=run_id,
        sweep_id=sweep_id or detect_sweep_id(),
        coefficients_path=coefficients_path,
        selection_hash=selection_hash,
        started_at=started_at,
        finished_at=finished_at,
        costs=costs,
    )
    if not records:
        log.info("no evaluation rows: nothing recorded in the results table")
        return None
    directory = Path(results_dir) if results_dir else resolve_results_dir(cfg.logger.get("results_dir"))
    path = write_rows(directory, records)
    log.info("results: %d rows in %s", len(records), path)
    return path


def _read_table(path: Path) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        log.warning("skipping unreadable results file %s (%s)", path, error)
        return None


def load_results(results_dir: str | os.PathLike | None = None, **filters: Any) -> pd.DataFrame:
    """Every run's rows in one DataFrame (columns COLUMNS, deterministic order), filtered.

    A filter ``column=value`` keeps equal rows; a list/tuple/set keeps rows equal to any element;
    None keeps missing values. Strings are parsed to the column's type (command-line filters).
    """
    unknown = sorted(set(filters) - set(COLUMNS))
    if unknown:
        raise ConfigError(f"unknown results column {unknown[0]!r}; expected one of: {', '.join(COLUMNS)}")
    directory = resolve_results_dir(results_dir)
    tables = [t for t in map(_read_table, sorted(directory.glob("*.parquet"))) if t is not None]
    frame = _to_frame(tables)
    for column, value in filters.items():
        frame = frame[column_matches(frame[column], column, value)]
    return sort_rows(frame)


def _to_frame(tables: list[pa.Table]) -> pd.DataFrame:
    if tables:
        # Files from an older version may lack a column: promote to the union, missing = null.
        combined = pa.concat_tables(tables, promote_options="default")
        frame = combined.to_pandas()
    else:
        frame = SCHEMA.empty_table().to_pandas()
    for name in COLUMNS:
        if name not in frame:
            frame[name] = None
    frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]
    for name in _INT_COLUMNS:
        frame[name] = frame[name].astype("Int64")
    for name in _BOOL_COLUMNS:
        frame[name] = frame[name].astype("boolean")
    for name in _FLOAT_COLUMNS:
        frame[name] = frame[name].astype("float64")
    # Rows written before benchmark_size and subset existed: inferred (acm_exp.coverage).
    return fill_sizes(frame)


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(SORT_COLUMNS), na_position="last", kind="mergesort").reset_index(drop=True)


_MISSING_WORDS = ("null", "none", "nan", "")


def parse_value(column: str, value: Any) -> Any:
    """A filter value in the column's type; strings 'null'/'none'/'nan' mean missing."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in _MISSING_WORDS:
        return None
    try:
        if column in _FLOAT_COLUMNS:
            return float(value)
        if column in _INT_COLUMNS:
            return int(value)
    except ValueError:
        kind = "a number" if column in _FLOAT_COLUMNS else "an integer"
        raise ConfigError(f"{column}={value!r}; expected {kind} or null") from None
    if column in _BOOL_COLUMNS:
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise ConfigError(f"{column}={value!r}; expected true, false or null")
        return lowered == "true"
    return value


def column_matches(series: pd.Series, column: str, value: Any) -> pd.Series:
    """Boolean mask of the rows whose ``column`` equals ``value`` (or any of a list of values)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        mask = pd.Series(False, index=series.index)
        for element in value:
            mask |= column_matches(series, column, element)
        return mask
    value = parse_value(column, value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return series.isna()
    if column in _FLOAT_COLUMNS:
        # Config values round-trip exactly, but a user typing 0.7 deserves a tolerant compare.
        numbers = series.astype("float64")
        return ((numbers - float(value)).abs() <= 1e-9 * max(1.0, abs(float(value)))).fillna(False)
    return (series == value).fillna(False).astype(bool)


def has_complete_results(
    results_dir: str | os.PathLike | None,
    hash_: str,
    expected_benchmarks: Iterable[str],
    *,
    models: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
) -> bool:
    """True when the table holds, for this config hash, a row for every expected benchmark.

    ``models`` (labels) and ``seeds`` tighten the check to every (model, benchmark, seed); without
    them any model and seed count. No expected benchmark means nothing to skip: False.
    """
    benchmarks = set(expected_benchmarks)
    if not benchmarks:
        return False
    table = load_results(results_dir, config_hash=hash_)
    if table.empty:
        return False
    present = set(zip(table["model"], table["benchmark"], table["seed"].astype(int), strict=False))
    wanted_models = set(models) if models is not None else set(table["model"])
    if seeds is None:
        covered = {(m, b) for m, b, _ in present}
        return all((m, b) in covered for m in wanted_models for b in benchmarks)
    return all((m, b, int(s)) in present for m in wanted_models for b in benchmarks for s in seeds)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_assignments(
    tokens: Sequence[str], special: Sequence[str] = ("results_dir",)
) -> tuple[dict[str, Any], dict[str, str]]:
    """``key=value`` tokens -> (column filters, special options). ``a,b`` values mean any of them."""
    filters: dict[str, Any] = {}
    options: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"argument {token!r}; expected column=value")
        if key in special:
            options[key] = value
            continue
        if key not in COLUMNS:
            raise ConfigError(f"unknown results column {key!r}; expected one of: {', '.join(COLUMNS)}")
        filters[key] = value.split(",") if "," in value else value
    return filters, options


def parse_columns(spec: str | None) -> list[str]:
    if spec is None:
        return list(DEFAULT_DISPLAY_COLUMNS)
    if spec == "all":
        return list(COLUMNS)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if name not in COLUMNS:
            raise ConfigError(f"unknown results column {name!r}; expected one of: {', '.join(COLUMNS)}")
    return names


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "markdown":
        return frame.to_markdown(index=False, floatfmt=".4g")
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    return frame.to_string(index=False, float_format=lambda x: f"{x:.4g}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.results",
        description="Print the local results table, filtered by any column (method=acm_ties benchmark=gsm8k; "
        "a,b means either). results_dir=DIR reads another table.",
    )
    parser.add_argument("filters", nargs="*", metavar="column=value")
    parser.add_argument("--columns", help="comma-separated columns to show, or 'all'")
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    args = parser.parse_intermixed_args(argv)
    try:
        filters, options = parse_assignments(args.filters)
        columns = parse_columns(args.columns)
        directory = resolve_results_dir(options.get("results_dir"))
        table = load_results(directory, **filters)
    except ConfigError as error:
        print(f"acm_exp.results: error: {error}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"no results in {directory}" + (" matching the filters" if filters else ""), file=sys.stderr)
        return 0
    print(render(table[columns], args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
