"""Math grading rules that bring the grader in line with the public grading suites (issue 25,
item 7): each category where the suites (math-verify's tests, the hendrycks MATH grader,
Qwen2.5-Math, NeMo-Skills, MARIO, lm-evaluation-harness) agree with each other, each rule written
from the mathematics, with cases on both sides of it. tests/benchmarks/grading_agreement.py
measures the agreement itself.
"""

from __future__ import annotations

import pytest

from acm_exp.eval.grading import extract_answer, final_boxes, grade_math, is_equiv, normalize
from acm_exp.eval.grading.numbers import clock_seconds

# ---------------------------------------------------------------------------------------------
# Answers with units


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        # A word of three letters or more written onto a number is a unit.
        ("10weeks", "10", True),
        ("10 weeks", "10", True),
        ("5dollars", "5", True),
        # Shorter letters may be variables (10 c m), and a function name is no unit.
        ("10cm", "10", False),
        ("10m", "10", False),
        ("2sin", "2", False),
        # A compound unit with a slash, even of one letter.
        ("5 m/s", "5", True),
        ("60 km/h", "60", True),
        ("5 m/s", "6", False),
        # A spaced single letter stays a possible variable.
        ("10 m", "10", False),
    ],
)
def test_units(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Clock times


@pytest.mark.parametrize(
    ("answer", "seconds"),
    [
        ("20:34", 20 * 3600 + 34 * 60),
        ("20:34:00", 20 * 3600 + 34 * 60),
        ("08:34 \\text{P.M.}", 20 * 3600 + 34 * 60),
        ("8:34 p.m.", 20 * 3600 + 34 * 60),
        ("12:05 am", 5 * 60),
        ("12:05 PM", 12 * 3600 + 5 * 60),
        ("$9{:}30$", None),  # not a plain time
        ("3:4", None),  # minutes have two digits: a ratio
        ("13:00 pm", None),  # no 13 o'clock on a 12-hour clock
        ("7:75", None),
    ],
)
def test_clock_seconds(answer: str, seconds: int | None) -> None:
    assert clock_seconds(answer) == seconds


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("20:34:00", "20:34", True),
        ("08:34 \\text{P.M.}", "20:34", True),
        ("8:34 a.m.", "20:34", False),
        ("12:05 am", "00:05", True),
        ("20:35", "20:34", False),
    ],
)
def test_clock_times(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Several boxes that form one answer


def test_boxes_joined_by_words_naming_the_parts_form_one_answer() -> None:
    response = "So $$\\boxed{(3, 3)} \\text{ for part (a) and } \\boxed{(1, 1)}$$"
    assert final_boxes(response) == ["(3, 3)", "(1, 1)"]
    assert grade_math(response, "(3, 3), (1, 1)") == ("(3, 3), (1, 1)", True)
    assert final_boxes("We need \\boxed{1} papers and \\boxed{2} bins.") == ["1", "2"]


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{3} is wrong, so \\boxed{4}",  # no "and": a correction, not two parts
        "\\boxed{3}. Then we add and get \\boxed{4}",  # a sentence ends between them
        "\\boxed{3} and 7 more, \\boxed{4}",  # a number between them
    ],
)
def test_boxes_separated_otherwise_stay_apart(response: str) -> None:
    assert final_boxes(response) == ["4"]
    assert grade_math(response, "3, 4") == ("4", False)


