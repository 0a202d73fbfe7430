"""Graders by name: one uniform call (example, response) -> extracted answer and correctness.

Math graders run in the calling thread (math-verify's time limit uses signal.alarm, which only
works in the main thread); code graders run each program in a sandboxed subprocess, so a thread
pool overlaps them (the threads only wait on subprocesses).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm.auto import tqdm

from acm_exp.eval.benchmarks import Example


@dataclass(frozen=True)
class Grade:
    extracted: str | None
    correct: bool
    # Code graders: the sandbox status ("passed", "failed", "timeout", ...); empty for math.
    status: str = ""


@dataclass(frozen=True)
class Grader:
    grade: Callable[..., Grade]  # (example, response, timeout_s[, code options]) -> Grade
    # Whether grading runs programs (worth running in parallel, needs the sandbox timeout).
    runs_code: bool


def _grade_math(example: Example, response: str, timeout_s: float | None, *, numeric: str = "precision") -> Grade:
    from acm_exp.eval.grading import grade_math

    extracted, correct = grade_math(response, example.gold or "", numeric=numeric)
    return Grade(extracted, bool(correct))


def _grade_gsm8k(example: Example, response: str, timeout_s: float | None, *, numeric: str = "precision") -> Grade:
    from acm_exp.eval.grading import grade_gsm8k

    extracted, correct = grade_gsm8k(response, example.gold or "", numeric=numeric)
    return Grade(extracted, bool(correct))


def _grade_humaneval_pro(example: Example, response: str, timeout_s: float | None, **code_options) -> Grade:
    from acm_exp.eval.code import HUMANEVAL_PRO_TIMEOUT_S, grade_humaneval_pro, humaneval_pro_response_prefix

    # Every prompt format opens the response with this prefix (acm_exp.eval.prompts): put it back.
    prefix = humaneval_pro_response_prefix(example.row)
    result = grade_humaneval_pro(
        example.row, response, timeout_s=timeout_s or HUMANEVAL_PRO_TIMEOUT_S, response_prefix=prefix, **code_options
    )
    return Grade(result.extracted, bool(result.passed), result.status)


def _grade_livecodebench(example: Example, response: str, timeout_s: float | None, **code_options) -> Grade:
    from acm_exp.eval.code import LIVECODEBENCH_TIMEOUT_S, grade_livecodebench

    result = grade_livecodebench(example.row, response, timeout_s=timeout_s or LIVECODEBENCH_TIMEOUT_S, **code_options)
    return Grade(result.extracted, bool(result.passed), result.status)


GRADERS: dict[str, Grader] = {
    "math": Grader(_grade_math, runs_code=False),
    "gsm8k": Grader(_grade_gsm8k, runs_code=False),
    "humaneval_pro": Grader(_grade_humaneval_pro, runs_code=True),
    "livecodebench": Grader(_grade_livecodebench, runs_code=True),
}


def grade_all(
    grader_name: str,
    examples: Sequence[Example],
    responses: Sequence[str],
    *,
    timeout_s: float | None = None,
    workers: int,
    desc: str = "grading",
    code_grading: str = "official",
    isolation: str | None = None,
    math_numeric: str = "precision",
) -> list[Grade]:
    """Grade every (example, response) pair, in order; code graders run ``workers`` at a time.

    Code graders only: ``timeout_s`` (None: the benchmark's official limit), ``code_grading``
    ("official" or "lenient") and the sandbox ``isolation`` (see acm_exp.eval.sandbox). Math
    graders only: the numeric rule ``math_numeric`` (eval.grading.numeric)."""
    grader = GRADERS[grader_name]
    grade = (
        functools.partial(grader.grade, mode=code_grading, isolation=isolation)
        if grader.runs_code
        else functools.partial(grader.grade, numeric=math_numeric)
    )
    pairs = list(zip(examples, responses, strict=True))
    with tqdm(total=len(pairs), desc=desc, unit="ex") as progress:
        if not grader.runs_code or workers <= 1:
            grades = []
            for example, response in pairs:
                grades.append(grade(example, response, timeout_s))
                progress.update(1)
            return grades
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(grade, example, response, timeout_s) for example, response in pairs]
            for future in futures:
                future.add_done_callback(lambda _: progress.update(1))
            return [future.result() for future in futures]
