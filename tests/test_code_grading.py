"""Code extraction, HumanEval-Pro and LiveCodeBench: prompts, loading (exact hub schema) and grading."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from acm_exp.errors import ConfigError
from acm_exp.eval import code as code_module
from acm_exp.eval.code import (
    CodeGrade,
    decode_private_tests,
    extract_code,
    grade_humaneval_pro,
    grade_livecodebench,
    humaneval_pro_prompt,
    humaneval_pro_response_prefix,
    livecodebench_prompt,
    load_livecodebench,
    stdout_matches,
)

# ---------------------------------------------------------------------------------------------
# extract_code


@pytest.mark.parametrize("response, expected", [
    ("Here:\n```python\nx = 1\n```\ndone", "x = 1"),
    ("draft\n```python\nx = 1\n```\nfinal\n```python\nx = 2\nprint(x)\n```\n", "x = 2\nprint(x)"),
    ("```py\ny = 3\n```", "y = 3"),
    ("```\nz = 4\n```", "z = 4"),
    ("text\n```python\ntruncated = True\n", "truncated = True"),  # no closing fence
    ("def f():\n    return 1\n", "def f():\n    return 1"),  # no fence at all
    ("```cpp\nint main() {}\n```", ""),  # no Python block
    ("```python\nx = 1\n```\n```text\nnot code\n```", "x = 1"),
])
def test_lenient_extract_code_takes_the_last_python_block(response: str, expected: str) -> None:
    assert extract_code(response) == expected


def test_lenient_extract_code_with_a_prefix_takes_the_block_the_prefix_opened() -> None:
    prefix = "```python\ndef f(x):\n"
    continuation = "    return x + 1\n```\n\nExample:\n```python\nprint(f(1))\n```"
    assert extract_code(continuation, prefix) == "def f(x):\n    return x + 1"
    # A response that already repeats the prefix is not doubled.
    assert extract_code(prefix + continuation, prefix) == "def f(x):\n    return x + 1"
    # A continuation cut off before the closing fence runs to the end.
    assert extract_code("    return x", prefix) == "def f(x):\n    return x"


# ---------------------------------------------------------------------------------------------
# HumanEval-Pro


def _humaneval_pro(shared_data_dir: Path) -> list[dict]:
    return json.loads((shared_data_dir / "humaneval_pro" / "humaneval_pro.json").read_text())


def _canonical_response(example: dict) -> str:
    # As a model would answer: the whole file (raw problem first) in one python block.
    body = example["raw_problem"] + example["raw_solution"] + example["new_problem"] + example["new_solution"]
    return f"Here is the solution.\n```python\n{body}\n```\n"


def _grade_all(examples: list[dict], responses: list[str], **kwargs) -> list[CodeGrade]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda pair: grade_humaneval_pro(pair[0], pair[1], **kwargs),
                             zip(examples, responses)))


def test_humaneval_pro_prompt_shows_both_stubs(shared_data_dir: Path) -> None:
    example = _humaneval_pro(shared_data_dir)[0]
    prompt = humaneval_pro_prompt(example)
    assert prompt.startswith("Write a solution of python file to the following problems, the solution of "
                             "the second problem requires single or multiple calls to the first solution.\n")
    assert prompt.endswith(f"```python\n{example['raw_problem'].strip()}\n{example['new_problem'].strip()}\n```")
    assert humaneval_pro_response_prefix(example) == f"```python\n{example['raw_problem'].strip()}\n"


def test_every_canonical_humaneval_pro_solution_passes(shared_data_dir: Path) -> None:
    examples = _humaneval_pro(shared_data_dir)
    assert len(examples) == 164
    grades = _grade_all(examples, [_canonical_response(e) for e in examples], timeout_s=20)
    failed = [(e["id"], g.status, g.detail) for e, g in zip(examples, grades) if not g.passed]
    assert failed == []
    assert all(g.status == "passed" for g in grades)


def test_empty_humaneval_pro_completions_fail(shared_data_dir: Path) -> None:
    examples = _humaneval_pro(shared_data_dir)
    grades = _grade_all(examples, [""] * len(examples), timeout_s=20)
    assert not any(g.passed for g in grades)


def test_humaneval_pro_continuation_of_the_response_prefix_passes(shared_data_dir: Path) -> None:
    # The CodeEval-Pro setup: the model continues "```python\n<raw_problem>\n" with the body.
    examples = _humaneval_pro(shared_data_dir)[:16]
    responses = [e["raw_solution"] + e["new_problem"] + e["new_solution"] + "\n```\nDone." for e in examples]
    grades = [grade_humaneval_pro(e, r, timeout_s=20, response_prefix=humaneval_pro_response_prefix(e))
              for e, r in zip(examples, responses)]
    assert all(g.passed for g in grades), [g.detail for g in grades if not g.passed]


def test_lenient_humaneval_pro_bare_continuation_passes_without_the_prefix(shared_data_dir: Path) -> None:
    # What a backend returns when the prompt ends with the response prefix and generation stops at
    # "\n```": the continuation alone, no fences. program = raw_problem + completion + test_code.
    examples = _humaneval_pro(shared_data_dir)
    responses = [e["raw_solution"] + e["new_problem"] + e["new_solution"] for e in examples]
    grades = _grade_all(examples, responses, timeout_s=20, mode="lenient")
    assert [(e["id"], g.detail) for e, g in zip(examples, grades) if not g.passed] == []


def test_lenient_humaneval_pro_response_without_the_raw_function_gets_the_raw_problem(shared_data_dir: Path) -> None:
    example = _humaneval_pro(shared_data_dir)[0]
    # Only the body of the raw function, then the new function: the raw stub is put in front.
    response = "```python\n" + example["raw_solution"] + example["new_problem"] + example["new_solution"] + "```"
    assert grade_humaneval_pro(example, response, timeout_s=20, mode="lenient").passed


def test_humaneval_pro_wrong_answer_is_reported() -> None:
    example = {"id": 1, "raw_problem": "def double(x):\n    \"\"\"Twice x.\"\"\"\n",
               "new_problem": "def quadruple(x):\n", "test_code": "assert quadruple(2) == 8\n"}
    wrong = "```python\ndef double(x):\n    return x * 3\ndef quadruple(x):\n    return double(double(x))\n```"
    grade = grade_humaneval_pro(example, wrong, timeout_s=10)
    assert not grade.passed and grade.status == "wrong_answer"
    right = wrong.replace("x * 3", "x * 2")
    assert grade_humaneval_pro(example, right, timeout_s=10).passed
    hang = "```python\ndef double(x):\n    while True: pass\ndef quadruple(x):\n    return double(x)\n```"
    assert grade_humaneval_pro(example, hang, timeout_s=1).status == "timeout"


def test_humaneval_pro_missing_fields_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="raw_problem"):
        humaneval_pro_prompt({"id": 3, "new_problem": "", "test_code": ""})


# ---------------------------------------------------------------------------------------------
# LiveCodeBench fixtures in the exact schema of livecodebench/code_generation_lite


def _compressed(tests: list[dict]) -> str:
    """How the lite release stores most private tests: base64(zlib(pickle(json string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode("ascii")


def _stdin_row(contest_date: str = "2024-09-14T00:00:00", question_id: str = "abc370_a") -> dict:
    public = [{"input": "3 5\n", "output": "8\n", "testtype": "stdin"},
              {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
    private = [{"input": "100 200\n", "output": "300\n", "testtype": "stdin"},
               {"input": "0 0\n", "output": "0\n", "testtype": "stdin"}]
    return {
        "question_title": "A + B",
        "question_content": "Given two integers A and B on one line, print A+B.",
        "platform": "atcoder",
        "question_id": question_id,
        "contest_id": "abc370",
        "contest_date": contest_date,
        "starter_code": "",
        "difficulty": "easy",
        "public_test_cases": json.dumps(public),
        "private_test_cases": _compressed(private),
        "metadata": "{}",
    }


def _functional_row(contest_date: str = "2024-10-05T00:00:00") -> dict:
    public = [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"}]
    private = [{"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"},
               {"input": "[3, 3]\n6", "output": "[0, 1]", "testtype": "functional"}]
    return {
        "question_title": "two-sum",
        "question_content": "Return indices of the two numbers that add up to target.",
        "platform": "leetcode",
        "question_id": "1",
        "contest_id": "weekly-contest-417",
        "contest_date": contest_date,
        "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
        "difficulty": "medium",
        "public_test_cases": json.dumps(public),
        "private_test_cases": json.dumps(private),  # some rows keep plain JSON
        "metadata": json.dumps({"func_name": "twoSum"}),
    }


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


STDIN_RIGHT = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
STDIN_WRONG = "```python\na, b = map(int, input().split())\nprint(a - b)\n```"
FUNCTIONAL_RIGHT = """```python
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)  # a tuple: lcb_runner accepts it as a list
            seen[x] = i
```"""
FUNCTIONAL_WRONG = FUNCTIONAL_RIGHT.replace("(seen[target - x], i)", "[i, seen[target - x]]")


def test_load_decodes_tests_and_metadata(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "test.jsonl", [_stdin_row(), _functional_row()])
    rows = load_livecodebench(str(tmp_path), release="release_v1")
    assert [r["question_id"] for r in rows] == ["abc370_a", "1"]
    stdin, functional = rows
    assert stdin["private_test_cases"][0] == {"input": "100 200\n", "output": "300\n", "testtype": "stdin"}
    assert stdin["public_test_cases"][1]["output"] == "6\n"
    assert functional["metadata"] == {"func_name": "twoSum"}
    assert len(functional["private_test_cases"]) == 2


def test_grade_livecodebench_stdin_and_functional(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "test.jsonl", [_stdin_row(), _functional_row()])
    stdin, functional = load_livecodebench(tmp_path, release="release_v1")
    right = grade_livecodebench(stdin, STDIN_RIGHT, timeout_s=10)
    assert right.passed and right.status == "passed" and right.detail == "4 tests passed"
    wrong = grade_livecodebench(stdin, STDIN_WRONG, timeout_s=10)
    assert not wrong.passed and wrong.status == "wrong_answer"
    assert grade_livecodebench(functional, FUNCTIONAL_RIGHT, timeout_s=10).passed
    wrong_functional = grade_livecodebench(functional, FUNCTIONAL_WRONG, timeout_s=10)
    assert not wrong_functional.passed and wrong_functional.status == "wrong_answer"
    # Raw rows (undecoded, as on the hub) grade the same.
    assert grade_livecodebench(_stdin_row(), STDIN_RIGHT, timeout_s=10).passed
    assert grade_livecodebench(_functional_row(), FUNCTIONAL_RIGHT, timeout_s=10).passed


def test_grade_livecodebench_failures_have_their_status() -> None:
    crash = "```python\nclass Solution:\n    def twoSum(self, nums, target):\n        raise ValueError('no')\n```"
    assert grade_livecodebench(_functional_row(), crash, timeout_s=10).status == "error"
    slow = "```python\nclass Solution:\n    def twoSum(self, nums, target):\n        while True: pass\n```"
    assert grade_livecodebench(_functional_row(), slow, timeout_s=1).status == "timeout"
    no_class = "```python\ndef twoSum(nums, target):\n    return [0, 1]\n```"
    assert not grade_livecodebench(_functional_row(), no_class, timeout_s=10).passed
    stdin_crash = "```python\nraise RuntimeError('boom')\n```"
    grade = grade_livecodebench(_stdin_row(), stdin_crash, timeout_s=10)
    assert grade.status == "error" and "RuntimeError" in grade.detail
    assert grade_livecodebench(_stdin_row(), "I don't know.", timeout_s=10).passed is False
    empty = dict(_stdin_row(), public_test_cases="[]", private_test_cases="[]")
    assert grade_livecodebench(empty, STDIN_RIGHT, timeout_s=10).status == "no_tests"


def test_functional_solution_printing_debug_output_still_passes() -> None:
    chatty = FUNCTIONAL_RIGHT.replace("seen = {}", "seen = {}\n        print('debug', nums)")
    assert grade_livecodebench(_functional_row(), chatty, timeout_s=10).passed


def test_stdout_comparison_follows_lcb_runner() -> None:
    assert stdout_matches("1 2\n3  \n\n\n", "1 2\n3\n")
    assert stdout_matches("  5\n", "5")
    assert stdout_matches("2.50 3\n", "2.5 3.0\n")  # numeric lines compare as Decimals
    assert not stdout_matches("1 2\n", "1 2\n3\n")
    assert not stdout_matches("YES\n", "NO\n")
    assert not stdout_matches("", "0\n")


def test_date_window_and_limit(tmp_path: Path) -> None:
    rows = [_stdin_row("2024-07-31T00:00:00", "old"), _stdin_row("2024-08-01T00:00:00", "start"),
            _stdin_row("2024-12-31T00:00:00", "mid"), _stdin_row("2025-02-01T00:00:00", "end"),
            _stdin_row("2025-02-02T00:00:00", "late")]
    _write_jsonl(tmp_path / "test.jsonl", rows)
    window = load_livecodebench(tmp_path, "release_v1", start_date="2024-08-01", end_date="2025-02-01")
    assert [r["question_id"] for r in window] == ["start", "mid", "end"]
    limited = load_livecodebench(tmp_path, "release_v1", start_date="2024-08-01", limit=2)
    assert [r["question_id"] for r in limited] == ["start", "mid"]
    with pytest.raises(ConfigError, match="start_date"):
        load_livecodebench(tmp_path, "release_v1", start_date="August 2024")


def test_release_maps_to_its_files(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "test.jsonl", [_stdin_row(question_id="one")])
    _write_jsonl(tmp_path / "test2.jsonl", [_stdin_row(question_id="two")])
    assert [r["question_id"] for r in load_livecodebench(tmp_path, "release_v1")] == ["one"]
    assert [r["question_id"] for r in load_livecodebench(tmp_path, "release_v2")] == ["one", "two"]
    assert [r["question_id"] for r in load_livecodebench(tmp_path, "v2")] == ["two"]
    with pytest.raises(ConfigError, match="test3.jsonl"):
        load_livecodebench(tmp_path, "release_v3")
    with pytest.raises(ConfigError, match="release"):
        load_livecodebench(tmp_path, "release_v99")


def test_parquet_and_single_file_sources(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([_stdin_row(), _functional_row()])
    pq.write_table(table, tmp_path / "test.parquet")
    rows = load_livecodebench(tmp_path, "release_v1")
    assert [r["question_id"] for r in rows] == ["abc370_a", "1"]
    single = _write_jsonl(tmp_path / "subset.jsonl", [_functional_row()])
    assert load_livecodebench(str(single))[0]["metadata"]["func_name"] == "twoSum"
    with pytest.raises(ConfigError, match="no such file"):
        load_livecodebench(str(tmp_path / "missing_dir"))


def test_hub_source_downloads_the_release_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    for index, name in enumerate(["test.jsonl", "test2.jsonl", "test3.jsonl"]):
        _write_jsonl(tmp_path / name, [_stdin_row(question_id=f"q{index}")])
    requested = []

    def fake_download(repo_id: str, filename: str, repo_type: str | None = None, **_: object) -> str:
        requested.append((repo_id, filename, repo_type))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    rows = load_livecodebench("livecodebench/code_generation_lite", release="release_v3")
    assert [r["question_id"] for r in rows] == ["q0", "q1", "q2"]
    assert requested == [("livecodebench/code_generation_lite", n, "dataset")
                         for n in ("test.jsonl", "test2.jsonl", "test3.jsonl")]


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.target),))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = base64.b64encode(zlib.compress(pickle.dumps(_Exploit(target)))).decode("ascii")
    with pytest.raises(ConfigError, match="refusing to load global"):
        decode_private_tests(payload, "evil")
    _write_jsonl(tmp_path / "test.jsonl", [dict(_stdin_row(), private_test_cases=payload)])
    with pytest.raises(ConfigError, match="abc370_a"):
        load_livecodebench(tmp_path, "release_v1")
    assert not target.exists()
    # Plain strings, as the real data holds, decode.
    tests = [{"input": "1\n", "output": "1\n", "testtype": "stdin"}]
    assert decode_private_tests(_compressed(tests)) == tests
    with pytest.raises(ConfigError, match="neither JSON"):
        decode_private_tests("not base64 at all!")


def test_livecodebench_prompt_formats() -> None:
    stdin_prompt = livecodebench_prompt(_stdin_row())
    assert stdin_prompt.startswith("### Question:\nGiven two integers A and B on one line, print A+B.\n\n")
    assert "### Format: Read the inputs from stdin solve the problem" in stdin_prompt
    assert "```python\n# YOUR CODE HERE\n```\n\n" in stdin_prompt
    assert stdin_prompt.endswith("### Answer: (use the provided format with backticks)\n\n")
    functional_prompt = livecodebench_prompt(_functional_row())
    assert "### Format: You will use the following starter code" in functional_prompt
    assert f"```python\n{_functional_row()['starter_code']}\n```\n\n" in functional_prompt
    assert code_module.LIVECODEBENCH_SYSTEM_MESSAGE.startswith("You are an expert Python programmer.")
