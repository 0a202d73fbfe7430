"""Step 3d of grading: symbolic comparison on math-verify (``parse``, then ``verify(gold, pred)``,
gold first), with three guards of our own.

- math-verify reads LaTeX only inside delimiters: each answer is handed over as ``\\boxed{answer}``
  and parsed in ``first_match`` mode; a parse that covers only a fragment of the answer (``3630``
  out of ``3630 ft^2, 522,720``) counts as no parse, so answers sharing a fragment never match.
- Two equations are the same when ``lhs - rhs`` are proportional; math-verify compares their real
  solution sets, so every quadratic without real roots would equal every other one.
- Where math-verify's simplification finds no proof, two expressions in the same variables are
  the same when they take the same values at several generic points (an identity such as
  ``\\sec^2 y = \\tan^2 y + 1``, powers written ``0.5`` and ``3/2``); ``i`` is the imaginary unit
  in an answer that has no other variable (``i(2-i)`` is ``1+2i``).
- Answers longer than MATH_VERIFY_MAX_CHARS, huge powers and factorials (``10^{10^{10}}``,
  ``100000!``) and unbalanced braces are not handed over: sympy would evaluate them for minutes.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from functools import lru_cache

from acm_exp.eval.grading.extract import balanced_braces
from acm_exp.eval.grading.normalize import compact

log = logging.getLogger(__name__)

# Longer strings are not handed to math-verify: parsing them can take many seconds.
MATH_VERIFY_MAX_CHARS = 1000
# Nor are huge powers and factorials (10^{100000000}, 10^{10^{10}}, 100000!): sympy evaluates them
# exactly, for minutes; the time limit would stop it, but only by restarting the helper.
_HUGE_NUMBER = re.compile(r"\^\s*\{?\s*\d{6,}|\^\s*\{\s*\d+\s*\^\s*\{?\s*\d{2,}|\d{5,}\s*!")


@lru_cache(maxsize=4096)
def math_verify_parse(answer: str) -> tuple:
    from math_verify import parse

    # math-verify only reads LaTeX inside delimiters; \boxed{} is its highest-priority anchor.
    # first_match: with "any_match", a failed parse of the whole answer falls back to a fragment
    # of it (``\frac{1}{3} E_{1}+\frac{2}{3} E_{2}`` parsed as 2/3), making unequal answers equal.
    # No timeout of its own: the helper process bounds the whole grading call.
    return tuple(parse("\\boxed{" + answer + "}", extraction_mode="first_match", parsing_timeout=None))


def _covers_answer(parsed: tuple, answer: str) -> bool:
    """Whether math-verify parsed the whole answer rather than a fragment of it.

    When the whole answer does not parse, math-verify may keep a piece of it ("3630" out of
    "3630 ft^2, 522,720"), and two different answers that share the piece would compare equal.
    parse() returns [expression, matched text]; its rewriting never shrinks the text this much.
    """
    matched = next((item for item in reversed(parsed) if isinstance(item, str)), None)
    if matched is None or 2 * len(compact(matched)) < len(compact(answer)):
        return False
    # Letters the answer has (outside command names) that the parse kept none of: "10cm" read as 10.
    return not (_LETTERS.search(answer) and not _LETTERS.search(matched))


_LETTERS = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]")


def fit_for_math_verify(answer: str) -> bool:
    return len(answer) <= MATH_VERIFY_MAX_CHARS and not _HUGE_NUMBER.search(answer) and balanced_braces(answer)


def parsed_expression(answer: str) -> object | None:
    """math-verify's sympy reading of a whole answer, or None."""
    if not fit_for_math_verify(answer):
        return None
    parsed = math_verify_parse(answer)
    if not parsed or isinstance(parsed[0], str) or not _covers_answer(parsed, answer):
        return None
    return parsed[0]


def constant_value(answer: str) -> Fraction | None:
    """The value of an answer that is a real constant (``\\pi``, ``\\frac{\\sqrt{3}}{3}``), to 40
    significant digits; None for anything else."""
    from sympy import Expr, Float, N

    expression = parsed_expression(answer)
    if not isinstance(expression, Expr) or expression.free_symbols or not expression.is_number:
        return None
    value = N(expression, 40)
    if not (value.is_real and isinstance(value, Float)) and not value.is_Integer and not value.is_Rational:
        return None
    return Fraction(str(value)) if isinstance(value, Float) else Fraction(int(value.p), int(value.q))


