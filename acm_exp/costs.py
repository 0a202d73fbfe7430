"""What each stage of a run cost: wall time, CPU time, peak memory, and the hardware it ran on.

``measure(stage)`` records one stage into the run's ledger (a context variable, so deep code such as
a statistics cache can report a cache hit without plumbing). Peak host memory is the stage's own:
Linux's high-water mark (VmHWM) is read and reset at every stage boundary, and nested stages fold
their peak into the enclosing ones. Peak CUDA memory is tracked per device the same way.

A stage served from a cache records ``cached`` and the cost its first computation paid (kept in the
cache entry's metadata), so a sweep's report shows both what this run paid and what the
statistics cost once.
"""

from __future__ import annotations

import contextvars
import functools
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from acm_exp.model_facts import paper_models

GIB = 1024**3
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


# ---------------------------------------------------------------------------------------------
# Readings


def _read_high_water_mark() -> int | None:
    """Peak resident memory since the last reset (VmHWM), in bytes; None where /proc lacks it."""
    try:
        with open(_STATUS, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_high_water_mark() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _process_peak_rss() -> int:
    """The process's lifetime peak RSS in bytes (the fallback where VmHWM cannot be reset)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (sandboxed programs, worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cuda_devices() -> list[int]:
    torch = sys.modules.get("torch")  # never import torch just to find that CUDA is unused
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return list(range(torch.cuda.device_count()))


def _cuda_peaks_and_reset() -> dict[str, int]:
    import torch

    peaks = {}
    for index in _cuda_devices():
        peaks[f"cuda:{index}"] = int(torch.cuda.max_memory_allocated(index))
        torch.cuda.reset_peak_memory_stats(index)
    return peaks


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """CPU model and cores, GPU name and count (of the GPUs torch sees, when torch is loaded)."""
    info: dict[str, Any] = {"cpu": _cpu_model(), "cpu_cores": os.cpu_count(), "gpu": None, "gpu_count": 0}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        info.update(gpu=torch.cuda.get_device_name(0) if count else None, gpu_count=count)
    return info


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class StageCost:
    """One stage's cost. ``original``: the first computation's cost when this one came from a cache."""

    stage: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    cuda_peak_bytes: dict[str, int] = field(default_factory=dict)
    cached: bool = False
    original: dict[str, Any] | None = None
    tokens: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        if self.tokens is None or self.cached or self.wall_s <= 0:
            return None
        return self.tokens / self.wall_s

    def as_original(self) -> dict[str, Any]:
        """What a cache entry keeps: this computation's cost and hardware."""
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "cuda_peak_bytes": dict(self.cuda_peak_bytes),
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "hardware": hardware(),
        }

    def note_cache_hit(self, original: dict[str, Any] | None) -> None:
        """Served (in part) from a cache entry whose first computation cost ``original``."""
        self.cached = True
        self.add_original(original)

    def add_original(self, original: dict[str, Any] | None) -> None:
        """Add one cached part's first-computation cost; parts (e.g. two models' statistics) add up."""
        if not original:
            return
        if self.original is None:
            self.original = dict(original)
            return
        for key in ("wall_s", "cpu_s"):
            self.original[key] = (self.original.get(key) or 0.0) + (original.get(key) or 0.0)
        self.original["peak_rss_bytes"] = max(
            self.original.get("peak_rss_bytes") or 0, original.get("peak_rss_bytes") or 0
        )

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["tokens_per_s"] = self.tokens_per_s
        return record


@dataclass
class _Open:
    cost: StageCost
    started_wall: float
    started_cpu: float
    peak_rss: int = 0
    cuda_peaks: dict[str, int] = field(default_factory=dict)


