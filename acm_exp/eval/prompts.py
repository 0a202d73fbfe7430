"""Prompt formats by name: how a benchmark example becomes the text a model continues.

- ``qwen25-math-cot``: ChatML, zero-shot, the Qwen2.5-Math system message (slow and merged models).
- ``cot``: few-shot "Question: ...\\nAnswer: ..." for fast base models; exemplars embedded below
  (the GSM8K chain-of-thought exemplars of Wei et al. 2022, the Minerva MATH prompt of
  Lewkowycz et al. 2022), each answer ending in ``\\boxed{}`` so one grader reads every model.
- ``chat_template``: the model's own tokenizer chat template, with the generation prompt.
- ``toy``: the toy task's template (acm_exp.toy).

Code benchmarks take their task text from acm_exp.eval.code and wrap it in the same role format:
ChatML (with the benchmark's system message) or the chat template for chat models, plain text for
``cot``; HumanEval-Pro then opens the response with the raw problem's code (CodeEval-Pro's harness).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.eval.benchmarks import Example

MATH_SYSTEM_MESSAGE = "Please reason step by step, and put your final answer within \\boxed{}."
# HumanEval-Pro under ChatML: the math system message would ask for \boxed{}, which code graders
# ignore; the classic ChatML default keeps the model in its assistant role without that demand.
# (LiveCodeBench brings its own, lcb_runner's.)
CODE_SYSTEM_MESSAGE = "You are a helpful assistant."
# Appended to the user turn under the model's own chat template (DeepSeek-R1's recommendation:
# no system message, the instruction in the user turn).
CHAT_TEMPLATE_MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."

CHATML_STOP = ("<|im_end|>", "<|endoftext|>")
FEWSHOT_STOP = ("\nQuestion:",)
TOY_STOP = ("\nQ:",)

GSM8K_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
        "there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
        "been 21 - 15 = 6. The answer is \\boxed{6}.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is \\boxed{5}.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
        "they had 74 - 35 = 39. The answer is \\boxed{39}.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
        "Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
        "The answer is \\boxed{8}.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have "
        "now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9. The answer is \\boxed{9}.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday to "
        "thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
        "computers were added. 9 + 20 is 29. The answer is \\boxed{29}.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
        "balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
        "he had 35 - 2 = 33 golf balls. The answer is \\boxed{33}.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
        "left. 23 - 15 is 8. The answer is \\boxed{8}.",
    ),
)

MATH_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
        "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives "
        "$x<5$. Therefore, the domain of the expression is $[2,5)$. The answer is $\\boxed{[2,5)}$.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = 24.$ "
        "The answer is $\\boxed{24}$.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
        "times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of "
        "weight. If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
        "$2\\cdot15\\cdot n=30n$ pounds of weight. Equating this to 480 pounds, we can solve for $n$: "
        "$30n=480$, so $n=480/30=16$. The answer is $\\boxed{16}$.",
    ),
    (
        "If the system of equations\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}\nhas a solution "
        "$(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain $$6y-9x=-\\frac{3}{2}a.$$ Since we also "
        "know that $6y-9x=b$, we have $$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=-\\frac{2}{3}.$$ "
        "The answer is $\\boxed{-\\frac{2}{3}}$.",
    ),
)

FEWSHOT_EXEMPLARS: dict[str, tuple[tuple[str, str], ...]] = {"gsm8k": GSM8K_EXEMPLARS, "math": MATH_EXEMPLARS}


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


@dataclass(frozen=True)
class CodeTask:
    """How a code benchmark is prompted, whatever the role format around it."""

    # example row -> the task text (the user turn).
    text: Callable[[Mapping], str]
    # The system message under ChatML.
    system: str
    # example row -> text the response is made to start with (appended after the role format's
    # assistant opening; the grader puts it back in front of the response), or None.
    response_prefix: Callable[[Mapping], str] | None
    # Extra stop strings: HumanEval-Pro's answer is the code block the prefix opens, so its
    # closing fence ends the answer (the grader reads that first block).
    stop: tuple[str, ...] = ()


def code_tasks() -> dict[str, CodeTask]:
    from acm_exp.eval import code

    return {
        "humaneval_pro": CodeTask(
            code.humaneval_pro_prompt, CODE_SYSTEM_MESSAGE, code.humaneval_pro_response_prefix, stop=("\n```",)
        ),
        "livecodebench": CodeTask(code.livecodebench_prompt, code.LIVECODEBENCH_SYSTEM_MESSAGE, None),
    }


def code_task(benchmark_cfg: Mapping) -> CodeTask:
    """The code task of a code benchmark, by its grader."""
    grader = benchmark_cfg.get("grader")
    tasks = code_tasks()
    if grader not in tasks:
        raise ConfigError(
            f"benchmark {benchmark_cfg.get('name')}: code grader {grader!r} has no prompt; "
            f"expected one of {tuple(tasks)}"
        )
    return tasks[grader]


def with_response_prefix(prompt: str, example: Example, task: CodeTask) -> str:
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
    return fewshot_prompt(example.question, FEWSHOT_EXEMPLARS[cfg.get("fewshot_set", "math")], num_fewshot)


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
    if is_code(benchmark_cfg) and not prompt.supports_code:
        raise ConfigError(
            f"prompt {prompt_name!r} cannot prompt code benchmark {benchmark_cfg.get('name')!r}; "
            "expected qwen25-math-cot, cot or chat_template"
        )
    if is_code(benchmark_cfg):
        code_task(benchmark_cfg)
    if prompt_name == "cot" and not is_code(benchmark_cfg):
        available = len(FEWSHOT_EXEMPLARS.get(benchmark_cfg.get("fewshot_set"), ()))
        if not 0 <= num_fewshot <= available:
            raise ConfigError(
                f"eval.num_fewshot={num_fewshot} for benchmark {benchmark_cfg.get('name')!r} "
                f"(fewshot_set {benchmark_cfg.get('fewshot_set')!r}); expected 0..{available}"
            )


def build_prompt(
    prompt_name: str, example: Example, benchmark_cfg: Mapping, tokenizer: Any = None, num_fewshot: int = 0
) -> str:
    """The text the model continues for one example under the named prompt format."""
    return get_prompt(prompt_name).render(example, benchmark_cfg, tokenizer, num_fewshot)


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
