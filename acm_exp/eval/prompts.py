"""Prompt formats by name: how a benchmark example becomes the text a model continues.

- ``qwen25-math-cot``: ChatML, zero-shot, the Qwen2.5-Math system message (slow and merged models).
- ``cot``: few-shot "Question: ...\\nAnswer: ..." for fast base models; the exemplars are those of
  the family the benchmark's ``fewshot_set`` names, else its task's own, else the math family's
  (acm_exp.eval.tasks.gsm8k, .math), each answer ending in ``\\boxed{}`` so one grader reads every
  model.
- ``chat_template``: the model's own tokenizer chat template, with the generation prompt.
- ``toy``: the toy task's template (acm_exp.toy).

Code benchmarks take their task text from their family's code prompt (acm_exp.eval.tasks) and wrap
it in the same role format: ChatML (with the family's system message) or the chat template for chat
models, plain text for ``cot``; a family's response prefix (HumanEval-Pro: the raw problem's code,
as CodeEval-Pro's harness) then opens the response.

Multiple-choice benchmarks (HellaSwag) generate nothing: their choices are scored by log-likelihood
after the family's own context under every format (``choice_question``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.eval.tasks.base import (
    CODE_PROMPTS,
    FEWSHOT_EXEMPLARS,
    ChoiceQuestion,
    CodePrompt,
    Example,
    fewshot_name,
    task_name,
    task_of,
)

MATH_SYSTEM_MESSAGE = "Please reason step by step, and put your final answer within \\boxed{}."
# Appended to the user turn under the model's own chat template (DeepSeek-R1's recommendation:
# no system message, the instruction in the user turn).
CHAT_TEMPLATE_MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."

CHATML_STOP = ("<|im_end|>", "<|endoftext|>")
FEWSHOT_STOP = ("\nQuestion:",)
TOY_STOP = ("\nQ:",)


@dataclass(frozen=True)
class PromptFormat:
    name: str
    # (example, benchmark config, tokenizer, num_fewshot) -> prompt text.
    render: Callable[[Example, Mapping, Any, int], str]
    stop: tuple[str, ...]
    supports_code: bool = True


# ---------------------------------------------------------------------------------------------
# Building blocks


def chatml(system: str, user: str) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def fewshot_prompt(question: str, exemplars: tuple[tuple[str, str], ...], num_fewshot: int) -> str:
    shots = [f"Question: {q}\nAnswer: {a}" for q, a in exemplars[:num_fewshot]]
    return "\n\n".join([*shots, f"Question: {question}\nAnswer:"])


def is_code(benchmark_cfg: Mapping) -> bool:
    return benchmark_cfg.get("kind") == "code"


def is_multiple_choice(benchmark_cfg: Mapping) -> bool:
    return benchmark_cfg.get("kind") == "multiple_choice"


def code_task(benchmark_cfg: Mapping) -> CodePrompt:
    """The code prompt of a code benchmark's family."""
    task = task_of(benchmark_cfg).code_prompt
    if task is None:
        raise ConfigError(
            f"benchmark {benchmark_cfg.get('name')}: code task {task_name(benchmark_cfg)!r} has no prompt; "
            f"expected one of {tuple(CODE_PROMPTS)}"
        )
    return task


def with_response_prefix(prompt: str, example: Example, task: CodePrompt) -> str:
    return prompt + task.response_prefix(example.row) if task.response_prefix else prompt


def apply_chat_template(tokenizer: Any, user: str) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "prompt 'chat_template' needs a tokenizer with a chat template; "
            "expected a chat model or another prompt (qwen25-math-cot, cot)"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )


# ---------------------------------------------------------------------------------------------
# Formats


def _render_qwen25_math_cot(example: Example, cfg: Mapping, tokenizer: Any, num_fewshot: int) -> str:
    if is_code(cfg):
        task = code_task(cfg)
        return with_response_prefix(chatml(task.system, task.text(example.row)), example, task)
    return chatml(MATH_SYSTEM_MESSAGE, example.question)


def _render_cot(example: Example, cfg: Mapping, tokenizer: Any, num_fewshot: int) -> str:
    if is_code(cfg):
        # Base models complete the code task as plain text; few-shot math exemplars would mislead.
        task = code_task(cfg)
        return with_response_prefix(task.text(example.row) + "\n", example, task)
    return fewshot_prompt(example.question, FEWSHOT_EXEMPLARS[fewshot_name(cfg)], num_fewshot)


