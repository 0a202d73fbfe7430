"""Step 3a of grading: numbers, by the numeric rule in force (``eval.grading.numeric``).

``precision`` (the default) compares two integers exactly and takes a decimal as right when it
lies within half a unit of its own last written place of the gold value: ``4.6667`` is 14/3,
``3.1416`` is pi, but ``70001.0`` is not 70000 and ``0.34`` is not 1/3. An exact answer (integer,
fraction) against a decimal gold must round to the gold at the gold's written place; of two
decimals the coarser written place counts. ``10\\%`` reads as 10 and as 0.1. Clock times compare as
times of day (``20:34`` is ``20:34:00`` and ``8:34 p.m.``).

``qwen`` is the Qwen2.5-Math evaluation toolkit's rule (``evaluation/grader.py``, ``math_equal``):
within a relative 1e-4 of the gold, gold/100 or gold*100. It accepts ``70001.0`` for 70000, so it
is a switch for reproducing numbers published with that toolkit, never the default.

Numbers are read from plain decimals, thousands separators (``1,234``, ``1 000``), scientific
notation (``4.5 \\times 10^{33}``, ``4.5e33``), fractions (``\\frac{3}{4}``, ``3/4``), mixed numbers
(``1 1/2``, ``1\\frac{1}{2}``) and decimal commas (``1,22`` against a single number).
"""

from __future__ import annotations

import contextvars
import math
import re
from contextlib import contextmanager
from fractions import Fraction
from typing import NamedTuple

from acm_exp.errors import ConfigError
from acm_exp.eval.grading.normalize import THOUSANDS, compact, normalize, normalized

# Numeric comparison rules (eval.grading.numeric).
NUMERIC_RULES = ("precision", "qwen")
DEFAULT_NUMERIC_RULE = "precision"
# Relative tolerance of the "qwen" rule (Qwen2.5-Math evaluation/grader.py, math_equal).
QWEN_REL_TOL = 1e-4

_NUMERIC_RULE: contextvars.ContextVar[str] = contextvars.ContextVar("numeric_rule", default=DEFAULT_NUMERIC_RULE)

_PLAIN_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")


def check_numeric_rule(rule: str) -> str:
    """``rule`` when it names a numeric rule, else ConfigError."""
    if rule not in NUMERIC_RULES:
        raise ConfigError(f"eval.grading.numeric={rule!r} is unknown; expected one of {NUMERIC_RULES}")
    return rule


@contextmanager
def numeric_rule(rule: str):
    """Grade by ``rule`` inside the block (the rule is a context variable: threads keep theirs)."""
    token = _NUMERIC_RULE.set(check_numeric_rule(rule))
    try:
        yield
    finally:
        _NUMERIC_RULE.reset(token)


def current_numeric_rule() -> str:
    return _NUMERIC_RULE.get()


class Number(NamedTuple):
    """An answer's exact value, and half a unit of its last written decimal place (None: the
    answer is exact, e.g. an integer or a fraction)."""

    value: Fraction
    half_unit: Fraction | None


def _decimal(text: str) -> Number:
    """``4.6667`` -> (46667/10000, 1/20000); ``3.5e2`` -> (350, 5); ``12`` -> (12, None)."""
    mantissa, _, exponent = text.lower().partition("e")
    scale = Fraction(10) ** int(exponent or 0)
    value = Fraction(mantissa) * scale
    if "." not in mantissa or not mantissa.split(".")[1]:
        return Number(value, None if not exponent else scale / 2)
    places = len(mantissa.split(".")[1])
    return Number(value, Fraction(1, 2 * 10**places) * scale)


def parse_number(answer: str) -> Number | None:
    """The value of a normalized answer that is a plain number, a fraction, a mixed number
    (``1 1/2``, ``1\\frac{1}{2}``) or a number in scientific notation; None otherwise."""
    text = answer.strip()
    if not text or len(text) > 200:
        return None
    try:
        mixed = re.fullmatch(r"([+-]?)(\d+)\s*(?:\\frac\{(\d+)\}\{(\d+)\}|\s(\d+)/(\d+))", text)
        if mixed:
            numerator, denominator = (int(mixed.group(3) or mixed.group(5)), int(mixed.group(4) or mixed.group(6)))
            if 0 < numerator < denominator:
                sign = -1 if mixed.group(1) == "-" else 1
                return Number(sign * (int(mixed.group(2)) + Fraction(numerator, denominator)), None)
            if mixed.group(5):
                return None  # "3 5/2" is no mixed number
        text = compact(text)
        if re.fullmatch(_PLAIN_NUMBER, text):
            return _decimal(text)
        fraction = re.fullmatch(r"([+-]?)\\frac\{(" + _PLAIN_NUMBER + r")\}\{(" + _PLAIN_NUMBER + r")\}", text)
        slash = re.fullmatch(r"()(" + _PLAIN_NUMBER + r")/(" + _PLAIN_NUMBER + r")", text)
        if fraction or slash:
            match = fraction or slash
            sign = -1 if match.group(1) == "-" else 1
            return Number(sign * Fraction(match.group(2)) / Fraction(match.group(3)), None)
        scientific = re.fullmatch(r"(?:(" + _PLAIN_NUMBER + r")(?:\\times|\\cdot|\*|x))?10\^\{?([+-]?\d+)\}?", text)
        if scientific and abs(int(scientific.group(2))) < 400:
            number = _decimal(scientific.group(1) or "1")
            scale = Fraction(10) ** int(scientific.group(2))
            return Number(number.value * scale, number.half_unit * scale if number.half_unit else None)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def to_number(answer: str) -> float | None:
    """The value of a normalized answer that is a plain number, fraction or mixed number."""
    number = parse_number(answer)
    try:
        return float(number.value) if number is not None else None
    except OverflowError:
        return None


