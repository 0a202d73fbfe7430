"""Metrics on constructed records, seed aggregation, and the samples files' atomic write and reuse."""

from __future__ import annotations

import json
import math

import pytest

from acm_exp.eval.metrics import benchmark_metrics, count_tokens, metric_rows, relative_length_change
from acm_exp.eval.samples import read_records, reusable_records, samples_path, write_records


def record(correct: bool, tokens: int, finish: str = "stop", reflections: int = 0, id_: str = "0") -> dict:
    return {
        "id": id_,
        "prompt": "p",
        "correct": correct,
        "tokens": tokens,
        "finish_reason": finish,
        "reflections": reflections,
    }


def test_benchmark_metrics():
    records = [record(True, 10), record(False, 30, "length", 2), record(True, 20, reflections=1), record(False, 40)]
    metrics = benchmark_metrics(records)
    assert metrics == {"accuracy": 50.0, "mean_tokens": 25.0, "truncation_rate": 25.0, "reflections": 0.75, "n": 4}


def test_benchmark_metrics_empty_is_nan():
    metrics = benchmark_metrics([])
    assert metrics["n"] == 0 and math.isnan(metrics["accuracy"])


def test_relative_length_change():
    assert relative_length_change(50.0, 200.0) == pytest.approx(-75.0)
    assert relative_length_change(300.0, 200.0) == pytest.approx(50.0)
    assert relative_length_change(10.0, 0.0) is None


def test_count_tokens_strips_and_skips_special_tokens():
    class CharTokenizer:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": ([0] if add_special_tokens else []) + [ord(c) for c in text]}

    assert count_tokens(CharTokenizer(), "  abc \n") == 3
    assert count_tokens(CharTokenizer(), "   ") == 0


def test_metric_rows_single_seed():
    rows = metric_rows(
        {"model": "m", "role": "merged"}, {"gsm8k": {0: benchmark_metrics([record(True, 10), record(False, 20)])}}
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == "m" and row["role"] == "merged" and row["benchmark"] == "gsm8k"
    assert row["seed"] == 0 and row["num_seeds"] == 1 and row["n"] == 2
    assert row["accuracy"] == 50.0 and row["accuracy_std"] is None


def test_metric_rows_several_seeds_add_an_aggregate_row():
    by_seed = {
        0: benchmark_metrics([record(True, 10), record(True, 20)]),
        1: benchmark_metrics([record(True, 30), record(False, 40)]),
        2: benchmark_metrics([record(False, 50), record(False, 60, "length")]),
    }
    rows = metric_rows({"model": "m", "role": "merged"}, {"gsm8k": by_seed, "toy": {0: by_seed[0], 1: by_seed[1]}})
    assert [(r["benchmark"], r["seed"]) for r in rows] == [
        ("gsm8k", 0),
        ("gsm8k", 1),
        ("gsm8k", 2),
        ("gsm8k", None),
        ("toy", 0),
        ("toy", 1),
        ("toy", None),
    ]
    aggregate = rows[3]
    assert aggregate["num_seeds"] == 3 and aggregate["n"] == 2
    assert aggregate["accuracy"] == pytest.approx(50.0)
    assert aggregate["accuracy_std"] == pytest.approx(50.0)  # sample std of 100, 50, 0
    assert aggregate["mean_tokens"] == pytest.approx(35.0)
    assert aggregate["truncation_rate"] == pytest.approx(50.0 / 3)
    # One table: every row has the same keys.
    assert len({tuple(sorted(r)) for r in rows}) == 1


def test_samples_path():
    assert samples_path("out/samples", "gsm8k", 0, several_seeds=False).name == "gsm8k.jsonl"
    assert samples_path("out/samples", "gsm8k", 3, several_seeds=True).name == "gsm8k__seed3.jsonl"


def test_records_round_trip_and_leave_no_temporary(tmp_path):
    path = tmp_path / "samples" / "b.jsonl"
    records = [record(True, 3, id_="a"), {**record(False, 4, id_="b"), "response": "é ∑ \\boxed{1}"}]
    write_records(path, records)
    assert read_records(path) == records
    assert [p.name for p in path.parent.iterdir()] == ["b.jsonl"]


def test_reuse_requires_the_same_ids_and_prompts(tmp_path):
    path = tmp_path / "b.jsonl"
    write_records(path, [record(True, 1, id_="a"), record(True, 1, id_="b")])
    assert reusable_records(path, ["a", "b"], ["p", "p"]) is not None
    assert reusable_records(path, ["a", "b", "c"], ["p", "p", "p"]) is None
    assert reusable_records(path, ["a", "c"], ["p", "p"]) is None
    assert reusable_records(path, ["a", "b"], ["p", "other prompt"]) is None
    assert reusable_records(tmp_path / "missing.jsonl", ["a"], ["p"]) is None


def test_truncated_file_is_not_reused(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(record(True, 1, id_="a")) + "\n" + '{"id": "b", "pro')
    assert read_records(path) is None
    assert reusable_records(path, ["a", "b"], ["p", "p"]) is None