def _render_chat_template(example: Example, cfg: Mapping, tokenizer: Any, num_fewshot: int) -> str:
    if is_code(cfg):
        task = code_task(cfg)
        return with_response_prefix(apply_chat_template(tokenizer, task.text(example.row)), example, task)
    return apply_chat_template(tokenizer, example.question + CHAT_TEMPLATE_MATH_INSTRUCTION)


def _render_toy(example: Example, cfg: Mapping, tokenizer: Any, num_fewshot: int) -> str:
    from acm_exp.toy import TOY_PROMPT_TEMPLATE

    return TOY_PROMPT_TEMPLATE.format(question=example.question)


PROMPTS: dict[str, PromptFormat] = {
    "qwen25-math-cot": PromptFormat("qwen25-math-cot", _render_qwen25_math_cot, CHATML_STOP),
    "cot": PromptFormat("cot", _render_cot, FEWSHOT_STOP),
    "chat_template": PromptFormat("chat_template", _render_chat_template, ()),
    "toy": PromptFormat("toy", _render_toy, TOY_STOP, supports_code=False),
}


def get_prompt(prompt_name: str) -> PromptFormat:
    if prompt_name not in PROMPTS:
        raise ConfigError(f"prompt {prompt_name!r} is unknown; expected one of {tuple(PROMPTS)}")
    return PROMPTS[prompt_name]


def validate_prompt(prompt_name: str, benchmark_cfg: Mapping, num_fewshot: int) -> None:
    """Raise ConfigError when the prompt cannot serve the benchmark (checked before models load)."""
    prompt = get_prompt(prompt_name)
    if is_multiple_choice(benchmark_cfg):
        return  # scored on its family's own context, whatever the prompt format
    if is_code(benchmark_cfg) and not prompt.supports_code:
        raise ConfigError(
            f"prompt {prompt_name!r} cannot prompt code benchmark {benchmark_cfg.get('name')!r}; "
            "expected qwen25-math-cot, cot or chat_template"
        )
    if is_code(benchmark_cfg):
        code_task(benchmark_cfg)
    if prompt_name == "cot" and not is_code(benchmark_cfg):
        fewshot_set = fewshot_name(benchmark_cfg)
        available = len(FEWSHOT_EXEMPLARS.get(fewshot_set, ()))
        if not 0 <= num_fewshot <= available:
            raise ConfigError(
                f"eval.num_fewshot={num_fewshot} for benchmark {benchmark_cfg.get('name')!r} "
                f"(fewshot_set {fewshot_set!r}); expected 0..{available}"
            )


def build_prompt(
    prompt_name: str, example: Example, benchmark_cfg: Mapping, tokenizer: Any = None, num_fewshot: int = 0
) -> str:
    """The text the model continues for one example under the named prompt format. A
    multiple-choice benchmark's is its family's context, under every format: lm-evaluation-harness
    scores the choices after the bare context, zero-shot."""
    if is_multiple_choice(benchmark_cfg):
        return choice_question(example, benchmark_cfg).context
    return get_prompt(prompt_name).render(example, benchmark_cfg, tokenizer, num_fewshot)


def choice_question(example: Example, benchmark_cfg: Mapping) -> ChoiceQuestion:
    """The context, choices and gold index of a multiple-choice example (its family reads them)."""
    read_question = task_of(benchmark_cfg).choice_question
    if read_question is None:
        raise ConfigError(
            f"benchmark {benchmark_cfg.get('name')}: task {task_name(benchmark_cfg)!r} scores no choices; "
            "expected a multiple-choice task (e.g. hellaswag)"
        )
    return read_question(example)


def stop_strings(prompt_name: str, benchmark_cfg: Mapping | None = None) -> tuple[str, ...]:
    """Strings that end a response: the prompt format's, plus a code task's own (the tokenizer's
    EOS always ends it too)."""
    stops = get_prompt(prompt_name).stop
    if benchmark_cfg is not None and is_code(benchmark_cfg):
        stops = stops + tuple(s for s in code_task(benchmark_cfg).stop if s not in stops)
    return stops


def unencodable_stops(tokenizer: Any, stops: tuple[str, ...]) -> list[str]:
    """Stop strings the tokenizer cannot represent: they encode to its unknown token or do not decode
    back to themselves, so generation could never see them and would run to the token limit."""
    special = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    bad = []
    for text in stops:
        if text in special:
            continue
        ids = tokenizer.encode(text, add_special_tokens=False)
        decoded = tokenizer.decode(ids, skip_special_tokens=False)
        has_unknown = tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids
        # Whitespace is compared loosely: SentencePiece tokenizers add or drop a leading space.
        if not ids or has_unknown or "".join(decoded.split()) != "".join(text.split()):
            bad.append(text)
    return bad