def _readings(number: Number, percent: bool) -> list[Number]:
    """``10%`` reads as 10 (the percent sign as a unit) and as 0.1."""
    if not percent:
        return [number]
    hundredth = Number(number.value / 100, number.half_unit / 100 if number.half_unit else None)
    return [number, hundredth]


def values_match(pred: Number, gold: Number) -> bool:
    """The precision-aware rule: a decimal is right when it lies within half a unit of its own last
    written place of the other value (4.6667 for 14/3, not 70001.0 for 70000); of two decimals, the
    coarser place counts (0.2902 answers a gold of 0.29, 4.6e33 one of 4.55e33); an exact prediction
    (integer, fraction) against a decimal gold must round to the gold at the gold's written place;
    two exact values must be equal."""
    units = [unit for unit in (pred.half_unit, gold.half_unit) if unit is not None]
    if not units:
        return pred.value == gold.value
    return abs(pred.value - gold.value) <= max(units)


def _qwen_match(pred: Number, gold: Number) -> bool:
    """Qwen2.5-Math's math_equal on numbers: within a relative 1e-4 of gold, gold/100 or gold*100."""
    try:
        prediction, reference = float(pred.value), float(gold.value)
    except OverflowError:
        return pred.value == gold.value
    return any(
        math.isclose(prediction, item, rel_tol=QWEN_REL_TOL) for item in (reference / 100, reference, reference * 100)
    )


def numbers_equal(pred: str, gold: str) -> bool | None:
    """Numeric comparison of two answers by the numeric rule in force (``eval.grading.numeric``);
    None when one of them is not a number."""
    pred_norm, gold_norm = normalized(pred), normalized(gold)
    pred_number, gold_number = parse_number(pred_norm.text), parse_number(gold_norm.text)
    if pred_number is None or gold_number is None:
        return None
    if _NUMERIC_RULE.get() == "qwen":
        return _qwen_match(pred_number, gold_number)
    return any(
        values_match(p, g)
        for p in _readings(pred_number, pred_norm.percent)
        for g in _readings(gold_number, gold_norm.percent)
    )


def _decimal_comma(answer: str) -> str | None:
    """``1,22`` -> ``1.22``: a comma that cannot separate thousands is a decimal comma."""
    text = compact(normalize(answer))
    if _DECIMAL_COMMA.fullmatch(text) and not THOUSANDS.match(text):
        return text.replace(",", ".")
    return None


def decimal_comma_equal(pred: str, gold: str) -> bool | None:
    """``1,22`` against the single number ``1.22``: a decimal comma; None when neither answer has
    one or the other answer is no single number (then ``1,22`` is the list 1, 22)."""
    pred_reading, gold_reading = _decimal_comma(pred), _decimal_comma(gold)
    if pred_reading is not None and parse_number(normalize(gold)) is not None:
        return bool(numbers_equal(pred_reading, gold))
    if gold_reading is not None and parse_number(normalize(pred)) is not None:
        return bool(numbers_equal(pred, gold_reading))
    return None


# A time of day: h:mm or h:mm:ss, with a.m. / p.m. (any case, dots optional) on a 12-hour clock.
_CLOCK = re.compile(r"(\d{1,2}):([0-5]\d)(?::([0-5]\d))?(?:\s*([aApP])\.?\s*[mM]\.?)?")


def clock_seconds(answer: str) -> int | None:
    """Seconds after midnight of an answer that is a time of day, else None. (Read from the answer
    as written: normalization would drop ``\\text{p.m.}`` as a unit.)"""
    text = re.sub(r"\\(?:text|textrm|textnormal|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", answer.replace("$", ""))
    text = re.sub(r"\\[,;: !]|~", " ", text).strip().rstrip(".")
    match = _CLOCK.fullmatch(text) if len(text) < 40 else None
    if not match:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    half = (match.group(4) or "").lower()
    if half:
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if half == "p" else 0)
    elif hours > 24:
        return None
    return (hours * 3600 + minutes * 60 + seconds) % 86400


def times_equal(pred: str, gold: str) -> bool | None:
    """Two times of day compare as such; None unless both answers are one."""
    pred_seconds, gold_seconds = clock_seconds(pred), clock_seconds(gold)
    if pred_seconds is None or gold_seconds is None:
        return None
    return pred_seconds == gold_seconds
