"""Math answer grading as the L2S papers run it (DESIGN.md §3), on math-verify.

Extraction (``extract_answer``): the last ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched),
else "the answer is ...", else the last LaTeX or math expression as math-verify's ``parse`` finds
it; None when there is no answer. ``grade_math`` also compares the final run of several boxes
(``\\boxed{1}, \\boxed{2}``) as one list when the gold has several parts.

Equivalence (``is_equiv``), cheapest test first:
1. normalize both answers (``normalize``) and compare the strings, spaces ignored;
2. numbers, by the numeric rule (``NUMERIC_RULES``): "precision" (default) compares two integers
   exactly and accepts a decimal within half a unit of its own last written place (``4.6667`` is
   14/3, ``3.1416`` is pi, ``70001.0`` is not 70000); "qwen" is the Qwen2.5-Math toolkit's
   relative tolerance of 1e-4 against the gold, gold/100 and gold*100;
3. what math-verify lacks: decimal commas, mixed numbers ``1 1/2``, labels (``(p,q)=(3,2)``),
   lists joined by "and"/"or"/";"/``\\quad`` compared as sets, matrices cell by cell,
   ``\\approx`` chains by their exact form, equations up to a constant factor;
4. math-verify (``parse``, then ``verify(gold, pred)``).
Every public grading call runs in a helper process under GRADE_TIME_LIMIT_S (acm_exp.eval.bounded):
sympy cannot be stopped from inside, in any thread.

Every public function is total: weird input gives ``None`` / ``False``, never an exception.
"""

from __future__ import annotations

import ast
import contextvars
import logging
import math
import re
from collections.abc import Callable
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

# Numeric comparison rules (eval.grading.numeric).
NUMERIC_RULES = ("precision", "qwen")
DEFAULT_NUMERIC_RULE = "precision"
# Relative tolerance of the "qwen" rule (Qwen2.5-Math evaluation/grader.py, math_equal).
QWEN_REL_TOL = 1e-4
# Time limit of one public grading call (extraction, sympy and math-verify included), in seconds.
# A helper restarted after a kill takes about a second more to start, inside a 5 s budget per case.
GRADE_TIME_LIMIT_S = 3.5
# Longer strings are not handed to math-verify: parsing them can take many seconds.
MATH_VERIFY_MAX_CHARS = 1000
# Nor are huge powers and factorials (10^{100000000}, 10^{10^{10}}, 100000!): sympy evaluates them
# exactly, for minutes; the time limit would stop it, but only by restarting the helper.
_HUGE_NUMBER = re.compile(r"\^\s*\{?\s*\d{6,}|\^\s*\{\s*\d+\s*\^\s*\{?\s*\d{2,}|\d{5,}\s*!")

_NUMERIC_RULE: contextvars.ContextVar[str] = contextvars.ContextVar("numeric_rule", default=DEFAULT_NUMERIC_RULE)


def check_numeric_rule(rule: str) -> str:
    """``rule`` when it names a numeric rule, else ConfigError."""
    if rule not in NUMERIC_RULES:
        raise ConfigError(f"eval.grading.numeric={rule!r} is unknown; expected one of {NUMERIC_RULES}")
    return rule


@contextmanager
def _numeric_rule(rule: str):
    token = _NUMERIC_RULE.set(check_numeric_rule(rule))
    try:
        yield
    finally:
        _NUMERIC_RULE.reset(token)


# ---------------------------------------------------------------------------------------------
# Extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
# The sentence ends at a line break, or at a period followed by a space or the end of the text
# (a period between digits is a decimal point).
_SENTENCE_END = re.compile(r"\n|\.(?=\s|$)")


def _unescaped_braces(text: str, start: int = 0):
    """(index, "{" or "}") of every brace from ``start`` on, skipping escapes (``\\{``) and other
    control sequences, as TeX does."""
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char in "{}":
            yield index, char
        index += 1


def _braced_group(text: str, open_index: int) -> tuple[str, int] | None:
    """The content of the group opening at text[open_index] == "{" and the index after it; None
    when the group never closes (a truncated response)."""
    depth = 0
    for index, char in _unescaped_braces(text, open_index):
        depth += 1 if char == "{" else -1
        if depth == 0:
            return text[open_index + 1 : index], index + 1
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """The index of the matching "}" of every "{" that has one, in one pass (skipping escapes).

    One pass, not one scan per box: degenerate responses repeat "\\boxed{" thousands of times.
    """
    pairs: dict[int, int] = {}
    open_indices: list[int] = []
    for index, char in _unescaped_braces(text):
        if char == "{":
            open_indices.append(index)
        elif open_indices:
            pairs[open_indices.pop()] = index
    return pairs


def _box_content(text: str, start: int, pairs: dict[int, int]) -> tuple[str, int] | None:
    """The argument of the box command that ends at ``start`` (a braced group or a bare token) and
    the index after it."""
    index = start
    while index < len(text) and text[index] in " \t":
        index += 1
    if index < len(text) and text[index] == "{":
        close = pairs.get(index)
        return (text[index + 1 : close].strip(), close + 1) if close is not None else None
    if index == start:
        # "\\boxedx" is another command name, not a box.
        return None
    match = re.match(r"[^\s$]+", text[index:])
    return (match.group(0).strip(), index + match.end()) if match else None


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete, non-empty ``\\boxed{}`` / ``\\fbox{}`` (or ``\\boxed x``)."""
    starts = sorted(
        (match.start(), match.end())
        for command in _BOX_COMMANDS
        for match in re.finditer(re.escape(command) + r"(?![a-zA-Z])", text)
    )
    pairs = _brace_pairs(text) if starts else {}
    boxes = []
    for start, content_start in starts:
        argument = _box_content(text, content_start, pairs)
        if argument and argument[0]:
            boxes.append((start, argument[1], argument[0]))
    return boxes


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty ``\\boxed{}`` / ``\\fbox{}`` (or ``\\boxed x``)."""
    boxes = _boxes(text)
    return boxes[-1][2] if boxes else None


