"""Computed memory needs of the paper's model sizes, from their configs' shapes (nothing measured):
what one device holds at each stage's peak, and per device over a placement on several GPUs.

``python -m acm_exp.memory`` prints the two Markdown tables the README shows (``--table needs`` or
``--table placement`` for one); ``python -m acm_exp.costs`` prints the same. The benchmarks under
tests/benchmarks/ measure each stage beside these predictions (``stage_prediction``, ``capture_memory``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from acm_exp.model_facts import paper_models

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def parameters(self) -> int:
        kv = self.kv_heads * self.head_dim
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + self.hidden + 2 * kv  # q, o; k, v; biases
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * layer + self.hidden

    @property
    def largest_tensor(self) -> int:
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)

    @classmethod
    def from_config(cls, name: str, config: dict[str, Any]) -> ModelShape:
        """The shape a transformers ``config.json`` (as a dict) describes."""
        return cls(
            name,
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            kv_heads=int(config["num_key_value_heads"]),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
        )


# The base models of the paper's pairs (Qwen2.5-Math-1.5B/7B, Qwen2.5-14B/32B), from the published
# config.json values that the stand-ins are also built from (acm_exp.model_facts); R1-Distill-Qwen
# models share these shapes except that the 1.5B one is untied.
PAPER_SHAPES = tuple(ModelShape.from_config(facts.size, facts.config) for facts in paper_models("base"))
BF16, FP32 = 2, 4


def memory_needs(
    shape: ModelShape, *, calibration_tokens: int = 4096, eval_tokens: int = 10240, eval_batch: int = 32
) -> dict[str, float]:
    """GB each stage needs for one model size, bf16 weights:
    - capture (ACM MI, AIM importance): ``capture_memory`` against an untied compared model (R1-Distill-Qwen);
    - sensitivity (Sens-Merging): one model with its bf16 gradients (gradient checkpointing on);
    - merge: ``merge_memory`` (the engine streams tensors; its peak is on the largest one);
    - evaluation (hf): the weights plus the KV cache of a full batch at the longest generation."""
    weights = shape.parameters * BF16
    kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * BF16
    return {
        "parameters_b": round(shape.parameters / 1e9, 2),
        "weights_gb": round(weights / 1e9, 1),
        "capture_gb": round(capture_memory(shape, calibration_tokens, compared_tied=False)["total"] / 1e9, 1),
        "sensitivity_gb": round(2 * weights / 1e9, 1),
        "merge_gb": round(merge_memory(shape) / 1e9, 1),
        "eval_hf_gb": round((weights + eval_batch * eval_tokens * kv_per_token) / 1e9, 1),
    }


def capture_memory(shape: ModelShape, tokens: int = 4096, *, compared_tied: bool | None = None) -> dict[str, int]:
    """Bytes an ACM capture holds at its peak (``acm_exp.acm.capture``, bf16, one sample of ``tokens``).

    The peak comes when the compared model's lm_head output meets the base's in the MI:
    - both models' weights (``compared_tied=False``: the compared model has its own lm_head, as every
      R1-Distill-Qwen model beside a tied Qwen2.5-Math-1.5B; None: tied like the base);
    - the base's outputs of the sample at every capture point, kept for the compared model's pass
      (tokens x hidden for the embedding, each decoder layer and the final norm; tokens x vocab for lm_head);
    - the compared model's lm_head output;
    - the discrete MI's working memory on that pair: one 16-bit symbol id per value (the CPU kernels'
      counting sort; the accelerator kernels' chunked table needs at most as much at these sizes).
    Nothing of another sample: the base computes the next sample's lm_head only once this one's MI is
    done. Not included: the interpreter and libraries (a few hundred MB of host memory), a CUDA context."""
    compared_tied = shape.tied if compared_tied is None else compared_tied
    compared = ModelShape(**{**asdict(shape), "tied": compared_tied})
    logits = tokens * shape.vocab * BF16
    parts = {
        "base_weights": shape.parameters * BF16,
        "compared_weights": compared.parameters * BF16,
        "base_activations": tokens * shape.hidden * BF16 * (shape.layers + 2) + logits,
        "compared_lm_head": logits,
        "mi_working_memory": tokens * shape.vocab * 2,
    }
    return {**parts, "total": sum(parts.values())}


# Host memory a stage run on the CPU holds besides its own tensors, measured on the 1.5B stand-ins
# (tests/benchmarks/rehearsal_bench.py, in fresh processes): python with torch and transformers
# imported; Qwen's tokenizer loaded by transformers (151,665 tokens and their merges); the libraries
# of the calibration embedding (sentence-transformers, scikit-learn). On a GPU they stay on the host.
HOST_RUNTIME_BYTES = int(0.25 * GIB)
QWEN_TOKENIZER_BYTES = int(0.19 * GIB)
EMBEDDING_LIBRARIES_BYTES = int(0.28 * GIB)
# all-MiniLM-L6-v2, the calibration embedder (acm_exp.calibration: batches of 64, 256 tokens at most).
MINILM_PARAMETERS = 22_713_216
MINILM_HEADS, MINILM_INTERMEDIATE, MINILM_MAX_TOKENS, EMBEDDING_BATCH = 12, 1536, 256, 64


def stage_prediction(stage: str, shape: ModelShape, *, tokens: int = 4096, batch: int = 1) -> int:
    """Peak host memory (bytes) of one stage of the 1.5B-style pair run on the CPU (what
    tests/benchmarks/rehearsal_bench.py measures beside it): HOST_RUNTIME_BYTES plus

    - ``calibration``: the embedding libraries, MiniLM's float32 weights and one batch's working
      memory (its attention scores and probabilities, and the MLP's two intermediate activations);
    - ``capture``: the tokenizer and ``capture_memory`` of one ``tokens``-token sample against an
      untied compared model;
    - ``merge``: ``merge_memory``;
    - ``generation``: the tokenizer, the weights (bf16), the KV cache of ``batch`` sequences of
      ``tokens`` tokens, and the last position's float32 logits."""
    if stage == "calibration":
        per_token = 2 * MINILM_HEADS * MINILM_MAX_TOKENS + 2 * MINILM_INTERMEDIATE
        working = EMBEDDING_BATCH * MINILM_MAX_TOKENS * per_token * FP32
        own = EMBEDDING_LIBRARIES_BYTES + MINILM_PARAMETERS * FP32 + working
    elif stage == "capture":
        own = QWEN_TOKENIZER_BYTES + capture_memory(shape, tokens, compared_tied=False)["total"]
    elif stage == "merge":
        own = merge_memory(shape)
    elif stage == "generation":
        kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * BF16
        weights = shape.parameters * BF16
        own = QWEN_TOKENIZER_BYTES + weights + batch * tokens * kv_per_token + batch * shape.vocab * FP32
    else:
        raise ValueError(f"stage={stage!r}; expected calibration, capture, merge or generation")
    return HOST_RUNTIME_BYTES + own


def merge_memory(shape: ModelShape, models: int = 2) -> int:
    """Bytes the streaming merge engine holds at its peak, on the largest tensor (the embedding), for
    TIES (the method with the most temporaries; acm_exp.merge.sparsify.magnitude_trim): each input's
    bf16 block (memory-mapped pages of base and fine-tuned models), the bf16 output block, the float32
    task vector and its magnitudes, and the kept-entries mask (one byte each). The blocks read ahead
    and written behind are a decoder layer's, small beside it."""
    return shape.largest_tensor * (models * BF16 + BF16 + 2 * FP32 + 1)


def memory_table() -> str:
    """The computed needs of every paper size as a Markdown table (``python -m acm_exp.memory``)."""
    header = "| size | parameters | weights (bf16) | capture | Sens-Merging gradients | merge | hf evaluation |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for shape in PAPER_SHAPES:
        need = memory_needs(shape)
        lines.append(
            f"| {shape.name} | {need['parameters_b']} B | {need['weights_gb']} GB | {need['capture_gb']} GB "
            f"| {need['sensitivity_gb']} GB | {need['merge_gb']} GB | {need['eval_hf_gb']} GB |"
        )
    return "\n".join(lines)


# Placements over several GPUs (acm.device / sens.device lists; accelerate's device_map="auto").
GPU_COUNTS = (1, 2, 4, 8)
GPU_SIZES_GIB = (80, 40)
# What a CUDA context and the allocator's fragmentation take from a GPU before any tensor.
CUDA_OVERHEAD_BYTES = 2**30


def _placement_block(shape: ModelShape, bytes_per_parameter: int) -> int:
    """The unit accelerate places whole: a decoder layer, or the embedding / head matrix."""
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    layer = (shape.parameters - embeddings - shape.hidden) // shape.layers
    return max(layer, shape.vocab * shape.hidden) * bytes_per_parameter


def placement_needs(
    shape: ModelShape, gpus: int, *, calibration_tokens: int = 4096, sens_tokens: int = 2048
) -> dict[str, float]:
    """Peak GB on the fullest of ``gpus`` devices, each model split evenly over them (to within one
    block: a decoder layer or the embedding):
    - capture: base + compared model (untied, R1-Distill-Qwen) in bf16, each 1/gpus of its weights per
      device, plus ``capture_memory``'s activations and MI working memory (on the head's device);
    - sensitivity (fp32 and bf16 weights): one model, its running sums on each layer's device, the
      float32 logits and their gradient of one sample, the checkpointed hidden states (gradient
      checkpointing on), and one parameter's gradient with its float32 product (reduced and
      dropped at once)."""
    imbalance = 1 if gpus > 1 else 0

    def sensitivity(bytes_per_parameter: int) -> float:
        block = _placement_block(shape, bytes_per_parameter)
        weights = shape.parameters * bytes_per_parameter / gpus + imbalance * block
        loss = 2 * sens_tokens * shape.vocab * FP32
        checkpoints = shape.layers * sens_tokens * shape.hidden * bytes_per_parameter
        gradient = shape.largest_tensor * (bytes_per_parameter + 2 * FP32)
        return weights + loss + checkpoints + gradient

    need = capture_memory(shape, calibration_tokens, compared_tied=False)
    weights = need["base_weights"] + need["compared_weights"]
    capture = weights / gpus + 2 * imbalance * _placement_block(shape, BF16) + need["total"] - weights
    return {
        "capture_gb": round(capture / 1e9, 1),
        "sensitivity_fp32_gb": round(sensitivity(FP32) / 1e9, 1),
        "sensitivity_bf16_gb": round(sensitivity(BF16) / 1e9, 1),
    }


def gpus_needed(shape: ModelShape, stage: str, gpu_gib: int) -> int | None:
    """The fewest GPUs of ``gpu_gib`` GiB (of GPU_COUNTS) whose fullest device holds ``stage``; None: more than 8."""
    for gpus in GPU_COUNTS:
        if placement_needs(shape, gpus)[stage] * 1e9 + CUDA_OVERHEAD_BYTES <= gpu_gib * 2**30:
            return gpus
    return None


def placement_table() -> str:
    """Peak GB per device of each placement, per paper size, as Markdown (``python -m acm_exp.memory``)."""
    stages = (
        ("capture_gb", "ACM/AIM capture (base + compared, bf16)"),
        ("sensitivity_fp32_gb", "Sens-Merging gradients (fp32)"),
        ("sensitivity_bf16_gb", "Sens-Merging gradients (bf16)"),
    )
    counts = " | ".join(f"{gpus} GPU{'s' if gpus > 1 else ''}" for gpus in GPU_COUNTS)
    sizes = " | ".join(f"fewest {size} GiB GPUs" for size in GPU_SIZES_GIB)
    lines = [f"| size | stage | {counts} | {sizes} |", "|---|---|" + "---|" * (len(GPU_COUNTS) + len(GPU_SIZES_GIB))]
    for shape in PAPER_SHAPES:
        for stage, label in stages:
            per_device = " | ".join(f"{placement_needs(shape, gpus)[stage]} GB" for gpus in GPU_COUNTS)
            fewest = " | ".join(str(gpus_needed(shape, stage, size) or "> 8") for size in GPU_SIZES_GIB)
            lines.append(f"| {shape.name} | {label} | {per_device} | {fewest} |")
    return "\n".join(lines)


TABLES = {"needs": memory_table, "placement": placement_table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.memory",
        description="Print the computed memory needs of the paper's model sizes as Markdown (README, 'What it costs').",
    )
    parser.add_argument("--table", choices=("all", *TABLES), default="all", help="which table to print (default: both)")
    chosen = parser.parse_args(argv).table
    print("\n\n".join(table() for name, table in TABLES.items() if chosen in ("all", name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
