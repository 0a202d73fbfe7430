"""Sens-Merging's texts per model (acm_exp.acm.sens_texts), the skip rule for samples that cannot be
scored, s1K-1.1's responses, and the provider's one-line failure when no sample is usable."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from acm_exp.acm import sens_texts
from acm_exp.acm.sens_provider import sample_counts
from acm_exp.acm.sens_texts import SensTexts, describe_skipped, l2s_texts, template_texts
from acm_exp.acm.sens_texts import sens_texts as texts_for
from acm_exp.calibration import load_corpus, response_fields, validate_config
from acm_exp.config import CalibrationConfig, SensConfig
from acm_exp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
S1K_1_1_TEMPLATE = "<think>\n{deepseek_thinking_trajectory}\n</think>\n\n{deepseek_attempt}"


def s1k_1_1_row(question: str, solution: str, thinking: str | None, attempt: str | None) -> dict:
    """A row in s1K-1.1's schema (simplescaling/s1K-1.1: the s1K columns plus Gemini's and DeepSeek-R1's
    thinking trajectory and attempt, and their grades)."""
    return {
        "solution": solution,
        "question": question,
        "cot_type": "math",
        "source_type": "AI-MO/NuminaMath-CoT/aops_forum",
        "metadata": "{}",
        "gemini_thinking_trajectory": "Let me think about it.",
        "gemini_attempt": "The answer is 5.",
        "deepseek_thinking_trajectory": thinking,
        "deepseek_attempt": attempt,
        "gemini_grade": "Yes",
        "gemini_grade_reason": "",
        "deepseek_grade": "Yes",
        "deepseek_grade_reason": "",
    }


def s1k_1_1_config() -> CalibrationConfig:
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "calibration" / "s1k_1_1.yaml"))
    loaded.pop("defaults")
    return CalibrationConfig(**loaded)


# ---------------------------------------------------------------------------------------------
# The L2S texts


def test_l2s_texts_score_the_base_on_the_short_solution_and_the_finetuned_model_on_its_response():
    records = [
        {
            "question": " What is 2+3? ",
            "solution": "2 plus 3 is $\\boxed{5}$.\n",
            "dpsk_res": "<think>\nTwo and three make five.\n</think>\n\n**5**  ",
        }
    ]
    cfg, sens = CalibrationConfig(name="c", source="x.jsonl"), SensConfig()
    base = texts_for(records, cfg, sens, "base")
    # layer_sensitivity_sens.py, prompt_format "question_cot" / "question_dpsk" (the EOS is added when tokenizing)
    assert base.examples == [("<|question|>\nWhat is 2+3?\n\n<|cot_solution|>\n", "2 plus 3 is $\\boxed{5}$.")]
    finetuned = texts_for(records, cfg, sens, "finetuned")
    assert finetuned.examples == [
        ("<|question|>\nWhat is 2+3?\n\n<|dpsk_res|>\n", "<think>\nTwo and three make five.\n</think>\n\n**5**")
    ]
    assert base.description == "l2s (solution)" and finetuned.description == "l2s (dpsk_res)"
    assert base.skipped == finetuned.skipped == {}


def test_records_without_a_response_are_skipped_and_counted():
    records = [
        {"question": "What is 2+3?", "solution": "so $\\boxed{5}$"},
        {"question": "What is 7-1?", "solution": "so $\\boxed{6}$", "dpsk_res": "6"},
        {"question": "What is 1+1?", "solution": "  ", "dpsk_res": "   "},
    ]
    cfg, sens = CalibrationConfig(name="c", source="x.jsonl"), SensConfig()
    finetuned = texts_for(records, cfg, sens, "finetuned")
    assert finetuned.examples == [("<|question|>\nWhat is 7-1?\n\n<|dpsk_res|>\n", "6")]
    assert finetuned.skipped == {"no_response": 2} and finetuned.records == 3
    base = texts_for(records, cfg, sens, "base")
    assert len(base.examples) == 2 and base.skipped == {"no_solution": 1}


def test_a_corpus_without_responses_falls_back_to_the_templates_and_says_so(caplog):
    records = [
        {"question": "What is 2+3?", "solution": "so $\\boxed{5}$"},
        {"question": "Prove that there are infinitely many primes.", "solution": "Suppose finitely many..."},
    ]
    cfg, sens = CalibrationConfig(name="c", source="x.jsonl"), SensConfig()
    with caplog.at_level("WARNING", logger="acm_exp.acm.sens_texts"):
        finetuned = texts_for(records, cfg, sens, "finetuned")
    assert finetuned.description == "template (short answers)"
    # The proof has no final answer: skipped, never a failure.
    assert finetuned.examples == [("What is 2+3?\n\n", "The final answer is $\\boxed{5}$.")]
    assert finetuned.skipped == {"no_extractable_answer": 1}
    assert "no calibration record of 'c' has the finetuned model's answer (dpsk_res)" in caplog.text
    # The base keeps the L2S format: its solutions are there.
    assert texts_for(records, cfg, sens, "base").description == "l2s (solution)"


def test_template_answers_take_the_answer_field_else_the_solutions_final_answer(caplog):
    records = [
        {"question": "What is 2+3?", "solution": "2 plus 3 is $\\boxed{5}$."},
        {"question": "What is 7-1?", "solution": "Seven minus one: the answer is 6", "gold": "six"},
        {"question": "Show it.", "solution": "It follows."},
    ]
    cfg, sens = CalibrationConfig(name="c", source="local.jsonl"), SensConfig()
    long = template_texts(records, cfg, sens, "long")
    assert long.examples == [(f"{r['question']}\n\n", r["solution"]) for r in records] and not long.skipped
    short = template_texts(records, cfg, sens, "short")
    assert [answer for _, answer in short.examples] == [
        "The final answer is $\\boxed{5}$.",
        "The final answer is $\\boxed{6}$.",
    ]
    assert short.skipped == {"no_extractable_answer": 1}
    with_field = template_texts(records, cfg, replace(sens, answer_field="gold"), "short")
    assert [answer for _, answer in with_field.examples] == [
        "The final answer is $\\boxed{5}$.",
        "The final answer is $\\boxed{six}$.",
    ]
    with caplog.at_level("WARNING", logger="acm_exp.acm.sens_texts"):
        template_texts(records, cfg, replace(sens, answer_field="answer"), "short")
    assert "sens.answer_field='answer' is a field of no selected record" in caplog.text
    with pytest.raises(ConfigError, match="no solution_field; long answers need one"):
        template_texts(records, replace(cfg, solution_field=None), sens, "long")


def test_template_format_keeps_the_templates_for_both_models():
    records = [{"question": "What is 2+3?", "solution": "so $\\boxed{5}$", "dpsk_res": "5"}]
    cfg, sens = CalibrationConfig(name="c", source="x.jsonl"), SensConfig(format="template")
    assert texts_for(records, cfg, sens, "base") == template_texts(records, cfg, sens, "long")
    assert texts_for(records, cfg, sens, "finetuned") == template_texts(records, cfg, sens, "short")
    with pytest.raises(ConfigError, match="sens.format='mixed'"):
        sens_texts.validate_answer_templates(SensConfig(format="mixed"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("base_answers", "medium", "sens.base_answers='medium'; expected one of"),
        ("long_answer_template", "{steps}", "is not a template with only {solution}"),
        ("short_answer_template", "no placeholder", "expected a template containing {answer}"),
    ],
)
def test_answer_templates_are_validated(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        sens_texts.validate_answer_templates(replace(SensConfig(), **{field: value}))


# ---------------------------------------------------------------------------------------------
# s1K-1.1: DeepSeek-R1's responses


def test_s1k_1_1_scores_the_finetuned_model_on_r1s_thinking_and_attempt():
    cfg = s1k_1_1_config()
    assert (cfg.source, cfg.text_field, cfg.solution_field) == ("simplescaling/s1K-1.1", "question", "solution")
    assert cfg.response_template == S1K_1_1_TEMPLATE
    assert response_fields(cfg.response_template) == ["deepseek_thinking_trajectory", "deepseek_attempt"]
    records = [
        s1k_1_1_row("What is 2+3? ", "5", "Two plus three.\nThat is five. ", " The answer is $\\boxed{5}$."),
        s1k_1_1_row("What is 7-1?", "6", None, "6"),  # no thinking trajectory: no R1 response
    ]
    finetuned = texts_for(records, cfg, SensConfig(), "finetuned")
    assert finetuned.examples == [
        (
            "<|question|>\nWhat is 2+3?\n\n<|dpsk_res|>\n",
            "<think>\nTwo plus three.\nThat is five.\n</think>\n\nThe answer is $\\boxed{5}$.",
        )
    ]
    assert finetuned.skipped == {"no_response": 1}
    assert finetuned.description == f"l2s (calibration.response_template {S1K_1_1_TEMPLATE!r})"
    base = texts_for(records, cfg, SensConfig(), "base")
    assert [answer for _, answer in base.examples] == ["5", "6"]


def test_s1k_1_1_loads_from_a_local_copy_under_the_data_dir(tmp_path):
    rows = [s1k_1_1_row(f"Question {i}?", str(i), f"thinking {i}", f"attempt {i}") for i in range(3)]
    (tmp_path / "s1k_1_1").mkdir()
    (tmp_path / "s1k_1_1" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_corpus(s1k_1_1_config(), data_dir=tmp_path) == rows


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{deepseek_attempt", "is not a format string"),
        ("no fields", "expected \\{field\\} placeholders"),
        ("{0}", "expected \\{field\\} placeholders"),
    ],
)
def test_a_bad_response_template_is_a_config_error(template, message):
    with pytest.raises(ConfigError, match=f"calibration.response_template=.*{message}"):
        validate_config(replace(s1k_1_1_config(), response_template=template))


# ---------------------------------------------------------------------------------------------
# Counting what was skipped


def test_skip_counts_add_the_text_and_token_reasons():
    counts = sample_counts(100, {"no_extractable_answer": 3}, {"skipped": {"too_long": 40}})
    assert counts == {"records": 100, "scored": 57, "skipped": {"no_extractable_answer": 3, "too_long": 40}}
    assert sample_counts(5, {}, {}) == {"records": 5, "scored": 5, "skipped": {}}
    assert describe_skipped(counts["skipped"], 2048) == (
        "3 without an extractable answer, 40 too long for sens.max_tokens=2048"
    )
    assert SensTexts([("q", "a")], "x", {"no_response": 2}).records == 3
    assert l2s_texts([], CalibrationConfig(name="c", source="x.jsonl"), SensConfig(), "base").examples == []
