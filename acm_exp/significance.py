"""Is a merge's gain over its base method real? Paired tests on per-question correctness.

Two systems answered the same questions; ``a[i]`` and ``b[i]`` are their correctness on question
``i``: 0/1 for one seed, or the mean over seeds (a value in [0, 1]). Pairing by question removes
the question difficulty from the noise, which is what makes a one-point difference testable.

- ``paired_bootstrap_pvalue``: two-sided p-value for "mean(a) − mean(b) = 0". Question indices are
  resampled with replacement; the resampled differences d* are centred on the observed d̂ (the
  shifted-distribution test) and p = (#{|d* − d̂| ≥ |d̂|} + 1) / (resamples + 1). With ``strata``
  (e.g. the benchmark of each question) the statistic is the mean over strata of the per-stratum
  mean difference, the main table's macro average, and resampling stays within each stratum.
- ``sign_test_pvalue``: exact two-sided binomial sign test on the questions where a and b differ.
- ``compare``: both tests plus accuracies, difference (points) and wins/losses, as a ``Comparison``.
- ``per_question_correctness`` / ``align_questions``: from the evaluator's samples files
  (``acm_exp.eval.samples``: one JSON record per line with ``id`` and boolean ``correct``; one
  file per seed) to paired arrays on the question ids both systems answered.

The p-values are per comparison; nothing here corrects for testing many comparisons at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from acm_exp.errors import ConfigError
from acm_exp.paths import iter_jsonl

try:  # scipy's exact binomial test when available; the same numbers from math.comb otherwise
    from scipy.stats import binomtest as _scipy_binomtest
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_binomtest = None

DEFAULT_RESAMPLES = 10_000
# Resampled values held at once (rows x questions): 2**20 float64 + int64 ≈ 16 MiB per chunk.
CHUNK_ELEMENTS = 2**20
# Resampled differences this close to the observed one count as "at least as extreme": a tie on
# the boundary must not flip with floating-point rounding.
_TIE_RTOL, _TIE_ATOL = 1e-9, 1e-12


@dataclass(frozen=True)
class Comparison:
    """System a against system b on the same ``n`` questions (accuracies and difference in points)."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    bootstrap_p: float
    sign_p: float
    wins: int  # questions where a scored higher than b
    losses: int  # questions where b scored higher than a


# ---------------------------------------------------------------------------------------------
# Validation


def paired_arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """a and b as float arrays of one non-empty, equal length with finite values."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ConfigError(f"per-question correctness must be 1-D; got shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ConfigError(f"paired systems need one value per question each; got lengths {len(a)} and {len(b)}")
    if len(a) == 0:
        raise ConfigError("paired systems were compared on 0 questions; expected at least 1")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("per-question correctness contains NaN or infinity; expected finite values in [0, 1]")
    return a, b


def _stratum_codes(strata: Any, length: int) -> np.ndarray:
    """Integer stratum per question (0 for all when ``strata`` is None)."""
    if strata is None:
        return np.zeros(length, dtype=np.int64)
    labels = np.asarray(strata)
    if labels.ndim != 1 or len(labels) != length:
        raise ConfigError(f"strata must give one label per question; got shape {labels.shape} for {length} questions")
    _, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int64)


def _check_resamples(resamples: int) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ConfigError(f"resamples={resamples!r}; expected a positive integer")


# ---------------------------------------------------------------------------------------------
# Tests


def _macro_mean(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean over strata of the per-stratum mean, along the last axis (strata are contiguous)."""
    sums = np.add.reduceat(values, starts, axis=-1)  # exact for 0/1 data, unlike a weighted dot product
    return (sums / sizes).mean(axis=-1)


def paired_bootstrap_pvalue(
    a: Any, b: Any, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, strata: Any = None
) -> float:
    """Two-sided paired-bootstrap p-value for "mean(a) − mean(b) = 0".

    Resample r draws question indices ``numpy.random.default_rng(seed).integers(0, n, size=n)``
    (the r-th block of n draws, per stratum when ``strata`` is given, strata in sorted label
    order and each stratum's questions in their given order), so the result depends on the seed
    only, never on the chunking. Identical systems give exactly 1.
    """
    a, b = paired_arrays(a, b)
    _check_resamples(resamples)
    codes = _stratum_codes(strata, len(a))
    order = np.argsort(codes, kind="stable")  # each stratum contiguous, questions in given order
    differences = (a - b)[order]
    sizes = np.bincount(codes).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # Per position: the size of its stratum (the draw's bound) and the stratum's first position.
    bound = np.repeat(sizes, sizes)
    offset = np.repeat(starts, sizes)
    observed = float(_macro_mean(differences, starts, sizes))
    threshold = abs(observed)

    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // len(differences))
    extreme = 0
    remaining = int(resamples)
    while remaining:
        rows = min(rows_per_chunk, remaining)
        indices = offset + rng.integers(0, bound, size=(rows, len(differences)))
        shifted = np.abs(_macro_mean(differences[indices], starts, sizes) - observed)
        extreme += int(
            np.count_nonzero((shifted >= threshold) | np.isclose(shifted, threshold, rtol=_TIE_RTOL, atol=_TIE_ATOL))
        )
        remaining -= rows
    return (extreme + 1) / (resamples + 1)


