"""Math answer grading as the L2S papers run it (DESIGN.md §3).

Extraction: the last ``\\boxed{...}`` (braces matched), else "the answer is ...", else the last
number. Equivalence (``is_equiv``), cheapest test first:
1. normalize both answers (``normalize``) and compare the strings, spaces ignored;
2. numbers: two integers must be equal, anything else within a relative tolerance of 1e-4;
3. collections: tuples and intervals element by element in order, sets, bare lists and unions
   in any order (final: a list is never compared as a whole);
4. relations (``=``, ``\\approx``): part by part, equations up to a constant factor;
5. math-verify (``parse``, then ``verify(gold, pred)``), under a time limit; slow (tens of ms to
   seconds), so only when everything above failed, and never on prose.
Gold parsing per dataset is chosen by name (``answer_format``) from the benchmark config.

Every public function is total: weird input gives ``None`` / ``False``, never an exception.
"""

from __future__ import annotations

import ast
import logging
import math
import re
import threading
from collections.abc import Callable
from functools import lru_cache

from acm_exp.errors import ConfigError

log = logging.getLogger(__name__)

# Relative tolerance of the numeric comparison (Qwen2.5-Math toolkit value).
REL_TOL = 1e-4
# Time limit of one math-verify comparison (parsing both answers included), in seconds
# (signal.alarm: whole seconds, main thread only).
MATH_VERIFY_TIMEOUT_S = 3
# Longer strings are not handed to math-verify: parsing them can take many seconds.
MATH_VERIFY_MAX_CHARS = 1000
# Nor are huge powers and factorials (10^{100000000}, 10^{10^{10}}, 100000!): sympy evaluates
# them exactly, for minutes, and outside the main thread no alarm stops it.
_HUGE_NUMBER = re.compile(r"\^\s*\{?\s*\d{6,}|\^\s*\{\s*\d+\s*\^\s*\{?\s*\d{2,}|\d{5,}\s*!")

# ---------------------------------------------------------------------------------------------
# Extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)
# The sentence ends at a line break, or at a period followed by a space or the end of the text
# (a period between digits is a decimal point).
_SENTENCE_END = re.compile(r"\n|\.(?=\s|$)")
# Integers, decimals, thousands separators, fractions a/b; a minus sign counts only when it cannot
# be a binary minus (not right after a word character or a closing bracket).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    r"|(?:(?<![\w)\]}])-)?\.\d+"
)


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
            return text[open_index + 1:index], index + 1
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


def _box_content(text: str, start: int, pairs: dict[int, int]) -> str | None:
    """The argument of the box command that ends at ``start``: a braced group or a bare token."""
    index = start
    while index < len(text) and text[index] in " \t":
        index += 1
    if index < len(text) and text[index] == "{":
        close = pairs.get(index)
        return text[index + 1:close].strip() if close is not None else None
    if index == start:
        # "\boxedx" is another command name, not a box.
        return None
    match = re.match(r"[^\s$]+", text[index:])
    return match.group(0).strip() if match else None


def last_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty ``\\boxed{}`` / ``\\fbox{}`` (or ``\\boxed x``)."""
    starts = sorted(
        match.end()
        for command in _BOX_COMMANDS
        for match in re.finditer(re.escape(command) + r"(?![a-zA-Z])", text)
    )
    pairs = _brace_pairs(text) if starts else {}
    for start in reversed(starts):
        content = _box_content(text, start, pairs)
        if content:
            return content
    return None


def _answer_is(text: str) -> str | None:
    """What follows the last "the answer is", up to the end of its sentence or line."""
    matches = list(_ANSWER_IS.finditer(text))
    for match in reversed(matches):
        rest = text[match.end():]
        end = _SENTENCE_END.search(rest)
        answer = (rest[:end.start()] if end else rest).strip().rstrip(".").strip()
        if answer:
            return answer
    return None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last boxed, else "the answer is ...", else the last number."""
    try:
        if not isinstance(text, str) or not text:
            return None
        return last_boxed(text) or _answer_is(text) or _last_number(text)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("answer extraction failed", exc_info=True)
        return None


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
# "x =", "y_1 =", "f(x) =", "\theta =", "x \in" at the start of an answer.
_LEADING_ASSIGNMENT = re.compile(
    r"^((?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[\w\\]+\}?)?(?:\([a-zA-Z]\))?)\s*(?:=|\\in(?![a-zA-Z]))\s*"
)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")
_ALIASES = (
    ("\\leqslant", "\\le"), ("\\geqslant", "\\ge"), ("\\leq", "\\le"), ("\\geq", "\\ge"),
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
)


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
            optional, index = text[index:close + 1], close + 1
        arguments = []
        for _ in range(n_args):
            argument = _macro_argument(text, index)
            if argument is None:
                break
            arguments.append(argument[0])
            index = argument[1]
        if len(arguments) < n_args:
            continue
        out.append(text[position:match.start()])
        out.append(macro + optional + "".join("{" + _brace_macro_arguments(a, macro, n_args) + "}"
                                              for a in arguments))
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


