"""Math answer grading as the L2S papers run it, on math-verify, along its pipeline:

1. ``extract``: the final answer of a response (the last ``\\boxed{}``, a later "the answer is",
   else the last math expression); the final run of boxes that forms one answer;
2. ``normalize``: a canonical spelling (``$``, ``\\left``, units, degrees, percent, thousands
   separators, a leading label);
3. compare: ``numbers`` (the numeric rule: ``precision`` by default, ``qwen`` as a switch),
   ``sequences`` (tuples, intervals, sets, lists), ``matrices`` and ``symbolic`` (math-verify with
   guards), put together cheapest first in ``equivalence``;
4. the bounded entry points here: every public grading call runs in a helper process killed after
   GRADE_TIME_LIMIT_S (``helper``, acm_exp.eval.bounded); sympy cannot be stopped from inside.

``grade_math``, ``grade_gsm8k``, ``is_equiv`` and ``extract_answer`` are total: weird input gives
None / False, never an exception. Gold answers are parsed in acm_exp.eval.gold and reflection
phrases counted in acm_exp.eval.metrics; both names stay importable from here.
"""

from __future__ import annotations

from acm_exp.eval.grading.equivalence import (
    UNORDERED_SYMBOLIC_MAX,
    grade_gsm8k_unbounded,
    grade_math_unbounded,
    inequality_as_interval,
    is_equiv_unbounded,
)
from acm_exp.eval.grading.extract import cheap_extraction, extract_answer_unbounded, final_boxes, last_boxed
from acm_exp.eval.grading.helper import GRADE_TIME_LIMIT_S, call_in_helper
from acm_exp.eval.grading.helper import extract_answer as _extract_answer
from acm_exp.eval.grading.matrices import matrices_equal, matrix_products_equal
from acm_exp.eval.grading.normalize import Normalized, normalize
from acm_exp.eval.grading.numbers import (
    DEFAULT_NUMERIC_RULE,
    NUMERIC_RULES,
    QWEN_REL_TOL,
    Number,
    check_numeric_rule,
    numbers_equal,
    parse_number,
    to_number,
    values_match,
)
from acm_exp.eval.grading.sequences import sequences_equal
from acm_exp.eval.grading.symbolic import MATH_VERIFY_MAX_CHARS, symbolic_equal
from acm_exp.eval.metrics import count_reflections

__all__ = [
    "ANSWER_FORMATS",
    "BOUNDED_FUNCTIONS",
    "BOUNDED_WARM_UP",
    "DEFAULT_NUMERIC_RULE",
    "GOLD_PARSERS",
    "GRADE_TIME_LIMIT_S",
    "MATH_VERIFY_MAX_CHARS",
    "NUMERIC_RULES",
    "QWEN_REL_TOL",
    "UNORDERED_SYMBOLIC_MAX",
    "Normalized",
    "Number",
    "check_numeric_rule",
    "count_reflections",
    "extract_answer",
    "extract_answer_unbounded",
    "final_boxes",
    "gold_answer",
    "grade_gsm8k",
    "grade_gsm8k_unbounded",
    "grade_math",
    "grade_math_unbounded",
    "inequality_as_interval",
    "is_equiv",
    "is_equiv_unbounded",
    "last_boxed",
    "matrices_equal",
    "matrix_products_equal",
    "normalize",
    "numbers_equal",
    "parse_number",
    "sequences_equal",
    "symbolic_equal",
    "to_number",
    "values_match",
]

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

# Gold parsing lives beside the benchmarks (acm_exp.eval.gold), which use this package: loaded on
# first use, so that neither import waits for the other.


def __getattr__(name: str) -> object:
    if name in ("ANSWER_FORMATS", "GOLD_PARSERS", "gold_answer"):
        from acm_exp.eval.gold import ANSWER_FORMATS, GOLD_PARSERS, gold_answer

        return {"ANSWER_FORMATS": ANSWER_FORMATS, "GOLD_PARSERS": GOLD_PARSERS, "gold_answer": gold_answer}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last boxed, else "the answer is ...", else the last LaTeX or
    math expression (math-verify's parse); None when there is no answer."""
    return _extract_answer(text, GRADE_TIME_LIMIT_S)


def is_equiv(pred: str, gold: str, *, numeric: str = DEFAULT_NUMERIC_RULE) -> bool:
    """Whether a predicted answer equals the gold answer (acm_exp.eval.grading.equivalence) by the
    ``numeric`` rule; never raises, at most GRADE_TIME_LIMIT_S seconds (then False)."""
    check_numeric_rule(numeric)
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    return bool(call_in_helper("is_equiv", [pred, gold, numeric], lambda: False, GRADE_TIME_LIMIT_S))


def grade_math(response: str, gold: str, *, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """(extracted answer, correct) for a MATH-style benchmark, by the ``numeric`` rule; at most
    GRADE_TIME_LIMIT_S seconds (then the cheap extraction and False)."""
    return _graded("grade_math", response, gold, numeric)


def grade_gsm8k(response: str, gold: str, *, numeric: str = DEFAULT_NUMERIC_RULE) -> tuple[str | None, bool]:
    """(extracted answer, correct) for GSM8K: the extracted answer must equal the gold number."""
    return _graded("grade_gsm8k", response, gold, numeric)


def _graded(name: str, response: str, gold: str, numeric: str) -> tuple[str | None, bool]:
    check_numeric_rule(numeric)
    if not isinstance(response, str) or not isinstance(gold, str):
        return None, False
    extracted, correct = call_in_helper(
        name, [response, gold, numeric], lambda: (cheap_extraction(response), False), GRADE_TIME_LIMIT_S
    )
    return extracted, bool(correct)