def _equations_equal(gold_expr: object, pred_expr: object) -> bool | None:
    """Two equations are the same when ``lhs - rhs`` are proportional; None if not both equations.

    math-verify compares equations by their real solution sets instead, so every quadratic
    without real roots equals every other one (x^2-2x+10=0 and x^2-2x+11=0).
    """
    from sympy import Eq, simplify

    if not (isinstance(gold_expr, Eq) and isinstance(pred_expr, Eq)):
        return None
    gold_side = gold_expr.lhs - gold_expr.rhs
    pred_side = pred_expr.lhs - pred_expr.rhs
    if not gold_side.free_symbols and not pred_side.free_symbols:
        # Statements about numbers (\log(0.01)=-2): both sides must match, not be proportional.
        return _same_value(gold_expr.lhs, pred_expr.lhs) and _same_value(gold_expr.rhs, pred_expr.rhs)
    if gold_side == 0 or pred_side == 0:
        return bool(gold_side == pred_side)
    ratio = simplify(gold_side / pred_side)
    return bool(ratio.is_number and ratio != 0 and ratio.is_finite)


def _same_value(first: object, second: object) -> bool:
    from sympy import N

    difference = complex(N(first - second))
    return abs(difference) <= 1e-9 * (1.0 + abs(complex(N(first))))


def symbolic_equal(pred: str, gold: str, equations_only: bool = False) -> bool:
    """math-verify's ``verify(gold, pred)`` (gold first) on normalized answers; False on any
    failure. ``equations_only``: True only for two equations that match (see _equations_equal)."""
    from math_verify import verify

    if not (fit_for_math_verify(pred) and fit_for_math_verify(gold)):
        return False
    try:
        gold_parsed = math_verify_parse(gold)
        pred_parsed = math_verify_parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        if not (_covers_answer(gold_parsed, gold) and _covers_answer(pred_parsed, pred)):
            return False
        equations = _equations_equal(gold_parsed[0], pred_parsed[0])
        if equations is not None or equations_only:
            return bool(equations)
        if verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None):
            return True
        return same_values(gold_parsed[0], pred_parsed[0])
    except Exception:  # noqa: BLE001 - sympy raises anything
        log.debug("math-verify failed", exc_info=True)
        return False


# Generic points (irrational, away from 0 and 1) at which two expressions are compared, one value
# per variable: identities hold at every point, different expressions differ at almost every one.
_GENERIC_VALUES = (0.6180339887498949, 1.4142135623730951, 0.7320508075688772, 1.2599210498948732, 0.8660254037844386)
_POINTS = 4
_REL_TOL = 1e-9


def _imaginary_unit(*expressions: object) -> tuple:
    """``i`` as the imaginary unit when it is the only variable of the answers."""
    from sympy import I

    names = {str(symbol) for expression in expressions for symbol in expression.free_symbols}
    if names != {"i"}:
        return expressions
    return tuple(
        expression.subs({s: I for s in expression.free_symbols if str(s) == "i"}) for expression in expressions
    )


def same_values(gold_expr: object, pred_expr: object) -> bool:
    """Whether two expressions take the same (complex) values at _POINTS generic points of their
    variables; False when they are no expressions, have different variables or cannot be evaluated."""
    from sympy import Expr

    if not (isinstance(gold_expr, Expr) and isinstance(pred_expr, Expr)):
        return False
    gold_expr, pred_expr = _imaginary_unit(gold_expr, pred_expr)
    names = sorted({str(symbol) for symbol in gold_expr.free_symbols})
    if names != sorted({str(symbol) for symbol in pred_expr.free_symbols}):
        return False
    compared = 0
    for point in range(_POINTS if names else 1):
        values = {name: _generic_value(point, index) for index, name in enumerate(names)}
        try:
            gold_value = _evaluate(gold_expr, values)
            pred_value = _evaluate(pred_expr, values)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, ArithmeticError):
            continue
        if not (_finite(gold_value) and _finite(pred_value)):
            continue
        # Relative to the values themselves: e^{-40t} and e^{-41t} are both tiny at t = 1.6.
        if abs(gold_value - pred_value) > _REL_TOL * max(abs(gold_value), abs(pred_value)):
            return False
        compared += 1
    return compared >= (2 if names else 1)


def _generic_value(point: int, variable: int) -> float:
    return _GENERIC_VALUES[(point + variable) % len(_GENERIC_VALUES)] + 0.1 * point


def _evaluate(expression: object, values: dict[str, float]) -> complex:
    substitutions = {symbol: values[str(symbol)] for symbol in expression.free_symbols}
    return complex(expression.evalf(30, subs=substitutions))


def _finite(value: complex) -> bool:
    return value == value and abs(value) != float("inf")