def _strip_degrees_and_percent(text: str) -> str:
    text = re.sub(r"(?:\{\s*\})?\^\s*\{?\s*\\circ\s*\}?", "", text)
    text = text.replace("\\circ", "").replace("°", "")
    return text.replace("\\%", "").replace("%", "")


def normalize(answer: str) -> str:
    """A canonical spelling of an answer; equal strings mean equal answers (not conversely)."""
    return _normalize(answer)[0]


def _assigned_variable(answer: str) -> str | None:
    """The variable of a leading assignment that normalize() dropped ("C_{1}" of "C_{1}=1/5")."""
    return _normalize(answer)[1]


def _variables_conflict(pred: str, gold: str) -> bool:
    """Both answers assign to a variable, and not to the same one (C_{1}=5 is not C_{2}=5)."""
    pred_variable, gold_variable = _assigned_variable(pred), _assigned_variable(gold)
    return pred_variable is not None and gold_variable is not None and pred_variable != gold_variable


# Element-wise comparison of unordered collections normalizes each element many times.
@lru_cache(maxsize=65536)
def _normalize(answer: str) -> tuple[str, str | None]:
    """(normalized answer, the variable of the leading assignment it had, if any)."""
    text = answer.strip()
    text = text.replace("\\$", "").replace("$", "")
    text = re.sub(r"\\(?:left|right)\.", "", text)
    text = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|displaystyle)(?![a-zA-Z])", "", text)
    for alias, canonical in _ALIASES:
        text = re.sub(re.escape(alias) + r"(?![a-zA-Z])", lambda _m, c=canonical: c, text)
    # Thin spaces first: "10,\!080" must read as one number.
    text = re.sub(r",\\!\s*", ",", text)
    text = re.sub(r"\\[!,;: ]|~", " ", text)
    text = _strip_degrees_and_percent(text)
    text = _TRAILING_UNIT.sub("", text)
    text = _unwrap_text_commands(text)
    text = _brace_macro_arguments(text, "\\frac", 2)
    text = _brace_macro_arguments(text, "\\sqrt", 1)
    text = re.sub(r"\s+", " ", text).strip().rstrip(".").strip()
    variable = None
    assignment = _LEADING_ASSIGNMENT.match(text)
    if assignment and text.count("=") <= 1 and text[assignment.end():].strip():
        variable = _compact(assignment.group(1))
        text = text[assignment.end():]
    unit = _PLAIN_UNIT.match(text)
    if unit:
        text = unit.group(1)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    choice = _CHOICE.match(text)
    if choice:
        text = choice.group(1)
    return text.strip(), variable


def _compact(text: str) -> str:
    """Spaces do not matter for equality (``(1, 2)`` is ``(1,2)``)."""
    return re.sub(r"\s+", "", text)


# ---------------------------------------------------------------------------------------------
# Numbers

_PLAIN_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_INTEGER = re.compile(r"[+-]?\d+")


