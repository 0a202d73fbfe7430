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
from acm_exp.eval.code import CodeGrade, extract_code
from acm_exp.eval.tasks import livecodebench as code_module
from acm_exp.eval.tasks.humaneval_pro import grade_humaneval_pro, humaneval_pro_prompt, humaneval_pro_response_prefix
from acm_exp.eval.tasks.livecodebench import (
    decode_private_tests,
    grade_livecodebench,
    livecodebench_prompt,
    load_livecodebench,
    stdout_matches,
)

# ---------------------------------------------------------------------------------------------
# extract_code


@pytest.mark.parametrize(
    "response, expected",
    [
        ("Here:\n```python\nx = 1\n```\ndone", "x = 1"),
        ("draft\n```python\nx = 1\n```\nfinal\n```python\nx = 2\nprint(x)\n```\n", "x = 2\nprint(x)"),
        ("```py\ny = 3\n```", "y = 3"),
        ("```\nz = 4\n```", "z = 4"),
        ("text\n```python\ntruncated = True\n", "truncated = True"),  # no closing fence
        ("def f():\n    return 1\n", "def f():\n    return 1"),  # no fence at all
        ("```cpp\nint main() {}\n```", ""),  # no Python block
        ("```python\nx = 1\n```\n```text\nnot code\n```", "x = 1"),
    ],
)
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
        return list(
            pool.map(
                lambda pair: grade_humaneval_pro(pair[0], pair[1], **kwargs), zip(examples, responses, strict=False)
            )
        )


def test_humaneval_pro_prompt_shows_both_stubs(shared_data_dir: Path) -> None:
    example = _humaneval_pro(shared_data_dir)[0]
    prompt = humaneval_pro_prompt(example)
    assert prompt.startswith(
        "Write a solution of python file to the following problems, the solution of "
        "the second problem requires single or multiple calls to the first solution.\n"
    )
    assert prompt.endswith(f"```python\n{example['raw_problem'].strip()}\n{example['new_problem'].strip()}\n```")
    assert humaneval_pro_response_prefix(example) == f"```python\n{example['raw_problem'].strip()}\n"


def test_every_canonical_humaneval_pro_solution_passes(shared_data_dir: Path) -> None:
    examples = _humaneval_pro(shared_data_dir)
    assert len(examples) == 164
    grades = _grade_all(examples, [_canonical_response(e) for e in examples], timeout_s=20)
    failed = [(e["id"], g.status, g.detail) for e, g in zip(examples, grades, strict=False) if not g.passed]
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
    grades = [
        grade_humaneval_pro(e, r, timeout_s=20, response_prefix=humaneval_pro_response_prefix(e))
        for e, r in zip(examples, responses, strict=False)
    ]
    assert all(g.passed for g in grades), [g.detail for g in grades if not g.passed]


def test_lenient_humaneval_pro_bare_continuation_passes_without_the_prefix(shared_data_dir: Path) -> None:
    # What a backend returns when the prompt ends with the response prefix and generation stops at
    # "\n```": the continuation alone, no fences. program = raw_problem + completion + test_code.
    examples = _humaneval_pro(shared_data_dir)
    responses = [e["raw_solution"] + e["new_problem"] + e["new_solution"] for e in examples]
    grades = _grade_all(examples, responses, timeout_s=20, mode="lenient")
    assert [(e["id"], g.detail) for e, g in zip(examples, grades, strict=False) if not g.passed] == []


def test_lenient_humaneval_pro_response_without_the_raw_function_gets_the_raw_problem(shared_data_dir: Path) -> None:
    example = _humaneval_pro(shared_data_dir)[0]
    # Only the body of the raw function, then the new function: the raw stub is put in front.
    response = "```python\n" + example["raw_solution"] + example["new_problem"] + example["new_solution"] + "```"
    assert grade_humaneval_pro(example, response, timeout_s=20, mode="lenient").passed


