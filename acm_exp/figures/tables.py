"""The main table (Table 1 of the L2S papers) and the significance of ACM against its base method."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import acm_exp.significance as significance
from acm_exp.errors import ConfigError
from acm_exp.figures.entries import (
    Entries,
    averages,
    benchmark_label,
    benchmark_stats,
    common_benchmarks,
    is_missing,
    ordered_benchmarks,
    plain_method,
    reference_entry,
    relative_change,
)
from acm_exp.figures.output import MissingRuns, to_latex, write_csv, write_text

log = logging.getLogger(__name__)

# The line above each table saying what its cells hold (Markdown as it is, LaTeX as a comment).
MAIN_TABLE_FORMAT = (
    "Cells: accuracy % (mean response tokens), mean ± std over seeds when several ran; n: the questions "
    "each benchmark's numbers rest on (column header), complete evaluations except a model pair marked "
    "(eval.limit=N); Avg.: mean over the pair's benchmarks; Δ length: the average tokens against the "
    "fine-tuned model."
)
SIGNIFICANCE_FORMAT = (
    "Cells: accuracy % of the ACM merge and of its base method on the n questions both answered (mean "
    "correctness over seeds), their difference in points, two-sided p-values (paired bootstrap, 10,000 "
    "resamples; exact sign test), and the questions ACM won/lost; Avg.: the mean over the benchmarks."
)


def format_number(value: float, digits: int) -> str:
    return "–" if is_missing(value) else f"{value:.{digits}f}"


def main_table(entries: Entries) -> pd.DataFrame:
    """Numbers of the main table: one row per entry (in order), per-benchmark and average columns."""
    rows, info = entries.rows, entries.info
    if info.empty:
        raise MissingRuns("main table: needs evaluated runs; the table has no rows")
    benchmarks = ordered_benchmarks(rows["benchmark"].unique())
    stats = benchmark_stats(rows)
    # Avg. is over the benchmarks of the entry's model pair (a subset evaluation is a pair of its own).
    pair_benchmarks = {
        pair: ordered_benchmarks(rows.loc[rows["entry"].isin(group.index), "benchmark"].unique())
        for pair, group in info.groupby("pair", sort=True)
    }
    pair_averages = {pair: averages(rows, keys) for pair, keys in pair_benchmarks.items()}
    records = []
    for entry, meta in info.iterrows():
        avg = pair_averages[meta["pair"]]
        record: dict[str, Any] = {"model_pair": meta["pair"], "method": meta["label"], "role": meta["role"]}
        for benchmark in benchmarks:
            cell = stats.loc[(entry, benchmark)] if (entry, benchmark) in stats.index else None
            for name in ("accuracy", "accuracy_std", "tokens", "tokens_std"):
                record[f"{benchmark}_{name}"] = math.nan if cell is None else float(cell[name])
            record[f"{benchmark}_n"] = entries.sizes[benchmark]
        for name in ("avg_accuracy", "avg_accuracy_std", "avg_tokens", "avg_tokens_std"):
            record[name] = float(avg.loc[entry, name]) if entry in avg.index else math.nan
        record["avg_over"] = " ".join(pair_benchmarks[meta["pair"]])
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
    if is_missing(mean):
        return "–"
    text = f"{mean:.1f}"
    if seeds > 1 and not is_missing(std):
        text += f"±{std:.1f}"
    return f"{text} ({format_number(tokens, 0)})"


def main_table_display(frame: pd.DataFrame, *, with_p_vs_base: bool = False) -> pd.DataFrame:
    """The table as the paper prints it: 'accuracy (tokens)' per benchmark, Avg., Δ length, and
    with ``with_p_vs_base`` the bootstrap p of an ACM row's average against its base method."""
    benchmarks = [c.removesuffix("_accuracy") for c in frame.columns if c.endswith("_accuracy") and c != "avg_accuracy"]
    display = pd.DataFrame(index=frame.index)
    if frame["model_pair"].nunique() > 1:
        display["Model pair"] = frame["model_pair"]
    display["Method"] = frame["method"]
    for benchmark in benchmarks:
        display[benchmark_label(benchmark, int(frame[f"{benchmark}_n"].iloc[0]))] = [
            _cell(
                row[f"{benchmark}_accuracy"], row[f"{benchmark}_accuracy_std"], row["seeds"], row[f"{benchmark}_tokens"]
            )
            for _, row in frame.iterrows()
        ]
    display["Avg."] = [
        _cell(row["avg_accuracy"], row["avg_accuracy_std"], row["seeds"], row["avg_tokens"])
        for _, row in frame.iterrows()
    ]
    display["Δ length"] = ["–" if is_missing(v) else f"{v:+.1f}%" for v in frame["relative_length"]]
    if with_p_vs_base:
        display["p vs base"] = [format_p(v) for v in frame["p_vs_base"]]
    return display


