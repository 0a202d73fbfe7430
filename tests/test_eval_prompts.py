"""Prompt formats: exact ChatML text, few-shot layout, chat templates, code wrapping, validation."""

from __future__ import annotations

import re

import pytest
from model_factory import save_tokenizer

from acm_exp.errors import ConfigError
from acm_exp.eval.benchmarks import Example
from acm_exp.eval.prompts import (
    FEWSHOT_EXEMPLARS,
    PROMPTS,
    build_prompt,
    stop_strings,
    validate_prompt,
)

MATH = {"name": "math500", "kind": "math", "grader": "math", "fewshot_set": "math"}
GSM8K = {"name": "gsm8k", "kind": "math", "grader": "gsm8k", "fewshot_set": "gsm8k"}
HUMANEVAL_PRO = {"name": "humaneval_pro", "kind": "code", "grader": "humaneval_pro", "fewshot_set": "math"}
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def example(question: str = "What is $1+1$?", row: dict | None = None) -> Example:
    return Example(id="0", question=question, gold="2", row=row or {})


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    tokenizer = save_tokenizer(tmp_path_factory.mktemp("chat_tokenizer"))
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def test_qwen25_math_cot_is_exact_chatml():
    prompt = build_prompt("qwen25-math-cot", example("Compute $2^{10}$."), MATH)
    assert prompt == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nCompute $2^{10}$.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "<|im_end|>" in stop_strings("qwen25-math-cot")


@pytest.mark.parametrize("shots", [0, 1, 4])
def test_cot_few_shot_layout(shots):
    prompt = build_prompt("cot", example("How many legs do 3 cats have?"), MATH, num_fewshot=shots)
    assert prompt.count("Question: ") == shots + 1
    assert prompt.endswith("Question: How many legs do 3 cats have?\nAnswer:")
    blocks = prompt.split("\n\n")
    assert len(blocks) == shots + 1
    for block in blocks[:-1]:
        assert block.startswith("Question: ") and "\nAnswer: " in block
        assert re.search(r"The answer is \$?\\boxed\{.+\}\$?\.$", block), block
    assert stop_strings("cot") == ("\nQuestion:",)


def test_cot_uses_the_benchmark_exemplar_set():
    gsm8k = build_prompt("cot", example("q?"), GSM8K, num_fewshot=8)
    assert gsm8k.startswith("Question: There are 15 trees in the grove.")
    assert gsm8k.count("Question: ") == 9
    math = build_prompt("cot", example("q?"), MATH, num_fewshot=2)
    assert math.startswith("Question: Find the domain of the expression")
    assert len(FEWSHOT_EXEMPLARS["gsm8k"]) == 8 and len(FEWSHOT_EXEMPLARS["math"]) == 4


def test_chat_template_uses_the_tokenizer(chat_tokenizer):
    prompt = build_prompt("chat_template", example("What is 2+2?"), MATH, chat_tokenizer)
    assert prompt == (
        "<|im_start|>user\nWhat is 2+2?\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_template_without_template_is_a_config_error(tmp_path):
    tokenizer = save_tokenizer(tmp_path)
    with pytest.raises(ConfigError, match="chat template"):
        build_prompt("chat_template", example(), MATH, tokenizer)


def test_humaneval_pro_wraps_the_task_and_opens_the_answer(chat_tokenizer, shared_data_dir):
    from acm_exp.eval.benchmarks import read_rows
    from acm_exp.eval.tasks.humaneval_pro import humaneval_pro_prompt, humaneval_pro_response_prefix

    row = read_rows(shared_data_dir / "humaneval_pro" / "humaneval_pro.json")[0]
    task, prefix = humaneval_pro_prompt(row), humaneval_pro_response_prefix(row)
    assert prefix.startswith("```python\n")
    item = example(row["new_problem"], row)
    assert build_prompt("cot", item, HUMANEVAL_PRO) == f"{task}\n{prefix}"
    chatml = build_prompt("qwen25-math-cot", item, HUMANEVAL_PRO)
    assert chatml == (
        f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{task}<|im_end|>\n"
        f"<|im_start|>assistant\n{prefix}"
    )
    templated = build_prompt("chat_template", item, HUMANEVAL_PRO, chat_tokenizer)
    assert templated == f"<|im_start|>user\n{task}<|im_end|>\n<|im_start|>assistant\n{prefix}"
    # The answer is the code block the prefix opened: its closing fence ends generation.
    assert stop_strings("qwen25-math-cot", HUMANEVAL_PRO) == ("<|im_end|>", "<|endoftext|>", "\n```")


def test_livecodebench_uses_its_system_message():
    from acm_exp.eval.tasks.livecodebench import LIVECODEBENCH_SYSTEM_MESSAGE, livecodebench_prompt

    row = {"question_id": "q1", "question_content": "Read n and print n+1.", "starter_code": ""}
    cfg = {"name": "livecodebench", "kind": "code", "grader": "livecodebench"}
    prompt = build_prompt("qwen25-math-cot", example(row["question_content"], row), cfg)
    assert prompt == (
        f"<|im_start|>system\n{LIVECODEBENCH_SYSTEM_MESSAGE}<|im_end|>\n"
        f"<|im_start|>user\n{livecodebench_prompt(row)}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert stop_strings("qwen25-math-cot", cfg) == stop_strings("qwen25-math-cot")


def test_toy_prompt():
    from acm_exp.toy import TOY_PROMPT_TEMPLATE

    assert build_prompt("toy", example("2+3"), {"name": "toy", "kind": "math"}) == TOY_PROMPT_TEMPLATE.format(
        question="2+3"
    )


def test_validate_prompt():
    validate_prompt("qwen25-math-cot", MATH, 4)
    validate_prompt("cot", GSM8K, 8)
    with pytest.raises(ConfigError, match="prompt 'nope' is unknown"):
        validate_prompt("nope", MATH, 0)
    with pytest.raises(ConfigError, match=r"eval.num_fewshot=5 .*expected 0..4"):
        validate_prompt("cot", MATH, 5)
    with pytest.raises(ConfigError, match="cannot prompt code benchmark"):
        validate_prompt("toy", HUMANEVAL_PRO, 0)
    assert set(PROMPTS) == {"qwen25-math-cot", "cot", "chat_template", "toy"}