@dataclass
class CostLedger:
    """Every measured stage of one run, in the order they finished."""

    stages: list[StageCost] = field(default_factory=list)
    hardware: dict[str, Any] = field(default_factory=hardware)
    _open: list[_Open] = field(default_factory=list, repr=False)
    _resettable: bool = field(
        default_factory=lambda: _reset_high_water_mark() and _read_high_water_mark() is not None, repr=False
    )

    def _fold_peaks(self) -> None:
        """Credit the memory high-water marks since the last boundary to every open stage, then reset."""
        rss = _read_high_water_mark() if self._resettable else _process_peak_rss()
        cuda = _cuda_peaks_and_reset() if _cuda_devices() else {}
        for entry in self._open:
            entry.peak_rss = max(entry.peak_rss, rss or 0)
            for device, peak in cuda.items():
                entry.cuda_peaks[device] = max(entry.cuda_peaks.get(device, 0), peak)
        if self._resettable:
            _reset_high_water_mark()

    @contextmanager
    def measure(self, stage: str, **details: Any) -> Iterator[StageCost]:
        self._fold_peaks()
        entry = _Open(StageCost(stage, details=dict(details)), time.perf_counter(), _cpu_seconds())
        self._open.append(entry)
        try:
            yield entry.cost
        finally:
            self._fold_peaks()
            self._open.remove(entry)
            cost = entry.cost
            cost.wall_s = time.perf_counter() - entry.started_wall
            cost.cpu_s = _cpu_seconds() - entry.started_cpu
            cost.peak_rss_bytes = entry.peak_rss
            cost.cuda_peak_bytes = entry.cuda_peaks
            self.stages.append(cost)

    def snapshot(self) -> dict[str, Any] | None:
        """The innermost open stage's cost so far (e.g. for a manifest written just before it ends)."""
        if not self._open:
            return None
        self._fold_peaks()
        entry = self._open[-1]
        so_far = StageCost(
            entry.cost.stage,
            wall_s=time.perf_counter() - entry.started_wall,
            cpu_s=_cpu_seconds() - entry.started_cpu,
            peak_rss_bytes=entry.peak_rss,
            cuda_peak_bytes=dict(entry.cuda_peaks),
        )
        return so_far.as_original()

    def current(self) -> StageCost | None:
        """The innermost stage being measured (where a cache reports a hit)."""
        return self._open[-1].cost if self._open else None

    def find(self, stage: str) -> list[StageCost]:
        return [cost for cost in self.stages if cost.stage == stage]

    def to_dict(self) -> dict[str, Any]:
        return {"hardware": self.hardware, "stages": [cost.to_dict() for cost in self.stages]}


_LEDGER: contextvars.ContextVar[CostLedger | None] = contextvars.ContextVar("acm_exp_cost_ledger", default=None)


@contextmanager
def ledger() -> Iterator[CostLedger]:
    """A fresh ledger for one run; ``measure`` anywhere below records into it."""
    book = CostLedger()
    token = _LEDGER.set(book)
    try:
        yield book
    finally:
        _LEDGER.reset(token)


@contextmanager
def measure(stage: str, **details: Any) -> Iterator[StageCost]:
    """Measure a stage into the current run's ledger (or into a throwaway one outside a run)."""
    book = _LEDGER.get()
    if book is None:
        book = CostLedger()
    with book.measure(stage, **details) as cost:
        yield cost


def current_stage() -> StageCost | None:
    book = _LEDGER.get()
    return book.current() if book is not None else None


def cost_so_far() -> dict[str, Any] | None:
    """The current stage's cost up to now, with the hardware; None outside a measured stage."""
    book = _LEDGER.get()
    return book.snapshot() if book is not None else None


def note_cache_hit(original: dict[str, Any] | None) -> None:
    """Called by a cache that served the current stage: mark it cached, with its original cost."""
    cost = current_stage()
    if cost is not None:
        cost.note_cache_hit(original)


def note_computed(original: dict[str, Any]) -> None:
    """Called by a cache that computed an entry inside the current stage: its cost counts as original."""
    cost = current_stage()
    if cost is not None:
        cost.add_original(original)


# ---------------------------------------------------------------------------------------------
# The results table's cost columns (from a ledger's ``to_dict()``)

# Column -> Python type; the results schema (acm_exp/results.py) is built from it.
COST_COLUMNS: dict[str, type] = {
    "calibration_s": float,
    "coefficients_s": float,
    "coefficients_cpu_s": float,
    "coefficients_peak_rss_gb": float,
    "coefficients_cached": bool,
    "coefficients_original_s": float,
    "coefficients_original_peak_rss_gb": float,
    "merge_s": float,
    "merge_cpu_s": float,
    "merge_peak_rss_gb": float,
    "merge_cached": bool,
    "merge_original_s": float,
    "eval_s": float,
    "eval_cpu_s": float,
    "eval_peak_rss_gb": float,
    "eval_tokens_per_s": float,
    "eval_cached": bool,
    "cuda_peak_gb": float,
    "hardware_cpu": str,
    "hardware_cpu_cores": int,
    "hardware_gpu": str,
    "hardware_gpu_count": int,
}


