"""Paired significance tests: known answers, brute-force references, the samples-file loader."""

from __future__ import annotations

import json
import math
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from acm_exp import significance
from acm_exp.errors import ConfigError


def brute_force_bootstrap(a: list[int], b: list[int], *, resamples: int, seed: int) -> float:
    """The documented test, one resample at a time in exact integer arithmetic."""
    differences = [x - y for x, y in zip(a, b, strict=False)]
    n, observed = len(differences), sum(differences)  # sums: the means times n
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(resamples):
        resampled = sum(differences[i] for i in rng.integers(0, n, size=n))
        extreme += abs(resampled - observed) >= abs(observed)
    return (extreme + 1) / (resamples + 1)


def brute_force_stratified(a: list[int], b: list[int], strata: list[str], *, resamples: int, seed: int) -> float:
    """Resampling within strata (sorted labels), statistic = mean of per-stratum means, as fractions."""
    labels = sorted(set(strata))
    groups = [[x - y for x, y, s in zip(a, b, strata, strict=False) if s == label] for label in labels]

    def statistic(per_group: list[list[int]]) -> Fraction:
        return sum(Fraction(sum(g), len(g)) for g in per_group) / len(per_group)

    observed = statistic(groups)
    rng = np.random.default_rng(seed)
    extreme = 0
    for _ in range(resamples):
        resampled = [[g[i] for i in rng.integers(0, len(g), size=len(g))] for g in groups]
        extreme += abs(statistic(resampled) - observed) >= abs(observed)
    return (extreme + 1) / (resamples + 1)


def two_sided_binomial(wins: int, losses: int) -> float:
    """Sum of the probabilities of every outcome no more likely than the observed one."""
    trials = wins + losses
    probabilities = [Fraction(math.comb(trials, k), 2**trials) for k in range(trials + 1)]
    return float(sum(p for p in probabilities if p <= probabilities[wins]))


# ---------------------------------------------------------------------------------------------
# Known answers


def test_identical_systems_are_not_significant():
    rng = np.random.default_rng(3)
    a = (rng.random(200) < 0.6).astype(float)
    assert significance.paired_bootstrap_pvalue(a, a.copy()) == 1.0
    assert significance.sign_test_pvalue(a, a.copy()) == 1.0
    result = significance.compare(a, a.copy(), resamples=500)
    assert (result.difference, result.wins, result.losses, result.bootstrap_p, result.sign_p) == (0.0, 0, 0, 1.0, 1.0)
    assert result.n == 200 and result.accuracy_a == result.accuracy_b == pytest.approx(100 * a.mean())


def test_thirty_wins_of_thirty_differing_questions():
    # 30 questions where a is right and b wrong, 20 where both agree (ties are dropped).
    a = np.array([1] * 30 + [1] * 10 + [0] * 10)
    b = np.array([0] * 30 + [1] * 10 + [0] * 10)
    assert significance.sign_test_pvalue(a, b) == pytest.approx(2 * 0.5**30, rel=1e-12)
    assert significance.sign_test_pvalue(b, a) == pytest.approx(2 * 0.5**30, rel=1e-12)
    assert significance.exact_sign_test(30, 0) == 2 * 0.5**30
    result = significance.compare(a, b, resamples=999)
    assert (result.n, result.wins, result.losses, result.difference) == (50, 30, 0, pytest.approx(60.0))
    # Every resample of all-nonnegative differences with 30 of 50 wins: |d* − d̂| ≥ d̂ needs d* ≤ 0
    # (30 wins all missed, probability (20/50)^50 ≈ 1e-20) or d* ≥ 2 d̂ (impossible): none in 999.
    assert result.bootstrap_p == 1 / 1000


def test_sign_test_without_scipy_gives_the_same_numbers(monkeypatch):
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1])
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0])
    with_scipy = significance.sign_test_pvalue(a, b)
    monkeypatch.setattr(significance, "_scipy_binomtest", None)
    assert significance.sign_test_pvalue(a, b) == pytest.approx(with_scipy, rel=1e-12)
    assert significance.sign_test_pvalue(a, a) == 1.0


