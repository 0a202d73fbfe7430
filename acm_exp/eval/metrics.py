"""Metrics from per-sample records, and their aggregation over seeds.

Units: ``accuracy`` and ``truncation_rate`` are percentages (0-100); ``mean_tokens`` is the mean
response length in tokens of the evaluated model's tokenizer (stripped text, no special tokens);
``reflections`` is the mean count of reflection phrases per response (``count_reflections``: "wait",
"re-examine", "double-check", "let me check", "recap", "let me just verify", "let me just check",
case-insensitive, whole words, as the L2S papers count them). Multiple-choice benchmarks
also give ``accuracy_norm`` (lm-evaluation-harness's acc_norm, from the records' ``correct_norm``;
None elsewhere) and generate nothing (``mean_tokens`` NaN).

Rows (``metric_rows``): one per (benchmark, seed) with ``seed`` the seed and ``num_seeds`` 1; when
several seeds ran, one more row per benchmark with ``seed`` None, ``num_seeds`` the count, the
metrics' mean over seeds and their sample standard deviation (ddof 1) in ``<metric>_std``. Every
row carries every key (``*_std`` None on per-seed rows) so that the rows form one table.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

METRICS = ("accuracy", "accuracy_norm", "mean_tokens", "truncation_rate", "reflections")

REFLECTION_PHRASES = (
    "wait",
    "re-examine",
    "double-check",
    "let me check",
    "recap",
    "let me just verify",
    "let me just check",
)
_REFLECTION = re.compile(
    r"\b(?:"
    + "|".join(
        # "double-check" is also written "double check"; words may be separated by any space.
        re.escape(phrase).replace(r"\-", r"[-\s]").replace(r"\ ", r"\s+")
        for phrase in REFLECTION_PHRASES
    )
    + r")\b",
    re.IGNORECASE,
)


def count_reflections(text: str) -> int:
    """How many reflection phrases (REFLECTION_PHRASES) the text contains, case-insensitive, whole words."""
    if not isinstance(text, str):
        return 0
    return len(_REFLECTION.findall(text))


def count_tokens(tokenizer: Any, text: str) -> int:
    """Response length as the L2S papers count it: the stripped text re-tokenized, no special tokens."""
    stripped = text.strip()
    if not stripped:
        return 0
    return len(tokenizer(stripped, add_special_tokens=False)["input_ids"])


def benchmark_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float | int]:
    """accuracy (%), mean_tokens, truncation_rate (%), reflections (mean count) and n of one run."""
    n = len(records)
    if n == 0:
        return {
            "accuracy": math.nan,
            "mean_tokens": math.nan,
            "truncation_rate": math.nan,
            "reflections": math.nan,
            "n": 0,
        }
    metrics = {
        "accuracy": 100.0 * sum(bool(r["correct"]) for r in records) / n,
        "mean_tokens": sum(r["tokens"] for r in records) / n,
        "truncation_rate": 100.0 * sum(r["finish_reason"] == "length" for r in records) / n,
        "reflections": sum(r["reflections"] for r in records) / n,
        "n": n,
    }
    if all("correct_norm" in r for r in records):
        metrics["accuracy_norm"] = 100.0 * sum(bool(r["correct_norm"]) for r in records) / n
    return metrics


def relative_length_change(mean_tokens: float, reference_mean_tokens: float) -> float | None:
    """Length change in percent against a reference (L2S: the slow model); None without a reference length."""
    if not reference_mean_tokens or math.isnan(reference_mean_tokens):
        return None
    return 100.0 * (mean_tokens - reference_mean_tokens) / reference_mean_tokens


def seed_row(identity: Mapping[str, Any], seed: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    row = {**identity, "seed": seed, "num_seeds": 1, "n": metrics["n"]}
    for name in METRICS:
        row[name] = metrics.get(name)
        row[f"{name}_std"] = None
    return row


def aggregate_row(identity: Mapping[str, Any], per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of each metric over the per-seed rows of one benchmark."""
    row = {**identity, "seed": None, "num_seeds": len(per_seed), "n": per_seed[0]["n"]}
    for name in METRICS:
        values = [r.get(name) for r in per_seed]
        if any(value is None for value in values):  # a metric the benchmark does not have
            row[name] = row[f"{name}_std"] = None
            continue
        row[name] = statistics.fmean(values)
        row[f"{name}_std"] = _sample_std(values)
    return row


def _sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for one value; NaN where a value is NaN, which statistics.stdev
    cannot take)."""
    if any(math.isnan(value) for value in values):
        return math.nan
    return statistics.stdev(values) if len(values) > 1 else 0.0


def metric_rows(
    identity: Mapping[str, Any], per_benchmark: Mapping[str, Mapping[int, Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Rows for every benchmark: per seed, then (several seeds) the aggregate.

    ``per_benchmark[benchmark][seed]`` holds ``benchmark_metrics`` of that run.
    """
    rows: list[dict[str, Any]] = []
    for benchmark, by_seed in per_benchmark.items():
        base = {**identity, "benchmark": benchmark}
        per_seed = [seed_row(base, seed, metrics) for seed, metrics in by_seed.items()]
        rows.extend(per_seed)
        if len(per_seed) > 1:
            rows.append(aggregate_row(base, per_seed))
    return rows
