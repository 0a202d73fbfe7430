"""Math grading rules of issue 10, each written from the mathematics.

Every table names, per rule, a case where the grader before issue 10 was wrong ("old: ..."), and
``MATH_VERIFY_ALONE_WRONG`` lists, for each rule this framework adds on top of math-verify, a case
math-verify alone gets wrong.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from acm_exp.errors import ConfigError
from acm_exp.eval import grading
from acm_exp.eval.grading import (
    NUMERIC_RULES,
    extract_answer,
    grade_gsm8k,
    grade_math,
    inequality_as_interval,
    is_equiv,
    parse_number,
)

# ---------------------------------------------------------------------------------------------
# 1. Numbers: the precision-aware rule (default) and the Qwen2.5-Math rule


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # Two integers compare exactly.
        ("10080", "10080", True),
        ("10081", "10080", False),
        # A decimal is right within half a unit of its own last written place of the gold value.
        ("70001.0", "70000", False),  # old: True (relative tolerance 1e-4)
        ("70000.5", "70000", False),  # old: True
        ("1000.1", "1000", False),  # old: True
        ("70000.0", "70000", True),
        ("4.6667", "\\frac{14}{3}", True),  # |4.6667 - 14/3| = 3.3e-5 <= 5e-5
        ("4.66", "\\frac{14}{3}", False),  # |4.66 - 14/3| = 6.7e-3 > 5e-3
        ("3.1416", "\\pi", True),  # old: False (pi is no plain number)
        ("3.14", "\\pi", True),  # old: False
        ("3.15", "\\pi", False),
        ("1.414", "\\sqrt{2}", True),  # old: False
        ("1.42", "\\sqrt{2}", False),
        ("0.333", "\\frac{1}{3}", True),  # old: False
        ("0.34", "\\frac{1}{3}", False),
        ("4.6\\times10^{33}", "4.55e33", True),  # half a unit of 4.6e33 is 5e31; old: False
        ("4.7\\times10^{33}", "4.55e33", False),
        # An exact answer against a decimal gold must round to it at the gold's written place.
        ("\\frac{14}{3}", "4.6667", True),
        ("\\frac{\\sqrt{3}}{3}", "0.577", True),  # old: False
        ("5", "5.001", False),
        # Percent signs and thousands separators.
        ("10\\%", "10", True),
        ("70,000", "70000", True),
        ("10\\%", "0.1", True),  # percent against fraction; old: False
        ("0.1", "10\\%", True),  # old: False
        ("33.3\\%", "\\frac{1}{3}", True),  # old: False
        ("10", "0.1", False),
    ],
)
def test_precision_rule(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # Qwen2.5-Math evaluation/grader.py: isclose(rel_tol=1e-4) against gold, gold/100, gold*100.
        ("70001.0", "70000", True),
        ("10081", "10080", True),
        ("10082", "10080", False),
        ("4.6667", "\\frac{14}{3}", True),
        ("4.67", "\\frac{14}{3}", False),
        ("0.1", "10", True),  # gold/100
        ("1000", "10", True),  # gold*100
    ],
)
def test_qwen_rule(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold, numeric="qwen") is expected


def test_the_numeric_rule_reaches_every_entry_point() -> None:
    assert grade_math("so $\\boxed{70001.0}$", "70000") == ("70001.0", False)
    assert grade_math("so $\\boxed{70001.0}$", "70000", numeric="qwen") == ("70001.0", True)
    assert grade_gsm8k("The answer is 70000.5", "70000") == ("70000.5", False)
    assert grade_gsm8k("The answer is 70000.5", "70000", numeric="qwen") == ("70000.5", True)


def test_unknown_numeric_rule() -> None:
    assert NUMERIC_RULES == ("precision", "qwen")
    with pytest.raises(ConfigError, match="eval.grading.numeric='tolerance'.*precision.*qwen"):
        is_equiv("1", "1", numeric="tolerance")


def test_parse_number_keeps_the_written_precision() -> None:
    assert parse_number("4.6667").half_unit * 20000 == 1
    assert parse_number("70000").half_unit is None
    assert parse_number("3.5e2").value == 350 and parse_number("3.5e2").half_unit == 5
    assert parse_number("1 1/2").value * 2 == 3
    assert parse_number("x+1") is None


# ---------------------------------------------------------------------------------------------
# 2. Extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{1} and finally \\fbox{2}", "2"),
        ("Thus the answer is 12.", "12"),
        # Without a box or "the answer is": the last LaTeX or math expression (math-verify's parse),
        # not the last bare number.
        ("so it is \\frac{10}{9}", "\\frac{10}{9}"),  # old: "9"
        ("The total is 1 000", "1000"),  # old: "000"
        ("the set is $-[0,1)$", "-[0,1)"),  # old: "1"
        # No answer at all: nothing, not a digit inside a word.
        ("AZYUK2A", None),  # old: "2"
        ("I am not sure how to continue.", None),
    ],
)
def test_extraction(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_several_boxes_form_one_answer_when_the_gold_has_several_parts() -> None:
    response = "The solutions are $\\boxed{(2,2)}$ and $\\boxed{(6,2)}$."
    # old: only the last box, (6,2), compared: wrong
    assert grade_math(response, "(2,2), (6,2)") == ("(2,2), (6,2)", True)
    assert grade_math(response, "(6,2)") == ("(6,2)", True)
    assert grade_math(response, "(2,2), (6,3)")[1] is False
    # Boxes far apart in prose are intermediate results, not one answer.
    apart = "First \\boxed{1}. Then a long argument follows, step by step, over several lines. Finally \\boxed{2}."
    assert grade_math(apart, "1, 2")[1] is False


def test_a_response_that_is_only_an_answer_is_the_answer() -> None:
    # math-verify's parse of "10, 4, -2" keeps only its last number.
    assert grade_math("10, 4, -2", "-2, 4, 10") == ("10, 4, -2", True)


# ---------------------------------------------------------------------------------------------
# 3. Equivalence classes


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
            "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}",
            True,
        ),  # old: False
        # "\\" then a space is a row break, not a control space.
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1 & 2\\\\ 3 & 4\\end{pmatrix}", True),
        (
            "\\left[\\begin{array}{cc} 1 & 0 \\\\ 0 & 1 \\end{array}\\right]",
            "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}",
            True,
        ),
        (
            "\\begin{pmatrix} 0.33 \\\\ 0.2 \\end{pmatrix}",
            "\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5}\\end{pmatrix}",
            True,
        ),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", False),
        ("\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
        # A written-out product compares factor by factor: these two products are equal, the
        # factors (the answer, e.g. an inverse applied to a vector) are not.
        (
            "\\begin{pmatrix}13 & -7 \\\\ -5 & 3\\end{pmatrix}\\begin{pmatrix}0 \\\\ -1\\end{pmatrix}",
            "\\begin{pmatrix}12 & -7 \\\\ -5 & 3\\end{pmatrix}\\begin{pmatrix}0 \\\\ -1\\end{pmatrix}",
            False,
        ),
        (
            "\\begin{pmatrix}12 & -7 \\\\ -5 & 3\\end{pmatrix}\\begin{pmatrix}0 \\\\ -1\\end{pmatrix}",
            "\\begin{bmatrix}12 & -7 \\\\ -5 & 3\\end{bmatrix}\\begin{bmatrix}0 \\\\ -1\\end{bmatrix}",
            True,
        ),
    ],
)
def test_matrices(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("(3,2)", "(p,q)=(3,2)", True),  # old: False
        ("1", "|AB|=1", True),  # old: False
        ("4, 5", "AB=4, CD=5", True),  # old: False
        ("7:32", "S_{MBCN}:S=7:32", True),  # old: False
        ("x=2, y=3", "(2,3)", True),
        ("(2,3)", "(p,q)=(3,2)", False),
        ("C_{2}=5", "C_{1}=5", False),  # two labels must agree
        # A label is kept where the other answer is an equation.
        ("y=-\\frac{1}{2}x+\\frac{3}{4}", "2x+4y-3=0", True),
    ],
)
def test_labelled_answers(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1 and 2", "1, 2", True),  # old: False
        ("1 or 2", "2, 1", True),  # old: False
        ("1; 2", "1, 2", True),  # old: False
        ("1 \\quad 2", "1, 2", True),  # old: False
        ("(5,2),(7,2)", "p=5,q=2;p=7,q=2", True),  # semicolons between solutions, commas inside
        ("(0;-2;6)", "(0,-2,6)", True),
        # A list that repeats an element is the set it lists.
        ("(3,17),(3,17),(17,3)", "(17,3),(3,17)", True),  # old: False
        ("1, 1, 2", "1, 2", True),
        # A gold that repeats an element counts it (roots with multiplicity).
        ("2, 1, 2, 3", "1, 1, 2, 3", False),
        ("1, 2, 1, 3", "1, 1, 2, 3", True),
        ("x \\approx 5.177, x \\approx 5503.665", "x \\approx 4.177, x \\approx 5503.665", False),
        ("1 and 3", "1, 2", False),
        ("1, 2", "1, 2, 3", False),
    ],
)
def test_lists(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("x >= 5", "x \\geq 5", True),  # old: False
        ("x <= 2", "x \\leq 2", True),  # old: False
        ("x != 3", "x \\neq 3", True),  # old: False
        ("5 <= x", "x \\geq 5", True),
        ("x >= 6", "x \\geq 5", False),
    ],
)
def test_ascii_relations(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("\\frac{\\sqrt{3}}{3} \\approx 0.577", "\\frac{\\sqrt{3}}{3}", True),  # old: False
        ("\\frac{\\sqrt{3}}{3}", "\\frac{\\sqrt{3}}{3} \\approx 0.577", True),  # old: False
        ("x=\\frac{1}{3}\\approx 0.33", "\\frac{1}{3}", True),  # old: False
        ("\\sqrt{2} \\approx 1.414", "1.414", True),
        ("x \\approx 0.333", "\\frac{1}{3}", True),
        # The exact form decides when one is given.
        ("\\frac{1}{3} \\approx 0.3", "\\frac{1}{3}", True),
        ("\\frac{\\sqrt{2}}{2} \\approx 0.707", "\\frac{\\sqrt{3}}{3}", False),
        # What a chain names must agree too.
        ("A(4)=5000 e^{0.9} \\approx 12298", "A(3)=5000 e^{0.9} \\approx 12298", False),
    ],
)
def test_approximation_chains(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1,22", "1.22", True),  # old: False
        ("1.22", "1,22", True),  # old: False
        ("0,111", "0.111", True),  # "0,111" cannot group thousands; old: False
        ("1,000", "1000", True),
        ("1,000", "1.0", False),
        ("1,22", "1, 22", True),  # against a list, the comma separates
    ],
)
def test_decimal_commas(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("1 1/2", "\\frac{3}{2}", True),  # old: False
        ("1 1/2", "1.5", True),  # old: False
        ("-1 1/2", "-1.5", True),
        ("2\\frac{1}{2}", "\\frac{5}{2}", True),
        ("1 1/2", "\\frac{11}{2}", False),  # old: True (spaces dropped: 11/2)
    ],
)
def test_mixed_numbers(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("x > 2", "(2, \\infty)", True),  # old: False
        ("-1 < x \\le 3", "(-1, 3]", True),  # old: False
        ("x<3", "(-\\infty,3)", True),  # old: False
        ("3 > x \\ge 1", "[1, 3)", True),
        ("(2,\\infty)", "x>2", True),
        ("x \\ge 2", "(2, \\infty)", False),
        ("x > 0", "[0, \\infty)", False),
    ],
)
def test_inequality_against_interval(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


def test_inequality_as_interval() -> None:
    assert inequality_as_interval("x > 2") == "(2,\\infty)"
    assert inequality_as_interval("2 \\ge x") == "(-\\infty,2]"
    assert inequality_as_interval("-1 < y_1 \\le 3") == "(-1,3]"
    assert inequality_as_interval("x + y > 2") is None


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("\\pm 2", "\\{-2, 2\\}", True),
        ("\\{2,-2\\}", "\\pm 2", True),
        ("x = \\pm 2", "2, -2", True),
        ("{-2021, 2021}", "\\pm 2021", True),  # braces around a list are a TeX group; old: False
        ("\\pm 2", "2", False),
        ("\\{1,2\\}", "\\{1,2,3\\}", False),
    ],
)
def test_plus_minus_and_sets(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# 4. What this layer adds over math-verify: math-verify alone is wrong on each of these.

MATH_VERIFY_ALONE_WRONG = [
    # (pred, gold, right verdict): the rule that decides it
    ("3.1416", "\\pi", True),  # precision rule against a constant
    ("4.6667", "\\frac{14}{3}", True),  # precision rule
    ("25\\%", "\\frac{1}{4}", True),  # percent against fraction
    (
        "\\begin{pmatrix} 0.33 \\\\ 0.2 \\end{pmatrix}",
        "\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5}\\end{pmatrix}",
        True,
    ),
    ("1 \\quad 2", "1, 2", True),  # \quad between list items
    ("x \\approx 0.333", "\\frac{1}{3}", True),  # approximation chain
    ("1,5", "1.5", True),  # decimal comma
    ("3 3/4", "3.75", True),  # mixed number
    ("x \\le 3", "(-\\infty, 3]", True),  # inequality against interval
    ("x^{2}-2 x+11=0", "x^{2}-2 x+10=0", False),  # equations: proportional, not same real roots
    ("P(X_{n}=5)=5 / 8", "P(X_{n}=4)=5 / 8", False),  # both sides of a relation
    ("2, 1, 2, 3", "1, 1, 2, 3", False),  # a gold that repeats an element counts it
    # a product of matrices, factor by factor
    (
        "\\begin{pmatrix}13 & -7 \\\\ -5 & 3\\end{pmatrix}\\begin{pmatrix}0 \\\\ -1\\end{pmatrix}",
        "\\begin{pmatrix}12 & -7 \\\\ -5 & 3\\end{pmatrix}\\begin{pmatrix}0 \\\\ -1\\end{pmatrix}",
        False,
    ),
]


def _math_verify_alone(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))


@pytest.mark.parametrize(("pred", "gold", "expected"), MATH_VERIFY_ALONE_WRONG)
def test_math_verify_alone_is_wrong_where_this_layer_decides(pred: str, gold: str, expected: bool) -> None:
    assert _math_verify_alone(pred, gold) is not expected
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Bounded time


def test_a_grading_call_past_its_time_limit_is_wrong_and_the_helper_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    # No time at all: the worker is killed before it can answer (a late answer is dropped).
    monkeypatch.setattr(grading, "GRADE_TIME_LIMIT_S", 0)
    assert is_equiv("2\\sqrt{5}", "\\sqrt{20}") is False
    assert grade_math("so \\boxed{2\\sqrt{5}}", "\\sqrt{20}") == ("2\\sqrt{5}", False)
    monkeypatch.undo()
    assert is_equiv("2\\sqrt{5}", "\\sqrt{20}") is True


def test_grading_from_threads() -> None:
    pairs = [("2\\sqrt{5}", "\\sqrt{20}"), ("3.1416", "\\pi"), ("\\sqrt{21}", "\\sqrt{20}")] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda pair: is_equiv(*pair), pairs))
    assert results == [True, True, False] * 3