# Text between two boxes of one answer: separators, connectives, math delimiters and a label
# ("\\boxed{1} and \\boxed{2}", "x = \\boxed{2} or x = \\boxed{3}"), nothing else.
_BOX_GAP_MAX_CHARS = 80
_BOX_GAP = re.compile(
    r"(?:[\s,;.$&]|\\[()\[\]]|\\\\|\\q?quad(?![a-zA-Z])|\\text\{\s*(?:and|or)\s*\}|(?<![a-zA-Z])(?:and|or)(?![a-zA-Z])"
    r"|(?<![a-zA-Z])[a-zA-Z](?:_\{?\w+\}?)?\s*=)*"
)


def final_boxes(text: str) -> list[str]:
    """The contents of the final run of boxes that together form the answer: boxes separated only
    by separators or "and"/"or" (``\\boxed{(2,2)} and \\boxed{(6,2)}``), repeats dropped."""
    boxes = _boxes(text)
    if not boxes:
        return []
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1] : run[0][0]]
        if len(gap) > _BOX_GAP_MAX_CHARS or not _BOX_GAP.fullmatch(gap):
            break
        run.insert(0, box)
    return list(dict.fromkeys(content for _, _, content in run))


def _answer_is(text: str) -> str | None:
    """What follows the last "the answer is", up to the end of its sentence or line."""
    matches = list(_ANSWER_IS.finditer(text))
    for match in reversed(matches):
        rest = text[match.end() :]
        end = _SENTENCE_END.search(rest)
        # Quotes around an answer are punctuation ('is "$12$ and $13$".').
        answer = (rest[: end.start()] if end else rest).strip().rstrip(".").strip().strip("\\\"'").strip()
        if answer:
            return answer
    return None


def _last_math_expression(text: str) -> str | None:
    """The answer math-verify's ``parse`` finds in free text: the last LaTeX expression or number
    (``\\frac{10}{9}``, ``1 000``, ``-[0,1)``), as it matched it; None when there is none (a digit
    inside a word is no answer)."""
    from math_verify import parse

    parsed = parse(text, extraction_mode="first_match", parsing_timeout=None)
    matched = next((item for item in reversed(parsed) if isinstance(item, str)), None)
    return matched.strip() if matched and matched.strip() else None


def _final_statement(text: str) -> str | None:
    """The last box, or "the answer is ..." when it comes after the last box (a reader takes the
    answer stated last: "... \\boxed{255} ... The final answer is $10,455$")."""
    boxes = _boxes(text)
    answer_is = list(_ANSWER_IS.finditer(text))
    if boxes and (not answer_is or answer_is[-1].start() < boxes[-1][1]):
        return boxes[-1][2]
    return _answer_is(text) or (boxes[-1][2] if boxes else None)


