# ruff: noqa: E501
"""Verdicts of acm_exp's official LiveCodeBench grading against lcb_runner's own, case by case.

    .venv/bin/python tests/benchmarks/lcb_agreement.py --lcb DIR

DIR is a checkout of LiveCodeBench/LiveCodeBench (the README names the commit the grader follows,
28fef95). lcb_runner runs in this process the way its runner does: ``lcb_runner.runner.custom_evaluator``
imported first (its imports are what a solution may use without importing them; ``anthropic`` is
stubbed when it is not installed), then ``compute_code_generation_metrics.check_correctness`` per case,
a forked process per program. Our verdict is ``grade_livecodebench`` on the same tests, under the
sandbox the runs use. The cases cover the input styles, output comparisons, modules lcb_runner has
loaded before its reliability guard, call-based problems and failures (errors, time-outs, exits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

from acm_exp.eval.tasks.livecodebench import grade_livecodebench

# As lcb_runner's testing_util sets it (a case below prints a 16,904-digit number).
sys.set_int_max_str_digits(50000)

TIMEOUT = 2
SUM = [("1 2\n", "3\n"), ("5 5\n", "10\n")]
LINES = [("3\n1\n2\n3\n", "6\n"), ("2\n10\n-4\n", "6\n")]
FLOAT = [("1 2\n", "1.5\n")]
TWO_SUM = [("[2,7,11,15]\n9", "[0, 1]"), ("[3,2,4]\n6", "[1, 2]")]
COUNT = [('"aab"', '{"a": 2, "b": 1}')]

CASES = [
    # stdin: input styles
    ("stdin input()", "stdin", SUM, None, "a, b = map(int, input().split())\nprint(a + b)"),
    (
        "stdin sys.stdin.readline",
        "stdin",
        SUM,
        None,
        "import sys\na, b = map(int, sys.stdin.readline().split())\nprint(a + b)",
    ),
    (
        "stdin from sys import stdin",
        "stdin",
        SUM,
        None,
        "from sys import stdin\na, b = map(int, stdin.readline().split())\nprint(a + b)",
    ),
    ("stdin sys.stdin.read", "stdin", SUM, None, "import sys\nprint(sum(map(int, sys.stdin.read().split())))"),
    (
        "stdin readlines",
        "stdin",
        LINES,
        None,
        "import sys\nl = sys.stdin.readlines()\nprint(sum(int(x) for x in l[1:] if x.strip()))",
    ),
    ("stdin open(0)", "stdin", SUM, None, "print(sum(map(int, open(0).read().split())))"),
    (
        "stdin for line in sys.stdin",
        "stdin",
        SUM,
        None,
        "import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))",
    ),
    ("stdin buffer.read", "stdin", SUM, None, "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))"),
    (
        "stdin buffer.readline twice",
        "stdin",
        LINES,
        None,
        "import sys\nn = int(sys.stdin.buffer.readline())\nprint(sum(int(sys.stdin.buffer.readline()) for _ in range(n)))",
    ),
    ("stdin input loop", "stdin", LINES, None, "n = int(input())\nprint(sum(int(input()) for _ in range(n)))"),
    (
        "stdin main guard",
        "stdin",
        SUM,
        None,
        "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()",
    ),
    (
        "stdin main guard double quotes",
        "stdin",
        SUM,
        None,
        'def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\nif __name__ == "__main__":\n    main()',
    ),
    (
        "stdin guard not last",
        "stdin",
        SUM,
        None,
        "def main():\n    print(sum(map(int, input().split())))\nif __name__ == '__main__':\n    main()\nx = 1",
    ),
    (
        "stdin sys.exit after print",
        "stdin",
        SUM,
        None,
        "import sys\nprint(sum(map(int, input().split())))\nsys.exit(0)",
    ),
    ("stdin exit()", "stdin", SUM, None, "print(sum(map(int, input().split())))\nexit()"),
    ("stdin quit()", "stdin", SUM, None, "print(sum(map(int, input().split())))\nquit()"),
    (
        "stdin global in function",
        "stdin",
        SUM,
        None,
        "x = 0\ndef f():\n    global x\n    x = sum(map(int, input().split()))\nf()\nprint(x)",
    ),
    (
        "stdin nonlocal-free closure",
        "stdin",
        SUM,
        None,
        "a, b = map(int, input().split())\ndef f():\n    return a + b\nprint(f())",
    ),
    (
        "stdin class at top",
        "stdin",
        SUM,
        None,
        "class S:\n    def run(self):\n        print(sum(map(int, input().split())))\nS().run()",
    ),
    # stdin: output comparison
    ("stdin trailing spaces", "stdin", SUM, None, "print(str(sum(map(int, input().split()))) + '   ')"),
    ("stdin extra blank line", "stdin", SUM, None, "print(sum(map(int, input().split())))\nprint()"),
    ("stdin float vs int", "stdin", SUM, None, "print(float(sum(map(int, input().split()))))"),
    ("stdin decimal 1.50", "stdin", FLOAT, None, "print('1.50')"),
    ("stdin decimal 1.5000001", "stdin", FLOAT, None, "print('1.5000001')"),
    ("stdin wrong answer", "stdin", SUM, None, "print(42)"),
    ("stdin no output", "stdin", SUM, None, "x = input()"),
    ("stdin stderr only", "stdin", SUM, None, "import sys\nsys.stderr.write(str(sum(map(int, input().split()))))"),
    ("stdin runtime error", "stdin", SUM, None, "print(1 // 0)"),
    ("stdin syntax error", "stdin", SUM, None, "print(1 +)"),
    ("stdin infinite loop", "stdin", SUM, None, "while True:\n    pass"),
    (
        "stdin recursion deep",
        "stdin",
        [("5000\n", "5000\n")],
        None,
        "def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\nprint(f(int(input())))",
    ),
    ("stdin big int str", "stdin", [("1\n", str(7**20000) + "\n")], None, "input()\nprint(7**20000)"),
    ("stdin preamble names", "stdin", SUM, None, "a, b = map(int, input().split())\nprint(reduce(add, [a, b]))"),
    (
        "stdin uses Counter unimported",
        "stdin",
        SUM,
        None,
        "c = Counter(input().split())\nprint(sum(int(k) * v for k, v in c.items()))",
    ),
    # stdin: modules lcb_runner has loaded before its guard
    (
        "stdin numpy",
        "stdin",
        SUM,
        None,
        "import numpy as np\nprint(int(np.array(list(map(int, input().split()))).sum()))",
    ),
    (
        "stdin numpy from-import",
        "stdin",
        SUM,
        None,
        "from numpy import array\nprint(int(array(list(map(int, input().split()))).sum()))",
    ),
    (
        "stdin numpy inside function",
        "stdin",
        SUM,
        None,
        "def f():\n    import numpy\n    return int(numpy.sum(list(map(int, input().split()))))\nprint(f())",
    ),
    (
        "stdin pandas",
        "stdin",
        SUM,
        None,
        "import pandas as pd\nprint(int(pd.Series(list(map(int, input().split()))).sum()))",
    ),
    ("stdin scipy (not loaded by lcb)", "stdin", SUM, None, "import scipy\nprint(sum(map(int, input().split())))"),
    ("stdin multiprocessing", "stdin", SUM, None, "import multiprocessing\nprint(sum(map(int, input().split())))"),
    (
        "stdin concurrent.futures",
        "stdin",
        SUM,
        None,
        "from concurrent.futures import ProcessPoolExecutor\nprint(sum(map(int, input().split())))",
    ),
    ("stdin resource (blocked)", "stdin", SUM, None, "import resource\nprint(sum(map(int, input().split())))"),
    ("stdin psutil (blocked)", "stdin", SUM, None, "import psutil\nprint(sum(map(int, input().split())))"),
    ("stdin missing module", "stdin", SUM, None, "import sortedcontainers\nprint(sum(map(int, input().split())))"),
    (
        "stdin __import__ numpy",
        "stdin",
        SUM,
        None,
        "np = __import__('numpy')\nprint(int(np.sum(list(map(int, input().split())))))",
    ),
    ("stdin os.getcwd (removed)", "stdin", SUM, None, "import os\nos.getcwd()\nprint(sum(map(int, input().split())))"),
    ("stdin tempfile", "stdin", SUM, None, "import tempfile\nprint(sum(map(int, input().split())))"),
    (
        "stdin heapq bisect",
        "stdin",
        LINES,
        None,
        "import heapq, bisect\nn = int(input())\nh = [int(input()) for _ in range(n)]\nheapq.heapify(h)\nprint(sum(h))",
    ),
    (
        "stdin threading",
        "stdin",
        SUM,
        None,
        "import threading\nr = []\nt = threading.Thread(target=lambda: r.append(sum(map(int, input().split()))))\nt.start(); t.join()\nprint(r[0])",
    ),
    # call-based
    (
        "call Solution",
        "call",
        TWO_SUM,
        "twoSum",
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i",
    ),
    (
        "call tuple result",
        "call",
        TWO_SUM,
        "twoSum",
        "class Solution:\n    def twoSum(self, nums, target):\n        for i in range(len(nums)):\n            for j in range(i + 1, len(nums)):\n                if nums[i] + nums[j] == target:\n                    return (i, j)",
    ),
    (
        "call module function",
        "call",
        TWO_SUM,
        "twoSum",
        "def twoSum(nums, target):\n    for i in range(len(nums)):\n        for j in range(i + 1, len(nums)):\n            if nums[i] + nums[j] == target:\n                return [i, j]",
    ),
    (
        "call wrong answer",
        "call",
        TWO_SUM,
        "twoSum",
        "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 0]",
    ),
    (
        "call numpy",
        "call",
        TWO_SUM,
        "twoSum",
        "import numpy as np\nclass Solution:\n    def twoSum(self, nums, target):\n        a = np.array(nums)\n        for i in range(len(a)):\n            for j in range(i + 1, len(a)):\n                if a[i] + a[j] == target:\n                    return [i, j]",
    ),
    (
        "call numpy ints in list",
        "call",
        TWO_SUM,
        "twoSum",
        "import numpy as np\nclass Solution:\n    def twoSum(self, nums, target):\n        a = np.array(nums)\n        for i in range(len(a)):\n            for j in range(i + 1, len(a)):\n                if a[i] + a[j] == target:\n                    return [np.int64(i), np.int64(j)]",
    ),
    (
        "call dict keys",
        "call",
        COUNT,
        "count",
        "from collections import Counter\nclass Solution:\n    def count(self, s):\n        return dict(Counter(s))",
    ),
    (
        "call Counter equals dict",
        "call",
        COUNT,
        "count",
        "from collections import Counter\nclass Solution:\n    def count(self, s):\n        return Counter(s)",
    ),
    ("call missing method", "call", TWO_SUM, "twoSum", "class Solution:\n    def other(self):\n        return 1"),
    (
        "call raises",
        "call",
        TWO_SUM,
        "twoSum",
        "class Solution:\n    def twoSum(self, nums, target):\n        raise ValueError",
    ),
    (
        "call infinite loop",
        "call",
        TWO_SUM,
        "twoSum",
        "class Solution:\n    def twoSum(self, nums, target):\n        while True:\n            pass",
    ),
    (
        "call prints and returns",
        "call",
        TWO_SUM,
        "twoSum",
        "class Solution:\n    def twoSum(self, nums, target):\n        print('debug')\n        for i in range(len(nums)):\n            for j in range(i + 1, len(nums)):\n                if nums[i] + nums[j] == target:\n                    return [i, j]",
    ),
    (
        "call float result",
        "call",
        [("1\n2", "1.5")],
        "mean",
        "class Solution:\n    def mean(self, a, b):\n        return (a + b) / 2",
    ),
    (
        "call float near",
        "call",
        [("1\n2", "1.5")],
        "mean",
        "class Solution:\n    def mean(self, a, b):\n        return (a + b) / 2 + 1e-12",
    ),
    (
        "call sys.exit",
        "call",
        TWO_SUM,
        "twoSum",
        "import sys\nclass Solution:\n    def twoSum(self, nums, target):\n        sys.exit(0)",
    ),
    (
        "call pandas",
        "call",
        TWO_SUM,
        "twoSum",
        "import pandas as pd\nclass Solution:\n    def twoSum(self, nums, target):\n        s = pd.Series(nums)\n        for i in range(len(s)):\n            for j in range(i + 1, len(s)):\n                if s[i] + s[j] == target:\n                    return [i, j]",
    ),
]


def lcb_verdict(check_correctness, kind: str, tests, fn_name, code: str) -> bool:
    sample = {
        "input_output": json.dumps(
            {
                "inputs": [i for i, _ in tests],
                "outputs": [o for _, o in tests],
                "fn_name": fn_name if kind == "call" else None,
            }
        )
    }
    try:
        result, _ = check_correctness(sample, code, timeout=TIMEOUT, debug=False)
    except Exception:  # noqa: BLE001 - evaluate_generations_by_problem records [-2] then
        return False
    return all(r is True for r in result)


def our_verdict(kind: str, tests, fn_name, code: str) -> bool:
    testtype = "functional" if kind == "call" else "stdin"
    cases = [{"input": i, "output": o, "testtype": testtype} for i, o in tests]
    row = {
        "question_id": "q",
        "metadata": json.dumps({"func_name": fn_name} if kind == "call" else {}),
        "starter_code": "",
        "public_test_cases": json.dumps(cases),
        "private_test_cases": "[]",
    }
    return grade_livecodebench(row, f"Here it is.\n```python\n{code}\n```\n", timeout_s=TIMEOUT).passed


def load_lcb_runner(checkout: str):
    """lcb_runner's ``check_correctness``, imported as its runner imports it (it opens files relative to
    the checkout at import time)."""
    if "anthropic" not in sys.modules:
        try:
            import anthropic  # noqa: F401
        except ImportError:
            stub = types.ModuleType("anthropic")
            stub.HUMAN_PROMPT, stub.AI_PROMPT = "\n\nHuman:", "\n\nAssistant:"
            sys.modules["anthropic"] = stub
    os.chdir(checkout)
    sys.path.insert(0, checkout)
    import lcb_runner.runner.custom_evaluator  # noqa: F401
    from lcb_runner.evaluation.compute_code_generation_metrics import check_correctness

    return check_correctness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lcb", required=True, help="a checkout of LiveCodeBench/LiveCodeBench")
    args = parser.parse_args()
    checkout = os.path.abspath(args.lcb)
    check_correctness = load_lcb_runner(checkout)
    agree = 0
    start = time.time()
    for name, kind, tests, fn_name, code in CASES:
        theirs, ours = (
            lcb_verdict(check_correctness, kind, tests, fn_name, code),
            our_verdict(kind, tests, fn_name, code),
        )
        agree += theirs == ours
        print(f"{'ok ' if theirs == ours else 'DIFF'} lcb_runner={theirs!s:5} ours={ours!s:5}  {name}", flush=True)
    print(f"{agree}/{len(CASES)} verdicts agree ({time.time() - start:.0f} s)")
    sys.exit(0 if agree == len(CASES) else 1)


if __name__ == "__main__":
    main()