def _gb(value: float | int | None) -> float | None:
    return None if value is None else round(value / GIB, 4)


def _matching(stages: list[dict], name: str, **details: Any) -> list[dict]:
    return [
        s
        for s in stages
        if s["stage"] == name and all(s["details"].get(key) == value for key, value in details.items())
    ]


def _original(stage: dict, key: str) -> Any:
    """What the first computation paid: the cache entries' recorded cost, else this run's own."""
    if stage.get("original"):
        return stage["original"].get(key)
    return None if stage["cached"] else stage[key]


def cost_columns(book: dict[str, Any], *, model: str, benchmark: str, seed: int | None) -> dict[str, Any]:
    """The cost columns of one results row: the run's stages plus this model/benchmark's evaluation."""
    columns: dict[str, Any] = dict.fromkeys(COST_COLUMNS)
    stages = book.get("stages", [])
    for stage in _matching(stages, "calibration")[:1]:
        columns["calibration_s"] = stage["wall_s"]
    for stage in _matching(stages, "coefficients")[:1]:
        columns.update(
            {
                "coefficients_s": stage["wall_s"],
                "coefficients_cpu_s": stage["cpu_s"],
                "coefficients_peak_rss_gb": _gb(stage["peak_rss_bytes"]),
                "coefficients_cached": stage["cached"],
                "coefficients_original_s": _original(stage, "wall_s"),
                "coefficients_original_peak_rss_gb": _gb(_original(stage, "peak_rss_bytes")),
            }
        )
    for stage in _matching(stages, "merge")[:1]:
        columns.update(
            {
                "merge_s": stage["wall_s"],
                "merge_cpu_s": stage["cpu_s"],
                "merge_peak_rss_gb": _gb(stage["peak_rss_bytes"]),
                "merge_cached": stage["cached"],
                "merge_original_s": _original(stage, "wall_s"),
            }
        )
    generation = _matching(stages, "generation", model=model, benchmark=benchmark, seed=seed)
    if seed is None:  # an across-seed row: its seeds' generations together
        generation = _matching(stages, "generation", model=model, benchmark=benchmark)
    if generation:
        wall = sum(s["wall_s"] for s in generation)
        tokens = [s["tokens"] for s in generation if not s["cached"] and s["tokens"] is not None]
        fresh_wall = sum(s["wall_s"] for s in generation if not s["cached"])
        columns.update(
            {
                "eval_s": wall,
                "eval_cpu_s": sum(s["cpu_s"] for s in generation),
                "eval_peak_rss_gb": _gb(max(s["peak_rss_bytes"] for s in generation)),
                "eval_cached": all(s["cached"] for s in generation),
                "eval_tokens_per_s": sum(tokens) / fresh_wall if tokens and fresh_wall > 0 else None,
            }
        )
        if columns["eval_tokens_per_s"] is None:  # all reused: the rate their first generation achieved
            rates = [
                s["original"]["tokens_per_s"]
                for s in generation
                if s.get("original") and s["original"].get("tokens_per_s")
            ]
            columns["eval_tokens_per_s"] = sum(rates) / len(rates) if rates else None
    cuda = [peak for s in stages for peak in s["cuda_peak_bytes"].values()]
    columns["cuda_peak_gb"] = _gb(max(cuda)) if cuda else None
    hardware_info = book.get("hardware") or {}
    columns.update(
        {
            "hardware_cpu": hardware_info.get("cpu"),
            "hardware_cpu_cores": hardware_info.get("cpu_cores"),
            "hardware_gpu": hardware_info.get("gpu"),
            "hardware_gpu_count": hardware_info.get("gpu_count"),
        }
    )
    return columns


# ---------------------------------------------------------------------------------------------
# Computed memory needs of the paper's model sizes (from their configs' shapes; nothing measured)


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
    """The computed needs of every paper size as a Markdown table (``python -m acm_exp.costs``)."""
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
    """Peak GB per device of each placement, per paper size, as Markdown (``python -m acm_exp.costs``)."""
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


if __name__ == "__main__":
    print(memory_table())
    print()
    print(placement_table())