def _cheap_extraction(text: str) -> str | None:
    """Extraction without sympy: the last box or "the answer is", whichever comes last."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return _final_statement(text)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("answer extraction failed", exc_info=True)
        return None


def extract_answer_unbounded(text: str) -> str | None:
    """``extract_answer`` in this process, without a time limit (the helper process runs this)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) > 200_000:
            # math-verify's regexes over megabytes of degenerate output take seconds.
            text = text[-200_000:]
        return _final_statement(text) or _last_math_expression(text)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("answer extraction failed", exc_info=True)
        return None


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last boxed, else "the answer is ...", else the last LaTeX or
    math expression (math-verify's parse); None when there is no answer."""
    if not isinstance(text, str) or not text:
        return None
    return _bounded("extract_answer", [text], fallback=lambda: _cheap_extraction(text))


# ---------------------------------------------------------------------------------------------
# Normalization

_TEXT_COMMANDS = r"\\(?:text|textrm|textnormal|textbf|mbox|mathrm|mathbf|operatorname)"
_UNIT_COMMANDS = r"\\(?:text|textrm|textnormal|mbox|mathrm)"
# A unit written after a value (a digit or a closing bracket): \text{ cm}, \mbox{ inches}^2,
# \mathrm{~m} / \mathrm{s}.
_TRAILING_UNIT = re.compile(
    r"(?<=[\d})])\s*(?:" + _UNIT_COMMANDS + r"\{[\s~]*[a-zA-Z][^{}]*\}(?:\s*\^\s*\{?-?\d+\}?)?\s*(?:/\s*)?)+$"
)
# Plain words after a number ("9 hours", "50 gallons"); one letter is kept, it may be a variable.
# (Words are separated by at least one character: "[\s/]*[a-zA-Z]+" repeated backtracks
# exponentially on long prose.)
_PLAIN_UNIT = re.compile(r"^(-?[\d.,]+)\s+(?!(?:and|or)\b)[a-zA-Z]{2,}(?:[\s/]+[a-zA-Z]+)*(?:\^\{?-?\d+\}?)?$")
# A label before "=" or "\in" at the start of an answer: what is named, not a value ("x", "y_1",
# "f(x)", "\theta", "(p,q)", "|AB|", "S_{MBCN}:S", "\frac{NO}{BO}"); no digits outside subscripts.
_LABEL_END = re.compile(r"=|\\in(?![a-zA-Z])")
_SUBSCRIPT = re.compile(r"_\{[^{}]*\}|_\\?\w")
_RELATION_SIGNS = re.compile(r"[<>]|\\(?:le|ge|ne|lt|gt|approx)(?![a-zA-Z])")
# Thousands separated by commas (the first group never starts with 0: "0,111" is a decimal comma)
# or by spaces ("1 000").
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_SPACED_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?$")
# A choice letter, alone or followed by its text ("(B)", "C. x = 42").
_CHOICE = re.compile(r"^\(?([A-E])\)?(?:[.:]\s.*)?$", re.DOTALL)
_ALIASES = (
    ("\\leqslant", "\\le"),
    ("\\geqslant", "\\ge"),
    ("\\leq", "\\le"),
    ("\\geq", "\\ge"),
    ("\\neq", "\\ne"),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\cfrac", "\\frac"),
)
# ASCII relations as LaTeX writes them; "\lt" and "\gt" as plain signs.
_ASCII_RELATIONS = ((">=", "\\ge "), ("<=", "\\le "), ("!=", "\\ne "), ("\\lt", "<"), ("\\gt", ">"))


def _macro_argument(text: str, index: int) -> tuple[str, int] | None:
    """One TeX macro argument starting at ``index``: a braced group, a control word or a char."""
    while index < len(text) and text[index] == " ":
        index += 1
    if index >= len(text):
        return None
    if text[index] == "{":
        group = _braced_group(text, index)
        return group if group is not None else None
    if text[index] == "\\":
        word = re.match(r"\\(?:[a-zA-Z]+|.)", text[index:])
        return (word.group(0), index + len(word.group(0))) if word else None
    if text[index] in "}^_":
        return None
    return text[index], index + 1


def _brace_macro_arguments(text: str, macro: str, n_args: int) -> str:
    """Rewrite ``\\frac12`` / ``\\frac 34`` / ``\\sqrt2`` with braced arguments."""
    pattern = re.compile(re.escape(macro) + r"(?![a-zA-Z])")
    out: list[str] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() < position:
            continue
        index = match.end()
        optional = ""
        if macro == "\\sqrt" and index < len(text) and text[index] == "[":
            close = text.find("]", index)
            if close < 0:
                continue
            optional, index = text[index : close + 1], close + 1
        arguments = []
        for _ in range(n_args):
            argument = _macro_argument(text, index)
            if argument is None:
                break
            arguments.append(argument[0])
            index = argument[1]
        if len(arguments) < n_args:
            continue
        out.append(text[position : match.start()])
        out.append(macro + optional + "".join("{" + _brace_macro_arguments(a, macro, n_args) + "}" for a in arguments))
        position = index
    out.append(text[position:])
    return "".join(out)


def _unwrap_text_commands(text: str) -> str:
    """``\\text{(A)}`` -> ``(A)``: the wrapper is typography, the content is the answer."""
    previous = None
    while previous != text:
        previous = text
        text = re.sub(_TEXT_COMMANDS + r"\{([^{}]*)\}", r"\1", text)
    return text


def _unwrap_boxes(text: str) -> str:
    """``\\boxed{2}, \\boxed{3}`` -> ``2, 3``: a box marks the answer, it is not part of it."""
    for _ in range(text.count("\\boxed") + text.count("\\fbox")):
        match = re.search(r"\\(?:boxed|fbox)\s*\{", text)
        group = _braced_group(text, match.end() - 1) if match else None
        if group is None:
            break
        text = text[: match.start()] + group[0] + text[group[1] :]
    return text


def _unwrap_group(text: str) -> str:
    """``{2, 3, 5}`` -> ``2, 3, 5``: braces around a whole answer are a TeX group, not a set."""
    if text.startswith("{") and _braced_group(text, 0) == (text[1:-1], len(text)):
        return text[1:-1].strip()
    return text


def _strip_degrees(text: str) -> str:
    text = re.sub(r"(?:\{\s*\})?\^\s*\{?\s*\\circ\s*\}?", "", text)
    return text.replace("\\circ", "").replace("°", "")


def _strip_percent(text: str) -> tuple[str, bool]:
    """The text without its percent signs, and whether it had one."""
    stripped = text.replace("\\%", "").replace("%", "")
    return stripped, stripped != text


def _thin_spaces_to_spaces(text: str) -> str:
    """``\\,``, ``\\!``, ``\\ ``, ``~`` -> a space, leaving ``\\\\`` (a matrix row break) whole."""
    return re.sub(r"\\\\|\\[!,;: ]|~", lambda match: match.group(0) if match.group(0) == "\\\\" else " ", text)


class Normalized(NamedTuple):
    text: str
    # The label a leading "label =" had ("C_{1}" of "C_{1}=1/5"), dropped from ``text``.
    label: str | None
    # Whether the answer was written with a percent sign.
    percent: bool


def normalize(answer: str) -> str:
    """A canonical spelling of an answer; equal strings mean equal answers (not conversely)."""
    return _normalize(answer).text


def _is_label(text: str) -> bool:
    """Whether ``text`` names something (no digits outside subscripts, no relation) rather than
    being a value or one side of an equation."""
    bare = _SUBSCRIPT.sub("", text)
    return (
        bool(re.search(r"[a-zA-Z]", bare))
        and not re.search(r"\d", bare)
        and not _RELATION_SIGNS.search(text)
        and len(text) <= 40
    )


def _split_label(text: str) -> tuple[str | None, str]:
    """(label, value) of ``label = value`` / ``label \\in value``; (None, text) otherwise."""
    match = _LABEL_END.search(text)
    if not match or text.count("=") > 1:
        return None, text
    label, value = text[: match.start()].strip(), text[match.end() :].strip()
    if not label or not value or not _is_label(label) or _LABEL_END.search(value):
        return None, text
    return _compact(label), value


def _labels_conflict(pred: str, gold: str) -> bool:
    """Both answers are labelled, and not alike (C_{1}=5 is not C_{2}=5)."""
    pred_label, gold_label = _normalize(pred).label, _normalize(gold).label
    return pred_label is not None and gold_label is not None and pred_label != gold_label


# Element-wise comparison of unordered collections normalizes each element many times.
@lru_cache(maxsize=65536)
def _normalize(answer: str) -> Normalized:
    text = answer.strip()
    text = _unwrap_boxes(text)
    text = text.replace("\\$", "").replace("$", "")
    text = re.sub(r"\\(?:left|right)\.", "", text)
    text = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|displaystyle)(?![a-zA-Z])", "", text)
    for ascii_relation, latex in _ASCII_RELATIONS:
        text = text.replace(ascii_relation, latex)
    for alias, canonical in _ALIASES:
        text = re.sub(re.escape(alias) + r"(?![a-zA-Z])", lambda _m, c=canonical: c, text)
    # Thin spaces first: "10,\!080" must read as one number.
    text = re.sub(r",\\!\s*", ",", text)
    text = _thin_spaces_to_spaces(text)
    text = _strip_degrees(text)
    text, percent = _strip_percent(text)
    text = _TRAILING_UNIT.sub("", text)
    text = _unwrap_text_commands(text)
    text = _brace_macro_arguments(text, "\\frac", 2)
    text = _brace_macro_arguments(text, "\\sqrt", 1)
    # A trailing line break ("185\\\\" in TeX) is layout.
    text = re.sub(r"(?:\\{1,2}|\s)+$", "", text)
    text = re.sub(r"\s+", " ", text).strip().rstrip(".").strip()
    text = _unwrap_group(text)
    choice = _CHOICE.match(text)
    if choice:
        return Normalized(choice.group(1), None, percent)
    label, text = _split_label(text)
    unit = _PLAIN_UNIT.match(text)
    if unit:
        text = unit.group(1)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if _SPACED_THOUSANDS.match(text):
        text = text.replace(" ", "")
    choice = _CHOICE.match(text)
    if choice:
        text = choice.group(1)
    return Normalized(text.strip(), label, percent)