def _scientific(text: str) -> float | None:
    """``4.5\\times10^{33}``, ``2\\cdot10^-3``, ``10^{6}``."""
    match = re.fullmatch(r"(?:(" + _PLAIN_NUMBER + r")(?:\\times|\\cdot|\*|x))?10\^\{?([+-]?\d+)\}?", text)
    if not match:
        return None
    mantissa = float(match.group(1)) if match.group(1) else 1.0
    return mantissa * 10.0 ** int(match.group(2))


def to_number(answer: str) -> float | None:
    """The value of a normalized answer that is a plain number, fraction or mixed number."""
    text = _compact(answer)
    if not text:
        return None
    try:
        if re.fullmatch(_PLAIN_NUMBER, text):
            return float(text)
        fraction = re.fullmatch(r"([+-]?)\\frac\{(" + _PLAIN_NUMBER + r")\}\{(" + _PLAIN_NUMBER + r")\}", text)
        if fraction:
            sign = -1.0 if fraction.group(1) == "-" else 1.0
            return sign * float(fraction.group(2)) / float(fraction.group(3))
        slash = re.fullmatch(r"(" + _PLAIN_NUMBER + r")/(" + _PLAIN_NUMBER + r")", text)
        if slash:
            return float(slash.group(1)) / float(slash.group(2))
        # MATH writes mixed numbers as "137 \frac{1}{2}" (a proper fraction after an integer).
        mixed = re.fullmatch(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", text)
        if mixed and int(mixed.group(3)) < int(mixed.group(4)):
            sign = -1.0 if mixed.group(1) == "-" else 1.0
            return sign * (int(mixed.group(2)) + int(mixed.group(3)) / int(mixed.group(4)))
        return _scientific(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _canonical_integer(answer: str) -> str:
    """"-007" -> "-7" without int(), which refuses strings of more than 4300 digits."""
    text = _compact(answer)
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("+-").lstrip("0") or "0"
    return ("" if digits == "0" else sign) + digits


def numbers_equal(pred: str, gold: str) -> bool | None:
    """Numeric comparison of two normalized answers; None when one of them is not a number.

    Two integers must be equal exactly (with a relative tolerance, 10080 would equal 10081);
    anything else within the relative tolerance, so ``\\frac{14}{3}`` equals ``4.6667``.
    """
    pred_value, gold_value = to_number(pred), to_number(gold)
    if pred_value is None or gold_value is None:
        return None
    if _INTEGER.fullmatch(_compact(pred)) and _INTEGER.fullmatch(_compact(gold)):
        return _canonical_integer(pred) == _canonical_integer(gold)
    if not (math.isfinite(pred_value) and math.isfinite(gold_value)):
        return pred_value == gold_value
    return math.isclose(pred_value, gold_value, rel_tol=REL_TOL, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# Tuples, intervals, sets

_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}"}


def _split_top_level(text: str, separators: str | tuple[str, ...] = ",") -> list[str]:
    """Split at separators outside (), [], {} and \\{ \\}."""
    if isinstance(separators, str):
        separators = (separators,)
    parts: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(text):
        separator = next((sep for sep in separators if text.startswith(sep, index)), None) if depth == 0 else None
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


def _bracketed(text: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when the whole text is one bracketed group, e.g. ``(1, 2]``."""
    for opening in _BRACKETS:
        if not text.startswith(opening):
            continue
        for closing in _BRACKETS.values():
            if not text.endswith(closing) or len(text) < len(opening) + len(closing):
                continue
            inner = text[len(opening):len(text) - len(closing)]
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


def _matched_unordered(pred_items: list[str], gold_items: list[str],
                       equal: Callable[[str, str], bool]) -> bool:
    remaining = list(gold_items)
    for item in pred_items:
        match = next((i for i, gold in enumerate(remaining) if equal(item, gold)), None)
        if match is None:
            return False
        remaining.pop(match)
    return not remaining


def sequences_equal(pred: str, gold: str, equal: Callable[[str, str], bool],
                    unordered_equal: Callable[[str, str], bool] | None = None) -> bool | None:
    """Element-wise comparison of tuples / intervals (ordered) and sets / bare lists / unions
    (unordered); None when neither answer is such a collection.

    ``unordered_equal`` compares the elements of unordered collections (matching them costs up to
    n^2 comparisons, so a caller may pass a cheaper test there); defaults to ``equal``.
    """
    unordered_equal = unordered_equal or equal
    pred_union, gold_union = _split_top_level(pred, "\\cup"), _split_top_level(gold, "\\cup")
    if len(pred_union) > 1 or len(gold_union) > 1:
        if len(pred_union) != len(gold_union):
            return False
        return _matched_unordered(
            pred_union, gold_union,
            lambda p, g: bool(sequences_equal(p, g, equal, unordered_equal)) or unordered_equal(p, g))
    pred_group, gold_group = _bracketed(pred), _bracketed(gold)
    if pred_group and gold_group:
        if pred_group[0] != gold_group[0] or pred_group[2] != gold_group[2]:
            return False
        if pred_group[0] == "\\{":
            pred_items, gold_items = _set_items(pred, pred_group), _set_items(gold, gold_group)
            if len(pred_items) != len(gold_items):
                return False
            return _matched_unordered(pred_items, gold_items, unordered_equal)
        pred_items, gold_items = _split_top_level(pred_group[1]), _split_top_level(gold_group[1])
        if len(pred_items) == 1 and len(gold_items) == 1:
            # "(x+1)" is a parenthesized expression, not a 1-tuple.
            return None
        if len(pred_items) != len(gold_items):
            return False
        return all(equal(p, g) for p, g in zip(pred_items, gold_items))
    # Bare lists ("1, 3, 5") and a set spelled \{1, 3, 5\} on one side only: unordered.
    pred_items = _set_items(pred, pred_group)
    gold_items = _set_items(gold, gold_group)
    if len(pred_items) == 1 and len(gold_items) == 1:
        return None
    if len(pred_items) != len(gold_items):
        return False
    return _matched_unordered(pred_items, gold_items, unordered_equal)


def _set_items(text: str, group: tuple[str, str, str] | None) -> list[str]:
    items = _split_top_level(group[1]) if group and group[0] == "\\{" else _split_top_level(text)
    return [expanded for item in items for expanded in _expand_plus_minus(item)]


def _expand_plus_minus(item: str) -> list[str]:
    """``1 \\pm \\sqrt{19}`` is the two values ``1 + \\sqrt{19}`` and ``1 - \\sqrt{19}``."""
    if len(re.findall(r"\\pm(?![a-zA-Z])", item)) != 1:
        return [item]
    return [re.sub(r"\\pm(?![a-zA-Z])", sign, item) for sign in ("+", "-")]


# ---------------------------------------------------------------------------------------------
# Symbolic comparison (math-verify)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _run_with_time_limit(function: Callable[[], bool]) -> bool:
    """Run ``function`` under one MATH_VERIFY_TIMEOUT_S alarm for parsing and comparing together.

    math-verify's own per-call alarms cannot nest under this one (each cancels the other), so its
    calls run with their timeouts off and this alarm bounds the whole comparison. signal.alarm
    works in the main thread only: elsewhere (a grading thread pool) there is no limit, and
    MATH_VERIFY_MAX_CHARS keeps the inputs small.
    """
    if not _in_main_thread():
        return function()
    from math_verify.utils import timeout

    return timeout(timeout_seconds=MATH_VERIFY_TIMEOUT_S)(function)()


def _silence_math_verify_timeout_warning() -> None:
    """math-verify warns once when called without its timeouts; _run_with_time_limit sets one."""
    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True


@lru_cache(maxsize=4096)
def _math_verify_parse(answer: str) -> tuple:
    from math_verify import parse

    # math-verify only reads LaTeX inside delimiters; \boxed{} is its highest-priority anchor.
    # first_match: with "any_match", a failed parse of the whole answer falls back to a fragment
    # of it (``\frac{1}{3} E_{1}+\frac{2}{3} E_{2}`` parsed as 2/3), making unequal answers equal.
    # raise_on_error: a timeout must reach _run_with_time_limit, not come back as an empty parse
    # (which this cache would then keep).
    return tuple(parse("\\boxed{" + answer + "}", extraction_mode="first_match", parsing_timeout=None,
                       raise_on_error=True))


def _covers_answer(parsed: tuple, answer: str) -> bool:
    """Whether math-verify parsed the whole answer rather than a fragment of it.

    When the whole answer does not parse, math-verify may keep a piece of it ("3630" out of
    "3630 ft^2, 522,720"), and two different answers that share the piece would compare equal.
    parse() returns [expression, matched text]; its rewriting never shrinks the text this much.
    """
    matched = next((item for item in reversed(parsed) if isinstance(item, str)), None)
    return matched is not None and 2 * len(_compact(matched)) >= len(_compact(answer))


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


def _math_verify_equal(pred: str, gold: str, equations_only: bool) -> bool:
    from math_verify import verify

    gold_parsed = _math_verify_parse(gold)
    pred_parsed = _math_verify_parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if not (_covers_answer(gold_parsed, gold) and _covers_answer(pred_parsed, pred)):
        return False
    equations = _equations_equal(gold_parsed[0], pred_parsed[0])
    if equations is not None or equations_only:
        return bool(equations)
    # raise_on_error: otherwise math-verify swallows the timeout of one pair of extractions and
    # goes on with the next pair, no longer under any time limit.
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None, raise_on_error=True))


def symbolic_equal(pred: str, gold: str, equations_only: bool = False) -> bool:
    """math-verify's ``verify(gold, pred)`` (gold first) on normalized answers; False on any
    failure or after MATH_VERIFY_TIMEOUT_S. ``equations_only``: True only for two equations that
    match (see _equations_equal)."""
    if len(pred) > MATH_VERIFY_MAX_CHARS or len(gold) > MATH_VERIFY_MAX_CHARS:
        return False
    if _HUGE_NUMBER.search(pred) or _HUGE_NUMBER.search(gold):
        return False
    if not (_balanced_braces(pred) and _balanced_braces(gold)):
        return False
    try:
        _silence_math_verify_timeout_warning()
        return _run_with_time_limit(lambda: _math_verify_equal(pred, gold, equations_only))
    except BaseException as error:  # noqa: BLE001 - sympy raises anything, incl. RecursionError
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        log.debug("math-verify failed", exc_info=True)
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
    """Exact, numeric and element-wise comparison of normalized answers, without math-verify."""
    if _compact(pred) == _compact(gold):
        return True
    numeric = numbers_equal(pred, gold)
    if numeric is not None:
        return numeric
    return bool(sequences_equal(pred, gold, _cheap_element_equal))


def _cheap_element_equal(pred: str, gold: str) -> bool:
    return not _variables_conflict(pred, gold) and _cheap_equal(normalize(pred), normalize(gold))


# Unordered collections up to this size compare their elements symbolically (n^2 comparisons).
UNORDERED_SYMBOLIC_MAX = 8
_RELATIONS = ("=", "\\approx")
# Words of three letters or more that are not commands: two of them make an answer prose,
# which math-verify cannot compare (it turns words into products of symbols).
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}(?![a-zA-Z])")
_MATH_WORDS = frozenset({
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "log", "exp", "det", "max", "min", "lim", "mod", "gcd", "lcm",
})


def _is_prose(answer: str) -> bool:
    return sum(word.lower() not in _MATH_WORDS for word in _WORD.findall(answer)) >= 2


def _item_count(answer: str) -> int:
    group = _bracketed(answer)
    return max(len(_split_top_level(answer)), len(_split_top_level(group[1])) if group else 1)


def _relation_chain_equal(pred: str, gold: str) -> bool | None:
    """Compare answers that contain relations (``=``, ``\\approx``) part by part; None when
    neither does.

    math-verify reads ``P(X=4)=5/8`` as its right side and a chain like ``i^{6}=i^{4} i^{2}=-1``
    as its first relation, so it would equate answers that differ in the left side or in the final
    value. Two equations (one ``=`` each) also match when they are proportional (x^2-4x-2=0 and
    2x^2-8x-4=0). A chain (two relations or more, or an approximation) matches a shorter answer
    by its final value: ``-1`` answers ``i^{6}=i^{4} i^{2}=-1``.
    """
    pred_parts = _split_top_level(pred, _RELATIONS)
    gold_parts = _split_top_level(gold, _RELATIONS)
    if len(pred_parts) == 1 and len(gold_parts) == 1:
        return None

    def is_chain(answer: str, parts: list[str]) -> bool:
        return len(parts) >= 3 or (len(parts) == 2 and "\\approx" in answer)

    if len(pred_parts) == len(gold_parts):
        if all(is_equiv(p, g) for p, g in zip(pred_parts, gold_parts)):
            return True
        if len(gold_parts) == 2 and not (is_chain(pred, pred_parts) or is_chain(gold, gold_parts)):
            return symbolic_equal(pred, gold, equations_only=True)
        return False
    if is_chain(pred, pred_parts) or is_chain(gold, gold_parts):
        return is_equiv(pred_parts[-1], gold_parts[-1])
    return False


def is_equiv(pred: str, gold: str) -> bool:
    """Whether a predicted answer equals the gold answer (DESIGN.md §3); never raises."""
    try:
        if not isinstance(pred, str) or not isinstance(gold, str):
            return False
        if _variables_conflict(pred, gold):
            return False
        pred_norm, gold_norm = normalize(pred), normalize(gold)
        if not pred_norm or not gold_norm:
            # Nothing left after normalization (e.g. "$"): only the same text is the same answer.
            return bool(_compact(pred)) and _compact(pred) == _compact(gold)
        if _cheap_equal(pred_norm, gold_norm):
            return True
        # Two plain numbers that differ are different: math-verify cannot change that.
        if to_number(pred_norm) is not None and to_number(gold_norm) is not None:
            return False
        # math-verify drops the base of "52_8"; the digits and the base must both match.
        gold_base, pred_base = _base_number(gold_norm), _base_number(pred_norm)
        if gold_base is not None or pred_base is not None:
            return gold_base is not None and gold_base == pred_base
        small = max(_item_count(pred_norm), _item_count(gold_norm)) <= UNORDERED_SYMBOLIC_MAX
        elements = sequences_equal(pred_norm, gold_norm, is_equiv,
                                   is_equiv if small else _cheap_element_equal)
        if elements is not None:
            # Collections compare element by element; math-verify may read only part of a list.
            return elements
        chain = _relation_chain_equal(pred_norm, gold_norm)
        if chain is not None:
            return chain
        if _is_prose(pred_norm) or _is_prose(gold_norm):
            return False
        return symbolic_equal(pred_norm, gold_norm)
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("is_equiv failed", exc_info=True)
        return False


def grade_math(response: str, gold: str) -> tuple[str | None, bool]:
    """(extracted answer, correct) for a MATH-style benchmark."""
    extracted = extract_answer(response)
    if extracted is None:
        return None, False
    return extracted, is_equiv(extracted, gold)


def grade_gsm8k(response: str, gold: str) -> tuple[str | None, bool]:
    """(extracted answer, correct) for GSM8K: the extracted answer must equal the gold number."""
    extracted = extract_answer(response)
    if extracted is None:
        return None, False
    try:
        correct = numbers_equal(normalize(extracted), normalize(gold))
    except Exception:  # noqa: BLE001 - grading must never crash an evaluation run
        log.debug("gsm8k grading failed", exc_info=True)
        correct = None
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
    "wait", "re-examine", "double-check", "let me check", "recap", "let me just verify",
    "let me just check",
)
_REFLECTION = re.compile(
    r"\b(?:" + "|".join(
        # "double-check" is also written "double check"; words may be separated by any space.
        re.escape(phrase).replace(r"\-", r"[-\s]").replace(r"\ ", r"\s+")
        for phrase in _REFLECTION_PHRASES
    ) + r")\b",
    re.IGNORECASE,
)


def count_reflections(text: str) -> int:
    """How many reflection phrases (DESIGN.md §3) the text contains, case-insensitive, whole words."""
    if not isinstance(text, str):
        return 0
    return len(_REFLECTION.findall(text))
