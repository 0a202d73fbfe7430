"""(f) Accuracy against length: every evaluated model of a pair, and their Pareto frontier."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from acm_exp.figures.entries import Entries, benchmarks_label, found_values, pair_averages
from acm_exp.figures.output import RC_PARAMS, MissingRuns, new_figure, save_figure, write_csv


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
    for pair, info, benchmarks, avg in pair_averages(entries, entries.info, at_least=2):
        for entry, row in info.iterrows():
            records.append(
                {
                    "model_pair": pair,
                    "method": row["label"],
                    "role": row["role"],
                    "avg_tokens": float(avg.loc[entry, "avg_tokens"]),
                    "avg_accuracy": float(avg.loc[entry, "avg_accuracy"]),
                    "benchmarks": " ".join(benchmarks),
                    "n": " ".join(str(entries.sizes[b]) for b in benchmarks),
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
        ["model_pair", "method", "role", "avg_tokens", "avg_accuracy", "on_frontier", "benchmarks", "n"]
    ].reset_index(drop=True)


def write_pareto(entries: Entries, out_dir: Path) -> tuple[Path, ...]:
    points = pareto_points(entries)
    if points.empty:
        raise MissingRuns(
            f"Pareto: needs at least 2 evaluated models of one model pair on a common benchmark; "
            f"found {len(entries.info)} across pairs {found_values(entries.info['pair'])}"
        )
    csv = write_csv(points, out_dir / "pareto.csv")
    return (csv, *plot_pareto(points, entries, stem=out_dir / "pareto"))


def plot_pareto(points: pd.DataFrame, entries: Entries, *, stem: Path) -> tuple[Path, Path]:
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
            benchmarks = group["benchmarks"].iloc[0].split()
            axis.set_title(f"{pair}\naverage over {benchmarks_label(entries, benchmarks)}", fontsize="medium")
            axis.legend(fontsize="small")
        return save_figure(figure, stem)