def _compact(text: str) -> str:
    """Spaces do not matter for equality (``(1, 2)`` is ``(1,2)``)."""
    return re.sub(r"\s+", "", text)


# ---------------------------------------------------------------------------------------------
# Numbers

_PLAIN_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")


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
        text = _compact(text)
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
    """The precision-aware rule: a decimal prediction is right when it lies within half a unit of
    its own last written place of the gold value (4.6667 for 14/3, not 70001.0 for 70000); an
    exact prediction (integer, fraction) against a decimal gold must round to the gold at the
    gold's written place; two exact values must be equal."""
    if pred.half_unit is not None:
        return abs(pred.value - gold.value) <= pred.half_unit
    if gold.half_unit is not None:
        return abs(pred.value - gold.value) <= gold.half_unit
    return pred.value == gold.value


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
    pred_norm, gold_norm = _normalize(pred), _normalize(gold)
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
    text = _compact(normalize(answer))
    if _DECIMAL_COMMA.fullmatch(text) and not _THOUSANDS.match(text):
        return text.replace(",", ".")
    return None


# ---------------------------------------------------------------------------------------------
# Tuples, intervals, sets, lists, matrices

_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}"}
# What separates the items of a list answer ("1, 2", "1; 2", "1 \quad 2", "1 and 2", "1 or 2").
_LIST_SEPARATORS = (",", ";", "\\qquad", "\\quad", "and", "or")
# Items of a tuple or an interval: "(0;-2;6)" is "(0,-2,6)".
_ITEM_SEPARATORS = (",", ";")


def _separator_at(text: str, index: int, separators: tuple[str, ...]) -> str | None:
    """The separator that starts at ``index``; words and commands only as whole words."""
    for separator in separators:
        if not text.startswith(separator, index):
            continue
        if separator[-1].isalpha():
            after = index + len(separator)
            if after < len(text) and text[after].isalpha():
                continue
            if separator[0].isalpha() and index > 0 and (text[index - 1].isalpha() or text[index - 1] == "\\"):
                continue
        return separator
    return None