def write_main_table(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    """The main table, with a "p vs base" column when some ACM entry has a base-method entry."""
    frame = main_table(entries)
    comparisons = significance_comparisons(entries)
    frame["p_vs_base"] = p_vs_base(entries.info, comparisons)
    display = main_table_display(frame, with_p_vs_base=not comparisons.empty)
    # No re-parsing of numbers: a p-value cell stays as formatted.
    markdown = display.to_markdown(index=False, disable_numparse=True)
    return (
        write_csv(frame, out_dir / "main_table.csv"),
        write_text(out_dir / "main_table.md", f"{MAIN_TABLE_FORMAT}\n\n{markdown}\n"),
        write_text(out_dir / "main_table.tex", latex_comment(MAIN_TABLE_FORMAT) + to_latex(display)),
    )


def latex_comment(text: str) -> str:
    return "% " + text.replace("%", r"\%") + "\n"


def significance_comparisons(entries: Entries) -> pd.DataFrame:
    """``significance_table`` of the entries, computed once for the main table and the significance table."""
    if "significance" not in entries.cache:
        entries.cache["significance"] = significance_table(entries)
    return entries.cache["significance"]


def write_significance_table(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    """The significance table; skipped (MissingRuns) when no ACM entry has a base-method entry."""
    comparisons = significance_comparisons(entries)
    if comparisons.empty:
        merged = entries.info[entries.info["role"] == "merged"]
        acm = sorted({str(m) for m in merged["method"] if plain_method(str(m)) is not None})
        raise MissingRuns(
            "significance: needs an ACM run and a run of the method it weights (e.g. ACM-TIES and TIES) "
            f"of the same model pair on a common benchmark; found ACM methods {acm or 'none'} and "
            f"methods {sorted({str(m) for m in merged['method']}) or 'none'}"
        )
    return write_significance(comparisons, out_dir)


# ---------------------------------------------------------------------------------------------
# (a') significance of ACM against its base method, from per-question correctness


# Settings an ACM method shares with its base method (its hyper-parameters and eval.limit): they
# pick the base entry to compare with when the table holds several merges of the base method.
SHARED_HYPER_PARAMETERS = ("k", "p", "scale", "combine", "eval_limit")
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
NO_COMMON_BENCHMARK = "no benchmark evaluated on the same questions"


def _same_setting(a: Any, b: Any) -> bool:
    return (is_missing(a) and is_missing(b)) or (not is_missing(a) and not is_missing(b) and a == b)


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
            records.append({**names, "benchmark": AVERAGE, "note": NO_SAMPLES if benchmarks else NO_COMMON_BENCHMARK})
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
    if is_missing(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _signed(value: float) -> str:
    """'+1.2', '-0.4'; '0.0' for a difference that rounds to zero (no '+0.0' or '-0.0')."""
    if is_missing(value):
        return "–"
    return "0.0" if round(value, 1) == 0 else f"{value:+.1f}"


def significance_display(frame: pd.DataFrame) -> pd.DataFrame:
    display = pd.DataFrame(index=frame.index)
    if frame["model_pair"].nunique() > 1:
        display["Model pair"] = frame["model_pair"]
    display["ACM"] = frame["acm"]
    display["Base"] = frame["base"]
    display["Benchmark"] = ["Avg." if b == AVERAGE else benchmark_label(b, None) for b in frame["benchmark"]]
    display["n"] = ["–" if pd.isna(n) else str(int(n)) for n in frame["n"]]
    display["ACM acc."] = [format_number(v, 1) for v in frame["acm_accuracy"]]
    display["Base acc."] = [format_number(v, 1) for v in frame["base_accuracy"]]
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
        write_text(out_dir / "significance.md", f"{SIGNIFICANCE_FORMAT}\n\n{markdown}\n"),
        write_text(out_dir / "significance.tex", latex_comment(SIGNIFICANCE_FORMAT) + to_latex(display, text_columns)),
    )
