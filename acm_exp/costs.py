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

# The computed memory needs moved to acm_exp.memory; their names stay importable from here.
from acm_exp.memory import (  # noqa: F401
    BF16,
    CUDA_OVERHEAD_BYTES,
    EMBEDDING_BATCH,
    EMBEDDING_LIBRARIES_BYTES,
    FP32,
    GIB,
    GPU_COUNTS,
    GPU_SIZES_GIB,
    HOST_RUNTIME_BYTES,
    MINILM_HEADS,
    MINILM_INTERMEDIATE,
    MINILM_MAX_TOKENS,
    MINILM_PARAMETERS,
    PAPER_SHAPES,
    QWEN_TOKENIZER_BYTES,
    ModelShape,
    capture_memory,
    gpus_needed,
    memory_needs,
    memory_table,
    merge_memory,
    placement_needs,
    placement_table,
    stage_prediction,
)

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


if __name__ == "__main__":
    # The command's old name: the same tables as python -m acm_exp.memory.
    from acm_exp.memory import main

    raise SystemExit(main())