def _split_top_level(text: str, separators: str | tuple[str, ...] = ",") -> list[str]:
    """Split at separators outside (), [], {} and \\{ \\}."""
    if isinstance(separators, str):
        separators = (separators,)
    parts: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(text):
        separator = _separator_at(text, index, separators) if depth == 0 else None
        if separator is not None:
            parts.append(text[start:index])
            start = index + len(separator)
            index = start
            continue
        if text.startswith("\\{", index) or text.startswith("\\}", index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        if text[index] == "\\":
            index += 2 if index + 1 < len(text) and not text[index + 1].isalpha() else 1
            continue
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        index += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _list_items(text: str) -> list[str]:
    """Items of a bare list; empty items (a trailing "and") dropped.

    When semicolons separate the items, commas separate the parts of one item: ``p=5,q=2;p=7,q=2``
    lists the solutions (5,2) and (7,2).
    """
    if len(_split_top_level(text, ";")) > 1:
        items = _split_top_level(text, tuple(sep for sep in _LIST_SEPARATORS if sep != ","))
        return [_as_tuple(item) for item in items if item]
    return [item for item in _split_top_level(text, _LIST_SEPARATORS) if item]


def _as_tuple(item: str) -> str:
    """``p=5, q=2`` -> ``(5,2)``: an item whose comma-separated parts are all labelled values."""
    parts = _split_top_level(item, ",")
    if len(parts) < 2:
        return item
    values = [_split_label(part) for part in parts]
    if any(label is None for label, _ in values):
        return item
    return "(" + ",".join(value for _, value in values) + ")"


def _bracketed(text: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when the whole text is one bracketed group, e.g. ``(1, 2]``."""
    for opening in _BRACKETS:
        if not text.startswith(opening):
            continue
        for closing in _BRACKETS.values():
            if not text.endswith(closing) or len(text) < len(opening) + len(closing):
                continue
            inner = text[len(opening) : len(text) - len(closing)]
            # "(1)(2)" is not one group: the inner part must itself be balanced.
            if _balanced(inner):
                return opening, inner, closing
    return None


def _balanced(text: str) -> bool:
    depth = 0
    index = 0
    while index < len(text):
        if text.startswith("\\{", index) or text.startswith("\\}", index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
        else:
            if text[index] == "\\":
                index += 2 if index + 1 < len(text) and not text[index + 1].isalpha() else 1
                continue
            depth += 1 if text[index] in "([{" else -1 if text[index] in ")]}" else 0
            index += 1
        if depth < 0:
            return False
    return depth == 0


def _same_set(pred_items: list[str], gold_items: list[str], equal: Callable[[str, str], bool]) -> bool:
    """Every predicted item is some gold item and every gold item some predicted one: a list
    that repeats an element (``(3,17), (3,17), (17,3)``) is the set it lists. When the gold itself
    repeats an element (roots with multiplicity, ``1, 1, 2``), the counts must agree as well."""
    gold_keys = [_compact(normalize(item)) for item in gold_items]
    if len(set(gold_keys)) < len(gold_keys):
        return _same_multiset(pred_items, gold_items, equal)
    return all(any(equal(p, g) for g in gold_items) for p in pred_items) and all(
        any(equal(p, g) for p in pred_items) for g in gold_items
    )


def _same_multiset(pred_items: list[str], gold_items: list[str], equal: Callable[[str, str], bool]) -> bool:
    remaining = list(gold_items)
    for item in pred_items:
        match = next((index for index, gold in enumerate(remaining) if equal(item, gold)), None)
        if match is None:
            return False
        remaining.pop(match)
    return not remaining


def sequences_equal(
    pred: str, gold: str, equal: Callable[[str, str], bool], unordered_equal: Callable[[str, str], bool] | None = None
) -> bool | None:
    """Element-wise comparison of tuples / intervals (ordered) and sets / bare lists / unions
    (unordered, as sets); None when neither answer is such a collection.

    ``unordered_equal`` compares the elements of unordered collections (matching them costs up to
    2 n^2 comparisons, so a caller may pass a cheaper test there); defaults to ``equal``.
    """
    unordered_equal = unordered_equal or equal
    pred_union, gold_union = _split_top_level(pred, "\\cup"), _split_top_level(gold, "\\cup")
    if len(pred_union) > 1 or len(gold_union) > 1:
        if len(pred_union) != len(gold_union):
            return False
        return _same_set(
            pred_union,
            gold_union,
            lambda p, g: bool(sequences_equal(p, g, equal, unordered_equal)) or unordered_equal(p, g),
        )
    pred_group, gold_group = _bracketed(pred), _bracketed(gold)
    if pred_group and gold_group:
        if pred_group[0] == "\\{" and gold_group[0] == "\\{":
            return _same_set(_set_items(pred, pred_group), _set_items(gold, gold_group), unordered_equal)
        if pred_group[0] != gold_group[0] or pred_group[2] != gold_group[2]:
            return False
        pred_items = _split_top_level(pred_group[1], _ITEM_SEPARATORS)
        gold_items = _split_top_level(gold_group[1], _ITEM_SEPARATORS)
        if len(pred_items) == 1 and len(gold_items) == 1:
            # "(x+1)" is a parenthesized expression, not a 1-tuple.
            return None
        if len(pred_items) != len(gold_items):
            return False
        return all(equal(p, g) for p, g in zip(pred_items, gold_items, strict=False))
    # Bare lists ("1, 3, 5", "1 and 3") and a set spelled \{1, 3, 5\} on one side only: sets.
    pred_items = _set_items(pred, pred_group)
    gold_items = _set_items(gold, gold_group)
    if len(pred_items) == 1 and len(gold_items) == 1:
        return None
    # A bare list against a tuple: the same sequence without its parentheses ("1, 3" is (1,3)).
    for group, items, other_items in ((gold_group, pred_items, gold_items), (pred_group, gold_items, pred_items)):
        if group and group[0] == "(" and len(other_items) == 1:
            tuple_items = _split_top_level(group[1], _ITEM_SEPARATORS)
            if len(tuple_items) == len(items) > 1:
                pairs = (
                    zip(items, tuple_items, strict=False)
                    if group is gold_group
                    else zip(tuple_items, items, strict=False)
                )
                return all(equal(p, g) for p, g in pairs)
    return _same_set(pred_items, gold_items, unordered_equal)


def _set_items(text: str, group: tuple[str, str, str] | None) -> list[str]:
    items = _list_items(group[1]) if group and group[0] == "\\{" else _list_items(text)
    return [expanded for item in items for expanded in _expand_plus_minus(item)]


def _expand_plus_minus(item: str) -> list[str]:
    """``1 \\pm \\sqrt{19}`` is the two values ``1 + \\sqrt{19}`` and ``1 - \\sqrt{19}``."""
    if len(re.findall(r"\\pm(?![a-zA-Z])", item)) != 1:
        return [item]
    return [re.sub(r"\\pm(?![a-zA-Z])", sign, item) for sign in ("+", "-")]


_MATRIX = re.compile(
    r"[(\[]?\s*\\begin\{(pmatrix|bmatrix|matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}\s*[)\]]?", re.DOTALL
)


def _matrix_cells(answer: str) -> list[list[str]] | None:
    """The cells, row by row, of an answer that is one matrix (pmatrix, bmatrix, matrix or array;
    brackets are typography), else None. A trailing row break adds no row."""
    match = _MATRIX.fullmatch(answer.strip())
    if not match or "\\begin" in match.group(2):
        return None
    rows = [row for row in re.split(r"\\\\", match.group(2))]
    if rows and not rows[-1].strip():
        rows.pop()
    return [[cell.strip() for cell in row.split("&")] for row in rows]


_MATRIX_FACTOR = re.compile(r"[(\[]?\s*\\begin\{(pmatrix|bmatrix|matrix|array)\}.*?\\end\{\1\}\s*[)\]]?", re.DOTALL)


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
    pred_cells, gold_cells = _matrix_cells(pred), _matrix_cells(gold)
    if pred_cells is None or gold_cells is None:
        return None
    if [len(row) for row in pred_cells] != [len(row) for row in gold_cells]:
        return False
    return all(
        equal(p, g)
        for pred_row, gold_row in zip(pred_cells, gold_cells, strict=False)
        for p, g in zip(pred_row, gold_row, strict=False)
    )


# ---------------------------------------------------------------------------------------------
# Symbolic comparison (math-verify)


@lru_cache(maxsize=4096)
def _math_verify_parse(answer: str) -> tuple:
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
    return matched is not None and 2 * len(_compact(matched)) >= len(_compact(answer))


def _parsed_expression(answer: str) -> object | None:
    """math-verify's sympy reading of a whole answer, or None."""
    if not _fit_for_math_verify(answer):
        return None
    parsed = _math_verify_parse(answer)
    if not parsed or isinstance(parsed[0], str) or not _covers_answer(parsed, answer):
        return None
    return parsed[0]


def _constant_value(answer: str) -> Fraction | None:
    """The value of an answer that is a real constant (``\\pi``, ``\\frac{\\sqrt{3}}{3}``), to 40
    significant digits; None for anything else."""
    from sympy import Expr, Float, N

    expression = _parsed_expression(answer)
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


def _fit_for_math_verify(answer: str) -> bool:
    return len(answer) <= MATH_VERIFY_MAX_CHARS and not _HUGE_NUMBER.search(answer) and _balanced_braces(answer)


def symbolic_equal(pred: str, gold: str, equations_only: bool = False) -> bool:
    """math-verify's ``verify(gold, pred)`` (gold first) on normalized answers; False on any
    failure. ``equations_only``: True only for two equations that match (see _equations_equal)."""
    from math_verify import verify

    if not (_fit_for_math_verify(pred) and _fit_for_math_verify(gold)):
        return False
    try:
        gold_parsed = _math_verify_parse(gold)
        pred_parsed = _math_verify_parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        if not (_covers_answer(gold_parsed, gold) and _covers_answer(pred_parsed, pred)):
            return False
        equations = _equations_equal(gold_parsed[0], pred_parsed[0])
        if equations is not None or equations_only:
            return bool(equations)
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))
    except Exception:  # noqa: BLE001 - sympy raises anything
        log.debug("math-verify failed", exc_info=True)
        return False
    except RecursionError:
        return False


