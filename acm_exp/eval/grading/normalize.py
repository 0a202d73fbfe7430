"""Step 2 of grading: a canonical spelling of an answer.

Equal normalized strings mean equal answers (not conversely). Stripped: ``$``, ``\\left``/``\\right``
and other sizing commands, ``\\text{}``-like wrappers, units written after a value (``\\text{ cm}``,
``9 hours``), degrees, percent signs (remembered: ``10\\%`` also reads as 0.1), thin spaces,
trailing periods and line breaks, braces around the whole answer, thousands separators, and a
leading label (``x =``, ``f(x) =``, ``(p,q) =``; remembered, two different labels never match).
``\\dfrac``/``\\tfrac`` are ``\\frac``, ``\\frac12`` is ``\\frac{1}{2}``, ``>=`` is ``\\ge``; a choice
letter (``(B)``, ``C. x = 42``) is its letter.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from acm_exp.eval.grading.extract import braced_group

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
# A compound unit ("m/s", "km/h") may start with one letter: the slash makes it a unit.
_PLAIN_UNIT = re.compile(
    r"^(-?[\d.,]+)\s+(?!(?:and|or)\b)(?:[a-zA-Z]{2,}|[a-zA-Z]+/[a-zA-Z]+)(?:[\s/]+[a-zA-Z]+)*(?:\^\{?-?\d+\}?)?$"
)
# A word of three letters or more written onto a number is a unit too ("10weeks", "5dollars"); a
# shorter one is not ("10cm" may be 10 c m, "2ab" is a product), nor a function name ("2sin").
_ATTACHED_UNIT = re.compile(r"^(-?[\d.,]*\d)([a-zA-Z]{3,})$")
_FUNCTION_NAMES = frozenset("sin cos tan cot sec csc log exp sinh cosh tanh arcsin arccos arctan".split())
# A label before "=" or "\in" at the start of an answer: what is named, not a value ("x", "y_1",
# "f(x)", "\theta", "(p,q)", "|AB|", "S_{MBCN}:S", "\frac{NO}{BO}"); no digits outside subscripts.
_LABEL_END = re.compile(r"=|\\in(?![a-zA-Z])")
_SUBSCRIPT = re.compile(r"_\{[^{}]*\}|_\\?\w")
_RELATION_SIGNS = re.compile(r"[<>]|\\(?:le|ge|ne|lt|gt|approx)(?![a-zA-Z])")
# Thousands separated by commas (the first group never starts with 0: "0,111" is a decimal comma)
# or by spaces ("1 000").
THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
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
        return braced_group(text, index)
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
        group = braced_group(text, match.end() - 1) if match else None
        if group is None:
            break
        text = text[: match.start()] + group[0] + text[group[1] :]
    return text


def _unwrap_group(text: str) -> str:
    """``{2, 3, 5}`` -> ``2, 3, 5``: braces around a whole answer are a TeX group, not a set."""
    if text.startswith("{") and braced_group(text, 0) == (text[1:-1], len(text)):
        return text[1:-1].strip()
    return text


def _strip_degrees(text: str) -> str:
    text = re.sub(r"(?:\{\s*\})?\^\s*\{?\s*\\circ\s*\}?", "", text)
    return text.replace("\\circ", "").replace("°", "")


def _strip_percent(text: str) -> tuple[str, bool]:
    """The text without its percent signs, and whether it had one."""
    stripped = text.replace("\\%", "").replace("%", "")
    return stripped, stripped != text


def _single_escapes(text: str) -> str:
    """``\\\\frac{1}{2}`` -> ``\\frac{1}{2}``: text escaped once too often (through JSON or a
    Python string twice) doubles every backslash. Read so when every run of backslashes has even
    length and a doubled one stands before a command name (in TeX, ``\\\\`` followed by a letter
    would be a line break before a word, which no answer is)."""
    runs = re.findall(r"\\+", text)
    if not runs or any(len(run) % 2 for run in runs) or not re.search(r"\\\\[a-zA-Z]", text):
        return text
    return re.sub(r"\\+", lambda match: "\\" * (len(match.group(0)) // 2), text)


# A degree sign inside a trigonometric function's argument is the unit pi/180 (sin(90°-x) is
# cos x); elsewhere it is a unit of the answer and dropped.
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![a-zA-Z])")
_DEGREES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\{\s*\})?\^\s*\{?\s*\\circ\s*\}?|(\d+(?:\.\d+)?)\s*°")


def _degrees_in_trig_as_radians(text: str) -> str:
    if not _TRIG.search(text):
        return text
    return _DEGREES.sub(lambda m: "(" + (m.group(1) or m.group(2)) + "\\cdot\\frac{\\pi}{180})", text)


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
    return normalized(answer).text


def compact(text: str) -> str:
    """Spaces do not matter for equality (``(1, 2)`` is ``(1,2)``)."""
    return re.sub(r"\s+", "", text)


def is_label(text: str) -> bool:
    """Whether ``text`` names something (no digits outside subscripts, no relation) rather than
    being a value or one side of an equation."""
    bare = _SUBSCRIPT.sub("", text)
    return (
        bool(re.search(r"[a-zA-Z]", bare))
        and not re.search(r"\d", bare)
        and not _RELATION_SIGNS.search(text)
        and len(text) <= 40
    )


def split_label(text: str) -> tuple[str | None, str]:
    """(label, value) of ``label = value`` / ``label \\in value``; (None, text) otherwise."""
    match = _LABEL_END.search(text)
    if not match or text.count("=") > 1:
        return None, text
    label, value = text[: match.start()].strip(), text[match.end() :].strip()
    if not label or not value or not is_label(label) or _LABEL_END.search(value):
        return None, text
    return compact(label), value


# A function's value named by its application ("f(x)", "g_1(t)", "\\phi(x,y)").
_APPLICATION = re.compile(r"(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\(([^()]*)\)")


def labels_conflict(pred: str, gold: str) -> bool:
    """Both answers are labelled, and not alike (C_{1}=5 is not C_{2}=5). A single letter and a
    function application that does not take it name the same value (y = 2x+3 is f(x) = 2x+3)."""
    pred_label, gold_label = normalized(pred).label, normalized(gold).label
    if pred_label is None or gold_label is None or pred_label == gold_label:
        return False
    return not (_dependent_variable(pred_label, gold_label) or _dependent_variable(gold_label, pred_label))


def _dependent_variable(letter: str, application: str) -> bool:
    match = _APPLICATION.fullmatch(application)
    return bool(match) and re.fullmatch(r"[a-zA-Z]", letter) is not None and letter not in match.group(1)


# Element-wise comparison of unordered collections normalizes each element many times.
@lru_cache(maxsize=65536)
def normalized(answer: str) -> Normalized:
    """The normalized text of an answer, with the label and percent sign it had."""
    text = _single_escapes(answer.strip())
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
    text = _degrees_in_trig_as_radians(text)
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
    label, text = split_label(text)
    unit = _PLAIN_UNIT.match(text)
    if unit:
        text = unit.group(1)
    attached = _ATTACHED_UNIT.match(text)
    if attached and attached.group(2).lower() not in _FUNCTION_NAMES:
        text = attached.group(1)
    if THOUSANDS.match(text):
        text = text.replace(",", "")
    if _SPACED_THOUSANDS.match(text):
        text = text.replace(" ", "")
    choice = _CHOICE.match(text)
    if choice:
        text = choice.group(1)
    return Normalized(text.strip(), label, percent)
