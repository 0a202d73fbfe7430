"""Sweeps: points of otherwise identical configurations along one swept variable, plotted.

(b) sensitivity to the temperature t, (c) calibration set size, (d) random vs clustered
calibration and the number of clusters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from acm_exp.figures.entries import (
    VARYING_COLUMNS,
    Entries,
    averages,
    benchmarks_label,
    found_values,
    is_missing,
    merged_info,
    method_setting_labels,
    pair_averages,
    reference_entry,
    row_keys,
)
from acm_exp.figures.output import RC_PARAMS, MissingRuns, new_figure, save_figure, write_csv


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
    for pair, group, benchmarks, avg in pair_averages(entries, frame):
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
                    "n": " ".join(str(entries.sizes[b]) for b in benchmarks),
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
    columns = [c for c in key_columns if c not in ("pair", "method")]
    for _, group in frame.groupby(["pair", "method"]):
        for entry, label in method_setting_labels(group, columns).items():
            labels[entry] = label
    return labels


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
                if reference in avg.index and not is_missing(avg.loc[reference, "avg_accuracy"]):
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
        figure.suptitle(f"{title}\n{averaged_over(points, entries)}", fontsize="medium")
        return save_figure(figure, stem)


def averaged_over(points: pd.DataFrame, entries: Entries) -> str:
    """'average over GSM8K (n=1319), MATH500 (n=500)' (per model pair when they differ)."""
    per_pair = {
        pair: benchmarks_label(entries, group["benchmarks"].iloc[0].split())
        for pair, group in points.groupby("model_pair", sort=True)
    }
    if len(set(per_pair.values())) == 1:
        return f"average over {next(iter(per_pair.values()))}"
    return "; ".join(f"{pair}: average over {label}" for pair, label in per_pair.items())


def _write_sweep(
    points: pd.DataFrame, entries: Entries, out_dir: Path, name: str, x_name: str, **plot: Any
) -> tuple[Path, ...]:
    csv = write_csv(points.rename(columns={"x": x_name}), out_dir / f"{name}.csv")
    return (csv, *plot_sweep(points, entries, stem=out_dir / name, **plot))


# (b)
def write_t_sensitivity(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    merged = merged_info(entries)
    acm = merged[merged["t"].notna()]
    points = sweep_points(entries, acm, acm["t"].astype(float), swept=("t",))
    if points.empty:
        found = f"t={found_values(acm['t'])}" if not acm.empty else "no merged runs that use t"
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
            f"calibration_samples={found_values(calibrated['calibration_samples'])}"
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
        if row["calibration_selection"] == "cluster" and not is_missing(row["num_clusters"]):
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
            f"selection={found_values(calibrated['calibration_selection'])}, num_clusters={found_values(clustered)}"
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
    return (csv, *plot_bars(points, entries, stem=out_dir / "cluster_count"))


def plot_bars(points: pd.DataFrame, entries: Entries, *, stem: Path) -> tuple[Path, Path]:
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
        figure.suptitle(
            f"Calibration selection: random vs clusters\n{averaged_over(points, entries)}", fontsize="medium"
        )
        return save_figure(figure, stem)