# ---------------------------------------------------------------------------------------------
# Matrices against lists, systems of equations


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("[0.5, 1]", "\\begin{matrix} \\frac12 \\\\ 1 \\end{matrix}", True),
        ("(1, 2)", "\\begin{pmatrix}1 & 2\\end{pmatrix}", True),
        ("\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "(1, 2)", True),
        ("(2, 1)", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", False),  # in order
        ("(1, 2, 3)", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", False),
        ("(1, 2, 3, 4)", "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", False),  # a true matrix is no list
        ("\\{1, 2\\}", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", False),  # a set is no vector
        ("1, 2", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", True),  # a bare list
        ("2, 1", "\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", False),
    ],
)
def test_vectors_against_lists(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (
            "\\begin{cases} a+b=0.5\\\\ a-b=1.732\\end{cases}",
            "\\begin{cases} a+b=\\frac12 \\\\ a-b=\\sqrt3 \\end{cases}",
            True,
        ),
        ("\\begin{cases} a-b=1 \\\\ a+b=3 \\end{cases}", "\\begin{cases} a+b=3 \\\\ a-b=1 \\end{cases}", True),
        ("\\begin{cases} a-b=2 \\\\ a+b=3 \\end{cases}", "\\begin{cases} a+b=3 \\\\ a-b=1 \\end{cases}", False),
        ("\\begin{cases} a+b=3 \\end{cases}", "\\begin{cases} a+b=3 \\\\ a-b=1 \\end{cases}", False),
    ],
)
def test_systems_of_equations(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Inequalities on an absolute value


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("z \\in [-\\frac{3}{2}, -1] \\cup [1, \\frac{3}{2}]", "1\\leq|z|\\leq \\frac{3}{2}", True),
        ("[-2,-1) \\cup (1,2]", "1 < |x| \\le 2", True),
        ("[-2,-1] \\cup [1,2]", "1 < |x| \\le 2", False),  # the inner ends are open
        ("(-3, 3)", "|x| < 3", True),
        ("(-\\infty, -2] \\cup [2, \\infty)", "|x| \\ge 2", True),
        ("[2, \\infty)", "|x| \\ge 2", False),
        ("(-1, 1)", "0 \\le |x| < 1", True),
    ],
)
def test_inequalities_on_an_absolute_value(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Decimals against decimals: the coarser written place


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("0.2902435", "0.29", True),  # the gold is written to two places
        ("0.2962", "0.29", False),
        ("0.3", "0.29", True),  # the prediction is written to one place
        ("0.28", "0.29", False),
        (
            "\\begin{pmatrix}0.290243531202435\\\\0.196008371385084\\\\-0.186381278538813\\end{pmatrix}",
            "(\\begin{pmatrix}0.29\\\\0.196\\\\-0.186\\\\\\end{pmatrix})",
            True,
        ),
    ],
)
def test_two_decimals_agree_at_the_coarser_place(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Labelled equations


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("y = 2x + 3", "f(x) = 2x + 3", True),  # y names f(x)
        ("f(x) = 2x + 3", "y = 2x + 3", True),
        ("x = 2x + 3", "f(x) = 2x + 3", False),  # x is f's argument, not its value
        ("g(x) = 2x + 3", "f(x) = 2x + 3", False),  # two functions
        ("y = 2x + 3", "f(x) = 2x + 4", False),
    ],
)
def test_a_variable_and_a_function_application_name_the_same_value(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Identities and complex numbers


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("\\sec^2(y)", "\\tan^2(y)+1", True),
        ("\\ln(x y)", "\\ln x + \\ln y", True),
        (
            "\\frac{v_0 \\cdot \\left(\\frac{r_0}{r + r_0}\\right)^{0.5}}{(r + r_0)}",
            "\\frac{v_{0}}{r_{0}} \\frac{1}{\\left(1+r / r_{0}\\right)^{3 / 2}}",
            True,
        ),
        ("\\sin^2 x", "1-\\cos^2 x", True),
        ("\\sin^2 x", "1+\\cos^2 x", False),
        ("x^2", "x^3", False),
        ("\\sin(n\\pi)", "0", False),  # n is no integer here
        ("x + y", "x + z", False),  # different variables
        ("-e^{-41 t}(2 \\cos 30 t-86 \\sin 30 t)", "-e^{-40 t}(2 \\cos 30 t-86 \\sin 30 t)", False),  # both tiny
    ],
)
def test_expressions_that_take_the_same_values(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("i(2-i)", "1+2i", True),  # i is the imaginary unit when it is the only variable
        ("e^{i\\pi}", "-1", True),
        ("i", "-i", False),
        ("(1+i)^2", "2i", True),
        ("(1+i)^2", "2", False),
    ],
)
def test_complex_numbers(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("\\cos(x)", "\\sin(90^{\\circ}-x)", True),  # degrees inside a trigonometric function
        ("\\sin 30^\\circ", "\\frac12", True),
        ("\\sin(x)", "\\sin(90^{\\circ}-x)", False),
        ("30^\\circ", "30", True),  # elsewhere the degree sign is a unit
    ],
)
def test_degrees_inside_trigonometric_functions(pred: str, gold: str, expected: bool) -> None:
    assert is_equiv(pred, gold) is expected


# ---------------------------------------------------------------------------------------------
# Text escaped once too often; extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\\\left(\\\\frac{1}{5},\\\\frac{1}{6}\\\\right)", "(\\frac{1}{5},\\frac{1}{6})"),
        ("\\\\begin{matrix} x \\\\\\\\ 1 \\\\end{matrix}", "\\begin{matrix} x \\\\ 1 \\end{matrix}"),
        # A single row break stays one; an odd run means the text is not doubled.
        ("\\begin{pmatrix}a\\\\b\\end{pmatrix}", "\\begin{pmatrix}a\\\\b\\end{pmatrix}"),
        ("\\\\frac{1}{2} + \\sqrt{2}", "\\\\frac{1}{2} + \\sqrt{2}"),
    ],
)
def test_doubled_backslashes_are_read_once(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_doubled_backslashes_compare() -> None:
    assert is_equiv("\\\\left(\\\\frac{1}{5},\\\\frac{1}{6}\\\\right)", "(0.2, \\frac{1}{6})") is True
    assert is_equiv("\\\\frac{1}{5}", "\\frac{1}{6}") is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Final Answer: The final answer is \\((-6, 10)\\). I hope it is correct.", "(-6, 10)"),
        ("The final answer is \\[x = 2\\]", "x = 2"),
        ('So the answer is "$12$".', "$12$"),
        ("The answer is \\frac{1}{2}.", "\\frac{1}{2}"),
    ],
)
def test_math_delimiters_around_a_stated_answer_are_punctuation(text: str, expected: str) -> None:
    assert extract_answer(text) == expected