@pytest.mark.parametrize(("wins", "losses"), [(0, 0), (1, 0), (3, 1), (7, 2), (5, 5), (2, 11), (20, 9)])
def test_exact_sign_test_matches_the_binomial_distribution(wins, losses):
    expected = 1.0 if wins + losses == 0 else min(1.0, two_sided_binomial(wins, losses))
    assert significance.exact_sign_test(wins, losses) == pytest.approx(expected, rel=1e-12)


def test_sign_test_counts_fractional_correctness_by_its_sign():
    # Means over seeds: a higher on questions 0 and 1, lower on 2, equal on 3.
    a, b = [1.0, 0.5, 0.0, 0.5], [0.5, 0.0, 0.5, 0.5]
    assert significance.wins_losses(a, b) == (2, 1)
    assert significance.sign_test_pvalue(a, b) == pytest.approx(1.0)


def test_clearly_better_system_reaches_the_smallest_bootstrap_p():
    # Every difference is +1: every resample equals d̂, never as far as |d̂| from it.
    assert significance.paired_bootstrap_pvalue(np.ones(40), np.zeros(40), resamples=199) == 1 / 200


# ---------------------------------------------------------------------------------------------
# The bootstrap against an independent one-resample-at-a-time loop


SMALL_A = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1]
SMALL_B = [1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0]


@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_equals_a_brute_force_loop(seed):
    expected = brute_force_bootstrap(SMALL_A, SMALL_B, resamples=1000, seed=seed)
    assert significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=1000, seed=seed) == expected
    assert 0.05 < expected < 0.5  # 4 wins, 1 loss on 13 questions: a real but weak effect


def test_bootstrap_does_not_depend_on_the_chunk_size(monkeypatch):
    expected = significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=1000, seed=1)
    # 3 resamples per chunk: 333 full chunks and one of a single resample.
    monkeypatch.setattr(significance, "CHUNK_ELEMENTS", 3 * len(SMALL_A) + 2)
    assert significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=1000, seed=1) == expected
    assert brute_force_bootstrap(SMALL_A, SMALL_B, resamples=1000, seed=1) == expected


def test_bootstrap_is_deterministic_for_a_seed():
    first = significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=500, seed=11)
    assert significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=500, seed=11) == first
    others = {significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=500, seed=s) for s in range(5)}
    assert len(others) > 1  # the seed is actually used


def test_stratified_bootstrap_equals_a_brute_force_loop(monkeypatch):
    strata = ["math"] * 5 + ["gsm8k"] * 8  # labels out of sorted order on purpose
    expected = brute_force_stratified(SMALL_A, SMALL_B, strata, resamples=600, seed=2)
    monkeypatch.setattr(significance, "CHUNK_ELEMENTS", 7 * len(SMALL_A))
    assert significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=600, seed=2, strata=strata) == expected


def test_one_stratum_is_the_plain_bootstrap():
    plain = significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=300, seed=4)
    assert (
        significance.paired_bootstrap_pvalue(SMALL_A, SMALL_B, resamples=300, seed=4, strata=["x"] * len(SMALL_A))
        == plain
    )


def test_compare_averages_accuracy_over_strata():
    a, b = [1, 1, 1, 0], [1, 0, 0, 0]
    result = significance.compare(a, b, strata=["x", "y", "y", "y"], resamples=100)
    # Stratum x: 100 vs 100; stratum y: 66.7 vs 0 -> macro means 83.3 vs 50.
    assert result.accuracy_a == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result.accuracy_b == pytest.approx(50.0)
    assert (result.n, result.wins, result.losses) == (4, 2, 0)