def test_humaneval_pro_wrong_answer_is_reported() -> None:
    example = {
        "id": 1,
        "raw_problem": 'def double(x):\n    """Twice x."""\n',
        "new_problem": "def quadruple(x):\n",
        "test_code": "assert quadruple(2) == 8\n",
    }
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
    public = [
        {"input": "3 5\n", "output": "8\n", "testtype": "stdin"},
        {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"},
    ]
    private = [
        {"input": "100 200\n", "output": "300\n", "testtype": "stdin"},
        {"input": "0 0\n", "output": "0\n", "testtype": "stdin"},
    ]
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
    private = [
        {"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"},
        {"input": "[3, 3]\n6", "output": "[0, 1]", "testtype": "functional"},
    ]
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
    rows = [
        _stdin_row("2024-07-31T00:00:00", "old"),
        _stdin_row("2024-08-01T00:00:00", "start"),
        _stdin_row("2024-12-31T00:00:00", "mid"),
        _stdin_row("2025-02-01T00:00:00", "end"),
        _stdin_row("2025-02-02T00:00:00", "late"),
    ]
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
    assert requested == [
        ("livecodebench/code_generation_lite", n, "dataset") for n in ("test.jsonl", "test2.jsonl", "test3.jsonl")
    ]


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


# ---------------------------------------------------------------------------------------------
# Official grading (eval.code_grading=official, the default): each rule of lcb_runner and of
# CodeEval-Pro + HF code_eval, with a response on which the lenient (earlier) grading disagrees.

from acm_exp.eval.harness_driver import clean_if_name, make_function, sanitize_humaneval_pro  # noqa: E402
from acm_exp.eval.tasks.humaneval_pro import HUMANEVAL_PRO_TIMEOUT_S, humaneval_pro_completion  # noqa: E402
from acm_exp.eval.tasks.livecodebench import LIVECODEBENCH_TIMEOUT_S, extract_livecodebench_code  # noqa: E402


def _stdin_problem(tests: list[tuple[str, str]]) -> dict:
    cases = [{"input": given, "output": wanted, "testtype": "stdin"} for given, wanted in tests]
    return {
        "question_id": "p",
        "metadata": "{}",
        "starter_code": "",
        "public_test_cases": json.dumps(cases),
        "private_test_cases": "[]",
    }


def _call_problem(func_name: str, tests: list[tuple[str, str]]) -> dict:
    cases = [{"input": given, "output": wanted, "testtype": "functional"} for given, wanted in tests]
    return {
        "question_id": "c",
        "metadata": json.dumps({"func_name": func_name}),
        "starter_code": "",
        "public_test_cases": json.dumps(cases),
        "private_test_cases": "[]",
    }


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def _official_and_lenient(example: dict, response: str) -> tuple[bool, bool]:
    official = grade_livecodebench(example, response, timeout_s=10)
    lenient = grade_livecodebench(example, response, timeout_s=10, mode="lenient")
    return official.passed, lenient.passed


SUM_PROBLEM = _stdin_problem([("1 2\n", "3\n"), ("5 5\n", "10\n")])


@pytest.mark.parametrize(
    "response, official_code, lenient_code",
    [
        # A python block followed by a text block: the text block is "the code" there.
        ("```python\nprint(3)\n```\nOutput:\n```text\n3\n```", "3", "print(3)"),
        # No fence at all: nothing.
        ("print(3)", "", "print(3)"),
        # A truncated final block: the text between the draft's closing fence and the final opening.
        ("```python\nprint(1)\n```\nBetter:\n```python\nprint(3)", "Better:", "print(3)"),
        ("```python\nprint(3)", "", "print(3)"),
        # Any line holding three backticks counts, whatever else it holds.
        ("Code: ```python\nprint(3)\nend ```", "print(3)", "Code: ```python\nprint(3)\nend ```"),
    ],
)
def test_livecodebench_extraction_between_the_last_two_fence_lines(
    response: str, official_code: str, lenient_code: str
) -> None:
    assert extract_livecodebench_code(response) == official_code
    assert extract_code(response) == lenient_code


def test_livecodebench_base_model_style_takes_the_whole_output() -> None:
    output = "a, b = map(int, input().split())\nprint(a + b)\n\n### Question\nnext..."
    assert extract_livecodebench_code(output, base_model_style=True) == output.strip()
    assert extract_livecodebench_code(output) == ""
    grade = grade_livecodebench(SUM_PROBLEM, "a, b = map(int, input().split())\nprint(a + b)\n", base_model_style=True)
    assert grade.passed


def test_python_block_then_text_block_fails_officially() -> None:
    response = _fenced("a, b = map(int, input().split())\nprint(a + b)") + "\nExample:\n```text\n3\n```"
    assert _official_and_lenient(SUM_PROBLEM, response) == (False, True)


@pytest.mark.parametrize(
    "code, official, lenient",
    [
        # The final __main__ guard is unwrapped, so main() runs although __name__ is not "__main__".
        (
            "import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n"
            "if __name__ == '__main__':\n    main()",
            True,
            True,
        ),
        # Every statement but the imports becomes the body of one function: module "globals" are locals.
        (
            "total = 0\ndef add(x):\n    global total\n    total += x\nfor x in map(int, input().split()):\n"
            "    add(x)\nprint(total)",
            False,
            True,
        ),
        # stdin is an in-memory object: descriptor 0 itself is empty.
        ("print(sum(map(int, open(0).read().split())))", False, True),
        # buffer.readline() always returns the first line there.
        (
            "import sys\nfirst = sys.stdin.buffer.readline().split()\nsecond = sys.stdin.buffer.readline().split()\n"
            "print(sum(map(int, first + second)))",
            False,
            True,
        ),
        # The in-memory stdin of the newer lcb_runner is not iterable.
        ("import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))", False, True),
        # SystemExit is swallowed: a non-zero exit after the right output still passes.
        ("import sys\nprint(sum(map(int, input().split())))\nsys.exit(1)", True, False),
        # quit is unavailable (reliability_guard), exit is not.
        ("print(sum(map(int, input().split())))\nquit()", False, True),
        ("print(sum(map(int, input().split())))\nexit()", True, True),
        # lcb_runner instantiates Solution whenever the text says "class Solution", stdin code included.
        ("class Solution:\n    pass\nprint(sum(map(int, input().split())))", False, True),
    ],
)
def test_livecodebench_stdin_runs_as_lcb_runner_runs_it(code: str, official: bool, lenient: bool) -> None:
    assert _official_and_lenient(SUM_PROBLEM, _fenced(code)) == (official, lenient)


def test_lcb_source_transformations() -> None:
    guarded = "x = 1\nif __name__ == '__main__':\n    print(x)"
    assert clean_if_name(guarded) == "x = 1\nprint(x)"
    not_last = "if __name__ == '__main__':\n    print(1)\ny = 2"
    assert clean_if_name(not_last) == not_last  # only a final guard is unwrapped
    assert clean_if_name("def broken(:") == "def broken(:"
    wrapped = make_function("import os\nx = 1\nfrom sys import argv\nprint(x)", "PREAMBLE")
    assert wrapped == "PREAMBLE\nimport os\nfrom sys import argv\ndef wrapped_function():\n    x = 1\n    print(x)"
    assert make_function("def broken(:", "PREAMBLE") == "def broken(:"


@pytest.mark.parametrize(
    "code, official, lenient",
    [
        # Without class Solution the module-level function is called.
        ("def pairSum(a, b):\n    return [a + b]", True, False),
        ("class Solution:\n    def pairSum(self, a, b):\n        return (a + b,)", True, True),  # top-level tuple
        # Only a top-level tuple becomes a list; a nested one stays a tuple and differs from the list.
        ("class Solution:\n    def pairSum(self, a, b):\n        return [(a + b,)][0:1]", False, True),
    ],
)
def test_livecodebench_call_based_as_lcb_runner(code: str, official: bool, lenient: bool) -> None:
    expected = "[[3]]" if "[0:1]" in code else "[3]"
    problem = _call_problem("pairSum", [("1\n2", expected)])
    assert _official_and_lenient(problem, _fenced(code)) == (official, lenient)


def test_livecodebench_dict_keys_are_not_stringified() -> None:
    problem = _call_problem("counts", [("[1, 1, 2]", '{"1": 2, "2": 1}')])
    int_keys = (
        "from collections import Counter\nclass Solution:\n    def counts(self, xs):\n        return dict(Counter(xs))"
    )
    assert _official_and_lenient(problem, _fenced(int_keys)) == (False, True)
    str_keys = int_keys.replace("dict(Counter(xs))", "{str(k): v for k, v in Counter(xs).items()}")
    assert _official_and_lenient(problem, _fenced(str_keys)) == (True, True)


def test_official_timeouts_are_per_benchmark() -> None:
    import inspect

    assert LIVECODEBENCH_TIMEOUT_S == 6.0 and HUMANEVAL_PRO_TIMEOUT_S == 3.0
    assert inspect.signature(grade_livecodebench).parameters["timeout_s"].default == LIVECODEBENCH_TIMEOUT_S
    assert inspect.signature(grade_humaneval_pro).parameters["timeout_s"].default == HUMANEVAL_PRO_TIMEOUT_S
    example = {"id": 0, "raw_problem": "def slow():\n", "new_problem": "", "test_code": "assert slow() == 1\n"}
    # 4 s of work: over HumanEval-Pro's 3 s for the whole program (the earlier default was 6 s).
    response = "    import time\n    time.sleep(4)\n    return 1\n"
    prefix = "```python\ndef slow():\n"
    assert grade_humaneval_pro(example, response, response_prefix=prefix).status == "timeout"
    assert grade_humaneval_pro(example, response, timeout_s=10, response_prefix=prefix).passed


HEP_EXAMPLE = {
    "id": 0,
    "raw_problem": 'def double(x):\n    """Twice x."""\n',
    "new_problem": "def quadruple(x):\n",
    "test_code": "assert quadruple(2) == 8\n",
}
HEP_PREFIX = '```python\ndef double(x):\n    """Twice x."""\n'
HEP_BODY = "    return 2 * x\n\ndef quadruple(x):\n    return double(double(x))\n"


def _hep_official_and_lenient(response: str) -> tuple[bool, bool]:
    official = grade_humaneval_pro(HEP_EXAMPLE, response, timeout_s=10, response_prefix=HEP_PREFIX)
    lenient = grade_humaneval_pro(HEP_EXAMPLE, response, timeout_s=10, response_prefix=HEP_PREFIX, mode="lenient")
    return official.passed, lenient.passed


def test_humaneval_pro_completion_ends_at_the_first_fence_anywhere() -> None:
    assert humaneval_pro_completion("    return 1\n```\nmore\n```python\nx\n```", "p") == "    return 1\n"
    assert humaneval_pro_completion("no fence", "p") == "no fence"
    assert humaneval_pro_completion("Sure:\n```python\ncode\n```\n", None) == "\ncode\n"  # API path
    # A code block after the first fence is ignored there; the lenient grader read it.
    later_block = "    pass\n```\nFixed version:\n```python\n" + HEP_BODY.replace("    return 2 * x\n", "") + "```"
    assert humaneval_pro_completion(later_block, HEP_PREFIX) == "    pass\n"


def test_humaneval_pro_repeated_prefix_is_not_deduplicated() -> None:
    assert _hep_official_and_lenient(HEP_PREFIX + HEP_BODY + "```") == (False, True)
    assert _hep_official_and_lenient(HEP_BODY + "```") == (True, True)


def test_humaneval_pro_runs_with_name_not_main() -> None:
    with_main_block = HEP_BODY + "\nif __name__ == '__main__':\n    raise SystemExit(1)\n"
    assert _hep_official_and_lenient(with_main_block) == (True, False)


def test_humaneval_pro_sanitised_completion_counts() -> None:
    assert sanitize_humaneval_pro("a\nif __name__ == 'x':\n# Test\n") == "a\n"
    assert sanitize_humaneval_pro("a\n# Test cases\nb") == "a\n"
    assert sanitize_humaneval_pro("a\n# Example usage\nb") == "a\n"
    assert sanitize_humaneval_pro("a\n# Examples:\nb") == "a\n# Examples:\nb"  # tested with, cut without the space
    response = HEP_BODY + "\n# Test\nprint(undefined_name)\n"
    grade = grade_humaneval_pro(HEP_EXAMPLE, response, timeout_s=10, response_prefix=HEP_PREFIX)
    assert grade.passed and grade.raw_passed is False and grade.sanitized_passed is True
    assert _hep_official_and_lenient(response) == (True, False)


def test_unknown_grading_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="code_grading"):
        grade_livecodebench(SUM_PROBLEM, _fenced("print(3)"), mode="strict")


