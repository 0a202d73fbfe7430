"""eval.grading.numeric: composed by Hydra, checked before any model loads, used by the math
graders, and recorded in every math benchmark's results row."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_config import compose_config

from acm_exp.errors import ConfigError
from acm_exp.eval import validate_eval_config
from acm_exp.eval.benchmarks import Example
from acm_exp.eval.graders import grade_all


def test_default_rule_is_precision_and_the_switch_composes() -> None:
    assert compose_config("eval=l2s").eval.grading.numeric == "precision"
    assert compose_config("eval=l2s", "eval.grading.numeric=qwen").eval.grading.numeric == "qwen"


def test_unknown_rule_is_a_config_error_at_validation() -> None:
    cfg = compose_config("eval=toy", "eval.grading.numeric=tolerance")
    with pytest.raises(ConfigError, match="eval.grading.numeric='tolerance'"):
        validate_eval_config(cfg.eval, None, prompts=["toy"])


@pytest.mark.parametrize(("rule", "expected"), [("precision", [False, True]), ("qwen", [True, True])])
def test_grade_all_uses_the_configured_rule(rule: str, expected: list[bool]) -> None:
    examples = [Example(id="0", question="q", gold="70000", row={}), Example(id="1", question="q", gold="14", row={})]
    responses = ["so \\boxed{70001.0}", "so \\boxed{14}"]
    for grader in ("math", "gsm8k"):
        grades = grade_all(grader, examples, responses, workers=1, math_numeric=rule)
        assert [grade.correct for grade in grades] == expected


@pytest.mark.parametrize("rule", ["precision", "qwen"])
def test_results_rows_record_the_numeric_rule(rule: str, tmp_path: Path) -> None:
    from acm_exp.results import build_rows

    cfg = compose_config("model_pair=toy", "eval=general", "eval.sandbox=none", f"eval.grading.numeric={rule}")
    rows = [
        {
            "model": "merged",
            "role": "merged",
            "benchmark": name,
            "seed": 0,
            "accuracy": 50.0,
            "mean_tokens": 10.0,
            "n": 2,
        }
        for name in ("gsm8k", "humaneval_pro")
    ]
    records = {r["benchmark"]: r for r in build_rows(cfg, tmp_path, rows, commit="test")}
    assert records["gsm8k"]["math_numeric"] == rule
    assert records["humaneval_pro"]["math_numeric"] is None
