"""Step 3 of grading, put together: whether a predicted answer equals the gold, cheapest test first.

1. both answers normalized (acm_exp.eval.grading.normalize), compared as strings, spaces ignored;
2. numbers by the numeric rule in force (acm_exp.eval.grading.numbers); two plain numbers that
   differ are different, whatever else follows;
3. what math-verify lacks: clock times, decimal commas, numbers in another base (``2516_8``), a
   decimal against a constant (``3.1416`` against ``\\pi``), inequalities against intervals,
   matrices cell by cell, vectors against lists, systems of equations, labels (``(p,q)=(3,2)``,
   ``x=2, y=3`` against ``(2,3)``), tuples, sets and lists element by element, ``\\approx`` chains
   by their exact form, relations side by side and equations up to a constant factor; prose is
   never compared symbolically;
4. math-verify (acm_exp.eval.grading.symbolic).

Then ``grade_math_unbounded`` / ``grade_gsm8k_unbounded``: extraction and comparison of one
response. Everything here runs in this process without a time limit; the package's public
functions run it in the helper process (acm_exp.eval.bounded).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from acm_exp.eval.grading.extract import extract_answer_unbounded, final_boxes
from acm_exp.eval.grading.matrices import matrices_equal, matrix_products_equal, systems_equal, vector_against_list
from acm_exp.eval.grading.normalize import compact, is_label, labels_conflict, normalize, normalized
from acm_exp.eval.grading.numbers import (
    DEFAULT_NUMERIC_RULE,
    current_numeric_rule,
    decimal_comma_equal,
    numbers_equal,
    numeric_rule,
    parse_number,
    times_equal,
)
from acm_exp.eval.grading.sequences import (
    as_tuple,
    bracketed,
    item_count,
    sequences_equal,
    split_top_level,
)
from acm_exp.eval.grading.symbolic import constant_value, symbolic_equal

log = logging.getLogger(__name__)

# Unordered collections up to this size compare their elements symbolically (2 n^2 comparisons).
UNORDERED_SYMBOLIC_MAX = 8
_RELATIONS = ("=", "\\approx")
_BASE_NUMBER = re.compile(r"([0-9A-Za-z]+)_\{?(\d+)\}?")
# Words of three letters or more that are not commands: two of them make an answer prose,
# which math-verify cannot compare (it turns words into products of symbols).
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}(?![a-zA-Z])")
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log exp det max min lim mod gcd lcm".split()
)
_INEQUALITY = re.compile(r"(<|>|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z]))")
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?")
_ABSOLUTE_VALUE = re.compile(r"\|\s*([a-zA-Z](?:_\{?\w+\}?)?)\s*\|")


def _base_number(answer: str) -> tuple[str, int] | None:
    """(digits, base) of an answer written in another base, e.g. ``2516_8`` or ``4210_{5}``."""
    match = _BASE_NUMBER.fullmatch(compact(answer))
    if not match or not re.search(r"\d", match.group(1)):
        return None
    return match.group(1).upper(), int(match.group(2))


def _cheap_equal(pred: str, gold: str) -> bool:
    """Exact, numeric and element-wise comparison, without math-verify."""
    pred_norm, gold_norm = normalize(pred), normalize(gold)
    if compact(pred_norm) == compact(gold_norm) and normalized(pred).percent == normalized(gold).percent:
        return True
    numeric = numbers_equal(pred, gold)
    if numeric is not None:
        return numeric
    if compact(pred_norm) == compact(gold_norm):
        return True
    return bool(sequences_equal(pred_norm, gold_norm, _cheap_element_equal))


def _cheap_element_equal(pred: str, gold: str) -> bool:
    return not labels_conflict(pred, gold) and _cheap_equal(pred, gold)


def is_prose(answer: str) -> bool:
    answer = re.sub(r"\\(?:begin|end)\{[^{}]*\}", " ", answer)  # environment names are no words
    return sum(word.lower() not in _MATH_WORDS for word in _WORD.findall(answer)) >= 2


def _relation_parts(answer: str) -> tuple[list[str], list[str]]:
    """The parts of a chain ``a = b \\approx c`` and the relations between them."""
    parts: list[str] = []
    relations: list[str] = []
    rest = answer
    for part in split_top_level(answer, _RELATIONS):
        parts.append(part)
        index = rest.find(part) + len(part)
        rest = rest[index:]
        relation = next((r for r in _RELATIONS if rest.lstrip().startswith(r)), None)
        if relation is not None:
            relations.append(relation)
            rest = rest.lstrip()[len(relation) :]
    return parts, relations[: len(parts) - 1]


def _exact_form(parts: list[str], relations: list[str]) -> str | None:
    """The last exactly stated value of an ``\\approx`` chain (``\\frac{\\sqrt3}{3}`` of
    ``x = \\frac{\\sqrt3}{3} \\approx 0.577``); None when only an approximation is given."""
    first_approx = relations.index("\\approx")
    exact = parts[first_approx]
    return None if not exact or is_label(exact) else exact


def _approximation_equal(pred: str, gold: str) -> bool | None:
    """Compare answers with an ``\\approx`` chain by their exact forms when both give one, else
    the exact form of one against the other's value; None when neither has ``\\approx``."""
    pred_parts, pred_relations = _relation_parts(pred)
    gold_parts, gold_relations = _relation_parts(gold)
    if "\\approx" not in pred_relations and "\\approx" not in gold_relations:
        return None

    def value(parts: list[str], relations: list[str]) -> str:
        if "\\approx" in relations:
            return _exact_form(parts, relations) or parts[-1]
        return parts[-1]

    # What a chain names comes first (A(4) = ... \approx ...): two chains naming different things differ.
    if len(pred_parts) > 2 and len(gold_parts) > 2 and pred_relations[0] == gold_relations[0] == "=":
        if compact(pred_parts[0]) != compact(gold_parts[0]) and not _is_equiv(pred_parts[0], gold_parts[0]):
            return False
    return _is_equiv(value(pred_parts, pred_relations), value(gold_parts, gold_relations))


