"""``python -m acm_exp.figures``: every figure the filtered results table supports, one outcome each.

Complete evaluations only unless ``include_subsets=true`` (acm_exp.coverage); a figure that cannot be
drawn says why in one line, naming the subsets left out when those were what it lacked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from acm_exp.coverage import describe_left_out, split_subsets
from acm_exp.errors import ConfigError
from acm_exp.figures.coefficients import write_layer_coefficients
from acm_exp.figures.cost_table import write_cost_table
from acm_exp.figures.entries import Entries, build_entries
from acm_exp.figures.output import MissingRuns
from acm_exp.figures.pareto import write_pareto
from acm_exp.figures.sweeps import write_calibration_size, write_cluster_count, write_t_sensitivity
from acm_exp.figures.tables import write_main_table, write_significance_table
from acm_exp.results import load_results, parse_assignments, resolve_results_dir


@dataclass(frozen=True)
class Outcome:
    name: str
    files: tuple[Path, ...] = ()
    message: str | None = None


WRITERS: dict[str, Callable[[Entries, Path], tuple[Path, ...]]] = {
    "main_table": write_main_table,
    "significance": write_significance_table,
    "t_sensitivity": write_t_sensitivity,
    "calibration_size": write_calibration_size,
    "cluster_count": write_cluster_count,
    "layer_coefficients": write_layer_coefficients,
    "pareto": write_pareto,
    "cost_table": write_cost_table,
}
FIGURES = tuple(WRITERS)


def make_figures(
    table: pd.DataFrame, out_dir: str | Path, only: Sequence[str] | None = None, *, include_subsets: bool = False
) -> list[Outcome]:
    """Write every figure (or ``only`` those) the table supports; one Outcome per figure.

    Subset evaluations (``eval.limit``) are left out unless ``include_subsets``; a skipped figure's
    message then names them."""
    names = list(only) if only else list(FIGURES)
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ConfigError(f"unknown figure {unknown[0]!r}; expected any of {', '.join(FIGURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept, left_out = split_subsets(table, include_subsets)
    hint = f" ({describe_left_out(left_out)})" if not left_out.empty else ""
    if kept.empty:
        return [Outcome(name, message=f"{name}: no complete evaluations in the table{hint}") for name in names]
    entries = build_entries(kept)
    outcomes = []
    for name in names:
        try:
            outcomes.append(Outcome(name, WRITERS[name](entries, out)))
        except MissingRuns as missing:
            outcomes.append(Outcome(name, message=f"{missing}{hint}"))
    return outcomes


def parse_flag(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ConfigError(f"{name}={value!r}; expected true or false")
    return lowered == "true"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.figures",
        description="Write the paper's tables and figures from the results table (filters as in "
        "python -m acm_exp.results; out=DIR, default ./outputs/figures; results_dir=DIR). Complete "
        "evaluations only; include_subsets=true adds those limited by eval.limit, labelled with their n.",
    )
    parser.add_argument("filters", nargs="*", metavar="column=value")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    args = parser.parse_intermixed_args(argv)
    try:
        filters, options = parse_assignments(args.filters, special=("results_dir", "out", "include_subsets"))
        include_subsets = parse_flag("include_subsets", options.get("include_subsets"))
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
        outcomes = make_figures(table, out, only, include_subsets=include_subsets)
    except (ConfigError, OSError) as error:
        print(f"acm_exp.figures: error: {error}", file=sys.stderr)
        return 2
    left_out = split_subsets(table, include_subsets)[1]
    if not left_out.empty:
        print(f"acm_exp.figures: {describe_left_out(left_out)}", file=sys.stderr)
    for outcome in outcomes:
        if outcome.files:
            print(f"{outcome.name}: " + ", ".join(str(p) for p in outcome.files))
        else:
            print(f"skipped {outcome.message}", file=sys.stderr)
    return 0 if any(o.files for o in outcomes) else 1