def test_bootstrap_memory_stays_bounded_for_10000_resamples_of_2000_questions():
    rng = np.random.default_rng(0)
    a, b = (rng.random(2000) < 0.6).astype(float), (rng.random(2000) < 0.58).astype(float)
    tracemalloc.start()
    try:
        significance.paired_bootstrap_pvalue(a, b, resamples=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_at_once = 10_000 * 2000 * 16  # indices + values of every resample: 320 MB
    assert peak < 64 * 2**20 < all_at_once


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1, 0, 1], [1, 0], "got lengths 3 and 2"),
        ([], [], "0 questions"),
        ([1, float("nan")], [1, 0], "NaN"),
        ([[1, 0]], [[1, 0]], "1-D"),
    ],
)
def test_bad_inputs_are_config_errors(a, b, message):
    for function in (significance.paired_bootstrap_pvalue, significance.sign_test_pvalue, significance.compare):
        with pytest.raises(ConfigError, match=message):
            function(a, b)


def test_bad_resamples_and_strata_are_config_errors():
    with pytest.raises(ConfigError, match="resamples=0; expected a positive integer"):
        significance.paired_bootstrap_pvalue([1, 0], [0, 0], resamples=0)
    with pytest.raises(ConfigError, match="one label per question"):
        significance.paired_bootstrap_pvalue([1, 0], [0, 0], strata=["x"])


# ---------------------------------------------------------------------------------------------
# Samples files


def write_samples(path: Path, correct: dict[str, bool], **extra) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": i, "seed": 0, "prompt": "p", "correct": c, **extra}) + "\n" for i, c in correct.items()
        ),
        encoding="utf-8",
    )
    return path


def test_per_question_correctness_averages_seeds_by_id(tmp_path):
    seed0 = write_samples(tmp_path / "gsm8k__seed0.jsonl", {"q1": True, "q0": False, "q2": True})
    seed1 = write_samples(tmp_path / "gsm8k__seed1.jsonl", {"q2": False, "q0": False, "q1": True, "q3": True})
    series = significance.per_question_correctness([seed0, str(seed1)])
    # q3 is only in seed 1: left out, so that every value averages the same seeds.
    assert series.to_dict() == {"q0": 0.0, "q1": 1.0, "q2": 0.5}
    assert list(series.index) == ["q0", "q1", "q2"]


def test_align_questions_keeps_the_shared_ids():
    import pandas as pd

    ids, a, b = significance.align_questions(
        pd.Series({"q2": 1.0, "q1": 0.0, "q9": 1.0}), pd.Series({"q1": 1.0, "q2": 0.5, "q3": 0.0})
    )
    assert (ids, a.tolist(), b.tolist()) == (["q1", "q2"], [0.0, 1.0], [1.0, 0.5])
    with pytest.raises(ConfigError, match="share no question id"):
        significance.align_questions(pd.Series({"a": 1.0}), pd.Series({"b": 1.0}))


def test_samples_file_problems_are_one_line_config_errors(tmp_path):
    missing = tmp_path / "none.jsonl"
    with pytest.raises(ConfigError, match=r"none\.jsonl does not exist"):
        significance.per_question_correctness([missing])
    with pytest.raises(ConfigError, match="at least one samples file"):
        significance.per_question_correctness([])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "q0", "correct": true}\n{"id": "q1", "corr\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON") as raised:
        significance.read_correctness(broken)
    assert "\n" not in str(raised.value)
    no_field = tmp_path / "no_field.jsonl"
    no_field.write_text('{"id": "q0"}\n')
    with pytest.raises(ConfigError, match="line 1: expected a record with 'id' and 'correct'"):
        significance.read_correctness(no_field)
    odd_value = write_samples(tmp_path / "odd.jsonl", {"q0": "yes"})
    with pytest.raises(ConfigError, match="correct='yes'; expected true or false"):
        significance.read_correctness(odd_value)
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"id": "q0", "correct": true}\n{"id": "q0", "correct": false}\n')
    with pytest.raises(ConfigError, match="'q0' appears twice"):
        significance.read_correctness(twice)
    disjoint = [write_samples(tmp_path / "s0.jsonl", {"a": True}), write_samples(tmp_path / "s1.jsonl", {"b": True})]
    with pytest.raises(ConfigError, match="share no question id"):
        significance.per_question_correctness(disjoint)