def _relation_chain_equal(pred: str, gold: str) -> bool | None:
    """Compare answers that contain ``=`` part by part; None when neither does.

    math-verify reads ``P(X=4)=5/8`` as its right side and a chain like ``i^{6}=i^{4} i^{2}=-1``
    as its first relation, so it would equate answers that differ in the left side or in the final
    value. Two equations (one ``=`` each) also match when they are proportional (x^2-4x-2=0 and
    2x^2-8x-4=0). A chain (two relations or more) matches a shorter answer by its final value:
    ``-1`` answers ``i^{6}=i^{4} i^{2}=-1``; two chains of one length match step by step.
    """
    pred_parts = split_top_level(pred, "=")
    gold_parts = split_top_level(gold, "=")
    if len(pred_parts) == 1 and len(gold_parts) == 1:
        return None
    if len(pred_parts) == len(gold_parts):
        if all(_is_equiv(p, g) for p, g in zip(pred_parts, gold_parts, strict=False)):
            return True
        if len(gold_parts) == 2:
            return symbolic_equal(pred, gold, equations_only=True)
        return False
    if len(pred_parts) >= 3 or len(gold_parts) >= 3:
        return _is_equiv(pred_parts[-1], gold_parts[-1])
    return False


def _with_labels(pred: str, gold: str) -> tuple[str, str]:
    """Normalized answers, keeping a label only where the other answer is a relation: ``y=-x/2+1``
    is compared with ``x+2y-2=0`` as an equation, with ``-x/2+1`` as a value."""
    pred_norm, gold_norm = normalized(pred), normalized(gold)
    pred_text, gold_text = pred_norm.text, gold_norm.text

    def relation(text: str) -> bool:
        return len(split_top_level(text, "=")) > 1

    if pred_norm.label and relation(gold_text) and not gold_norm.label:
        pred_text = f"{pred_norm.label}={pred_text}"
    if gold_norm.label and relation(pred_text) and not pred_norm.label:
        gold_text = f"{gold_norm.label}={gold_text}"
    return pred_text, gold_text


