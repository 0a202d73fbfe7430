"""Tiny, seeded, locally built models and tokenizers for tests and benchmarks (no hub access)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789 +-=*/.,:?!()\n")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def save_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_config(
    architecture: str = "qwen2", *, tie: bool = False, vocab_size: int = 64, layers: int = 2, hidden: int = 32
):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    if architecture == "qwen2":
        return Qwen2Config(**common)
    if architecture == "llama":
        return LlamaConfig(**common)
    raise ValueError(architecture)


def make_model(
    directory: Path,
    *,
    seed: int = 0,
    architecture: str = "qwen2",
    tie: bool = False,
    dtype: torch.dtype = torch.float32,
    shard_size: str | None = None,
    vocab_size: int = 64,
    layers: int = 2,
    hidden: int = 32,
    from_model: Path | None = None,
    noise: float = 0.02,
) -> Path:
    """A random tiny model; with ``from_model`` a 'fine-tune' of it (its weights plus seeded noise)."""
    torch.manual_seed(seed)
    config = tiny_config(architecture, tie=tie, vocab_size=vocab_size, layers=layers, hidden=hidden)
    model_class = Qwen2ForCausalLM if architecture == "qwen2" else LlamaForCausalLM
    model = model_class(config)
    if from_model is not None:
        parent = model_class.from_pretrained(from_model, dtype=torch.float32)
        state = parent.state_dict()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                source = state[name] if name in state else state["model.embed_tokens.weight"]
                parameter.copy_(source + noise * torch.randn(source.shape, generator=generator))
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(directory, **kwargs)
    save_tokenizer(directory)
    return directory


def make_pair(
    root: Path,
    *,
    architecture: str = "qwen2",
    base_tie: bool = False,
    finetuned_tie: bool = False,
    count: int = 1,
    **kwargs,
) -> tuple[Path, list[Path]]:
    base = make_model(root / "base", seed=0, architecture=architecture, tie=base_tie, **kwargs)
    finetuned = [
        make_model(
            root / f"finetuned{i}", seed=i + 1, architecture=architecture, tie=finetuned_tie, from_model=base, **kwargs
        )
        for i in range(count)
    ]
    return base, finetuned


def load_state(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(directory / file))
    return state


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header and data section, as raw JSON and bytes (to build malformed files)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def write_safetensors(path: Path, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
