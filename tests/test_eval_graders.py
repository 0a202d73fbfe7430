"""The grader registry: one call shape for math and code, code graded in parallel, in order."""

from __future__ import annotations

from acm_exp.eval.benchmarks import Example, read_rows
from acm_exp.eval.graders import GRADERS, grade_all


def test_registry_names():
    assert set(GRADERS) == {"math", "gsm8k", "humaneval_pro", "mbpp_pro", "livecodebench"}
    assert GRADERS["humaneval_pro"].runs_code and not GRADERS["math"].runs_code


def test_math_graders():
    examples = [Example("0", "q", "\\frac{1}{2}", {}), Example("1", "q", "18", {})]
    grades = grade_all("math", examples, ["so \\boxed{0.5}", "The answer is \\boxed{17}."], timeout_s=1, workers=1)
    assert [g.correct for g in grades] == [True, False]
    assert grades[1].extracted == "17"
    gsm8k = grade_all(
        "gsm8k", [Example("0", "q", "18", {})], ["She makes 9 * 2 = $18. The answer is 18."], timeout_s=1, workers=1
    )
    assert gsm8k[0].correct


def test_humaneval_pro_canonical_solutions_pass_in_parallel(shared_data_dir):
    rows = read_rows(shared_data_dir / "humaneval_pro" / "humaneval_pro.json")[:4]
    examples = [Example(str(r["id"]), r["new_problem"], None, r) for r in rows]
    # What a perfect model writes after the prompt's prefix (```python + the raw problem's stub).
    responses = [f"{r['raw_solution']}\n{r['new_problem']}{r['new_solution']}\n```" for r in rows]
    wrong = ["    return None\n```"] * len(rows)
    grades = grade_all("humaneval_pro", examples + examples, responses + wrong, timeout_s=10, workers=2)
    assert [g.correct for g in grades] == [True] * 4 + [False] * 4
    assert grades[0].status == "passed"


def _livecodebench_rows() -> list[dict]:
    """Two problems in the hub schema (JSON strings for tests and metadata): stdin and functional."""
    import base64
    import json
    import pickle
    import zlib

    def pickled(tests: list[dict]) -> str:
        return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()

    stdin_tests = [{"input": "3\n", "output": "4\n", "testtype": "stdin"}]
    functional_tests = [{"input": "1\n2", "output": "3", "testtype": "functional"}]  # one JSON argument per line
    return [
        {
            "question_id": "s1",
            "question_title": "plus one",
            "question_content": "Read n, print n+1.",
            "platform": "atcoder",
            "contest_id": "abc1",
            "contest_date": "2024-03-02T00:00:00",
            "starter_code": "",
            "difficulty": "easy",
            "public_test_cases": json.dumps(stdin_tests),
            "private_test_cases": pickled([{"input": "10\n", "output": "11\n", "testtype": "stdin"}]),
            "metadata": "{}",
        },
        {
            "question_id": "f1",
            "question_title": "add",
            "question_content": "Return a+b.",
            "platform": "leetcode",
            "contest_id": "w1",
            "contest_date": "2024-09-01T00:00:00",
            "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
            "difficulty": "easy",
            "public_test_cases": json.dumps(functional_tests),
            "private_test_cases": pickled(functional_tests),
            "metadata": json.dumps({"func_name": "add"}),
        },
    ]


def test_livecodebench_from_a_local_file_through_the_registry(tmp_path):
    import json

    from acm_exp.eval.benchmarks import load_benchmark

    (tmp_path / "lcb.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _livecodebench_rows()))
    cfg = {
        "name": "livecodebench",
        "kind": "code",
        "source": "livecodebench/code_generation_lite",
        "local_path": "lcb.jsonl",
        "id_field": "question_id",
        "question_field": "question_content",
        "answer_field": None,
        "grader": "livecodebench",
        "options": {"release": "release_v6", "start_date": None, "end_date": None},
    }
    examples = load_benchmark(cfg, tmp_path)
    assert [ex.id for ex in examples] == ["s1", "f1"]
    later = load_benchmark({**cfg, "options": {**cfg["options"], "start_date": "2024-06-01"}}, tmp_path)
    assert [ex.id for ex in later] == ["f1"]
    responses = [
        "```python\nn = int(input())\nprint(n + 1)\n```",
        "```python\nclass Solution:\n    def add(self, a, b):\n        return a + b\n```",
    ]
    grades = grade_all("livecodebench", examples, responses, timeout_s=10, workers=2)
    assert [g.correct for g in grades] == [True, True]
    # (Code without `class Solution` would be graded by its module-level `add`, which lcb_runner's
    # import preamble supplies as operator.add: the wrong functional answer needs the class.)
    wrong_responses = [
        "```python\nprint(0)\n```",
        "```python\nclass Solution:\n    def add(self, a, b):\n        return 0\n```",
    ]
    wrong = grade_all("livecodebench", examples, wrong_responses, timeout_s=10, workers=2)
    assert [g.correct for g in wrong] == [False, False]