def _balanced_braces(text: str) -> bool:
    return _braced_group("{" + text + "}", 0) == (text, len(text) + 2)


# ---------------------------------------------------------------------------------------------
# Equivalence and grading


_BASE_NUMBER = re.compile(r"([0-9A-Za-z]+)_\{?(\d+)\}?")


def _base_number(answer: str) -> tuple[str, int] | None:
    """(digits, base) of an answer written in another base, e.g. ``2516_8`` or ``4210_{5}``."""
    match = _BASE_NUMBER.fullmatch(_compact(answer))
    if not match or not re.search(r"\d", match.group(1)):
        return None
    return match.group(1).upper(), int(match.group(2))


def _cheap_equal(pred: str, gold: str) -> bool:
    """Exact, numeric and element-wise comparison, without math-verify."""
    pred_norm, gold_norm = normalize(pred), normalize(gold)
    if _compact(pred_norm) == _compact(gold_norm) and _normalize(pred).percent == _normalize(gold).percent:
        return True
    numeric = numbers_equal(pred, gold)
    if numeric is not None:
        return numeric
    if _compact(pred_norm) == _compact(gold_norm):
        return True
    return bool(sequences_equal(pred_norm, gold_norm, _cheap_element_equal))


def _cheap_element_equal(pred: str, gold: str) -> bool:
    return not _labels_conflict(pred, gold) and _cheap_equal(pred, gold)


# Unordered collections up to this size compare their elements symbolically (2 n^2 comparisons).
UNORDERED_SYMBOLIC_MAX = 8
_RELATIONS = ("=", "\\approx")
# Words of three letters or more that are not commands: two of them make an answer prose,
# which math-verify cannot compare (it turns words into products of symbols).
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}(?![a-zA-Z])")
_MATH_WORDS = frozenset(
    {
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "log",
        "exp",
        "det",
        "max",
        "min",
        "lim",
        "mod",
        "gcd",
        "lcm",
    }
)


def _is_prose(answer: str) -> bool:
    answer = re.sub(r"\\(?:begin|end)\{[^{}]*\}", " ", answer)  # environment names are no words
    return sum(word.lower() not in _MATH_WORDS for word in _WORD.findall(answer)) >= 2


def _item_count(answer: str) -> int:
    group = _bracketed(answer)
    inner = len(_list_items(group[1])) if group and group[0] == "\\{" else 1
    return max(len(_list_items(answer)), inner)


def _relation_parts(answer: str) -> tuple[list[str], list[str]]:
    """The parts of a chain ``a = b \\approx c`` and the relations between them."""
    parts: list[str] = []
    relations: list[str] = []
    rest = answer
    for part in _split_top_level(answer, _RELATIONS):
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
    return None if not exact or _is_label(exact) else exact


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
        if _compact(pred_parts[0]) != _compact(gold_parts[0]) and not _is_equiv(pred_parts[0], gold_parts[0]):
            return False
    return _is_equiv(value(pred_parts, pred_relations), value(gold_parts, gold_relations))


def _relation_chain_equal(pred: str, gold: str) -> bool | None:
    """Compare answers that contain ``=`` part by part; None when neither does.

    math-verify reads ``P(X=4)=5/8`` as its right side and a chain like ``i^{6}=i^{4} i^{2}=-1``
    as its first relation, so it would equate answers that differ in the left side or in the final
    value. Two equations (one ``=`` each) also match when they are proportional (x^2-4x-2=0 and
    2x^2-8x-4=0). A chain (two relations or more) matches a shorter answer by its final value:
    ``-1`` answers ``i^{6}=i^{4} i^{2}=-1``.
    """
    pred_parts = _split_top_level(pred, "=")
    gold_parts = _split_top_level(gold, "=")
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
    pred_norm, gold_norm = _normalize(pred), _normalize(gold)
    pred_text, gold_text = pred_norm.text, gold_norm.text

    def relation(text: str) -> bool:
        return len(_split_top_level(text, "=")) > 1

    if pred_norm.label and relation(gold_text) and not gold_norm.label:
        pred_text = f"{pred_norm.label}={pred_text}"
    if gold_norm.label and relation(pred_text) and not pred_norm.label:
        gold_text = f"{gold_norm.label}={gold_text}"
    return pred_text, gold_text