# ---------------------------------------------------------------------------------------------
# Modules the harnesses have imported before their reliability guard (lcb_runner's testing_util
# imports numpy, its runners torch and datasets): a solution may import them as there.

from acm_exp.eval.harness_driver import LOADED_BEFORE_GUARD, imported_modules, modules_to_preload  # noqa: E402


def test_imported_modules_reads_every_kind_of_import() -> None:
    code = (
        "import numpy as np, os.path\nfrom collections import Counter, deque\nfrom . import sibling\n"
        "def f():\n    import pandas\n    return __import__('json'), importlib.import_module('heapq')\n"
        "from math import *\n"
    )
    assert imported_modules(code) == [
        ("numpy", ()),
        ("os.path", ()),
        ("collections", ("Counter", "deque")),
        ("math", ()),
        ("pandas", ()),
        ("json", ()),
        ("heapq", ()),
    ]
    assert imported_modules("def broken(:\n    import numpy") == []


def test_modules_to_preload_are_the_standard_library_and_the_harness_set() -> None:
    assert "numpy" in LOADED_BEFORE_GUARD["lcb"] and "torch" in LOADED_BEFORE_GUARD["lcb"]
    assert "torch" not in LOADED_BEFORE_GUARD["humaneval"] and "evaluate" in LOADED_BEFORE_GUARD["humaneval"]
    # Standard library: as named; side-effect modules never.
    assert modules_to_preload("import heapq\nimport this", "lcb") == [("heapq", ())]
    # A package of the harness's set, as named; numpy comes with any import outside the standard
    # library (the harness always has it, and scipy & co. import it).
    assert modules_to_preload("import pandas as pd", "lcb") == [("numpy", ()), ("pandas", ())]
    assert modules_to_preload("import scipy.optimize", "lcb") == [("numpy", ())]
    assert modules_to_preload("import torch", "humaneval") == [("numpy", ())]
    assert modules_to_preload("print(1)", "lcb") == []