def inequality_as_interval(answer: str) -> str | None:
    """The interval an inequality in one variable describes (``x > 2`` -> ``(2,\\infty)``,
    ``-1 < x \\le 3`` -> ``(-1,3]``), or the union of intervals one on an absolute value describes
    (``1 \\le |z| \\le 2`` -> ``[-2,-1] \\cup [1,2]``); None for anything else."""
    absolute = _ABSOLUTE_VALUE.search(answer)
    if absolute and answer.count("|") == 2:
        variable = f" {absolute.group(1)} "
        return _absolute_value_intervals(inequality_as_interval(answer.replace(absolute.group(0), variable)))
    tokens = [token.strip() for token in _INEQUALITY.split(answer)]
    lower_bracket = {"<": "(", "\\le": "["}
    upper_bracket = {"<": ")", "\\le": "]"}
    flipped = {">": "<", "\\ge": "\\le", "<": ">", "\\le": "\\ge"}
    if len(tokens) == 3:
        left, sign, right = tokens
        if _VARIABLE.fullmatch(right) and not _VARIABLE.fullmatch(left):
            left, right, sign = right, left, flipped[sign]
        if not _VARIABLE.fullmatch(left) or not right:
            return None
        if sign in upper_bracket:
            return f"(-\\infty,{right}{upper_bracket[sign]}"
        return f"{lower_bracket[flipped[sign]]}{right},\\infty)"
    if len(tokens) == 5 and _VARIABLE.fullmatch(tokens[2]) and tokens[0] and tokens[4]:
        low, first, _, second, high = tokens
        if first in (">", "\\ge") and second in (">", "\\ge"):
            low, high, first, second = high, low, flipped[second], flipped[first]
        if first in lower_bracket and second in upper_bracket:
            return f"{lower_bracket[first]}{low},{high}{upper_bracket[second]}"
    return None


def _absolute_value_intervals(interval: str | None) -> str | None:
    """Where x lies when |x| lies in ``interval``: t in (a, b) with a < 0 holds for |x| < b; with
    a >= 0 it splits into (-b, -a) and (a, b), each end keeping its bracket."""
    group = bracketed(interval) if interval else None
    bounds = split_top_level(group[1], ",") if group else []
    if len(bounds) != 2:
        return None
    low, high = bounds
    low_value = -1 if low == "-\\infty" else _real_value(low)
    if low_value is None:
        return None
    if high == "\\infty":
        if low_value < 0:
            return "(-\\infty,\\infty)"
        mirror = {"(": ")", "[": "]"}[group[0]]
        return f"(-\\infty,{_negated(low)}{mirror} \\cup {group[0]}{low},\\infty)"
    close = group[2]
    opening = {")": "(", "]": "["}[close]
    if low_value < 0 or (low_value == 0 and group[0] == "["):
        return f"{opening}{_negated(high)},{high}{close}"
    mirror = {"(": ")", "[": "]"}[group[0]]
    return f"{opening}{_negated(high)},{_negated(low)}{mirror} \\cup {group[0]}{low},{high}{close}"


def _real_value(text: str) -> float | None:
    number = parse_number(text)
    if number is not None:
        return float(number.value)
    value = constant_value(text)
    return float(value) if value is not None else None


def _negated(bound: str) -> str:
    if bound.startswith("-"):
        return bound[1:]
    return "-" + (bound if re.fullmatch(r"[\w.\\{}]*", bound) else f"({bound})")


def _inequality_interval_equal(pred: str, gold: str) -> bool | None:
    """An inequality against an interval or a union of intervals, as intervals; None otherwise."""

    def is_intervals(text: str) -> bool:
        return all(bracketed(part) is not None for part in split_top_level(text, "\\cup"))

    pred_interval, gold_interval = inequality_as_interval(pred), inequality_as_interval(gold)
    if pred_interval is not None and gold_interval is None and is_intervals(gold):
        return _is_equiv(pred_interval, gold)
    if gold_interval is not None and pred_interval is None and is_intervals(pred):
        return _is_equiv(pred, gold_interval)
    return None


def _labelled_tuple_equal(pred: str, gold: str) -> bool | None:
    """``x=2, y=3`` against the tuple ``(2,3)``: the labelled values in order; None otherwise."""
    for labelled, other, labelled_is_pred in ((pred, gold, True), (gold, pred, False)):
        group = bracketed(other)
        tuple_form = as_tuple(labelled)
        if group and group[0] == "(" and tuple_form != labelled:
            return _is_equiv(tuple_form, other) if labelled_is_pred else _is_equiv(other, tuple_form)
    return None


def _precision_against_constant(pred: str, gold: str) -> bool | None:
    """A decimal against a constant that is not a plain number (3.1416 against \\pi), or an exact
    constant against a decimal gold, by the precision rule; None when that does not apply."""
    if current_numeric_rule() != "precision":
        return None
    pred_number, gold_number = parse_number(pred), parse_number(gold)
    if (pred_number is None) == (gold_number is None):
        return None
    decimal, other = (pred_number, gold) if pred_number is not None else (gold_number, pred)
    if decimal.half_unit is None:
        return None
    value = constant_value(other)
    return None if value is None else abs(decimal.value - value) <= decimal.half_unit


