"""Math grading speed: a MATH500-sized batch against math-verify alone, then cases per second and the
worst single case over the shipped benchmark copies.

    .venv/bin/python tests/benchmarks/grading_bench.py [--stride 4] [--numeric precision|qwen]
        [--datasets math500,gsm8k,...] [--data-dir DIR] [--batch-only] [--chars 8000]

1. The MATH500 batch (issue 27's target: 500 responses graded in at most 10 s on two cores): one
   response per MATH500 problem, made from the problem's own worked solution (boxes unwrapped)
   repeated to about ``--chars`` characters of reasoning, then "the final answer is $\\boxed{...}$"
   with the gold answer for three rows in four and a perturbed one for the fourth; every tenth
   response is cut off before its final box (a truncated generation: the grader falls back to
   the last math expression). Graded through the public ``grade_math``, as an evaluation does
   (``acm_exp.eval.graders.grade_all``); the baseline, measured in the same run on the same
   responses, is math-verify alone (``verify(parse(gold), parse(response))``, in this process).
   Prints both times, their ratio and the verdicts that differ from the batch's construction.
2. Each gold answer of each dataset (every ``--stride``-th row) is graded twice through
   ``grade_math`` / ``grade_gsm8k``: inside a boxed response (right) and perturbed (wrong, the slow
   path through math-verify), then a few adversarial responses (huge powers, a megabyte of
   degenerate output, unbalanced braces). Prints cases/s and the worst single case; target: no
   case above 5 s.

The grading helper process starts before the clock runs (a one-time cost, printed separately).
Run ``uptime`` beside it: the timings are only comparable on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR))

from test_grading import DATASETS, _golds, _perturbed, _response  # noqa: E402

from acm_exp.eval.grading import grade_gsm8k, grade_math, is_equiv  # noqa: E402
from acm_exp.paths import data_dir as shipped_or_configured_data_dir  # noqa: E402

ADVERSARIAL = [
    ("\\boxed{10^{10^{10}}}", "1"),
    ("\\boxed{2^{2^{2^{2^{2}}}} - 3^{3^{3^{3}}}}", "7"),
    ("\\boxed{" * 2000 + "1", "1"),
    ("wait, " * 200_000 + "so \\boxed{3}", "3"),
    ("$" + "(" * 500 + "x" + ")" * 500 + "$", "x"),
    ("\\boxed{\\int_0^1 e^{x^{2}} \\sin(x^{3}) dx}", "0.2"),
    ("\\boxed{\\sum_{k=1}^{100000} \\frac{1}{k^{2}}}", "\\frac{\\pi^{2}}{6}"),
]
BATCH_TARGET_S = 10.0
_BOX = re.compile(r"\\boxed\s*\{")


def _unboxed(text: str) -> str:
    """The text with every ``\\boxed{...}`` replaced by its content (the working, not an answer)."""
    while (match := _BOX.search(text)) is not None:
        depth, index = 1, match.end()
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        text = text[: match.start()] + text[match.end() : index - 1] + text[index:]
    return text


def math500_batch(data_dir: Path, chars: int) -> list[tuple[str, str, bool | None]]:
    """(response, gold, expected verdict) for each MATH500 row; None: a truncated response."""
    rows = [json.loads(line) for line in (data_dir / "math500" / "test.jsonl").read_text().splitlines() if line]
    batch = []
    for index, row in enumerate(rows):
        gold = str(row["answer"])
        working = _unboxed(str(row["solution"]))
        thinking = "Let me think step by step.\n" + working
        while len(thinking) < chars:
            thinking += "\nWait, let me double-check that.\n" + working
        if index % 10 == 9:
            batch.append((thinking[: chars // 2], gold, None))
            continue
        right = index % 4 != 3
        answer = gold if right else _perturbed(gold)
        batch.append((f"{thinking}\n\nTherefore, the final answer is $\\boxed{{{answer}}}$.", gold, right))
    return batch


def math_verify_alone(response: str, gold: str) -> bool:
    from math_verify import parse, verify

    return bool(
        verify(parse(f"${gold}$", parsing_timeout=None), parse(response, parsing_timeout=None), timeout_seconds=None)
    )


def run_batch(data_dir: Path, chars: int, numeric: str) -> None:
    batch = math500_batch(data_dir, chars)
    megabytes = sum(len(response) for response, _, _ in batch) / 1e6
    start = time.perf_counter()
    ours = [grade_math(response, gold, numeric=numeric)[1] for response, gold, _ in batch]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    baseline = [math_verify_alone(response, gold) for response, gold, _ in batch]
    baseline_s = time.perf_counter() - start
    expected = [verdict for _, _, verdict in batch]
    wrong = sum(want is not None and got != want for got, want in zip(ours, expected, strict=True))
    baseline_wrong = sum(want is not None and got != want for got, want in zip(baseline, expected, strict=True))
    print(f"MATH500 batch: {len(batch)} responses, {megabytes:.1f} MB, every 10th truncated")
    print(f"  math-verify alone (baseline): {baseline_s:6.2f} s; verdicts off the construction: {baseline_wrong}")
    print(
        f"  acm_exp grade_math:           {ours_s:6.2f} s; verdicts off the construction: {wrong}; "
        f"{ours_s / baseline_s:.2f}x the baseline; target <= {BATCH_TARGET_S:.0f} s: "
        f"{'met' if ours_s <= BATCH_TARGET_S else 'NOT met'}",
        flush=True,
    )


def timed(grade, response: str, gold: str, numeric: str) -> tuple[float, bool]:
    start = time.perf_counter()
    _, correct = grade(response, gold, numeric=numeric)
    return time.perf_counter() - start, correct


def run_datasets(data_dir: Path, names: list[str], stride: int, numeric: str) -> None:
    worst = (0.0, "")
    total_cases, total_seconds, wrong_verdicts = 0, 0.0, 0
    for name in names:
        grade = grade_gsm8k if name == "gsm8k" else grade_math
        golds = _golds(data_dir, name)[::stride]
        seconds, cases = 0.0, 0
        for gold in golds:
            for response, expected in ((_response(gold), True), (_response(_perturbed(gold)), False)):
                elapsed, correct = timed(grade, response, gold, numeric)
                seconds += elapsed
                cases += 1
                wrong_verdicts += correct != expected
                if elapsed > worst[0]:
                    worst = (elapsed, f"{name}: {response[-80:]!r} vs {gold[:60]!r}")
        total_cases += cases
        total_seconds += seconds
        print(f"{name:14s} {cases:5d} cases  {cases / seconds:8.1f} cases/s", flush=True)
    for response, gold in ADVERSARIAL:
        elapsed, _ = timed(grade_math, response, gold, numeric)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stride", type=int, default=4, help="grade every n-th row of each dataset")
    parser.add_argument("--numeric", default="precision", choices=["precision", "qwen"])
    parser.add_argument("--datasets", default=",".join(name for name, _ in DATASETS))
    parser.add_argument("--data-dir", type=Path, default=None, help="benchmark copies (default: the shipped ones)")
    parser.add_argument("--chars", type=int, default=8000, help="length of each batch response, in characters")
    parser.add_argument("--batch-only", action="store_true", help="only the MATH500 batch")
    args = parser.parse_args()
    data_dir = shipped_or_configured_data_dir(args.data_dir)

    start = time.perf_counter()
    is_equiv("1", "1")
    print(f"helper process start: {time.perf_counter() - start:.2f} s (once)")
    run_batch(data_dir, args.chars, args.numeric)
    if not args.batch_only:
        run_datasets(data_dir, args.datasets.split(","), args.stride, args.numeric)


if __name__ == "__main__":
    main()
