"""Grading a benchmark's responses with the grader of the family its ``grader`` key names
(acm_exp.eval.tasks): one uniform call (example, response, settings) -> extracted answer and correctness.

Math graders run one response after another: each call is answered by the one grading helper
process (acm_exp.eval.grading, killed and re-forked past its time limit), so threads would only
queue for it; a MATH500-sized batch takes seconds. Code graders run each program in a sandboxed
subprocess, so a thread pool overlaps them (the threads only wait on subprocesses).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from acm_exp.eval.benchmarks import Example
from acm_exp.eval.tasks import GRADERS, Grade, GradeSettings


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
    settings = GradeSettings(
        timeout_s=timeout_s, code_grading=code_grading, isolation=isolation, math_numeric=math_numeric
    )
    pairs = list(zip(examples, responses, strict=True))
    with tqdm(total=len(pairs), desc=desc, unit="ex") as progress:
        if not grader.runs_code or workers <= 1:
            grades = []
            for example, response in pairs:
                grades.append(grader.grade(example, response, settings))
                progress.update(1)
            return grades
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(grader.grade, example, response, settings) for example, response in pairs]
            for future in futures:
                future.add_done_callback(lambda _: progress.update(1))
            return [future.result() for future in futures]
