"""Sandbox throughput: the 164 HumanEval-Pro canonical programs, one at a time vs in parallel.

    .venv/bin/python tests/benchmarks/sandbox_bench.py [--data DIR] [--workers N]
        [--modes bwrap,none] [--repeats 1]

For each isolation mode (bwrap where usable, and the forced fallback) runs every canonical
solution + its tests through acm_exp.eval.sandbox.run_programs with max_workers=1 and with
max_workers=N (default: the CPU count), and prints programs/s and the parallel/sequential ratio.
Then grades the 164 canonical answers with the official HumanEval-Pro grader (CodeEval-Pro + HF
code_eval, raw and sanitised completion) under bwrap, N at a time, and prints problems/s.
All programs must pass; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from acm_exp.eval import sandbox
from acm_exp.eval.code import extract_code
from acm_exp.eval.tasks.humaneval_pro import grade_humaneval_pro, humaneval_pro_program, humaneval_pro_response_prefix
from acm_exp.paths import data_dir as shipped_or_configured_data_dir


def canonical_programs(data_dir: Path) -> list[str]:
    examples = json.loads((data_dir / "humaneval_pro" / "humaneval_pro.json").read_text())
    programs = []
    for example in examples:
        body = example["raw_problem"] + example["raw_solution"] + example["new_problem"] + example["new_solution"]
        programs.append(humaneval_pro_program(example, extract_code(f"```python\n{body}\n```")))
    return programs


def timed_run(programs: list[str], workers: int, mode: str, repeats: int) -> tuple[float, int]:
    """Best wall time over `repeats` runs, and the number of programs that passed (last run)."""
    best, passed = float("inf"), 0
    jobs = [(program, "") for program in programs]
    for _ in range(repeats):
        started = time.perf_counter()
        results = sandbox.run_programs(jobs, timeout_s=20.0, max_workers=workers, isolation=mode)
        best = min(best, time.perf_counter() - started)
        passed = sum(result.ok for result in results)
    return best, passed


def official_grading(data_dir: Path, workers: int) -> tuple[float, int, int]:
    """Wall time, passes and problems when the official grader grades every canonical answer."""
    examples = json.loads((data_dir / "humaneval_pro" / "humaneval_pro.json").read_text())

    def grade(example: dict) -> bool:
        answer = example["raw_solution"] + example["new_problem"] + example["new_solution"] + "\n```"
        return grade_humaneval_pro(
            example, answer, response_prefix=humaneval_pro_response_prefix(example), isolation="bwrap"
        ).passed

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = sum(pool.map(grade, examples))
    return time.perf_counter() - started, passed, len(examples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="benchmark copies (default: the shipped ones, or $ACM_EXP_DATA_DIR)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--modes", default="bwrap,none")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    data_dir = shipped_or_configured_data_dir(args.data)
    programs = canonical_programs(data_dir)
    print(f"{len(programs)} HumanEval-Pro canonical programs, {os.cpu_count()} CPUs, parallel workers={args.workers}")
    ok = True
    for mode in args.modes.split(","):
        if mode == "bwrap" and not sandbox.bwrap_available():
            print(f"[{mode}] skipped: bubblewrap not usable here")
            continue
        sequential_s, seq_passed = timed_run(programs, 1, mode, args.repeats)
        parallel_s, par_passed = timed_run(programs, args.workers, mode, args.repeats)
        n = len(programs)
        print(
            f"[{mode}] sequential: {sequential_s:6.2f} s  {n / sequential_s:6.1f} programs/s  ({seq_passed}/{n} passed)"
        )
        print(
            f"[{mode}] parallel x{args.workers}: {parallel_s:6.2f} s  {n / parallel_s:6.1f} programs/s  "
            f"({par_passed}/{n} passed)  speed-up {sequential_s / parallel_s:.2f}x"
        )
        ok = ok and seq_passed == n and par_passed == n
    if sandbox.bwrap_available():
        wall_s, passed, n = official_grading(data_dir, args.workers)
        print(
            f"[official HumanEval-Pro grading, bwrap] x{args.workers}: {wall_s:6.2f} s  "
            f"{n / wall_s:6.1f} problems/s  ({passed}/{n} passed)"
        )
        ok = ok and passed == n
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