def exact_sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of wins vs losses at p = 1/2 (1 when both are 0)."""
    trials = wins + losses
    if trials == 0:
        return 1.0
    # For p = 1/2 the two tails are mirror images: double the smaller one.
    tail = sum(math.comb(trials, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**trials)


def wins_losses(a: Any, b: Any) -> tuple[int, int]:
    """Questions where a scored higher than b, and where b scored higher than a."""
    a, b = paired_arrays(a, b)
    return int(np.count_nonzero(a > b)), int(np.count_nonzero(a < b))


def sign_test_pvalue(a: Any, b: Any) -> float:
    """Exact two-sided sign test on the questions where a and b differ (ties dropped); 1 when none differ."""
    wins, losses = wins_losses(a, b)
    if wins + losses == 0:
        return 1.0
    if _scipy_binomtest is not None:
        return float(_scipy_binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)
    return exact_sign_test(wins, losses)


def compare(a: Any, b: Any, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, strata: Any = None) -> Comparison:
    """Both tests on paired per-question correctness; accuracies (macro over strata) in points."""
    a, b = paired_arrays(a, b)
    codes = _stratum_codes(strata, len(a))
    sizes = np.bincount(codes)

    def accuracy(values: np.ndarray) -> float:
        return 100.0 * float((np.bincount(codes, weights=values) / sizes).mean())

    wins, losses = wins_losses(a, b)
    accuracy_a, accuracy_b = accuracy(a), accuracy(b)
    return Comparison(
        n=len(a),
        accuracy_a=accuracy_a,
        accuracy_b=accuracy_b,
        difference=accuracy_a - accuracy_b,
        bootstrap_p=paired_bootstrap_pvalue(a, b, resamples=resamples, seed=seed, strata=strata),
        sign_p=sign_test_pvalue(a, b),
        wins=wins,
        losses=losses,
    )


# ---------------------------------------------------------------------------------------------
# From samples files to paired arrays


def read_correctness(path: str | Path) -> pd.Series:
    """One samples file as ``id -> correctness`` (1.0 / 0.0), in file order."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"samples file {path} does not exist; expected the evaluator's per-sample JSONL")
    values: dict[str, float] = {}
    try:
        for number, record in iter_jsonl(path, "samples file"):
            identifier, correct = _record_correctness(record, path, number)
            if identifier in values:
                raise ConfigError(f"samples file {path} line {number}: question id {identifier!r} appears twice")
            values[identifier] = correct
    except OSError as error:
        raise ConfigError(f"samples file {path} is unreadable ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"samples file {path} is not UTF-8 text ({error.reason})") from None
    if not values:
        raise ConfigError(f"samples file {path} holds no records; expected one JSON record per question")
    return pd.Series(values, dtype="float64", name="correct")


def _record_correctness(record: Any, path: Path, line: int) -> tuple[str, float]:
    """(question id, 1.0 or 0.0) of one samples record."""
    if not isinstance(record, dict) or "id" not in record or "correct" not in record:
        raise ConfigError(f"samples file {path} line {line}: expected a record with 'id' and 'correct'")
    correct = record["correct"]
    # 0/1 integers are accepted too: hand-written or older files store correctness that way.
    if isinstance(correct, bool) or (isinstance(correct, (int, float)) and correct in (0, 1)):
        return str(record["id"]), float(correct)
    raise ConfigError(f"samples file {path} line {line}: correct={correct!r}; expected true or false")


def per_question_correctness(samples_paths: Sequence[str | Path]) -> pd.Series:
    """Mean correctness over the given files (one per seed), indexed by question id (sorted).

    Only questions present in every file are kept, so each value averages the same seeds.
    """
    if not samples_paths:
        raise ConfigError("per_question_correctness needs at least one samples file; got none")
    per_seed = [read_correctness(path) for path in samples_paths]
    frame = pd.concat(per_seed, axis=1, join="inner")
    if frame.empty:
        raise ConfigError(
            f"samples files {', '.join(map(str, samples_paths))} share no question id; expected seeds of one evaluation"
        )
    return frame.mean(axis=1).sort_index().rename("correct")


def align_questions(a: pd.Series, b: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The question ids both systems answered (sorted) and their paired values."""
    shared = sorted(set(a.index) & set(b.index))
    if not shared:
        raise ConfigError(
            f"the two systems share no question id ({len(a)} and {len(b)} questions); "
            "expected evaluations of the same benchmark"
        )
    return shared, a.loc[shared].to_numpy(dtype=np.float64), b.loc[shared].to_numpy(dtype=np.float64)
