"""The paper's tables and figures, from the results table only (nothing is re-run).

``python -m acm_exp.figures [column=value ...] out=DIR`` writes, for the filtered table:

- ``main_table.{csv,md,tex}``: Table 1 of the L2S papers. One row per input model (base,
  fine-tuned; deduplicated over the runs that evaluated them) and per merge configuration; per
  benchmark the accuracy (mean over seeds, ±std with several) and mean response tokens, the
  average accuracy and the relative change of the average tokens against the fine-tuned model.
  ``main_table.csv`` has ``p_vs_base``; the ``.md``/``.tex`` show it as a "p vs base" column when
  some ACM row has a base-method row: the paired-bootstrap p-value of the ACM row's average
  against it (the largest one when it has several bases; "–" for other rows or without samples).
- ``significance.{csv,md,tex}``, next to the main table when some ACM entry has a base entry: is
  ACM better than the plain method it weights (``acm_exp.merge.get_method(m).plain``, e.g.
  ACM-TIES vs TIES)? The base entries of an ACM entry are the merges of the same model pair with
  that method; among several, those with the ACM entry's k/p/scale/combine, else all of them.
  Per benchmark both evaluated and for their average: n questions, both accuracies (per question
  the mean correctness over each entry's seeds, read from the ``samples_path`` files), the
  difference in points, the paired-bootstrap and sign-test p-values and the wins/losses
  (``acm_exp.significance``; 10,000 resamples, seed 0). The average tests the mean of the
  per-benchmark accuracies (resampling within benchmarks). Missing samples files leave that row's
  numbers empty with a note, logged in one line; they never stop the command. The p-values are
  not corrected for multiple comparisons.
- ``t_sensitivity``, ``calibration_size``, ``cluster_count``, ``layer_coefficients`` and
  ``pareto`` as ``.csv`` (the plotted numbers) + ``.png`` + ``.pdf``.

A figure whose runs the table lacks is skipped with a message naming what is missing; the
command fails only when it produced nothing. Outputs are byte-identical for the same table.

Averages in the plots are taken over the benchmarks that every plotted point of the model pair
has (named in the CSV), so points stay comparable when some runs evaluated more benchmarks.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from acm_exp import significance
from acm_exp.errors import ConfigError
from acm_exp.results import CONFIG_COLUMNS, load_results, parse_assignments, resolve_results_dir

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "average": "Average",
    "task_arithmetic": "TA",
    "ties": "TIES",
    "dare": "DARE",
    "breadcrumbs": "Breadcrumbs",
    "aim": "AIM",
    "sens": "Sens-Merging",
    "acm_average": "ACM-Average",
    "acm_ta": "ACM-TA",
    "acm_ties": "ACM-TIES",
    "acm_dare": "ACM-DARE",
}
METHOD_ORDER = tuple(METHOD_LABELS)
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
FIGURES = (
    "main_table",
    "t_sensitivity",
    "calibration_size",
    "cluster_count",
    "layer_coefficients",
    "pareto",
    "cost_table",
)
# Matplotlib settings fixed here so that a user's matplotlibrc cannot change the output.
RC_PARAMS = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 150,
    "figure.dpi": 100,
    "pdf.fonttype": 42,
    "lines.markersize": 4,
}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None}


class MissingRuns(Exception):
    """The table lacks the runs a figure needs; the message says which."""


@dataclass(frozen=True)
class Outcome:
    name: str
    files: tuple[Path, ...] = ()
    message: str | None = None


# ---------------------------------------------------------------------------------------------
# From table rows to entries (one per table row of the paper) and their statistics


@dataclass
class Entries:
    """The rows grouped into entries, with one row of metadata per entry.

    ``rows``: the table's per-seed rows with an ``entry`` column (deduplicated); ``info``: per
    entry ``pair`` (display name of the model pair), ``role``, ``model``, ``method``, the config
    columns, ``label`` and ``order`` (position in tables and legends), ``finished_at``.
    """

    rows: pd.DataFrame
    info: pd.DataFrame = field(repr=False)


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


def _distinct(series: pd.Series) -> int:
    return series.astype(object).map(str).nunique()


def build_entries(table: pd.DataFrame) -> Entries:
    table = table.copy()
    table["pair"] = _pair_names(table)
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
    return Entries(rows=table.reset_index(drop=True), info=info.sort_values("order", kind="mergesort"))


def method_label(method: str, base_method: Any = None) -> str:
    """The paper's name of a method; AIM is named after the merge it relaxes (AIM-TIES)."""
    label = METHOD_LABELS.get(method, method)
    if method == "aim" and not _is_missing(base_method):
        label = f"{label}-{METHOD_LABELS.get(str(base_method), str(base_method))}"
    return label


def _format_value(value: Any) -> str:
    # 20.0 -> "20", 0.7 -> "0.7": config values as the user typed them.
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


# Shorter names of config columns in labels.
LABEL_NAMES = {
    "calibration_selection": "selection",
    "num_clusters": "clusters",
    "calibration_samples": "samples",
    "acm_against": "against",
}


def _setting(column: str, value: Any) -> str:
    return f"{LABEL_NAMES.get(column, column)}={_format_value(value)}"


