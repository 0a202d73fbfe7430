"""From the results table's rows to entries (one per row of the paper's tables), their display
labels and order, and their per-benchmark and average statistics."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from acm_exp.errors import ConfigError
from acm_exp.results import CONFIG_COLUMNS

if TYPE_CHECKING:
    from acm_exp.merge import MergeMethod

# The paper's order of methods in tables and legends; other methods follow, by name.
METHOD_ORDER = (
    "average",
    "task_arithmetic",
    "ties",
    "dare",
    "breadcrumbs",
    "aim",
    "sens",
    "acm_average",
    "acm_ta",
    "acm_ties",
    "acm_dare",
)
BENCHMARK_LABELS = {
    "gsm8k": "GSM8K",
    "math500": "MATH500",
    "minerva_math": "Minerva",
    "olympiadbench": "OlympiadBench",
    "college_math": "College Math",
    "aime24": "AIME24",
    "humaneval_pro": "HumanEval-Pro",
    "livecodebench": "LiveCodeBench",
}
# Config columns that may tell two merges of the same method apart (a label shows the varying ones).
VARYING_COLUMNS = tuple(
    c
    for c in CONFIG_COLUMNS
    if c not in ("model_pair", "base_model", "finetuned_models", "method", "calibration_samples")
)


@functools.cache
def registered_method(method: str) -> MergeMethod | None:
    """The merge registry's method of that name; None for one this checkout does not register
    (e.g. a results table from another branch)."""
    from acm_exp.merge import get_method  # lazy: the merge package imports torch

    try:
        return get_method(method)
    except ConfigError:
        return None


def method_label(method: str, base_method: Any = None) -> str:
    """The paper's name of a method: its label in the merge registry (the name itself for a method
    this checkout does not register); one that wraps another is named after it too (AIM-TIES)."""
    registered = registered_method(method)
    if registered is None:
        return method
    if registered.wraps_base_method and not is_missing(base_method):
        return f"{registered.label}-{method_label(str(base_method))}"
    return registered.label


def plain_method(method: str) -> str | None:
    """The base method a coefficient-weighted method weights (acm_ties -> ties); None for any other."""
    registered = registered_method(method)
    return None if registered is None else registered.plain


@dataclass
class Entries:
    """The rows grouped into entries, with one row of metadata per entry.

    ``rows``: the table's per-seed rows with an ``entry`` column (deduplicated); their ``benchmark``
    is an evaluation key (``benchmark_key``: the benchmark's name, with its ``n`` appended where
    the rows hold several n for it), ``benchmark_name`` the name. ``info``: per entry ``pair``
    (display name of the model pair), ``role``, ``model``, ``method``, the config columns,
    ``label`` and ``order`` (position in tables and legends), ``finished_at``. ``sizes``: the
    questions (n) behind each evaluation key. ``cache``: values the writers share (significance).
    """

    rows: pd.DataFrame
    info: pd.DataFrame = field(repr=False)
    sizes: dict[str, int] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)


def _pair_names(table: pd.DataFrame) -> pd.Series:
    """The model pair's name; with the models appended where one name covers different models."""
    keys = row_keys(table, ["model_pair", "base_model", "finetuned_models"])
    names = table["model_pair"].astype(object).map(str)
    ambiguous = keys.groupby(names).nunique()
    ambiguous = set(ambiguous[ambiguous > 1].index)
    detailed = (
        names
        + " ("
        + table["base_model"].astype(object).map(str)
        + " + "
        + table["finetuned_models"].astype(object).map(str)
        + ")"
    )
    return detailed.where(names.isin(ambiguous), names)


