"""The boxed-answer math family: MATH-500, AIME 2024, Minerva-Math, OlympiadBench, College Math.

One family: the benchmarks differ only in data (source, columns, how the gold is written: their
YAML's answer_format), not in how they are loaded, prompted or graded. The response's last
\\boxed{} is compared with the gold by acm_exp.eval.grading.grade_math; the few-shot exemplars
are the Minerva MATH prompt of Lewkowycz et al. 2022.
"""

from __future__ import annotations

from collections.abc import Callable

from acm_exp.eval.grading import grade_math
from acm_exp.eval.tasks.base import Example, Grade, Grader, GradeSettings, TaskFamily, register

MATH_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
        "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives "
        "$x<5$. Therefore, the domain of the expression is $[2,5)$. The answer is $\\boxed{[2,5)}$.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = 24.$ "
        "The answer is $\\boxed{24}$.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
        "times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of "
        "weight. If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
        "$2\\cdot15\\cdot n=30n$ pounds of weight. Equating this to 480 pounds, we can solve for $n$: "
        "$30n=480$, so $n=480/30=16$. The answer is $\\boxed{16}$.",
    ),
    (
        "If the system of equations\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}\nhas a solution "
        "$(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain $$6y-9x=-\\frac{3}{2}a.$$ Since we also "
        "know that $6y-9x=b$, we have $$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=-\\frac{2}{3}.$$ "
        "The answer is $\\boxed{-\\frac{2}{3}}$.",
    ),
)


def answer_grader(grade_answer: Callable[..., tuple[str | None, bool]]) -> Grader:
    """A grader of final answers: ``grade_answer(response, gold, numeric=...)`` -> (extracted, correct),
    under the run's numeric rule (eval.grading.numeric)."""

    def grade(example: Example, response: str, settings: GradeSettings) -> Grade:
        extracted, correct = grade_answer(response, example.gold or "", numeric=settings.math_numeric)
        return Grade(extracted, bool(correct))

    return Grader(grade, runs_code=False)


MATH = register(TaskFamily("math", grader=answer_grader(grade_math), exemplars=MATH_EXEMPLARS))
