"""Math grading speed: cases per second and the worst single case, over the shared benchmark copies.

    .venv/bin/python tests/benchmarks/grading_bench.py [--stride 4] [--numeric precision|qwen]
        [--datasets math500,gsm8k,...] [--data-dir ../shared/data]

Each gold answer of each dataset (every ``--stride``-th row) is graded twice through the public
``grade_math`` / ``grade_gsm8k``: inside a boxed response (right) and perturbed (wrong, the slow
path through math-verify). A few adversarial responses follow (huge powers, a megabyte of
degenerate output, unbalanced braces). Prints, per dataset and overall, cases/s and the worst
single-case time with its case; the helper process starts before the clock runs (a one-time cost,
printed separately). Target: no case above 5 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR))

from test_grading import DATASETS, _golds, _perturbed, _response  # noqa: E402

from acm_exp.eval.grading import grade_gsm8k, grade_math, is_equiv  # noqa: E402

ADVERSARIAL = [
    ("\\boxed{10^{10^{10}}}", "1"),
    ("\\boxed{2^{2^{2^{2^{2}}}} - 3^{3^{3^{3}}}}", "7"),
    ("\\boxed{" * 2000 + "1", "1"),
    ("wait, " * 200_000 + "so \\boxed{3}", "3"),
    ("$" + "(" * 500 + "x" + ")" * 500 + "$", "x"),
    ("\\boxed{\\int_0^1 e^{x^{2}} \\sin(x^{3}) dx}", "0.2"),
    ("\\boxed{\\sum_{k=1}^{100000} \\frac{1}{k^{2}}}", "\\frac{\\pi^{2}}{6}"),
]


def timed(grade, response: str, gold: str, numeric: str) -> tuple[float, bool]:
    start = time.perf_counter()
    _, correct = grade(response, gold, numeric=numeric)
    return time.perf_counter() - start, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stride", type=int, default=4, help="grade every n-th row of each dataset")
    parser.add_argument("--numeric", default="precision", choices=["precision", "qwen"])
    parser.add_argument("--datasets", default=",".join(name for name, _ in DATASETS))
    parser.add_argument("--data-dir", type=Path, default=TESTS_DIR.parent.parent / "shared" / "data")
    args = parser.parse_args()

    start = time.perf_counter()
    is_equiv("1", "1")
    print(f"helper process start: {time.perf_counter() - start:.2f} s (once)")

    worst = (0.0, "")
    total_cases, total_seconds, wrong_verdicts = 0, 0.0, 0
    for name in args.datasets.split(","):
        grade = grade_gsm8k if name == "gsm8k" else grade_math
        golds = _golds(args.data_dir, name)[:: args.stride]
        seconds, cases = 0.0, 0
        for gold in golds:
            for response, expected in ((_response(gold), True), (_response(_perturbed(gold)), False)):
                elapsed, correct = timed(grade, response, gold, args.numeric)
                seconds += elapsed
                cases += 1
                wrong_verdicts += correct != expected
                if elapsed > worst[0]:
                    worst = (elapsed, f"{name}: {response[-80:]!r} vs {gold[:60]!r}")
        total_cases += cases
        total_seconds += seconds
        print(f"{name:14s} {cases:5d} cases  {cases / seconds:8.1f} cases/s", flush=True)
    for response, gold in ADVERSARIAL:
        elapsed, _ = timed(grade_math, response, gold, args.numeric)
        total_cases += 1
        total_seconds += elapsed
        print(f"adversarial    {elapsed:6.2f} s  {response[:50]!r}", flush=True)
        if elapsed > worst[0]:
            worst = (elapsed, f"adversarial: {response[:80]!r} vs {gold!r}")
    print(
        f"overall        {total_cases:5d} cases  {total_cases / total_seconds:8.1f} cases/s, "
        f"{total_seconds:.1f} s in all; verdicts different from the expected: {wrong_verdicts}"
    )
    print(f"worst single case: {worst[0]:.2f} s ({worst[1]})")


if __name__ == "__main__":
    main()
