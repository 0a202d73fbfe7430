"""Seeded random bf16 weights at a model's real shapes, streamed into sharded safetensors.

Every tensor is drawn in blocks of rows from a generator seeded by (seed, tensor name, block), so
the base can be regenerated block by block while the fine-tuned model is written: the fine-tuned
tensor is the base tensor plus a small random task vector (its own stream), and only one block of
rows is ever in memory. The shards are planned with huggingface_hub's splitter and written by the
merge engine's streaming writer, with an index, as the real checkpoints are.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acm_exp.merge.checkpoint import PlannedTensor, StreamingSafetensorsWriter, plan_shards, write_index

DTYPE = torch.bfloat16
# Rows per block: keeps a block near 64 MiB of float32 at the widest rows (hidden or intermediate).
BLOCK_ELEMENTS = 16 * 1024 * 1024
# Task vector τ = θ_ft − θ0 relative to the weights' scale: small, as a fine-tune's is.
TASK_VECTOR_SCALE = 0.05


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "weight" (normal, initializer_range), "bias" (normal) or "norm" (near one)


def qwen2_tensors(config: dict[str, Any], *, with_head: bool) -> list[TensorSpec]:
    """The tensors of a Qwen2ForCausalLM checkpoint of ``config``, in checkpoint order.

    ``with_head``: whether ``lm_head.weight`` is stored (untied models); a tied model's head is its
    embedding and is not in the file."""
    hidden, intermediate = int(config["hidden_size"]), int(config["intermediate_size"])
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    vocab = int(config["vocab_size"])
    kv = kv_heads * head_dim
    specs = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), "weight")]
    for layer in range(int(config["num_hidden_layers"])):
        prefix = f"model.layers.{layer}"
        specs += [
            TensorSpec(f"{prefix}.input_layernorm.weight", (hidden,), "norm"),
            TensorSpec(f"{prefix}.mlp.down_proj.weight", (hidden, intermediate), "weight"),
            TensorSpec(f"{prefix}.mlp.gate_proj.weight", (intermediate, hidden), "weight"),
            TensorSpec(f"{prefix}.mlp.up_proj.weight", (intermediate, hidden), "weight"),
            TensorSpec(f"{prefix}.post_attention_layernorm.weight", (hidden,), "norm"),
            TensorSpec(f"{prefix}.self_attn.k_proj.bias", (kv,), "bias"),
            TensorSpec(f"{prefix}.self_attn.k_proj.weight", (kv, hidden), "weight"),
            TensorSpec(f"{prefix}.self_attn.o_proj.weight", (hidden, heads * head_dim), "weight"),
            TensorSpec(f"{prefix}.self_attn.q_proj.bias", (heads * head_dim,), "bias"),
            TensorSpec(f"{prefix}.self_attn.q_proj.weight", (heads * head_dim, hidden), "weight"),
            TensorSpec(f"{prefix}.self_attn.v_proj.bias", (kv,), "bias"),
            TensorSpec(f"{prefix}.self_attn.v_proj.weight", (kv, hidden), "weight"),
        ]
    specs.append(TensorSpec("model.norm.weight", (hidden,), "norm"))
    if with_head:
        specs.append(TensorSpec("lm_head.weight", (vocab, hidden), "weight"))
    return specs


def checkpoint_bytes(specs: list[TensorSpec]) -> int:
    return sum(math.prod(spec.shape) for spec in specs) * DTYPE.itemsize


def _generator(seed: int, stream: str, name: str, block: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}\0{stream}\0{name}\0{block}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    rows = shape[0]
    row_elements = math.prod(shape[1:]) if len(shape) > 1 else 1
    step = max(1, BLOCK_ELEMENTS // row_elements)
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def _draw(spec: TensorSpec, rows: tuple[int, int], std: float, seed: int, stream: str, block: int) -> torch.Tensor:
    shape = (rows[1] - rows[0], *spec.shape[1:])
    values = torch.randn(shape, generator=_generator(seed, stream, spec.name, block), dtype=torch.float32)
    return values.mul_(std)


def tensor_blocks(
    spec: TensorSpec, *, seed: int, std: float, finetuned: bool, base_name: str | None = None
) -> Iterator[torch.Tensor]:
    """The tensor's bf16 blocks of rows. The base draws N(0, std) (norms: 1 + that); a fine-tuned
    model adds N(0, std · TASK_VECTOR_SCALE) to the base tensor ``base_name`` (default: its own name;
    an untied fine-tuned head grows from a tied base's embedding)."""
    source = TensorSpec(base_name or spec.name, spec.shape, spec.kind)
    for block, rows in enumerate(_blocks(spec.shape)):
        values = _draw(source, rows, std, seed, "base", block)
        if spec.kind == "norm":
            values.add_(1.0)
        if finetuned:
            values.add_(_draw(spec, rows, std * TASK_VECTOR_SCALE, seed, "task_vector", block))
        yield values.to(DTYPE)


def write_weights(
    directory: Path,
    specs: list[TensorSpec],
    *,
    seed: int,
    std: float,
    finetuned: bool,
    shard_size: str,
    base_names: dict[str, str] | None = None,
    progress=None,
) -> list[str]:
    """Write the checkpoint's shards and ``model.safetensors.index.json``; the shard file names."""
    planned = [PlannedTensor(spec.name, spec.shape, DTYPE) for spec in specs]
    by_name = {spec.name: spec for spec in specs}
    plan = plan_shards(planned, shard_size)
    for file, tensors in plan.files.items():
        writer = StreamingSafetensorsWriter(directory / file, tensors)
        try:
            for tensor in tensors:
                spec = by_name[tensor.name]
                base_name = (base_names or {}).get(spec.name)
                for rows in tensor_blocks(spec, seed=seed, std=std, finetuned=finetuned, base_name=base_name):
                    writer.write_rows(spec.name, rows) if spec.shape else writer.write(spec.name, rows)
                if progress is not None:
                    progress(math.prod(spec.shape) * DTYPE.itemsize)
        finally:
            writer.close()
    write_index(directory, plan)
    return list(plan.files)
