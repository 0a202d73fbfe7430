"""How many questions a result rests on: complete evaluations and subsets.

Every results row records ``n`` (the questions evaluated), ``benchmark_size`` (the questions the
benchmark has, as the evaluator loaded it) and ``subset`` (``n < benchmark_size``: ``eval.limit``
took part of the benchmark), plus the run's ``eval_limit``. Tables and figures use complete
evaluations only unless asked for subsets (``include_subsets``), so a smoke test never sits beside a
full evaluation.

Rows written before these columns existed have no ``benchmark_size``. On read they get the largest
``n`` (or recorded ``benchmark_size``) the table holds for that benchmark, and ``subset`` follows
from it: an old 3-question smoke test beside an old 50-question evaluation of the same benchmark is
a subset. A benchmark that the table only ever holds subsets of cannot be told from a complete one
this way; filter on ``n`` (``python -m acm_exp.results n=...``) or rerun it to record its size.
"""

from __future__ import annotations

import pandas as pd

SIZE_COLUMNS = ("n", "benchmark_size", "subset")


def is_subset(n: int, benchmark_size: int | None) -> bool | None:
    """Whether ``n`` questions are part of the benchmark only; None when its size is unknown."""
    return None if benchmark_size is None else int(n) < int(benchmark_size)


def fill_sizes(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with ``benchmark_size`` and ``subset`` filled in for rows that predate them (see the
    module docstring); rows that recorded them keep their values."""
    if frame.empty:
        return frame
    n = frame["n"].astype("Float64")
    largest = pd.concat([n, frame["benchmark_size"].astype("Float64")], axis=1).max(axis=1)
    inferred = largest.groupby(frame["benchmark"].astype(object)).transform("max")
    sizes = frame["benchmark_size"].astype("Float64").fillna(inferred)
    frame["benchmark_size"] = sizes.round().astype("Int64")
    frame["subset"] = frame["subset"].astype("boolean").fillna(n < sizes)
    return frame


def split_subsets(table: pd.DataFrame, include_subsets: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to use, rows left out): without ``include_subsets`` the subset evaluations are left out."""
    if include_subsets or table.empty:
        return table, table.iloc[0:0]
    subset = table["subset"].astype("boolean").fillna(False).astype(bool)
    return table[~subset], table[subset]


def describe_left_out(left_out: pd.DataFrame) -> str:
    """One line naming the subset evaluations left out: 'left out 6 rows of subset evaluations
    (eval.limit): toy n=3 of 100; include_subsets=true shows them'; '' when none were."""
    if left_out.empty:
        return ""
    sizes = left_out[["benchmark", "n", "benchmark_size"]].drop_duplicates().sort_values(["benchmark", "n"])
    found = ", ".join(f"{row.benchmark} n={row.n} of {row.benchmark_size}" for row in sizes.itertuples(index=False))
    return f"left out {len(left_out)} rows of subset evaluations (eval.limit): {found}; include_subsets=true shows them"