_INEQUALITY = re.compile(r"(<|>|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z]))")
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?")


def inequality_as_interval(answer: str) -> str | None:
    """The interval an inequality in one variable describes (``x > 2`` -> ``(2,\\infty)``,
    ``-1 < x \\le 3`` -> ``(-1,3]``); None for anything else."""
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


def _inequality_interval_equal(pred: str, gold: str) -> bool | None:
    """An inequality against an interval or a union of intervals, as intervals; None otherwise."""

    def is_intervals(text: str) -> bool:
        return all(_bracketed(part) is not None for part in _split_top_level(text, "\\cup"))

    pred_interval, gold_interval = inequality_as_interval(pred), inequality_as_interval(gold)
    if pred_interval is not None and gold_interval is None and is_intervals(gold):
        return _is_equiv(pred_interval, gold)
    if gold_interval is not None and pred_interval is None and is_intervals(pred):
        return _is_equiv(pred, gold_interval)
    return None


def _labelled_tuple_equal(pred: str, gold: str) -> bool | None:
    """``x=2, y=3`` against the tuple ``(2,3)``: the labelled values in order; None otherwise."""
    for labelled, other, labelled_is_pred in ((pred, gold, True), (gold, pred, False)):
        group = _bracketed(other)
        as_tuple = _as_tuple(labelled)
        if group and group[0] == "(" and as_tuple != labelled:
            return _is_equiv(as_tuple, other) if labelled_is_pred else _is_equiv(other, as_tuple)
    return None


def _decimal_comma_equal(pred: str, gold: str) -> bool | None:
    """``1,22`` against the single number ``1.22``: a decimal comma; None when neither answer has
    one or the other answer is no single number (then ``1,22`` is the list 1, 22)."""
    pred_reading, gold_reading = _decimal_comma(pred), _decimal_comma(gold)
    if pred_reading is not None and parse_number(normalize(gold)) is not None:
        return bool(numbers_equal(pred_reading, gold))
    if gold_reading is not None and parse_number(normalize(pred)) is not None:
        return bool(numbers_equal(pred, gold_reading))
    return None


def _precision_against_constant(pred: str, gold: str) -> bool | None:
    """A decimal against a constant that is not a plain number (3.1416 against \\pi), or an exact
    constant against a decimal gold, by the precision rule; None when that does not apply."""
    if _NUMERIC_RULE.get() != "precision":
        return None
    pred_number, gold_number = parse_number(pred), parse_number(gold)
    if (pred_number is None) == (gold_number is None):
        return None
    decimal, other = (pred_number, gold) if pred_number is not None else (gold_number, pred)
    if decimal.half_unit is None:
        return None
    value = _constant_value(other)
    return None if value is None else abs(decimal.value - value) <= decimal.half_unit


def _is_equiv(pred: str, gold: str) -> bool:
    return _is_equiv_cached(pred, gold, _NUMERIC_RULE.get())


@lru_cache(maxsize=65536)
def _is_equiv_cached(pred: str, gold: str, rule: str) -> bool:
    """Whether a predicted answer equals the gold answer (DESIGN.md §3); never raises."""
    del rule  # part of the cache key: the rule in force is read from _NUMERIC_RULE
    try:
        if not isinstance(pred, str) or not isinstance(gold, str):
            return False
        if _labels_conflict(pred, gold):
            return False
        pred_norm, gold_norm = _with_labels(pred, gold)
        if not pred_norm or not gold_norm:
            # Nothing left after normalization (e.g. "$"): only the same text is the same answer.
            return bool(_compact(pred)) and _compact(pred) == _compact(gold)
        if _cheap_equal(pred, gold):
            return True
        # Two plain numbers that differ are different: math-verify cannot change that.
        if parse_number(pred_norm) is not None and parse_number(gold_norm) is not None:
            return False
        decimal_comma = _decimal_comma_equal(pred, gold)
        if decimal_comma is not None:
            return decimal_comma
        # math-verify drops the base of "52_8"; the digits and the base must both match.
        gold_base, pred_base = _base_number(gold_norm), _base_number(pred_norm)
        if gold_base is not None or pred_base is not None:
            return gold_base is not None and gold_base == pred_base
        constant = _precision_against_constant(pred_norm, gold_norm)
        if constant is not None:
            return constant
        intervals = _inequality_interval_equal(pred_norm, gold_norm)
        if intervals is not None:
            return intervals
        matrices = matrices_equal(pred_norm, gold_norm, _is_equiv)
        if matrices is None:
            matrices = matrix_products_equal(pred_norm, gold_norm, _is_equiv)
        if matrices is not None:
            return matrices
        labelled = _labelled_tuple_equal(pred_norm, gold_norm)
        if labelled is not None:
            return labelled
        small = max(_item_count(pred_norm), _item_count(gold_norm)) <= UNORDERED_SYMBOLIC_MAX
        elements = sequences_equal(pred_norm, gold_norm, _is_equiv, _is_equiv if small else _cheap_element_equal)
        if elements is not None:
            # Collections compare element by element; math-verify may read only part of a list.
            return elements
        approximation = _approximation_equal(pred_norm, gold_norm)
        if approximation is not None:
            return approximation
        chain = _relation_chain_equal(pred_norm, gold_norm)
        if chain is not None:
            return chain
        if _is_prose(pred_norm) or _is_prose(gold_norm):
            return False
        return symbolic_equal(pred_norm, gold_norm)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("is_equiv failed", exc_info=True)
        return False
    except RecursionError:
        return False


def is_equiv_unbounded(pred: str, gold: str, numeric: str = DEFAULT_NUMERIC_RULE) -> bool:
    """``is_equiv`` in this process, without a time limit (the helper process runs this)."""
    with _numeric_rule(numeric):
        return _is_equiv(pred, gold)


