"""Step 3c of grading: matrices, cell by cell, so that every cell gets the numeric rule.

A matrix is one ``pmatrix``, ``bmatrix``, ``matrix`` or ``array`` environment (surrounding
brackets are typography); a product of matrices written out compares factor by factor. A matrix
of one row or one column is a vector: it equals a bracketed list of the same entries in the same
order (``\\begin{pmatrix}1\\\\2\\end{pmatrix}`` is ``(1, 2)``, ``[1, 2]`` and ``1, 2``). A ``cases`` environment
is a system of equations: the same equations, in any order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from acm_exp.eval.grading.sequences import ITEM_SEPARATORS, bracketed, same_set, split_top_level

_MATRIX = re.compile(
    r"[(\[]?\s*\\begin\{(pmatrix|bmatrix|matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}\s*[)\]]?", re.DOTALL
)
_MATRIX_FACTOR = re.compile(r"[(\[]?\s*\\begin\{(pmatrix|bmatrix|matrix|array)\}.*?\\end\{\1\}\s*[)\]]?", re.DOTALL)


def matrix_cells(answer: str) -> list[list[str]] | None:
    """The cells, row by row, of an answer that is one matrix (pmatrix, bmatrix, matrix or array;
    brackets are typography), else None. A trailing row break adds no row."""
    match = _MATRIX.fullmatch(answer.strip())
    if not match or "\\begin" in match.group(2):
        return None
    rows = [row for row in re.split(r"\\\\", match.group(2))]
    if rows and not rows[-1].strip():
        rows.pop()
    return [[cell.strip() for cell in row.split("&")] for row in rows]


def _matrix_factors(answer: str) -> list[str] | None:
    """The factors of an answer written as a product of two or more matrices, else None."""
    factors = []
    rest = answer.strip()
    while rest:
        match = _MATRIX_FACTOR.match(rest)
        if not match:
            return None
        factors.append(match.group(0))
        rest = rest[match.end() :].strip()
    return factors if len(factors) >= 2 else None


def matrix_products_equal(pred: str, gold: str, equal: Callable[[str, str], bool]) -> bool | None:
    """A product of matrices written out compares factor by factor: the factors are the answer (a
    decomposition ``L U``, an inverse applied to a vector), not only their product. None unless
    both answers are such products."""
    pred_factors, gold_factors = _matrix_factors(pred), _matrix_factors(gold)
    if pred_factors is None or gold_factors is None:
        return None
    return len(pred_factors) == len(gold_factors) and all(
        bool(matrices_equal(p, g, equal)) for p, g in zip(pred_factors, gold_factors, strict=False)
    )


def matrices_equal(pred: str, gold: str, equal: Callable[[str, str], bool]) -> bool | None:
    """Cell by cell, so every cell gets the numeric rule; None unless both answers are matrices
    (a column vector may be written as a tuple on the other side: math-verify decides then)."""
    pred_cells, gold_cells = matrix_cells(pred), matrix_cells(gold)
    if pred_cells is None or gold_cells is None:
        return None
    if [len(row) for row in pred_cells] != [len(row) for row in gold_cells]:
        return False
    return all(
        equal(p, g)
        for pred_row, gold_row in zip(pred_cells, gold_cells, strict=False)
        for p, g in zip(pred_row, gold_row, strict=False)
    )


def vector_against_list(pred: str, gold: str, equal: Callable[[str, str], bool]) -> bool | None:
    """A one-row or one-column matrix against a list of two or more items, bracketed or bare: entry
    by entry, in order; None unless exactly one side is such a matrix and the other such a list."""
    for matrix, other, matrix_is_pred in ((pred, gold, True), (gold, pred, False)):
        cells = matrix_cells(matrix)
        group = bracketed(other.strip())
        if cells is None or (group is not None and group[0] == "\\{") or matrix_cells(other) is not None:
            continue
        if len(cells) != 1 and any(len(row) != 1 for row in cells):
            return None  # a true matrix is no list
        entries = [cell for row in cells for cell in row]
        items = split_top_level(group[1] if group else other, ITEM_SEPARATORS)
        if len(items) < 2:
            return None
        pairs = zip(entries, items, strict=False) if matrix_is_pred else zip(items, entries, strict=False)
        return len(entries) == len(items) and all(equal(p, g) for p, g in pairs)
    return None


_SYSTEM = re.compile(r"\\begin\{cases\}(.*)\\end\{cases\}", re.DOTALL)


def _equations(answer: str) -> list[str] | None:
    match = _SYSTEM.fullmatch(answer.strip())
    if not match:
        return None
    rows = [row.replace("&", " ").strip() for row in re.split(r"\\\\", match.group(1))]
    return [row for row in rows if row]


def systems_equal(pred: str, gold: str, equal: Callable[[str, str], bool]) -> bool | None:
    """Two systems of equations (``cases``) hold the same equations, in any order; None unless
    both answers are systems."""
    pred_rows, gold_rows = _equations(pred), _equations(gold)
    if pred_rows is None or gold_rows is None:
        return None
    return len(pred_rows) == len(gold_rows) and same_set(pred_rows, gold_rows, equal)
