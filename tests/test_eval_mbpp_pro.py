"""MBPP-Pro (CodeEval-Pro/mbpp-pro): CodeEval-Pro's second benchmark, prompted and graded by the same
harness as HumanEval-Pro. The rows here are hand-made in the hub's schema (id, raw_problem,
raw_solution, new_problem, new_solution, test_code); the real ones come from the hub."""

from __future__ import annotations

import json

import pytest
from app_config import compose_config

from acm_exp.errors import ConfigError
from acm_exp.eval.benchmarks import load_benchmark
from acm_exp.eval.prompts import build_prompt, stop_strings
from acm_exp.eval.runner import validate_eval_config
from acm_exp.eval.tasks import GRADERS, Example, GradeSettings, get_task

ROW = {
    "id": 7,
    "raw_problem": "# Write a function to add two numbers.\ndef add(a, b):\n",
    "raw_solution": "    return a + b\n",
    "new_problem": "# Write a function to add three numbers with add.\ndef add3(a, b, c):\n",
    "new_solution": "    return add(add(a, b), c)\n",
    "test_code": "assert add3(1, 2, 3) == 6\nassert add3(0, 0, 0) == 0",
}


def mbpp_pro_cfg():
    return compose_config("eval=general_llama").eval.benchmarks.mbpp_pro


def test_the_yaml_reads_the_hub_dataset_of_codeeval_pro():
    cfg = mbpp_pro_cfg()
    assert (cfg.task, cfg.kind, cfg.source, cfg.split) == ("mbpp_pro", "code", "CodeEval-Pro/mbpp-pro", "train")
    assert (cfg.id_field, cfg.question_field, cfg.answer_field, cfg.timeout_s) == ("id", "new_problem", None, 3.0)


def test_prompt_is_codeeval_pros_for_both_benchmarks():
    example = Example(id="7", question=ROW["new_problem"], gold=None, row=ROW)
    humaneval = compose_config("eval=code").eval.benchmarks.humaneval_pro
    for prompt in ("cot", "qwen25-math-cot"):
        assert build_prompt(prompt, example, mbpp_pro_cfg()) == build_prompt(prompt, example, humaneval)
    text = build_prompt("cot", example, mbpp_pro_cfg())
    assert text.startswith(
        "Write a solution of python file to the following problems, the solution of the second problem "
        "requires single or multiple calls to the first solution.\n```python\n# Write a function to add two"
    )
    # The response opens with the raw problem's code; its closing fence ends the answer.
    assert text.endswith("```python\n# Write a function to add two numbers.\ndef add(a, b):\n")
    assert stop_strings("cot", mbpp_pro_cfg())[-1] == "\n```"


@pytest.mark.parametrize(
    ("response", "passed"),
    [
        # The continuation of the raw stub, then the second function, then the closing fence.
        ("    return a + b\n\ndef add3(a, b, c):\n    return add(add(a, b), c)\n```\n", True),
        ("    return a - b\n\ndef add3(a, b, c):\n    return add(add(a, b), c)\n```\n", False),
    ],
)
def test_grading_runs_raw_problem_completion_and_tests(response, passed):
    example = Example(id="7", question=ROW["new_problem"], gold=None, row=ROW)
    grade = GRADERS["mbpp_pro"].grade(example, response, GradeSettings())
    assert grade.correct is passed
    assert grade.status == ("passed" if passed else "wrong_answer")


def test_a_row_missing_a_field_names_mbpp_pro():
    row = {key: value for key, value in ROW.items() if key != "test_code"}
    with pytest.raises(ConfigError, match=r"MBPP-Pro example 7: missing text field\(s\) \['test_code'\]"):
        get_task("mbpp_pro").code_prompt.text(row)


def test_a_local_copy_in_the_hub_schema_loads_and_validates(tmp_path):
    (tmp_path / "mbpp_pro").mkdir()
    (tmp_path / "mbpp_pro" / "mbpp_pro.json").write_text(json.dumps([ROW, {**ROW, "id": 8}]))
    eval_cfg = compose_config("eval=general_llama", "eval.sandbox=none").eval
    validate_eval_config(eval_cfg, tmp_path, prompts=["cot"])
    examples = load_benchmark(eval_cfg.benchmarks.mbpp_pro, tmp_path)
    assert [(ex.id, ex.gold) for ex in examples] == [("7", None), ("8", None)]