def _elements_equal(pred: str, gold: str) -> bool | None:
    """Collections element by element (math-verify may read only part of a list); elements of large
    unordered ones by the cheap tests only."""
    small = max(item_count(pred), item_count(gold)) <= UNORDERED_SYMBOLIC_MAX
    return sequences_equal(pred, gold, _is_equiv, _is_equiv if small else _cheap_element_equal)


def _collections_of(compare):
    return lambda pred, gold: compare(pred, gold, _is_equiv)


# The tests of answers' structure, in order: the first that applies (gives True or False) decides.
_STRUCTURE_TESTS = (
    _precision_against_constant,
    _inequality_interval_equal,
    _collections_of(matrices_equal),
    _collections_of(matrix_products_equal),
    _collections_of(vector_against_list),
    _collections_of(systems_equal),
    _labelled_tuple_equal,
    _elements_equal,
    _approximation_equal,
    _relation_chain_equal,
)


def _is_equiv(pred: str, gold: str) -> bool:
    return _is_equiv_cached(pred, gold, current_numeric_rule())


@lru_cache(maxsize=65536)
def _is_equiv_cached(pred: str, gold: str, rule: str) -> bool:
    """Whether a predicted answer equals the gold answer (see the module docstring); never raises."""
    del rule  # part of the cache key: the rule in force is read from the context
    try:
        if not isinstance(pred, str) or not isinstance(gold, str):
            return False
        if labels_conflict(pred, gold):
            return False
        pred_norm, gold_norm = _with_labels(pred, gold)
        if not pred_norm or not gold_norm:
            # Nothing left after normalization (e.g. "$"): only the same text is the same answer.
            return bool(compact(pred)) and compact(pred) == compact(gold)
        if _cheap_equal(pred, gold):
            return True
        clock = times_equal(pred, gold)
        if clock is not None:
            return clock
        # Two plain numbers that differ are different: math-verify cannot change that.
        if parse_number(pred_norm) is not None and parse_number(gold_norm) is not None:
            return False
        decimal_comma = decimal_comma_equal(pred, gold)
        if decimal_comma is not None:
            return decimal_comma
        # math-verify drops the base of "52_8"; the digits and the base must both match.
        gold_base, pred_base = _base_number(gold_norm), _base_number(pred_norm)
        if gold_base is not None or pred_base is not None:
            return gold_base is not None and gold_base == pred_base
        for test in _STRUCTURE_TESTS:
            verdict = test(pred_norm, gold_norm)
            if verdict is not None:
                return verdict
        if is_prose(pred_norm) or is_prose(gold_norm):
            return False
        return symbolic_equal(pred_norm, gold_norm)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run (RecursionError included)
        log.debug("is_equiv failed", exc_info=True)
        return False


def is_equiv_unbounded(pred: str, gold: str, numeric: str = DEFAULT_NUMERIC_RULE) -> bool:
    """``is_equiv`` in this process, without a time limit (the helper process runs this)."""
    with numeric_rule(numeric):
        return _is_equiv(pred, gold)


def _bare_answer(response: str) -> str | None:
    """The whole response when it is nothing but an answer (one short line, no prose)."""
    text = response.strip()
    if not text or len(text) > 200 or "\n" in text or is_prose(normalize(text)):
        return None
    return text


def _grade(response: str, gold: str) -> tuple[str | None, bool]:
    extracted = extract_answer_unbounded(response)
    if extracted is not None and _is_equiv(extracted, gold):
        return extracted, True
    bare = _bare_answer(response)
    if bare is not None and bare != extracted and _is_equiv(bare, gold):
        return bare, True
    if extracted is None:
        return None, False
    boxes = final_boxes(response)
    if len(boxes) > 1 and item_count(normalize(gold)) > 1:
        together = ", ".join(boxes)
        if _is_equiv(together, gold):
            return together, True
    return extracted, False


def grade_math_unbounded(response: str, gold: str, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """``grade_math`` in this process, without a time limit (the helper process runs this)."""
    with numeric_rule(numeric):
        return _grade(response, gold)


def grade_gsm8k_unbounded(response: str, gold: str, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """``grade_gsm8k`` in this process, without a time limit (the helper process runs this)."""
    with numeric_rule(numeric):
        extracted = extract_answer_unbounded(response)
        if extracted is None:
            return None, False
        try:
            correct = numbers_equal(extracted, gold)
        except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
            log.debug("gsm8k grading failed", exc_info=True)
            correct = None
        return extracted, bool(correct)
