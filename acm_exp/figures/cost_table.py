"""(g) The cost table: what each method's coefficients, merge and evaluation cost, per model pair.

Rows are methods (TA, TIES, DARE, AIM, Sens-Merging, ACM-TA, ACM-TIES, and any other merged method
in the results); columns are model pair x {coefficient time, coefficient peak memory, merge time,
evaluation tokens/s}. Times are what the first computation paid (a run served from the statistics
cache reports the cached entry's original cost), taken as the median over an entry's runs so one
slow run does not decide it; written as CSV, Markdown and LaTeX, plus a bar chart (PNG and PDF).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from acm_exp.figures.entries import METHOD_ORDER, Entries, method_label, registered_method
from acm_exp.figures.output import MissingRuns, new_figure, save_figure, to_latex, write_csv, write_text
from acm_exp.figures.tables import latex_comment

# The measures, in table order: (column name, results column, fallback column, how runs combine).
MEASURES = (
    ("coefficient time [s]", "coefficients_original_s", "coefficients_s", "median"),
    ("coefficient peak memory [GB]", "coefficients_original_peak_rss_gb", "coefficients_peak_rss_gb", "max"),
    ("merge time [s]", "merge_original_s", "merge_s", "median"),
    ("evaluation tokens/s", "eval_tokens_per_s", None, "median"),
)
COST_TABLE_FORMAT = (
    "Cells: seconds and peak resident memory (GB) of a method's coefficients (calibration pass; 0 for methods "
    "without one), seconds of its merge, and generated tokens per second of its evaluation; the median over "
    "the method's runs (peak memory: the maximum), as first computed when a run reused a cache; –: not recorded."
)


def has_no_coefficient_stage(method: str) -> bool:
    """A registered method without a calibration pass: its coefficient cost is zero, not unknown."""
    registered = registered_method(method)
    return registered is not None and registered.coefficients is None


def _measure_values(rows: pd.DataFrame, column: str, fallback: str | None) -> pd.Series:
    values = rows[column].astype("float64") if column in rows else pd.Series(np.nan, index=rows.index)
    if fallback is not None and fallback in rows:
        values = values.fillna(rows[fallback].astype("float64"))
    return values


def write_cost_table(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    """Per method and model pair: coefficient time and peak memory, merge time, evaluation tokens/s."""
    frame = cost_frame(entries.rows)
    if frame.empty:
        raise MissingRuns("cost_table: no merged runs in the results")
    display = cost_display(frame)
    return (
        write_csv(frame, out_dir / "cost_table.csv"),
        write_text(
            out_dir / "cost_table.md",
            f"{COST_TABLE_FORMAT}\n\n{display.to_markdown(index=False, disable_numparse=True)}\n",
        ),
        write_text(
            out_dir / "cost_table.tex", latex_comment(COST_TABLE_FORMAT) + to_latex(display, text_columns=("Method",))
        ),
        *plot_costs(frame, out_dir / "cost_table"),
    )


def cost_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Long form: one row per (model pair, method) with the four measures; deterministic order."""
    merged = rows[rows["role"] == "merged"]
    records = []
    for (pair, method), group in merged.groupby(["pair", "method"], sort=True):
        # One value per run: a run's rows (one per benchmark) share its coefficient and merge costs.
        per_run = group.drop_duplicates(["run_id", "benchmark"])
        record = {"model_pair": pair, "method": method, "label": method_label(method)}
        for name, column, fallback, how in MEASURES:
            values = _measure_values(per_run, column, fallback).dropna()
            if column.startswith("coefficients") and has_no_coefficient_stage(method):
                record[name] = 0.0
            elif values.empty:
                record[name] = np.nan
            else:
                record[name] = float(values.max() if how == "max" else values.median())
        records.append(record)
    frame = pd.DataFrame(records, columns=["model_pair", "method", "label", *(m[0] for m in MEASURES)])
    rank = {method: position for position, method in enumerate(METHOD_ORDER)}
    frame["_rank"] = frame["method"].map(lambda m: rank.get(m, len(rank)))
    return (
        frame.sort_values(["_rank", "method", "model_pair"], kind="mergesort")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def _fmt(value: float) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def cost_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Wide form: rows = methods, columns = '<pair>: <measure>'."""
    pairs = sorted(frame["model_pair"].unique())
    labels = list(dict.fromkeys(frame["label"]))
    table = pd.DataFrame({"Method": labels})
    for pair in pairs:
        subset = frame[frame["model_pair"] == pair].set_index("label")
        for name, *_ in MEASURES:
            table[f"{pair}: {name}"] = [_fmt(subset[name].get(label, np.nan)) for label in labels]
    return table


def plot_costs(frame: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    """Grouped bars per method: coefficient time and coefficient peak memory, one bar per model pair."""
    pairs = sorted(frame["model_pair"].unique())
    labels = list(dict.fromkeys(frame["label"]))
    figure, axes = new_figure(2, width=max(3.5, 0.6 * len(labels) + 1.5), height=3.0)
    width = 0.8 / max(len(pairs), 1)
    positions = np.arange(len(labels))
    for axis, (name, *_) in zip(axes, MEASURES[:2], strict=False):
        for index, pair in enumerate(pairs):
            subset = frame[frame["model_pair"] == pair].set_index("label")
            heights = [subset[name].get(label, np.nan) for label in labels]
            axis.bar(positions + index * width, heights, width, label=pair)
        axis.set_xticks(positions + width * (len(pairs) - 1) / 2, labels, rotation=45, ha="right")
        axis.set_ylabel(name)
    axes[0].legend(fontsize=6)
    figure.suptitle("What the coefficients cost")
    return save_figure(figure, stem)