def _bare_answer(response: str) -> str | None:
    """The whole response when it is nothing but an answer (one short line, no prose)."""
    text = response.strip()
    if not text or len(text) > 200 or "\n" in text or _is_prose(normalize(text)):
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
    if len(boxes) > 1 and _item_count(normalize(gold)) > 1:
        together = ", ".join(boxes)
        if _is_equiv(together, gold):
            return together, True
    return extracted, False


def grade_math_unbounded(response: str, gold: str, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """``grade_math`` in this process, without a time limit (the helper process runs this)."""
    with _numeric_rule(numeric):
        return _grade(response, gold)


def grade_gsm8k_unbounded(response: str, gold: str, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """``grade_gsm8k`` in this process, without a time limit (the helper process runs this)."""
    with _numeric_rule(numeric):
        extracted = extract_answer_unbounded(response)
        if extracted is None:
            return None, False
        try:
            correct = numbers_equal(extracted, gold)
        except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
            log.debug("gsm8k grading failed", exc_info=True)
            correct = None
        return extracted, bool(correct)


# What the bounded helper process (acm_exp.eval.bounded) serves by name, and its warm-up calls.
BOUNDED_FUNCTIONS = {
    "grade_math": grade_math_unbounded,
    "grade_gsm8k": grade_gsm8k_unbounded,
    "is_equiv": is_equiv_unbounded,
    "extract_answer": extract_answer_unbounded,
}
BOUNDED_WARM_UP = (
    ("is_equiv", ["2\\sqrt{5}", "\\sqrt{20}"]),
    ("is_equiv", ["3.1416", "\\pi"]),
    ("is_equiv", ["x^2+2x+1=0", "(x+1)^2=0"]),
    ("extract_answer", ["so $x = \\frac{1}{2}$ and 3"]),
)


def _bounded(name: str, args: list, fallback: Callable[[], object]) -> object:
    """``name`` run in the helper process under GRADE_TIME_LIMIT_S; ``fallback()`` past the limit."""
    from acm_exp.eval.bounded import TimeLimitExceeded, call_bounded

    try:
        return call_bounded(__name__, name, args, time_limit_s=GRADE_TIME_LIMIT_S)
    except TimeLimitExceeded:
        log.warning("grading %s took more than %s s; counted as wrong", name, GRADE_TIME_LIMIT_S)
        return fallback()
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("bounded grading failed", exc_info=True)
        return fallback()


def is_equiv(pred: str, gold: str, *, numeric: str = DEFAULT_NUMERIC_RULE) -> bool:
    """Whether a predicted answer equals the gold answer (DESIGN.md §3) by the ``numeric`` rule;
    never raises, at most GRADE_TIME_LIMIT_S seconds (then False)."""
    check_numeric_rule(numeric)
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    return bool(_bounded("is_equiv", [pred, gold, numeric], fallback=lambda: False))


def grade_math(response: str, gold: str, *, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """(extracted answer, correct) for a MATH-style benchmark, by the ``numeric`` rule; at most
    GRADE_TIME_LIMIT_S seconds (then the cheap extraction and False)."""
    check_numeric_rule(numeric)
    if not isinstance(response, str) or not isinstance(gold, str):
        return None, False
    extracted, correct = _bounded(
        "grade_math", [response, gold, numeric], fallback=lambda: (_cheap_extraction(response), False)
    )
    return extracted, bool(correct)


def grade_gsm8k(response: str, gold: str, *, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """(extracted answer, correct) for GSM8K: the extracted answer must equal the gold number."""
    check_numeric_rule(numeric)
    if not isinstance(response, str) or not isinstance(gold, str):
        return None, False
    extracted, correct = _bounded(
        "grade_gsm8k", [response, gold, numeric], fallback=lambda: (_cheap_extraction(response), False)
    )
    return extracted, bool(correct)


# ---------------------------------------------------------------------------------------------
# Gold answers per dataset


def _gold_plain(raw: str) -> str:
    return raw.strip()


def _gold_gsm8k(raw: str) -> str:
    return raw.split("####")[-1].strip().replace(",", "")


def _gold_last_boxed(raw: str) -> str:
    # A solution without \boxed{} (none in the offline Minerva copy) falls back to the same
    # extraction as responses ("the answer is", the last number).
    return last_boxed(raw) or extract_answer(raw) or raw.strip()


def _strip_dollars(text: str) -> str:
    return re.sub(r"(?<!\\)\$", "", text).strip()


def _gold_list_string(raw: str) -> str:
    """OlympiadBench ``final_answer``: a list rendered as a string, e.g. ``['$\\frac{1}{2}$']``."""
    try:
        items = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        items = raw
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        items = [str(items)]
    return ", ".join(_strip_dollars(str(item)) for item in items)


def _gold_latex_dollars(raw: str) -> str:
    return _strip_dollars(raw)


GOLD_PARSERS: dict[str, Callable[[str], str]] = {
    "plain": _gold_plain,
    "gsm8k": _gold_gsm8k,
    "last_boxed": _gold_last_boxed,
    "list_string": _gold_list_string,
    "latex_dollars": _gold_latex_dollars,
}
ANSWER_FORMATS = tuple(GOLD_PARSERS)


def gold_answer(raw_gold: str, answer_format: str) -> str:
    """The gold answer of one row, parsed by the benchmark's ``answer_format``."""
    parser = GOLD_PARSERS.get(answer_format)
    if parser is None:
        raise ConfigError(f"answer_format={answer_format!r} is unknown; expected one of {ANSWER_FORMATS}")
    return parser(str(raw_gold))


# ---------------------------------------------------------------------------------------------
# Reflection phrases

_REFLECTION_PHRASES = (
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
        for phrase in _REFLECTION_PHRASES
    )
    + r")\b",
    re.IGNORECASE,
)


def count_reflections(text: str) -> int:
    """How many reflection phrases (DESIGN.md §3) the text contains, case-insensitive, whole words."""
    if not isinstance(text, str):
        return 0
    return len(_REFLECTION.findall(text))
