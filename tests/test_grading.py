"""Math grading: answer extraction, equivalence, gold parsing per dataset, reflection counting.

The data tests grade every gold answer of the shared benchmark copies, put in \\boxed{} inside a
plausible response (must be correct), and a perturbed gold answer (must be wrong).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from acm_exp.errors import ConfigError
from acm_exp.eval.grading import (
    ANSWER_FORMATS,
    count_reflections,
    extract_answer,
    gold_answer,
    grade_gsm8k,
    grade_math,
    is_equiv,
    normalize,
    to_number,
)

# ---------------------------------------------------------------------------------------------
# extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        (
            "\\boxed{\\frac{\\sqrt{3}}{\\left(1+\\frac{1}{2}\\right)}}",
            "\\frac{\\sqrt{3}}{\\left(1+\\frac{1}{2}\\right)}",
        ),
        ("first \\boxed{1}, then \\boxed{2}, finally \\boxed{3}", "3"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right."),
        ("\\fbox{7}", "7"),
        ("so $\\boxed 5$.", "5"),
        ("\\boxed{12} and a truncated \\boxed{\\frac{1}{", "12"),
        ("an empty box \\boxed{} after \\boxed{4}", "4"),
        ("The answer is 42.", "42"),
        ("the final answer is: $x = 3.5$. Done.", "$x = 3.5$"),
        ("THE ANSWER IS (B)\nmore text 99", "(B)"),
        ("There are 3 apples and 4.5 pears", "4.5"),
        ("It costs 1,234,567 dollars", "1234567"),
        ("The temperature drops to -7 degrees", "-7"),
        # The last math expression, as math-verify's parse finds it, not the last bare number.
        ("x = 3-5, nothing else", "3-5"),
        ("a ratio of 3/4", "3/4"),
        ("about .5 of it", "0.5"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [None, 42, "\\boxed{", "\\boxed{" * 2000 + "1", "}" * 50, "\\boxed"])
def test_extract_answer_never_raises(text: object) -> None:
    result = extract_answer(text)  # type: ignore[arg-type]
    assert result is None or isinstance(result, str)


# ---------------------------------------------------------------------------------------------
# is_equiv


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac12", "0.5"),
        ("\\tfrac{1}{2}", "\\dfrac12"),
        ("\\frac 34", "0.75"),
        ("\\frac9{19}", "\\frac{9}{19}"),
        ("90^\\circ", "90"),
        ("90", "90^{\\circ}"),
        ("90°", "90"),
        ("50\\%", "50"),
        ("50%", "50"),
        ("\\text{(A)}", "A"),
        ("(A)", "\\text{(A)}"),
        ("A", "(A)"),
        ("(1, 2)", "(1,2)"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("[0, \\infty)", "[0,\\infty)"),
        ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)"),
        ("\\{1, 2, 3\\}", "\\{3,2,1\\}"),
        ("3, 5, 7", "7,5,3"),
        ("\\frac{14}{3}", "4.6667"),
        ("4.6667", "\\frac{14}{3}"),
        ("1,000", "1000"),
        ("10,\\!080", "10080"),
        ("\\$32,\\!348", "32348"),
        ("x=5", "5"),
        ("y = 2x + 3", "2x+3"),
        ("x \\in [-2,7]", "[-2, 7]"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("5.", "5"),
        ("025", "25"),
        ("5.4 \\text{ cents}", "5.4"),
        ("864 \\mbox{ inches}^2", "864"),
        ("9 hours", "9"),
        ("137.5", "137 \\frac{1}{2}"),
        ("4.5 \\times 10^{33}", "4.5e33"),
        ("-\\frac{3}{8}", "-0.375"),
        ("\\text{Evelyn}", "Evelyn"),
        ("2516_8", "2516_{8}"),
        # Symbolic (math-verify) comparisons.
        ("2\\sqrt{5}", "\\sqrt{20}"),
        ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}"),
        ("(x+1)^2", "x^2+2x+1"),
        ("2x^2-8x-4=0", "x^{2}-4 x-2=0"),
        # Relations, lists, plus-minus.
        ("-1", "i^{6}=i^{4} \\cdot i^{2}=-1"),
        ("-0.425", "\\cos (-2.01) \\approx-0.425"),
        ("4.67", "\\frac{14}{3}"),
        # The exact forms agree; the approximation is not the answer (issue 10: compare the exact
        # form when one is given).
        ("\\cos (-2.01) \\approx-0.426", "\\cos (-2.01) \\approx-0.425"),
        ("y=-2x", "y = -2x"),
        ("C_{2}=-3, C_{1}=\\frac{1}{5}", "C_{1}=1 / 5, C_{2}=-3"),
        ("1+\\sqrt{19}, 1-\\sqrt{19}", "1 \\pm \\sqrt{19}"),
        ("\\{1+\\sqrt{5}, -2, 1-\\sqrt5\\}", "\\{1\\pm\\sqrt{5},-2\\}"),
        ("\\text{No solution}", "No solution"),
    ],
)
def test_is_equiv_equal(pred: str, gold: str) -> None:
    assert is_equiv(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.6", "\\frac{1}{2}"),
        # 4.67 lies within half a unit of its last place (0.005) of 14/3 = 4.6667: the precision
        # rule accepts it (the old relative tolerance of 1e-4 did not); 4.66 does not.
        ("4.66", "\\frac{14}{3}"),
        ("10081", "10080"),  # a relative tolerance alone would accept this one
        ("1000", "1,001"),
        ("x=6", "5"),
        ("B", "\\text{(A)}"),
        ("(2, 1)", "(1,2)"),
        ("(0, \\infty)", "[0,\\infty)"),
        ("(1, 2, 3)", "(1,2)"),
        ("\\{1, 2\\}", "\\{1,3\\}"),
        ("1, 2", "1, 2, 3"),
        ("2n", "2"),
        ("1 or 2", "1"),
        ("52_9", "52_8"),
        ("42", "52_8"),
        ("x^{2}-2 x+11=0", "x^{2}-2 x+10=0"),  # no real roots either: still different
        ("\\frac{1}{3} E_{1}+\\frac{2}{3} E_{3}", "\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}"),
        ("\\sqrt{21}", "\\sqrt{20}"),
        # math-verify alone gets these wrong: it compares equations by real roots, keeps only the
        # right side of P(X=4)=5/8, and the first relation of a chain.
        ("\\log (1.01)=-2", "\\log (0.01)=-2"),
        ("P(X_{n}=5)=5 / 8", "P(X_{n}=4)=5 / 8"),
        # An \approx chain is compared by its exact form when it gives one.
        ("\\cos (-2.02) \\approx-0.425", "\\cos (-2.01) \\approx-0.425"),
        ("i^{6}=i^{4} \\cdot i^{2}=-2", "i^{6}=i^{4} \\cdot i^{2}=-1"),
        ("C_{2}=5", "C_{1}=5"),
        ("C_{2}=1 / 5, C_{2}=-3", "C_{1}=1 / 5, C_{2}=-3"),
        ("0", "x^{2}-7 x+10=0"),
        ("1+\\sqrt{19}", "1 \\pm \\sqrt{19}"),
        ("\\text{Yes, it converges}", "\\text{No, it diverges}"),
        ("", "1"),
        ("   ", "1"),
    ],
)
def test_is_equiv_different(pred: str, gold: str) -> None:
    assert not is_equiv(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        (None, "1"),
        ("1", None),
        (3, "3"),
        ("\\frac{1}{", "1"),
        ("}{", "}{"),
        ("\\boxed{", "\\sqrt"),
        ("1/0", "1"),
        ("10^{100000000}", "1"),
        ("10^{10^{10}}", "x"),
        ("100000!", "x"),
        ("((((((((((((((((((((", "("),
        ("\\frac{" * 300, "1"),
        ("\\begin{pmatrix} 1 \\\\ 2", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        ("x" * 5000, "x"),
    ],
)
def test_is_equiv_never_raises(pred: object, gold: object) -> None:
    assert isinstance(is_equiv(pred, gold), bool)  # type: ignore[arg-type]


def test_is_equiv_works_outside_the_main_thread() -> None:
    # math-verify's timeout uses signal.alarm, which only works in the main thread.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda pair: is_equiv(*pair), [("2\\sqrt{5}", "\\sqrt{20}"), ("\\sqrt{21}", "\\sqrt{20}")])
        )
    assert results == [True, False]


def test_normalize_and_to_number() -> None:
    assert normalize("\\left( 1, \\dfrac12 \\right).").replace(" ", "") == "(1,\\frac{1}{2})"
    assert normalize("\\text{(C)}") == "C"
    assert normalize("x = 11,\\! 111,\\! 100") == "11111100"
    assert to_number("\\frac{-1}{4}") == -0.25
    assert to_number("x+1") is None


# ---------------------------------------------------------------------------------------------
# grade_math / grade_gsm8k


def test_grade_math() -> None:
    assert grade_math("We get $\\boxed{\\dfrac{1}{2}}$.", "0.5") == ("\\dfrac{1}{2}", True)
    assert grade_math("The answer is 7.", "8") == ("7", False)
    assert grade_math("I do not know.", "8") == (None, False)


def test_grade_gsm8k() -> None:
    assert grade_gsm8k("She makes 9 * 2 = $18 every day. The answer is 18.", "18") == ("18", True)
    assert grade_gsm8k("so $\\boxed{1,450,000}$", "1450000") == ("1,450,000", True)
    assert grade_gsm8k("\\boxed{\\$18.00}", "18") == ("\\$18.00", True)
    assert grade_gsm8k("so 18 + 1 = 19", "18") == ("19", False)
    assert grade_gsm8k("it is \\boxed{x+1}", "18") == ("x+1", False)
    assert grade_gsm8k("nothing", "18") == (None, False)


# ---------------------------------------------------------------------------------------------
# gold_answer


def test_gold_answer_formats() -> None:
    assert gold_answer("  3/4 ", "plain") == "3/4"
    assert gold_answer("16 - 3 - 4 = <<16-3-4=9>>9\n#### 1,450", "gsm8k") == "1450"
    assert gold_answer("so $x=\\boxed{1}$ and $\\boxed{\\frac{1}{2}}$ cm", "last_boxed") == "\\frac{1}{2}"
    assert gold_answer("no box, so the answer is 12.", "last_boxed") == "12"
    assert gold_answer("['$\\\\frac{1}{2}$']", "list_string") == "\\frac{1}{2}"
    assert gold_answer("['$69$,$84$']", "list_string") == "69,84"
    assert gold_answer("['$f(x)=x$', '$g(x)=1$']", "list_string") == "f(x)=x, g(x)=1"
    assert gold_answer("not a list", "list_string") == "not a list"
    assert gold_answer("$10-4 n$", "latex_dollars") == "10-4 n"
    assert gold_answer("costs \\$5 or $x$", "latex_dollars") == "costs \\$5 or x"


def test_gold_answer_unknown_format() -> None:
    with pytest.raises(ConfigError, match="answer_format='boxed'.*plain.*latex_dollars"):
        gold_answer("1", "boxed")
    assert ANSWER_FORMATS == ("plain", "gsm8k", "last_boxed", "list_string", "latex_dollars")


# ---------------------------------------------------------------------------------------------
# count_reflections


def test_count_reflections() -> None:
    text = (
        "Wait, let me double-check. wait... Let me just check this. Double check. Let me check "
        "again. To recap: re-examine it. Let me just verify. Waiting and recapping do not count."
    )
    # wait, double-check, wait, let me just check, double check, let me check, recap, re-examine,
    # let me just verify
    assert count_reflections(text) == 9
    assert count_reflections("") == 0
    assert count_reflections("await the awaited") == 0


# ---------------------------------------------------------------------------------------------
# Every gold answer of the shared benchmark copies

_INTEGER_ANSWER = re.compile(r"[+-]?\d+")


def _response(answer: str) -> str:
    return f"Let's compute step by step. First, 2 + 3 = 5. So the final answer is $\\boxed{{{answer}}}$."


def _perturbed(gold: str) -> str:
    """A different answer: integers + 1, other numbers moved by more than the tolerance, another
    choice letter, else the first integer of the normalized gold + 1 (normalized, so that the change
    is not in a unit that normalization drops; the first, since a late one can be negligible, as in
    1-5051/2^{101}), else infinity replaced by 0 (infinity + 1 is infinity), else the gold plus 1."""
    norm = normalize(gold)
    compact = norm.replace(" ", "")
    if _INTEGER_ANSWER.fullmatch(compact):
        return str(int(compact) + 1)
    value = to_number(norm)
    if value is not None:
        return f"{value + 1 + abs(value) / 2:.12g}"
    if re.fullmatch(r"[A-E]", norm):
        return "A" if norm != "A" else "B"
    first = re.search(r"\d+", norm)
    if first:
        return norm[: first.start()] + str(int(first.group()) + 1) + norm[first.end() :]
    if "\\infty" in norm:
        return norm.replace("\\infty", "0")
    return f"{norm} + 1"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@cache
def _golds(data_dir: Path, dataset: str) -> list[str]:
    if dataset == "math500":
        return [gold_answer(row["answer"], "plain") for row in _rows(data_dir / "math500/test.jsonl")]
    if dataset == "gsm8k":
        return [gold_answer(row["answer"], "gsm8k") for row in _rows(data_dir / "gsm8k/test.jsonl")]
    if dataset == "aime24":
        return [gold_answer(str(row["answer"]), "plain") for row in _rows(data_dir / "aime24/test.jsonl")]
    if dataset == "minerva_math":
        return [gold_answer(row["solution"], "last_boxed") for row in _rows(data_dir / "minerva_math/test.jsonl")]
    if dataset == "olympiadbench":
        # The loader renders the final_answer list as str() of its items (benchmarks.gold_text).
        return [
            gold_answer(str([str(item) for item in row["final_answer"]]), "list_string")
            for row in _rows(data_dir / "olympiadbench/test.jsonl")
        ]
    if dataset == "college_math":
        return [gold_answer(row["answer"], "latex_dollars") for row in _rows(data_dir / "college_math/test.jsonl")]
    raise AssertionError(dataset)


DATASETS = [
    ("math500", 500),
    ("gsm8k", 1319),
    ("aime24", 30),
    ("minerva_math", 272),
    ("olympiadbench", 675),
    ("college_math", 2818),
]


def _grader(dataset: str):
    return grade_gsm8k if dataset == "gsm8k" else grade_math


@pytest.mark.parametrize(("dataset", "n_rows"), DATASETS)
def test_every_gold_answer_grades_correct(shared_data_dir: Path, dataset: str, n_rows: int) -> None:
    golds = _golds(shared_data_dir, dataset)
    assert len(golds) == n_rows
    grade = _grader(dataset)
    failures = []
    for index, gold in enumerate(golds):
        assert gold, f"{dataset} row {index}: empty gold answer"
        extracted, correct = grade(_response(gold), gold)
        if not correct:
            failures.append(f"row {index}: gold {gold!r} not matched by its own boxed copy ({extracted!r})")
    assert not failures, f"{dataset}: {len(failures)} failures:\n" + "\n".join(failures[:50])


# A wrong answer that is not a plain number goes through math-verify (~40 ms per parse here);
# College Math has 2818 such answers, so the default run checks every 4th row and the slow run
# all of them.
PERTURBED_CASES = [pytest.param(name, 1, id=name) for name, _ in DATASETS if name != "college_math"] + [
    pytest.param("college_math", 4, id="college_math-every-4th-row"),
    pytest.param("college_math", 1, id="college_math-all-rows", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("dataset", "stride"), PERTURBED_CASES)
def test_perturbed_gold_answers_grade_wrong(shared_data_dir: Path, dataset: str, stride: int) -> None:
    golds = _golds(shared_data_dir, dataset)
    grade = _grader(dataset)
    failures = []
    for index in range(0, len(golds), stride):
        gold = golds[index]
        wrong = _perturbed(gold)
        assert wrong != gold
        if grade(_response(wrong), gold)[1]:
            failures.append(f"row {index}: perturbed {wrong!r} graded equal to gold {gold!r}")
    assert not failures, f"{dataset}: {len(failures)} failures:\n" + "\n".join(failures[:50])