def _labels(info: pd.DataFrame) -> pd.Series:
    labels = pd.Series("", index=info.index, dtype=object)
    inputs = info["role"] != "merged"
    for _pair, group in info[inputs].groupby("pair"):
        finetuned = group[group["role"] == "finetuned"]
        for entry, row in group.iterrows():
            single = row["role"] == "finetuned" and len(finetuned) == 1
            labels[entry] = "finetuned" if single else str(row["model"])
    for _, group in info[~inputs].groupby(["pair", "method"]):
        varying = [c for c in VARYING_COLUMNS if _distinct(group[c]) > 1]
        for entry, row in group.iterrows():
            parts = [_setting(c, row[c]) for c in varying if not _is_missing(row[c])]
            if not varying and len(group) > 1:
                parts = [str(row["config_hash"])[:8]]  # same merge settings, other eval settings
            base = method_label(str(row["method"]), row.get("base_method"))
            labels[entry] = f"{base} ({', '.join(parts)})" if parts else base
    return labels


def _is_missing(value: Any) -> bool:
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
    if _is_missing(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def ordered_benchmarks(names: Iterable[str]) -> list[str]:
    known = list(BENCHMARK_LABELS)
    names = set(names)
    return [b for b in known if b in names] + sorted(names - set(known))


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


def reference_entry(info: pd.DataFrame, pair: str) -> str | None:
    """The slow model the lengths are compared with: the pair's first fine-tuned model."""
    finetuned = info[(info["pair"] == pair) & (info["role"] == "finetuned")]
    return None if finetuned.empty else str(finetuned.sort_values("model").index[0])


def relative_change(value: float, reference: float) -> float:
    if _is_missing(reference) or reference == 0 or _is_missing(value):
        return math.nan
    return 100.0 * (value - reference) / reference


# ---------------------------------------------------------------------------------------------
# Writing


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def save_figure(figure: Any, stem: Path) -> tuple[Path, Path]:
    """PNG + PDF with the metadata that would differ between runs (dates, versions) left out."""
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    figure.savefig(png, format="png", metadata=PNG_METADATA)
    figure.savefig(pdf, format="pdf", metadata=PDF_METADATA)
    return png, pdf


def new_figure(ncols: int = 1, *, width: float = 4.0, height: float = 3.0) -> tuple[Any, list[Any]]:
    # The object API rather than pyplot: no global figure registry, no GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _fmt(value: float, digits: int) -> str:
    return "–" if _is_missing(value) else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# (a) the main table


def main_table(entries: Entries) -> pd.DataFrame:
    """Numbers of the main table: one row per entry (in order), per-benchmark and average columns."""
    rows, info = entries.rows, entries.info
    if info.empty:
        raise MissingRuns("main table: needs evaluated runs; the table has no rows")
    benchmarks = ordered_benchmarks(rows["benchmark"].unique())
    stats = benchmark_stats(rows)
    avg = averages(rows, benchmarks)
    records = []
    for entry, meta in info.iterrows():
        record: dict[str, Any] = {"model_pair": meta["pair"], "method": meta["label"], "role": meta["role"]}
        for benchmark in benchmarks:
            cell = stats.loc[(entry, benchmark)] if (entry, benchmark) in stats.index else None
            for name in ("accuracy", "accuracy_std", "tokens", "tokens_std"):
                record[f"{benchmark}_{name}"] = math.nan if cell is None else float(cell[name])
        for name in ("avg_accuracy", "avg_accuracy_std", "avg_tokens", "avg_tokens_std"):
            record[name] = float(avg.loc[entry, name]) if entry in avg.index else math.nan
        record["seeds"] = int(rows.loc[rows["entry"] == entry, "seed"].nunique())
        records.append((entry, record))
    frame = pd.DataFrame([r for _, r in records], index=[e for e, _ in records])
    frame["relative_length"] = math.nan
    for pair in frame["model_pair"].unique():
        reference = reference_entry(info, pair)
        in_pair = frame["model_pair"] == pair
        if reference is not None:
            ref_tokens = frame.loc[reference, "avg_tokens"]
            frame.loc[in_pair, "relative_length"] = [
                relative_change(v, ref_tokens) for v in frame.loc[in_pair, "avg_tokens"]
            ]
    return frame.reset_index(drop=True)


def _cell(mean: float, std: float, seeds: int, tokens: float) -> str:
    """'accuracy (tokens)', with ±std over several seeds; '–' when not evaluated."""
    if _is_missing(mean):
        return "–"
    text = f"{mean:.1f}"
    if seeds > 1 and not _is_missing(std):
        text += f"±{std:.1f}"
    return f"{text} ({_fmt(tokens, 0)})"


def main_table_display(frame: pd.DataFrame, *, with_p_vs_base: bool = False) -> pd.DataFrame:
    """The table as the paper prints it: 'accuracy (tokens)' per benchmark, Avg., Δ length, and
    with ``with_p_vs_base`` the bootstrap p of an ACM row's average against its base method."""
    benchmarks = [c.removesuffix("_accuracy") for c in frame.columns if c.endswith("_accuracy") and c != "avg_accuracy"]
    display = pd.DataFrame(index=frame.index)
    if frame["model_pair"].nunique() > 1:
        display["Model pair"] = frame["model_pair"]
    display["Method"] = frame["method"]
    for benchmark in benchmarks:
        display[BENCHMARK_LABELS.get(benchmark, benchmark)] = [
            _cell(
                row[f"{benchmark}_accuracy"], row[f"{benchmark}_accuracy_std"], row["seeds"], row[f"{benchmark}_tokens"]
            )
            for _, row in frame.iterrows()
        ]
    display["Avg."] = [
        _cell(row["avg_accuracy"], row["avg_accuracy_std"], row["seeds"], row["avg_tokens"])
        for _, row in frame.iterrows()
    ]
    display["Δ length"] = ["–" if _is_missing(v) else f"{v:+.1f}%" for v in frame["relative_length"]]
    if with_p_vs_base:
        display["p vs base"] = [format_p(v) for v in frame["p_vs_base"]]
    return display


def to_latex(display: pd.DataFrame, text_columns: Sequence[str] = ("Model pair", "Method")) -> str:
    """LaTeX tabular: ``text_columns`` (leading) left-aligned, numbers right-aligned."""
    left = sum(c in text_columns for c in display.columns)
    column_format = "l" * left + "r" * (len(display.columns) - left)
    latex = display.to_latex(index=False, escape=True, column_format=column_format)
    # '<' in text mode prints as '¡' with LaTeX's default font encoding.
    return latex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--").replace("<", "$<$")


def write_main_table(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    """The main table and, when some ACM entry has a base-method entry, the significance table."""
    frame = main_table(entries)
    comparisons = significance_table(entries)
    frame["p_vs_base"] = p_vs_base(entries.info, comparisons)
    display = main_table_display(frame, with_p_vs_base=not comparisons.empty)
    files = (
        write_csv(frame, out_dir / "main_table.csv"),
        # No re-parsing of numbers: a p-value cell stays as formatted.
        write_text(out_dir / "main_table.md", display.to_markdown(index=False, disable_numparse=True) + "\n"),
        write_text(out_dir / "main_table.tex", to_latex(display)),
    )
    if comparisons.empty:
        log.info(
            "significance: no ACM entry has an entry of its base method in the same model pair; "
            "significance table not written"
        )
        return files
    return files + write_significance(comparisons, out_dir)


# ---------------------------------------------------------------------------------------------
# (a') significance of ACM against its base method, from per-question correctness


# Hyper-parameters an ACM method shares with its base method: they pick the base entry to compare
# with when the table holds several merges of the base method for the model pair.
SHARED_HYPER_PARAMETERS = ("k", "p", "scale", "combine")
AVERAGE = "average"  # the benchmark name of a comparison's row over all its benchmarks
SIGNIFICANCE_COLUMNS = (
    "model_pair",
    "acm",
    "base",
    "benchmark",
    "n",
    "acm_accuracy",
    "base_accuracy",
    "difference",
    "bootstrap_p",
    "sign_p",
    "wins",
    "losses",
    "note",
)
NO_SAMPLES = "no per-question samples"


@functools.cache
def plain_method(method: str) -> str | None:
    """The base method a coefficient-weighted method weights (acm_ties -> ties); None for any other."""
    from acm_exp.merge import get_method  # lazy: the merge package imports torch

    try:
        return get_method(method).plain
    except ConfigError:  # a method this checkout does not register (e.g. from another branch)
        return None


def _same_setting(a: Any, b: Any) -> bool:
    return (_is_missing(a) and _is_missing(b)) or (not _is_missing(a) and not _is_missing(b) and a == b)


def base_matches(info: pd.DataFrame) -> list[tuple[str, str]]:
    """(ACM entry, base entry) pairs in table order.

    The base entries of an ACM entry are the merges of the same model pair with its plain method;
    when there are several, those with the same k/p/scale/combine (where one is found), else all.
    """
    merged = info[info["role"] == "merged"]
    matches = []
    for entry, row in merged.iterrows():
        plain = plain_method(str(row["method"]))
        if plain is None:
            continue
        candidates = merged[(merged["pair"] == row["pair"]) & (merged["method"] == plain)]
        if len(candidates) > 1:
            same = [
                all(_same_setting(base[c], row[c]) for c in SHARED_HYPER_PARAMETERS)
                for _, base in candidates.iterrows()
            ]
            if any(same):
                candidates = candidates[same]
        matches.extend((entry, base) for base in candidates.index)
    return matches


def entry_correctness(rows: pd.DataFrame, entry: str, benchmark: str, *, name: str) -> pd.Series:
    """Per question of ``benchmark``: the entry's correctness, mean over its seeds' samples files.

    ``name``: how error messages call the entry (its label in the tables).
    """
    selected = rows[(rows["entry"] == entry) & (rows["benchmark"] == benchmark)].sort_values("seed")
    unrecorded = selected[selected["samples_path"].isna()]
    if not unrecorded.empty:
        seed = unrecorded["seed"].iloc[0]
        raise ConfigError(f"{name} {benchmark} seed {seed}: no samples_path recorded in the results table")
    return significance.per_question_correctness(list(selected["samples_path"]))


def significance_table(
    entries: Entries, *, resamples: int = significance.DEFAULT_RESAMPLES, seed: int = 0
) -> pd.DataFrame:
    """One row per (ACM entry, base entry, benchmark) and one ``average`` row per pair of entries.

    Per benchmark the questions both evaluated (ids matched); the average row tests the mean over
    the pair's common benchmarks of the per-benchmark accuracy (bootstrap within benchmarks) and
    pools the questions for the sign test. Missing samples leave a row's numbers empty, with a
    note and one logged line for the whole table. Column ``_acm_entry`` names the ACM entry.
    """
    rows, info = entries.rows, entries.info
    loaded: dict[tuple[str, str], pd.Series] = {}
    problems: list[str] = []

    def correctness(entry: str, benchmark: str) -> pd.Series:
        if (entry, benchmark) not in loaded:
            name = f"{info.loc[entry, 'pair']}: {info.loc[entry, 'label']}"
            loaded[(entry, benchmark)] = entry_correctness(rows, entry, benchmark, name=name)
        return loaded[(entry, benchmark)]

    records = []
    for acm, base in base_matches(info):
        names = {
            "model_pair": info.loc[acm, "pair"],
            "acm": info.loc[acm, "label"],
            "base": info.loc[base, "label"],
            "_acm_entry": acm,
        }
        benchmarks = common_benchmarks(rows, [acm, base])
        paired: list[tuple[str, np.ndarray, np.ndarray]] = []
        for benchmark in benchmarks:
            try:
                ids, acm_values, base_values = significance.align_questions(
                    correctness(acm, benchmark), correctness(base, benchmark)
                )
            except ConfigError as error:
                problems.append(str(error))
                records.append({**names, "benchmark": benchmark, "note": NO_SAMPLES})
                continue
            paired.append((benchmark, acm_values, base_values))
            records.append(
                {
                    **names,
                    "benchmark": benchmark,
                    **_comparison_cells(significance.compare(acm_values, base_values, resamples=resamples, seed=seed)),
                }
            )
        if benchmarks and len(paired) == len(benchmarks):
            strata = np.concatenate([[name] * len(values) for name, values, _ in paired])
            pooled = significance.compare(
                np.concatenate([a for _, a, _ in paired]),
                np.concatenate([b for _, _, b in paired]),
                resamples=resamples,
                seed=seed,
                strata=strata,
            )
            records.append({**names, "benchmark": AVERAGE, **_comparison_cells(pooled)})
        else:
            records.append({**names, "benchmark": AVERAGE, "note": NO_SAMPLES})
    if problems:
        log.warning(
            "significance: per-question samples missing or unreadable for %d benchmark comparison(s), "
            "their p-values are left empty (first: %s)",
            len(problems),
            problems[0],
        )
    frame = pd.DataFrame(records, columns=[*SIGNIFICANCE_COLUMNS, "_acm_entry"])
    for column in ("n", "wins", "losses"):
        frame[column] = frame[column].astype("Int64")  # integers in the CSV, empty where missing
    for column in ("acm_accuracy", "base_accuracy", "difference", "bootstrap_p", "sign_p"):
        frame[column] = frame[column].astype("float64")
    frame["note"] = frame["note"].fillna("").astype(object)
    return frame


def _comparison_cells(comparison: significance.Comparison) -> dict[str, Any]:
    return {
        "n": comparison.n,
        "acm_accuracy": comparison.accuracy_a,
        "base_accuracy": comparison.accuracy_b,
        "difference": comparison.difference,
        "bootstrap_p": comparison.bootstrap_p,
        "sign_p": comparison.sign_p,
        "wins": comparison.wins,
        "losses": comparison.losses,
        "note": "",
    }


def p_vs_base(info: pd.DataFrame, comparisons: pd.DataFrame) -> list[float]:
    """Per entry (table order): bootstrap p of its average against its base; with several bases
    the largest (most conservative), NaN when any is unknown or the entry has no base."""
    averages_only = comparisons[comparisons["benchmark"] == AVERAGE]
    values = []
    for entry in info.index:
        p = averages_only.loc[averages_only["_acm_entry"] == entry, "bootstrap_p"]
        values.append(math.nan if p.empty or p.isna().any() else float(p.max()))
    return values


def format_p(value: float) -> str:
    """Three decimals; '<0.001' below (10,000 resamples cannot resolve much less)."""
    if _is_missing(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _signed(value: float) -> str:
    """'+1.2', '-0.4'; '0.0' for a difference that rounds to zero (no '+0.0' or '-0.0')."""
    if _is_missing(value):
        return "–"
    return "0.0" if round(value, 1) == 0 else f"{value:+.1f}"


def significance_display(frame: pd.DataFrame) -> pd.DataFrame:
    display = pd.DataFrame(index=frame.index)
    if frame["model_pair"].nunique() > 1:
        display["Model pair"] = frame["model_pair"]
    display["ACM"] = frame["acm"]
    display["Base"] = frame["base"]
    display["Benchmark"] = [BENCHMARK_LABELS.get(b, "Avg." if b == AVERAGE else b) for b in frame["benchmark"]]
    display["n"] = ["–" if pd.isna(n) else str(int(n)) for n in frame["n"]]
    display["ACM acc."] = [_fmt(v, 1) for v in frame["acm_accuracy"]]
    display["Base acc."] = [_fmt(v, 1) for v in frame["base_accuracy"]]
    display["Δ (points)"] = [_signed(v) for v in frame["difference"]]
    display["p (bootstrap)"] = [format_p(v) for v in frame["bootstrap_p"]]
    display["p (sign)"] = [format_p(v) for v in frame["sign_p"]]
    display["wins/losses"] = [
        "–" if pd.isna(wins) else f"{int(wins)}/{int(losses)}"
        for wins, losses in zip(frame["wins"], frame["losses"], strict=False)
    ]
    if (frame["note"] != "").any():
        display["Note"] = frame["note"]
    return display


def write_significance(comparisons: pd.DataFrame, out_dir: Path) -> tuple[Path, ...]:
    frame = comparisons.drop(columns="_acm_entry").reset_index(drop=True)
    display = significance_display(frame)
    text_columns = ("Model pair", "ACM", "Base", "Benchmark", "Note")
    # Numbers stay as formatted here (no re-parsing: '+15.0' keeps its sign) and right-aligned.
    alignment = ["left" if c in text_columns else "right" for c in display.columns]
    markdown = display.to_markdown(index=False, disable_numparse=True, colalign=alignment)
    return (
        write_csv(frame, out_dir / "significance.csv"),
        write_text(out_dir / "significance.md", markdown + "\n"),
        write_text(out_dir / "significance.tex", to_latex(display, text_columns)),
    )


# ---------------------------------------------------------------------------------------------
# Sweeps: points of otherwise identical configurations along one swept variable


def sweep_points(entries: Entries, candidates: pd.DataFrame, x: pd.Series, swept: Sequence[str]) -> pd.DataFrame:
    """One point per (series, x): series = the candidates' config minus ``swept``.

    Keeps series with at least two x values; when two entries share a series and x (they differ
    in eval settings only), the latest run wins. Averages are over the benchmarks that all kept
    points of a model pair share.
    """
    if candidates.empty:
        return pd.DataFrame()
    key_columns = [c for c in ("pair", "method", *VARYING_COLUMNS, "calibration_samples") if c not in swept]
    frame = candidates.assign(x=x).dropna(subset=["x"])
    frame["series_key"] = row_keys(frame, key_columns)
    frame = frame.sort_values(["finished_at", "config_hash"], kind="mergesort")
    frame = frame.drop_duplicates(["series_key", "x"], keep="last")
    counts = frame.groupby("series_key")["x"].nunique()
    frame = frame[frame["series_key"].isin(counts[counts >= 2].index)]
    if frame.empty:
        return pd.DataFrame()
    frame["series"] = _series_labels(frame, key_columns)
    points = []
    for pair, group in frame.groupby("pair", sort=True):
        benchmarks = common_benchmarks(entries.rows, group.index)
        if not benchmarks:
            continue
        avg = averages(entries.rows, benchmarks)
        for entry, row in group.iterrows():
            points.append(
                {
                    "model_pair": pair,
                    "series": row["series"],
                    "method": row["method"],
                    "x": row["x"],
                    **avg.loc[entry, ["avg_accuracy", "avg_accuracy_std", "avg_tokens", "avg_tokens_std"]].to_dict(),
                    "seeds": int(avg.loc[entry, "seeds"]),
                    "benchmarks": " ".join(benchmarks),
                    "_order": row["order"],
                }
            )
    result = pd.DataFrame(points)
    if result.empty:
        return result
    result = result.sort_values(["model_pair", "series", "x", "_order"], kind="mergesort")
    return result.drop(columns="_order").reset_index(drop=True)


def _series_labels(frame: pd.DataFrame, key_columns: Sequence[str]) -> pd.Series:
    """Method label plus the config values that differ between series of the same pair and method."""
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, group in frame.groupby(["pair", "method"]):
        varying = [c for c in key_columns if c not in ("pair", "method") and _distinct(group[c]) > 1]
        for entry, row in group.iterrows():
            parts = [_setting(c, row[c]) for c in varying if not _is_missing(row[c])]
            base = method_label(str(row["method"]), row.get("base_method"))
            labels[entry] = f"{base} ({', '.join(parts)})" if parts else base
    return labels


def _found(values: Iterable[Any]) -> str:
    distinct = sorted({_format_value(v) for v in values if not _is_missing(v)}, key=_natural_key)
    return "[" + ", ".join(distinct) + "]"


def _natural_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _error_bars(std: pd.Series) -> np.ndarray | None:
    """Std over seeds as error bars; none at all for single-seed points."""
    return None if std.isna().all() else std.fillna(0.0).to_numpy()


def plot_sweep(
    points: pd.DataFrame, entries: Entries, *, xlabel: str, title: str, stem: Path, log_x: bool = False
) -> tuple[Path, Path]:
    """Average accuracy and average tokens against x, one line per series, fine-tuned as reference."""
    import matplotlib

    pairs = sorted(points["model_pair"].unique())
    with matplotlib.rc_context(RC_PARAMS):
        figure, axes = new_figure(2, height=3.2)
        for pair in pairs:
            in_pair = points[points["model_pair"] == pair]
            prefix = f"{pair}: " if len(pairs) > 1 else ""
            for series, line in in_pair.groupby("series", sort=True):
                for axis, column in zip(axes, ("avg_accuracy", "avg_tokens"), strict=False):
                    axis.errorbar(
                        line["x"],
                        line[column],
                        yerr=_error_bars(line[f"{column}_std"]),
                        marker="o",
                        capsize=2,
                        label=f"{prefix}{series}",
                    )
            reference = reference_entry(entries.info, pair)
            benchmarks = in_pair["benchmarks"].iloc[0].split()
            if reference is not None:
                avg = averages(entries.rows, benchmarks)
                if reference in avg.index and not _is_missing(avg.loc[reference, "avg_accuracy"]):
                    for axis, column in zip(axes, ("avg_accuracy", "avg_tokens"), strict=False):
                        axis.axhline(
                            avg.loc[reference, column],
                            linestyle="--",
                            color="grey",
                            linewidth=1,
                            label=f"{prefix}{entries.info.loc[reference, 'label']}",
                        )
        for axis, ylabel in zip(axes, ("average accuracy (%)", "average response tokens"), strict=False):
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            if log_x:
                axis.set_xscale("log")
        axes[0].legend(fontsize="small")
        figure.suptitle(title)
        return save_figure(figure, stem)


def _write_sweep(
    points: pd.DataFrame, entries: Entries, out_dir: Path, name: str, x_name: str, **plot: Any
) -> tuple[Path, ...]:
    csv = write_csv(points.rename(columns={"x": x_name}), out_dir / f"{name}.csv")
    return (csv, *plot_sweep(points, entries, stem=out_dir / name, **plot))


def merged_info(entries: Entries) -> pd.DataFrame:
    return entries.info[entries.info["role"] == "merged"]


# (b)
def write_t_sensitivity(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    merged = merged_info(entries)
    acm = merged[merged["t"].notna()]
    points = sweep_points(entries, acm, acm["t"].astype(float), swept=("t",))
    if points.empty:
        found = f"t={_found(acm['t'])}" if not acm.empty else "no merged runs that use t"
        raise MissingRuns(
            f"t-sensitivity: needs ACM runs with at least 2 distinct t values (otherwise identical "
            f"configs, common benchmarks); found {found}"
        )
    return _write_sweep(
        points, entries, out_dir, "t_sensitivity", "t", xlabel="temperature t", title="Sensitivity to t"
    )


def calibration_samples(info: pd.DataFrame) -> pd.Series:
    return info["calibration_samples"].astype("float64")


# (c)
def write_calibration_size(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    merged = merged_info(entries)
    calibrated = merged[merged["calibration_samples"].notna()]
    points = sweep_points(
        entries,
        calibrated,
        calibration_samples(calibrated),
        swept=("per_cluster", "num_samples", "calibration_samples", "selection_hash"),
    )
    if points.empty:
        found = (
            f"calibration_samples={_found(calibrated['calibration_samples'])}"
            if not calibrated.empty
            else "no merged runs with a calibration set"
        )
        raise MissingRuns(
            "calibration-size: needs ACM runs with at least 2 distinct numbers of calibration samples "
            f"(otherwise identical configs); found {found}"
        )
    return _write_sweep(
        points,
        entries,
        out_dir,
        "calibration_size",
        "calibration_samples",
        xlabel="calibration samples",
        title="Calibration set size",
    )


def cluster_category(info: pd.DataFrame) -> pd.Series:
    """'random' or '<K> clusters'; NaN for other selections."""

    def category(row: pd.Series) -> Any:
        if row["calibration_selection"] == "random":
            return "random"
        if row["calibration_selection"] == "cluster" and not _is_missing(row["num_clusters"]):
            return f"{int(row['num_clusters'])} clusters"
        return math.nan

    return info.apply(category, axis=1) if not info.empty else pd.Series(dtype=object)


def _category_rank(category: str) -> tuple[int, int]:
    return (0, 0) if category == "random" else (1, int(category.split()[0]))


# (d)
def write_cluster_count(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    merged = merged_info(entries)
    calibrated = merged[merged["calibration_selection"].isin(["random", "cluster"])]
    categories = cluster_category(calibrated)
    # A series holds the calibration size fixed (its key keeps calibration_samples).
    points = sweep_points(
        entries,
        calibrated,
        categories,
        swept=("calibration_selection", "num_clusters", "per_cluster", "num_samples", "selection_hash"),
    )
    if points.empty:
        clustered = calibrated.loc[calibrated["calibration_selection"] == "cluster", "num_clusters"]
        found = (
            f"selection={_found(calibrated['calibration_selection'])}, num_clusters={_found(clustered)}"
            if not calibrated.empty
            else "no merged runs with a random or clustered calibration set"
        )
        raise MissingRuns(
            "cluster-count: needs ACM runs of the same calibration size with selection=random and/or "
            f"at least 2 distinct num_clusters; found {found}"
        )
    points = points.rename(columns={"x": "selection"})
    points["_rank"] = points["selection"].map(_category_rank)
    points = points.sort_values(["model_pair", "series", "_rank"], kind="mergesort").drop(columns="_rank")
    points = points.reset_index(drop=True)
    csv = write_csv(points, out_dir / "cluster_count.csv")
    return (csv, *plot_bars(points, stem=out_dir / "cluster_count"))


def plot_bars(points: pd.DataFrame, *, stem: Path) -> tuple[Path, Path]:
    import matplotlib

    categories = sorted(points["selection"].unique(), key=_category_rank)
    groups = list(points.groupby(["model_pair", "series"], sort=True))
    width = 0.8 / max(len(groups), 1)
    with matplotlib.rc_context(RC_PARAMS):
        figure, axes = new_figure(2, height=3.2)
        several_pairs = points["model_pair"].nunique() > 1
        for index, ((pair, series), group) in enumerate(groups):
            by_category = group.set_index("selection")
            positions = np.arange(len(categories)) + (index - (len(groups) - 1) / 2) * width
            for axis, column in zip(axes, ("avg_accuracy", "avg_tokens"), strict=False):
                values = [by_category[column].get(c, np.nan) for c in categories]
                errors = [by_category[f"{column}_std"].get(c, np.nan) for c in categories]
                axis.bar(
                    positions,
                    values,
                    width,
                    yerr=_error_bars(pd.Series(errors, dtype="float64")),
                    capsize=2,
                    label=f"{pair}: {series}" if several_pairs else series,
                )
        for axis, ylabel in zip(axes, ("average accuracy (%)", "average response tokens"), strict=False):
            axis.set_xticks(np.arange(len(categories)), categories)
            axis.set_ylabel(ylabel)
        axes[0].legend(fontsize="small")
        figure.suptitle("Calibration selection: random vs clusters")
        return save_figure(figure, stem)


# ---------------------------------------------------------------------------------------------
# (e) layer-wise coefficients

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def _point_name(key: str) -> tuple[str, int | None]:
    """Normalized capture point ('embed_tokens', 'layers.<i>', 'norm', 'lm_head' or the key) and layer index."""
    layer = _LAYER.search(key)
    if layer:
        return f"layers.{int(layer.group(1))}", int(layer.group(1))
    for name in ("embed_tokens", "lm_head"):
        if name in key:
            return name, None
    if key.split(".")[-1] == "norm":
        return "norm", None
    return key, None


def _lambda(value: Any) -> float:
    if isinstance(value, dict):
        for name in ("lambda", "lam", "coefficient", "value"):
            if name in value:
                return float(value[name])
        raise ValueError(f"no 'lambda' in {value!r}")
    return float(value)


def read_coefficients(path: str | Path) -> pd.DataFrame:
    """λ per capture point from a coefficients.json: columns model, point, position, lambda.

    Expected: ``{"models": [{"name": ..., "points": {"embed_tokens": {"lambda": ..}, "layers.0": {...},
    ..., "norm": {...}, "lm_head": {...}}}], "t": ...}``. Also accepted: ``models`` as a mapping
    name -> points, point values as plain numbers, and full tensor-style keys
    (``model.layers.3``, ``model.embed_tokens``). Positions: embedding 0, layer i at i+1, then the
    final norm, lm_head, and any other point.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    models = data.get("models") if isinstance(data, dict) else None
    if isinstance(models, dict):
        models = [{"name": name, "points": points} for name, points in models.items()]
    if not isinstance(models, list) or not models:
        raise ValueError("expected a non-empty 'models' list")
    records = []
    for index, model in enumerate(models):
        name = str(model.get("name", f"finetuned[{index}]"))
        points = model.get("points")
        if not isinstance(points, dict):
            raise ValueError(f"model {name!r} has no 'points' mapping")
        parsed = [(*_point_name(str(key)), _lambda(value)) for key, value in points.items()]
        layers = max((i for _, i, _ in parsed if i is not None), default=-1) + 1
        fixed = {"embed_tokens": 0, "norm": layers + 1, "lm_head": layers + 2}
        others = sorted({p for p, i, _ in parsed if i is None and p not in fixed})
        for point, layer, value in parsed:
            if layer is not None:
                position = layer + 1
            else:
                position = fixed[point] if point in fixed else layers + 3 + others.index(point)
            records.append({"model": name, "point": point, "position": position, "lambda": value})
    frame = pd.DataFrame(records, columns=["model", "point", "position", "lambda"])
    return frame.sort_values(["model", "position", "point"], kind="mergesort").reset_index(drop=True)


def write_layer_coefficients(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    merged = merged_info(entries)
    # ACM methods (those weighting a plain method) write λ; Sens-Merging's coefficients.json holds
    # other per-layer weights.
    is_acm = merged["method"].map(lambda method: plain_method(str(method)) is not None)
    with_path = merged[merged["coefficients_path"].notna() & is_acm]
    frames, problems = [], []
    for _entry, row in with_path.iterrows():
        path = Path(str(row["coefficients_path"])).with_suffix(".json")
        try:
            coefficients = read_coefficients(path)
        except (OSError, ValueError, TypeError, AttributeError) as error:
            problems.append(f"{path} ({type(error).__name__}: {error})")
            continue
        frames.append(coefficients.assign(model_pair=row["pair"], label=row["label"], t=row["t"], _order=row["order"]))
    if not frames:
        detail = f"; unreadable: {'; '.join(problems)}" if problems else ""
        raise MissingRuns(
            f"layer coefficients: needs ACM runs whose coefficients_path points to a readable "
            f"coefficients.json; found {len(with_path)} of {len(merged)} merged runs with a path"
            f"{detail}"
        )
    for problem in problems:
        print(f"layer coefficients: skipped unreadable {problem}", file=sys.stderr)
    data = pd.concat(frames).sort_values(["_order", "model", "position"], kind="mergesort")
    data = data[["model_pair", "label", "t", "model", "point", "position", "lambda"]].reset_index(drop=True)
    csv = write_csv(data, out_dir / "layer_coefficients.csv")
    return (csv, *plot_coefficients(data, stem=out_dir / "layer_coefficients"))


def plot_coefficients(data: pd.DataFrame, *, stem: Path) -> tuple[Path, Path]:
    import matplotlib

    with matplotlib.rc_context(RC_PARAMS):
        figure, (axis,) = new_figure(1, width=6.0, height=3.2)
        several_pairs = data["model_pair"].nunique() > 1
        several_models = data["model"].nunique() > 1
        for (pair, label, model), line in data.groupby(["model_pair", "label", "model"], sort=False):
            name = (f"{pair}: " if several_pairs else "") + label + (f" [{model}]" if several_models else "")
            axis.plot(line["position"], line["lambda"], marker="o", label=name)
        ticks = data.drop_duplicates("position").sort_values("position")
        step = max(1, len(ticks) // 16)  # keep 28- and 64-layer models readable
        shown = ticks.iloc[::step]
        axis.set_xticks(
            shown["position"], [p.replace("layers.", "") for p in shown["point"]], rotation=45, fontsize="small"
        )
        axis.set_xlabel("capture point (embedding, decoder layer, final norm, lm_head)")
        axis.set_ylabel("λ")
        axis.legend(fontsize="small")
        axis.set_title("Layer-wise ACM coefficients")
        return save_figure(figure, stem)


# ---------------------------------------------------------------------------------------------
# (f) accuracy vs length


def pareto_front(tokens: Sequence[float], accuracy: Sequence[float]) -> list[bool]:
    """Points no other point beats on both fewer tokens and higher accuracy (ties are not dominance)."""
    order = sorted(range(len(tokens)), key=lambda i: (tokens[i], -accuracy[i]))
    on_front = [False] * len(tokens)
    best = -math.inf
    for i in order:
        if accuracy[i] > best:
            on_front[i] = True
            best = accuracy[i]
    return on_front


def pareto_points(entries: Entries) -> pd.DataFrame:
    records = []
    for pair, info in entries.info.groupby("pair", sort=True):
        benchmarks = common_benchmarks(entries.rows, info.index)
        if not benchmarks or len(info) < 2:
            continue
        avg = averages(entries.rows, benchmarks)
        for entry, row in info.iterrows():
            records.append(
                {
                    "model_pair": pair,
                    "method": row["label"],
                    "role": row["role"],
                    "avg_tokens": float(avg.loc[entry, "avg_tokens"]),
                    "avg_accuracy": float(avg.loc[entry, "avg_accuracy"]),
                    "benchmarks": " ".join(benchmarks),
                    "_order": row["order"],
                }
            )
    points = pd.DataFrame(records)
    if points.empty:
        return points
    points["on_frontier"] = False
    for _pair, group in points.groupby("model_pair"):
        points.loc[group.index, "on_frontier"] = pareto_front(list(group["avg_tokens"]), list(group["avg_accuracy"]))
    points = points.sort_values(["model_pair", "_order"], kind="mergesort").drop(columns="_order")
    return points[
        ["model_pair", "method", "role", "avg_tokens", "avg_accuracy", "on_frontier", "benchmarks"]
    ].reset_index(drop=True)


def write_pareto(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    points = pareto_points(entries)
    if points.empty:
        raise MissingRuns(
            f"Pareto: needs at least 2 evaluated models of one model pair on a common benchmark; "
            f"found {len(entries.info)} across pairs {_found(entries.info['pair'])}"
        )
    csv = write_csv(points, out_dir / "pareto.csv")
    return (csv, *plot_pareto(points, stem=out_dir / "pareto"))


def plot_pareto(points: pd.DataFrame, *, stem: Path) -> tuple[Path, Path]:
    import matplotlib

    pairs = sorted(points["model_pair"].unique())
    with matplotlib.rc_context(RC_PARAMS):
        figure, axes = new_figure(len(pairs), width=4.5, height=3.5)
        for axis, pair in zip(axes, pairs, strict=False):
            group = points[points["model_pair"] == pair]
            inputs = group["role"] != "merged"
            axis.scatter(group.loc[~inputs, "avg_tokens"], group.loc[~inputs, "avg_accuracy"], label="merges")
            axis.scatter(
                group.loc[inputs, "avg_tokens"], group.loc[inputs, "avg_accuracy"], marker="s", label="input models"
            )
            front = group[group["on_frontier"]].sort_values("avg_tokens")
            axis.plot(front["avg_tokens"], front["avg_accuracy"], color="C3", linewidth=1.5, label="Pareto frontier")
            # Name the frontier and the input models; the CSV names every point.
            for _, row in group[group["on_frontier"] | inputs].iterrows():
                axis.annotate(
                    row["method"],
                    (row["avg_tokens"], row["avg_accuracy"]),
                    fontsize="x-small",
                    xytext=(3, 3),
                    textcoords="offset points",
                )
            axis.set_xlabel("average response tokens")
            axis.set_ylabel("average accuracy (%)")
            axis.set_title(pair)
            axis.legend(fontsize="small")
        return save_figure(figure, stem)


# ---------------------------------------------------------------------------------------------
# Driver


def write_cost_table(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    """Per method and model pair: coefficient time and peak memory, merge time, evaluation tokens/s."""
    from acm_exp.cost_table import cost_display, cost_frame, plot_costs

    frame = cost_frame(entries.rows, METHOD_LABELS, METHOD_ORDER)
    if frame.empty:
        raise MissingRuns("cost_table: no merged runs in the results")
    display = cost_display(frame)
    return (
        write_csv(frame, out_dir / "cost_table.csv"),
        write_text(out_dir / "cost_table.md", display.to_markdown(index=False, disable_numparse=True) + "\n"),
        write_text(out_dir / "cost_table.tex", to_latex(display, text_columns=("Method",))),
        *plot_costs(frame, out_dir / "cost_table", new_figure, save_figure),
    )


WRITERS: dict[str, Callable[[Entries, Path], tuple[Path, ...]]] = {
    "main_table": write_main_table,
    "t_sensitivity": write_t_sensitivity,
    "calibration_size": write_calibration_size,
    "cluster_count": write_cluster_count,
    "layer_coefficients": write_layer_coefficients,
    "pareto": write_pareto,
    "cost_table": write_cost_table,
}


def make_figures(table: pd.DataFrame, out_dir: str | Path, only: Sequence[str] | None = None) -> list[Outcome]:
    """Write every figure (or ``only`` those) the table supports; one Outcome per figure."""
    names = list(only) if only else list(FIGURES)
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ConfigError(f"unknown figure {unknown[0]!r}; expected any of {', '.join(FIGURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = build_entries(table)
    outcomes = []
    for name in names:
        try:
            outcomes.append(Outcome(name, WRITERS[name](entries, out)))
        except MissingRuns as missing:
            outcomes.append(Outcome(name, message=str(missing)))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.figures",
        description="Write the paper's tables and figures from the results table (filters as in "
        "python -m acm_exp.results; out=DIR, default ./outputs/figures; results_dir=DIR).",
    )
    parser.add_argument("filters", nargs="*", metavar="column=value")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    try:
        filters, options = parse_assignments(args.filters, special=("results_dir", "out"))
        directory = resolve_results_dir(options.get("results_dir"))
        out = Path(options.get("out") or Path.cwd() / "outputs" / "figures").expanduser()
        table = load_results(directory, **filters)
        only = [n.strip() for n in args.only.split(",")] if args.only else None
        if table.empty:
            print(
                f"acm_exp.figures: no results in {directory}" + (" matching the filters" if filters else ""),
                file=sys.stderr,
            )
            return 1
        outcomes = make_figures(table, out, only)
    except (ConfigError, OSError) as error:
        print(f"acm_exp.figures: error: {error}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        if outcome.files:
            print(f"{outcome.name}: " + ", ".join(str(p) for p in outcome.files))
        else:
            print(f"skipped {outcome.message}", file=sys.stderr)
    return 0 if any(o.files for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