def _lcb_passes(code: str, problem: dict | None = None) -> bool:
    return grade_livecodebench(problem or SUM_PROBLEM, _fenced(code), timeout_s=10).passed


@pytest.mark.parametrize(
    "code, passes",
    [
        ("import numpy as np\nprint(int(np.array(list(map(int, input().split()))).sum()))", True),
        ("def f():\n    import numpy\n    return int(numpy.sum(list(map(int, input().split()))))\nprint(f())", True),
        ("np = __import__('numpy')\nprint(int(np.sum(list(map(int, input().split())))))", True),
        ("import pandas as pd\nprint(int(pd.Series(list(map(int, input().split()))).sum()))", True),
        # lcb_runner has loaded concurrent.futures.process (and multiprocessing) before its guard.
        ("from concurrent.futures import ProcessPoolExecutor\nprint(sum(map(int, input().split())))", True),
        # What the guard blocks stays blocked, loaded before or not.
        ("import resource\nprint(sum(map(int, input().split())))", False),
        ("import os\nos.getcwd()\nprint(sum(map(int, input().split())))", False),
    ],
)
def test_livecodebench_solutions_import_what_lcb_runner_has_loaded(code: str, passes: bool) -> None:
    assert _lcb_passes(code) is passes


def test_livecodebench_call_based_solution_may_import_numpy() -> None:
    problem = _call_problem("pairSum", [("1\n2", "[3]")])
    code = "import numpy as np\nclass Solution:\n    def pairSum(self, a, b):\n        return [int(np.add(a, b))]"
    assert _lcb_passes(code, problem)


def test_humaneval_pro_solution_may_import_numpy() -> None:
    body = (
        "    import numpy as np\n    return int(np.multiply(2, x))\n\ndef quadruple(x):\n    return double(double(x))\n"
    )
    assert grade_humaneval_pro(HEP_EXAMPLE, body + "```", timeout_s=10, response_prefix=HEP_PREFIX).passed