def row_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string per row joining ``columns`` (missing values included, unlike str dtype's NaN)."""
    values = frame[list(columns)].astype(object)
    return pd.Series(
        ["|".join(map(str, row)) for row in values.itertuples(index=False)], index=frame.index, dtype=object
    )


def distinct_count(series: pd.Series) -> int:
    return series.astype(object).map(str).nunique()


def benchmark_key(name: str, n: int, several: bool) -> str:
    """The key of a benchmark's evaluations of ``n`` questions: its name, with ``[n=...]`` appended
    when the table holds evaluations of several sizes of it (they are never averaged together)."""
    return f"{name}[n={n}]" if several else name


def benchmark_name(key: str) -> str:
    return key.split("[n=", 1)[0]


def benchmark_label(key: str, n: int | None) -> str:
    """'GSM8K (n=1319)': the paper's name of the benchmark and the questions behind the number."""
    name = benchmark_name(key)
    label = BENCHMARK_LABELS.get(name, name)
    return label if n is None else f"{label} (n={n})"


def benchmarks_label(entries: Entries, keys: Iterable[str]) -> str:
    """'GSM8K (n=1319), MATH500 (n=500)'."""
    return ", ".join(benchmark_label(key, entries.sizes.get(key)) for key in keys)


def _evaluation_keys(table: pd.DataFrame) -> pd.Series:
    sizes_per_name = table.groupby("benchmark")["n"].nunique()
    return pd.Series(
        [
            benchmark_key(str(name), int(n), sizes_per_name[name] > 1)
            for name, n in zip(table["benchmark"], table["n"], strict=True)
        ],
        index=table.index,
        dtype=object,
    )


def _subset_suffix(table: pd.DataFrame) -> pd.Series:
    """' (eval.limit=3)' for the rows of a subset evaluation ('(subset)' when the limit was not
    recorded), '' otherwise: a subset is shown as a model pair of its own, so its numbers are never
    averaged, compared or plotted with complete evaluations."""
    subset = table["subset"].astype("boolean").fillna(False).astype(bool)
    limits = table["eval_limit"].astype(object)
    suffix = [
        (" (subset)" if is_missing(limit) else f" (eval.limit={int(limit)})") if is_subset else ""
        for is_subset, limit in zip(subset, limits, strict=True)
    ]
    return pd.Series(suffix, index=table.index, dtype=object)


def build_entries(table: pd.DataFrame) -> Entries:
    table = table.copy()
    table["pair"] = _pair_names(table) + _subset_suffix(table)
    table["benchmark_name"] = table["benchmark"]
    table["benchmark"] = _evaluation_keys(table)
    merged = table["role"] == "merged"
    # Merges are told apart by their config hash; input models by their label, whatever run
    # evaluated them (every run of a sweep re-evaluates, or reuses, the same base and fine-tuned).
    table["entry"] = np.where(
        merged,
        "merged|" + table["pair"] + "|" + table["config_hash"].astype(str),
        "input|" + table["pair"] + "|" + table["model"].astype(str),
    )
    table = table.sort_values(["finished_at", "run_id"], na_position="first", kind="mergesort")
    table = table.drop_duplicates(["entry", "model", "benchmark", "seed"], keep="last")
    # The latest run of an entry describes it (whole rows: groupby.last would mix rows' values).
    info = table.drop_duplicates("entry", keep="last").set_index("entry").sort_index()
    config = [c for c in CONFIG_COLUMNS if c not in ("model_pair", "method")]
    info = info[["pair", "role", "model", "method", *config, "config_hash", "finished_at", "coefficients_path"]].copy()
    info["label"] = _labels(info)
    info["order"] = _order(info)
    sizes = {str(key): int(n) for key, n in table.groupby("benchmark")["n"].max().items()}
    return Entries(rows=table.reset_index(drop=True), info=info.sort_values("order", kind="mergesort"), sizes=sizes)


def format_value(value: Any) -> str:
    # 20.0 -> "20", 0.7 -> "0.7": config values as the user typed them.
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


# Shorter names of config columns in labels.
LABEL_NAMES = {
    "calibration_selection": "selection",
    "num_clusters": "clusters",
    "calibration_samples": "samples",
    "acm_against": "against",
    "eval_limit": "limit",
}


def setting_label(column: str, value: Any) -> str:
    return f"{LABEL_NAMES.get(column, column)}={format_value(value)}"


def _labels(info: pd.DataFrame) -> pd.Series:
    labels = pd.Series("", index=info.index, dtype=object)
    inputs = info["role"] != "merged"
    for _pair, group in info[inputs].groupby("pair"):
        finetuned = group[group["role"] == "finetuned"]
        for entry, row in group.iterrows():
            single = row["role"] == "finetuned" and len(finetuned) == 1
            labels[entry] = "finetuned" if single else str(row["model"])
    for _, group in info[~inputs].groupby(["pair", "method"]):
        for entry, label in method_setting_labels(group, VARYING_COLUMNS, hash_when_alike=True).items():
            labels[entry] = label
    return labels


def method_setting_labels(
    group: pd.DataFrame, columns: Sequence[str], *, hash_when_alike: bool = False
) -> dict[str, str]:
    """Per row of ``group`` (merges of one pair and method): the method's label plus the values of
    ``columns`` that differ within the group; with ``hash_when_alike``, rows alike in all of them
    (other eval settings) are told apart by their config hash."""
    varying = [c for c in columns if distinct_count(group[c]) > 1]
    labels = {}
    for entry, row in group.iterrows():
        parts = [setting_label(c, row[c]) for c in varying if not is_missing(row[c])]
        if hash_when_alike and not varying and len(group) > 1:
            parts = [str(row["config_hash"])[:8]]
        base = method_label(str(row["method"]), row.get("base_method"))
        labels[entry] = f"{base} ({', '.join(parts)})" if parts else base
    return labels


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _order(info: pd.DataFrame) -> pd.Series:
    """Sort key: pair, then base, fine-tuned, then methods in the paper's order and by parameters."""

    def key(entry: str) -> tuple:
        row = info.loc[entry]
        role_rank = {"base": 0, "finetuned": 1}.get(row["role"], 2)
        method = str(row["method"])
        method_rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        if role_rank < 2:
            return (row["pair"], role_rank, str(row["model"]))
        params = tuple(_sortable(row[c]) for c in VARYING_COLUMNS)
        return (row["pair"], role_rank, method_rank, method, params, str(row["config_hash"]))

    ranked = sorted(info.index, key=key)
    return pd.Series({entry: position for position, entry in enumerate(ranked)})


def _sortable(value: Any) -> tuple[int, float, str]:
    """Numbers before text, numbers by value, missing values last."""
    if is_missing(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def ordered_benchmarks(keys: Iterable[str]) -> list[str]:
    """The paper's benchmark order, others by name; evaluations of one benchmark by descending n."""
    known = list(BENCHMARK_LABELS)

    def rank(key: str) -> tuple:
        name = benchmark_name(key)
        size = key.rsplit("[n=", 1)[1].rstrip("]") if "[n=" in key else "0"
        return (known.index(name) if name in known else len(known), name, -int(size))

    return sorted(set(keys), key=rank)


def benchmark_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (entry, benchmark): accuracy and tokens, mean and sample std over seeds, and the seed count."""
    grouped = rows.groupby(["entry", "benchmark"], sort=True)
    stats = grouped.agg(
        accuracy=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        tokens=("mean_tokens", "mean"),
        tokens_std=("mean_tokens", "std"),
        seeds=("seed", "nunique"),
    )
    return stats


def averages(rows: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """Per entry, over exactly ``benchmarks`` (NaN for an entry lacking one): the mean accuracy and
    tokens of the per-benchmark means, and their std over the seeds that cover every benchmark."""
    wanted = set(benchmarks)
    selected = rows[rows["benchmark"].isin(wanted)]
    metrics = ["accuracy", "mean_tokens"]
    per_benchmark = selected.groupby(["entry", "benchmark"], sort=True)[metrics].mean()
    result = per_benchmark.groupby(level="entry").mean()
    covered = per_benchmark.groupby(level="entry").size() == len(wanted)
    result.loc[~covered] = math.nan
    # Std over seeds of the per-seed average, from the seeds that ran every benchmark.
    per_seed = selected.groupby(["entry", "seed"], sort=True).agg(
        accuracy=("accuracy", "mean"), mean_tokens=("mean_tokens", "mean"), benchmarks=("benchmark", "nunique")
    )
    per_seed = per_seed[per_seed["benchmarks"] == len(wanted)]
    spread = per_seed.groupby(level="entry")[metrics].std(ddof=1)
    frame = pd.DataFrame(
        {
            "avg_accuracy": result["accuracy"],
            "avg_accuracy_std": spread["accuracy"].reindex(result.index),
            "avg_tokens": result["mean_tokens"],
            "avg_tokens_std": spread["mean_tokens"].reindex(result.index),
            "seeds": selected.groupby("entry")["seed"].nunique().where(covered, 0).astype(int),
        },
        index=result.index,
    )
    frame.loc[~covered, ["avg_accuracy_std", "avg_tokens_std"]] = math.nan
    return frame


def common_benchmarks(rows: pd.DataFrame, entries: Iterable[str]) -> list[str]:
    """The benchmarks every one of ``entries`` was evaluated on."""
    sets = [set(rows.loc[rows["entry"] == e, "benchmark"]) for e in entries]
    return ordered_benchmarks(set.intersection(*sets)) if sets else []


def pair_averages(
    entries: Entries, info: pd.DataFrame, *, at_least: int = 1
) -> Iterator[tuple[str, pd.DataFrame, list[str], pd.DataFrame]]:
    """Per model pair of ``info`` (rows of entries' metadata) with at least ``at_least`` entries
    sharing a benchmark: the pair, its rows, their common benchmarks and the averages over those."""
    for pair, group in info.groupby("pair", sort=True):
        benchmarks = common_benchmarks(entries.rows, group.index)
        if benchmarks and len(group) >= at_least:
            yield pair, group, benchmarks, averages(entries.rows, benchmarks)


def reference_entry(info: pd.DataFrame, pair: str) -> str | None:
    """The slow model the lengths are compared with: the pair's first fine-tuned model."""
    finetuned = info[(info["pair"] == pair) & (info["role"] == "finetuned")]
    return None if finetuned.empty else str(finetuned.sort_values("model").index[0])


def relative_change(value: float, reference: float) -> float:
    if is_missing(reference) or reference == 0 or is_missing(value):
        return math.nan
    return 100.0 * (value - reference) / reference


def merged_info(entries: Entries) -> pd.DataFrame:
    return entries.info[entries.info["role"] == "merged"]


def found_values(values: Iterable[Any]) -> str:
    """The distinct values, for a message saying what the table holds: '[0.5, 0.7, 1]'."""
    distinct = sorted({format_value(v) for v in values if not is_missing(v)}, key=_natural_key)
    return "[" + ", ".join(distinct) + "]"


def _natural_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)
