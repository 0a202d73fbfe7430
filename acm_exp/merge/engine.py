"""The streaming merge engine: validation, tensor-by-tensor merging, atomic sharded output.

The engine owns everything but the arithmetic: it checks that the models fit together before any
weight is read, reads one tensor of every model at a time, asks the method for the merged delta,
applies the coefficient provider's per-tensor adjustment (ACM, AIM, Sens-Merging), and streams the
result into a temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import xxhash
from tqdm.auto import tqdm

import acm_exp
from acm_exp.costs import cost_so_far
from acm_exp.devices import resolve_device, resolve_dtype
from acm_exp.errors import ConfigError, RuntimeFailure
from acm_exp.merge.checkpoint import (
    EMBEDDING_NAME,
    LM_HEAD_NAME,
    Checkpoint,
    PlannedTensor,
    ShardPlan,
    StreamingSafetensorsWriter,
    fsync_directory,
    open_checkpoint,
    plan_shards,
    write_index,
)
from acm_exp.merge.registry import MergeMethod, parameter_values
from acm_exp.models import has_tokenizer, load_vocabulary, vocabulary_differences
from acm_exp.paths import nearest_existing, write_probe_error

log = logging.getLogger(__name__)

MANIFEST_NAME = "merge_manifest.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# Config keys that must agree for two checkpoints to be merged tensor by tensor.
ARCHITECTURE_KEYS = ("model_type", "architectures", "num_hidden_layers", "hidden_size")
# An elementwise method merges tensors larger than this block of rows by block of rows, so the
# float32 working copies of an embedding or lm_head (0.5-2 GB each) never exist at once.
ROW_BLOCK_ELEMENTS = 1 << 23
# On CPU an elementwise method runs on a block chunk by chunk: a chunk's float32 working copies
# stay in cache and their memory is reused, where block-sized temporaries would each be fresh
# pages (page faults and zeroing cost more than the arithmetic). The same operations on the same
# values, so the same result; a multiple of every SIMD width, so no element changes loop path.
# A chunk's float32 working copies (1 MiB each) fit a core's L2 cache; chunks are merged on one
# thread (see _one_thread), so no parallel-region start is paid per op.
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class Adjustment:
    """How one tensor's merge is weighted: θ = base_factor·θ0 + delta_factor ⊙ Δ(τ, model_weights)."""

    model_weights: tuple[float, ...] | None = None
    base_factor: float = 1.0
    delta_factor: float | torch.Tensor = 1.0


AdjustmentProvider = Callable[[str], Adjustment]


@dataclass
class MergeInputs:
    """The opened checkpoints, validated against each other; no weight has been read."""

    base: Checkpoint
    finetuned: list[Checkpoint]
    output_tensors: list[tuple[str, tuple[int, ...], torch.dtype]]
    tied_output: bool
    # What the tokenizer comparison found: added/special tokens that differ, models not compared.
    vocabulary_check: dict = field(default_factory=dict)
    # Warnings already given about these inputs: a check repeated before the merge stays quiet.
    warned: set[str] = field(default_factory=set)

    def close(self) -> None:
        for checkpoint in (self.base, *self.finetuned):
            checkpoint.close()


@dataclass
class MergeResult:
    output_dir: Path
    manifest: dict
    reused: bool = False


@dataclass
class MergeSettings:
    output_dir: Path
    shard_size: str = "5GB"
    device: str = "cpu"
    dtype: str | None = None
    overwrite: bool = False
    seed: int = 0
    # Where config.json, generation_config.json and the tokenizer come from: "base" (what every
    # reference pipeline saves) or "finetuned" (the first fine-tuned model).
    tokenizer_from: str = "base"
    # Whether the merged model must ship a tokenizer (its evaluation needs one); without one the
    # merge is written with a warning, as for a merge-only use.
    require_tokenizer: bool = False
    manifest_extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Validation


def _config_summary(config: dict) -> dict:
    return {key: config.get(key) for key in ARCHITECTURE_KEYS}


def _check_architectures(base: Checkpoint, finetuned: Sequence[Checkpoint]) -> None:
    expected = _config_summary(base.config)
    for checkpoint in finetuned:
        found = _config_summary(checkpoint.config)
        for key in ARCHITECTURE_KEYS:
            if expected[key] != found[key]:
                raise ConfigError(
                    f"architecture mismatch: {key}={found[key]!r} in {checkpoint.path} but {expected[key]!r} "
                    f"in the base {base.path}"
                )


def _tensor_names(checkpoint: Checkpoint) -> set[str]:
    names = set(checkpoint.tensors)
    if checkpoint.tied_embeddings:
        names.add(LM_HEAD_NAME)
    return names


def _check_tensors(base: Checkpoint, finetuned: Sequence[Checkpoint]) -> list[str]:
    names = _tensor_names(base)
    for checkpoint in finetuned:
        other = _tensor_names(checkpoint)
        missing, extra = sorted(names - other), sorted(other - names)
        if missing or extra:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise ConfigError(f"tensor names differ between the base {base.path} and {checkpoint.path}: {detail}")
        for name in sorted(names, key=_tensor_order):
            base_shape, other_shape = base.info(name).shape, checkpoint.info(name).shape
            if base_shape == other_shape:
                continue
            if name in (EMBEDDING_NAME, LM_HEAD_NAME):
                raise ConfigError(
                    f"vocabulary size differs: tensor {name} has shape {base_shape} in the base {base.path} but "
                    f"{other_shape} in {checkpoint.path}; merging needs one shared vocabulary"
                )
            raise ConfigError(
                f"shape mismatch for tensor {name}: {base_shape} in the base {base.path} "
                f"vs {other_shape} in {checkpoint.path}"
            )
    return sorted(names, key=_tensor_order)


def _tensor_order(name: str) -> tuple:
    # Embedding first, then layers in numeric order, then the rest: the order transformers writes.
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "layers" and parts[2].isdigit():
        return (1, int(parts[2]), name)
    return (0 if name == EMBEDDING_NAME else 2, 0, name)


TIED_HEAD_MODES = ("tie", "untie")


def open_inputs(
    base: str | Path,
    finetuned: Sequence[str | Path],
    *,
    allow_pickle: bool = False,
    dtype: str | None = None,
    tied_head: str = "tie",
) -> MergeInputs:
    """Open every checkpoint's headers and check they can be merged; reads no weights.

    ``tied_head``: with a base that ties lm_head to its embedding, ``tie`` keeps the merge tied (its
    lm_head is the merged embedding, the fine-tuned models' lm_head is unused: what the reference
    pipelines save, since they merge into the base model object); ``untie`` merges lm_head as a
    tensor of its own and writes an untied model. An untied base is merged tensor by tensor either way.
    """
    if tied_head not in TIED_HEAD_MODES:
        raise ConfigError(f"model_pair.tied_head={tied_head!r}; expected one of {TIED_HEAD_MODES}")
    if not finetuned:
        raise ConfigError("model_pair.finetuned is empty; expected at least one fine-tuned model")
    base_checkpoint = open_checkpoint(base, allow_pickle=allow_pickle)
    finetuned_checkpoints = [open_checkpoint(path, allow_pickle=allow_pickle) for path in finetuned]
    _check_architectures(base_checkpoint, finetuned_checkpoints)
    names = _check_tensors(base_checkpoint, finetuned_checkpoints)
    vocabulary_check = check_vocabularies(base_checkpoint.path, [c.path for c in finetuned_checkpoints])
    all_tied = all(c.tied_embeddings for c in finetuned_checkpoints)
    tied_output = base_checkpoint.tied_embeddings and (tied_head == "tie" or all_tied)
    if tied_output:
        names = [name for name in names if name != LM_HEAD_NAME]
        if not all_tied:
            log.info(
                "base %s ties lm_head to its embedding: the merge stays tied (lm_head = merged embedding); "
                "the fine-tuned lm_head is not used (model_pair.tied_head=untie merges it)",
                base_checkpoint.path,
            )
    elif base_checkpoint.tied_embeddings:
        log.info(
            "base %s ties lm_head to its embedding; model_pair.tied_head=untie: the merge materializes lm_head "
            "and is untied",
            base_checkpoint.path,
        )
    output_dtype = resolve_dtype(dtype, "merge.dtype") if dtype else _checkpoint_dtype(base_checkpoint)
    output_tensors = []
    for name in names:
        info = base_checkpoint.info(name)
        out = output_dtype if info.dtype.is_floating_point else info.dtype
        output_tensors.append((name, info.shape, out))
    return MergeInputs(base_checkpoint, finetuned_checkpoints, output_tensors, tied_output, vocabulary_check)


def check_vocabularies(base: Path, finetuned: Sequence[Path]) -> dict:
    """Refuse models whose regular vocabularies differ from the base's; report differing added tokens.

    Equal embedding shapes do not make equal vocabularies: row i must mean the same token in every
    model for a row-by-row merge to make sense. Added/special tokens may differ (R1-Distill-Qwen
    renames Qwen's), and which of them the merged model keeps follows ``tokenizer_from``.
    """
    record: dict = {"added_token_differences": {}, "not_compared": []}
    base_vocabulary = _readable_vocabulary(base)
    if base_vocabulary is None:
        log.warning("the vocabularies are not compared: the base %s has no readable tokenizer", base)
        record["not_compared"] = [str(path) for path in finetuned]
        return record
    for role, path in ((f"finetuned[{i}]", path) for i, path in enumerate(finetuned)):
        vocabulary = _readable_vocabulary(path)
        if vocabulary is None:
            log.warning("the vocabulary of %s is not compared with the base's: it has no readable tokenizer", path)
            record["not_compared"].append(str(path))
            continue
        regular, added = vocabulary_differences(base_vocabulary, vocabulary)
        if regular:
            shown = "; ".join(difference.describe() for difference in regular[:3])
            raise ConfigError(
                f"the tokenizer vocabularies differ: {len(regular)} regular token id(s) map to different tokens in "
                f"the base {base} and in {path} (base vs {role}: {shown}); merging needs one shared vocabulary"
            )
        if added:
            shown = "; ".join(difference.describe() for difference in added[:5])
            log.warning(
                "%d added/special token(s) differ between the base %s and %s (base vs %s: %s%s); expected for "
                "pairs such as Qwen2.5-Math and R1-Distill-Qwen, recorded in %s",
                len(added),
                base,
                path,
                role,
                shown,
                "; ..." if len(added) > 5 else "",
                MANIFEST_NAME,
            )
            record["added_token_differences"][role] = [
                {"id": d.token_id, "base": d.base, "finetuned": d.other} for d in added
            ]
    return record


def _readable_vocabulary(directory: Path):
    # A tokenizer that cannot be read cannot be compared; whether the merged model needs it is
    # decided by check_tokenizer_source.
    try:
        return load_vocabulary(directory)
    except ConfigError as error:
        log.warning("%s", error)
        return None


def _checkpoint_dtype(checkpoint: Checkpoint) -> torch.dtype:
    declared = checkpoint.config.get("torch_dtype") or checkpoint.config.get("dtype")
    if isinstance(declared, str) and declared != "auto":
        return resolve_dtype(declared, f"{checkpoint.path / 'config.json'} torch_dtype")
    floating = [info.dtype for info in checkpoint.tensors.values() if info.dtype.is_floating_point]
    return floating[0] if floating else torch.float32


# ---------------------------------------------------------------------------------------------
# Output directory handling


def _stale_temporary_dirs(output_dir: Path) -> list[Path]:
    host = socket.gethostname()
    stale = []
    for candidate in output_dir.parent.glob(f".{output_dir.name}.tmp-*"):
        parts = candidate.name.rsplit(".tmp-", 1)[1].split("-")
        if len(parts) >= 2 and parts[0] == host and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            stale.append(candidate)
    return stale


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_dir_for(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def read_manifest(output_dir: Path) -> dict | None:
    """The manifest of a complete merge in ``output_dir``; None when there is none (or it is unreadable)."""
    path = output_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.2f} MB"


def check_output_location(output_dir: Path, *, overwrite: bool) -> None:
    """Fail before any weight is read when a merge could not be written and published at ``output_dir``.

    An existing directory is left to the caller (reused, refused, or replaced with ``overwrite``);
    anything else in the way, an unwritable place, is an error here. Writability is probed by
    creating and removing a file where the output's directories will be created.
    """
    if (output_dir.exists() or output_dir.is_symlink()) and not output_dir.is_dir() and not overwrite:
        raise ConfigError(
            f"merge.output_dir {output_dir} is a file, not a directory; remove it, choose another "
            "merge.output_dir, or set merge.overwrite=true to replace it"
        )
    existing = nearest_existing(output_dir.parent)
    if not existing.is_dir():
        raise ConfigError(f"merge.output_dir {output_dir} cannot be created: {existing} is a file, not a directory")
    error = write_probe_error(existing, prefix=f".{output_dir.name}")
    if error is not None:
        raise ConfigError(
            f"merge.output_dir {output_dir} is not writable: cannot create a file in {existing} "
            f"({error.strerror}); choose a writable merge.output_dir"
        )


def check_free_space(output_dir: Path, needed: int) -> None:
    existing = nearest_existing(output_dir.parent)
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ConfigError(
            f"not enough free space for the merge into {output_dir}: its shards need {_size(needed)} but "
            f"{existing} has {_size(free)} free; free space or choose another merge.output_dir"
        )


@contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the lock of ``output_dir``: merges into one directory run one after the other, so a second
    identical request waits for the first and then finds its output complete."""
    from filelock import FileLock

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output_dir.parent / f".{output_dir.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        log.info("another merge is writing %s; waiting for it to finish", output_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def publish_directory(temporary: Path, output_dir: Path, *, overwrite: bool) -> None:
    """Rename a finished directory into place; an existing one is replaced only when allowed.

    A replaced output is first renamed aside (so the new one appears in one rename) and then deleted;
    if it cannot be deleted, the warning says where it is.
    """
    fsync_directory(temporary)
    if output_dir.exists() or output_dir.is_symlink():
        if not overwrite:
            raise ConfigError(f"output directory {output_dir} already exists; set merge.overwrite=true to replace it")
        retired = output_dir.parent / f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(output_dir, retired)
        os.replace(temporary, output_dir)
        try:
            _remove(retired)
        except OSError as error:
            log.warning("the replaced output could not be deleted (%s); it is kept in %s", error.strerror, retired)
    else:
        os.replace(temporary, output_dir)
    fsync_directory(output_dir.parent)


# ---------------------------------------------------------------------------------------------
# Merging


def _tensor_seed(seed: int, name: str) -> int:
    # Per-tensor seeds make DARE's masks independent of tensor order and of sharding.
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


class _ContentHasher:
    """Content hash of every input model, computed from the tensors as they stream by."""

    def __init__(self, count: int):
        self._hashes = [xxhash.xxh3_128() for _ in range(count)]

    def begin(self, name: str) -> None:
        """Start tensor ``name`` in every model's hash; its data follows whole or in blocks of rows."""
        for digest in self._hashes:
            digest.update(name.encode())

    def update(self, index: int, tensor: torch.Tensor) -> None:
        self._hashes[index].update(memoryview(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()))

    def hexdigests(self) -> list[str]:
        return [f"xxh3_128:{h.hexdigest()}" for h in self._hashes]


def _check_finite(
    task_vector: torch.Tensor,
    base: torch.Tensor,
    finetuned: torch.Tensor,
    name: str,
    base_checkpoint: Checkpoint,
    checkpoint: Checkpoint,
) -> None:
    # A NaN or ±Inf in θ0 or θi makes τi, and so its float32 sum, non-finite: a finite sum proves
    # there is none, in one fast reduction instead of an isfinite mask per input (which costs ~3x a
    # bf16-to-float32 conversion). Only a non-finite sum needs the exact tests, to name the culprit.
    if torch.isfinite(task_vector.sum()):
        return
    for tensor, source in ((base, base_checkpoint), (finetuned, checkpoint)):
        if not torch.isfinite(tensor).all():
            raise ConfigError(f"tensor {name} of {source.path} contains NaN or Inf values")


def _combine(
    base: torch.Tensor,
    task_vectors: list[torch.Tensor],
    method: MergeMethod,
    params,
    adjustment: Adjustment,
    generator: torch.Generator,
) -> torch.Tensor:
    """θ0 (any float dtype) and τi (float32) in, merged float32 tensor out."""
    weights = adjustment.model_weights or (1.0,) * len(task_vectors)
    delta = method.delta(task_vectors, weights, parameter_values(method, params), generator)
    factor = adjustment.delta_factor
    if isinstance(factor, torch.Tensor):
        factor = factor.to(device=delta.device, dtype=delta.dtype)
    merged = delta.mul_(factor) if isinstance(factor, torch.Tensor) or factor != 1.0 else delta
    # add_ upcasts a bf16/fp16 θ0 on the fly: no float32 copy of θ0 is ever held.
    if adjustment.base_factor == 1.0:
        return merged.add_(base)
    return merged.add_(base, alpha=adjustment.base_factor)


def _task_vector(finetuned: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """τ = θi − θ0 in float32, computed in a fresh copy of θi (sub_ upcasts a bf16 θ0 on the fly)."""
    return finetuned.to(torch.float32, copy=True).sub_(base)


def merge_tensor(
    base: torch.Tensor,
    finetuned: Sequence[torch.Tensor],
    method: MergeMethod,
    params,
    adjustment: Adjustment,
    generator: torch.Generator,
) -> torch.Tensor:
    """θ0 and θi in, merged tensor out; all arithmetic in float32 on the tensors' device."""
    return _combine(base, [_task_vector(tensor, base) for tensor in finetuned], method, params, adjustment, generator)


def _chunked_factor(factor: float | torch.Tensor, shape: torch.Size) -> float | torch.Tensor | None:
    """The delta factor as a scalar or a flat per-entry tensor, or None when it broadcasts otherwise."""
    if not isinstance(factor, torch.Tensor) or factor.dim() == 0:
        return factor
    if tuple(factor.shape) == tuple(shape):
        return factor.reshape(-1)
    return None


def _merge_elementwise(
    inputs: MergeInputs,
    name: str,
    base: torch.Tensor,
    finetuned: list[torch.Tensor],
    method: MergeMethod,
    params,
    adjustment: Adjustment,
    factor: float | torch.Tensor,
    generator: torch.Generator,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """An elementwise method's merge of a block, CHUNK_ELEMENTS at a time, straight into ``out_dtype``."""
    merged = torch.empty(base.shape, dtype=out_dtype)
    flat_merged, flat_base = merged.view(-1), base.reshape(-1)
    flat_finetuned = [tensor.reshape(-1) for tensor in finetuned]
    with _one_thread():
        for start in range(0, flat_base.numel(), CHUNK_ELEMENTS):
            _merge_chunk(
                inputs,
                name,
                flat_base,
                flat_finetuned,
                flat_merged,
                start,
                method,
                params,
                adjustment,
                factor,
                generator,
            )
    return merged


@contextmanager
def _one_thread():
    """torch's CPU ops on one thread: waking and joining the other threads for every op on a chunk
    this small costs more than the op (much more on a busy machine, where a woken thread may wait
    for a core). The result does not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _merge_chunk(
    inputs: MergeInputs,
    name: str,
    flat_base: torch.Tensor,
    flat_finetuned: list[torch.Tensor],
    flat_merged: torch.Tensor,
    start: int,
    method: MergeMethod,
    params,
    adjustment: Adjustment,
    factor: float | torch.Tensor,
    generator: torch.Generator,
) -> None:
    """Merge elements [start, start + CHUNK_ELEMENTS) of a flattened block into ``flat_merged``."""
    stop = start + CHUNK_ELEMENTS
    base_chunk = flat_base[start:stop]
    task_vectors = []
    for tensor, checkpoint in zip(flat_finetuned, inputs.finetuned, strict=False):
        task_vector = _task_vector(tensor[start:stop], base_chunk)
        _check_finite(task_vector, base_chunk, tensor[start:stop], name, inputs.base, checkpoint)
        task_vectors.append(task_vector)
    chunk_factor = factor[start:stop] if isinstance(factor, torch.Tensor) and factor.dim() else factor
    chunk_adjustment = replace(adjustment, delta_factor=chunk_factor)
    flat_merged[start:stop] = _combine(base_chunk, task_vectors, method, params, chunk_adjustment, generator)


@dataclass(frozen=True)
class _Block:
    """One tensor, or one block of its rows, as the merge streams it: read, merged, written."""

    file: str
    tensor: PlannedTensor
    adjustment: Adjustment
    rows: tuple[int, int] | None
    # The tensor's first block starts its name in the content hashes and its DARE generator.
    first: bool
    # The last block of its shard file, which is closed once it is written.
    closes_file: bool


def _blocks(plan: ShardPlan, method: MergeMethod, adjust: AdjustmentProvider | None) -> Iterator[_Block]:
    """Every block to merge, in write order; a tensor's adjustment is computed when it is reached."""
    for file, tensors in plan.files.items():
        for position, tensor in enumerate(tensors):
            adjustment = adjust(tensor.name) if adjust else Adjustment()
            rows_list = _row_blocks(tensor.shape, method, adjustment) or [None]
            for index, rows in enumerate(rows_list):
                block_adjustment = _adjustment_rows(adjustment, tensor.shape, rows) if rows else adjustment
                last = position == len(tensors) - 1 and index == len(rows_list) - 1
                yield _Block(file, tensor, block_adjustment, rows, index == 0, last)


def _read_block(inputs: MergeInputs, block: _Block, hasher: _ContentHasher) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """θ0 and every θi of a block as stored, added to the content hashes (blocks arrive in order)."""
    name = block.tensor.name
    if block.first:
        hasher.begin(name)
    base = inputs.base.get(name, block.rows)
    hasher.update(0, base)
    finetuned = []
    for index, checkpoint in enumerate(inputs.finetuned, start=1):
        finetuned.append(checkpoint.get(name, block.rows))
        hasher.update(index, finetuned[-1])
    return base, finetuned


def _merge_block(
    inputs: MergeInputs,
    name: str,
    base: torch.Tensor,
    finetuned: list[torch.Tensor],
    method: MergeMethod,
    params,
    adjustment: Adjustment,
    device: torch.device,
    generator: torch.Generator,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Merge a block of tensor ``name`` from its θ0 and θi as read; consumes ``finetuned``.

    An elementwise method on CPU returns the block in ``out_dtype``, merged chunk by chunk; otherwise
    each θi is dropped as soon as its τi is computed and the merge is float32.
    """
    base = base.to(device)
    if not base.dtype.is_floating_point:
        return base
    factor = _chunked_factor(adjustment.delta_factor, base.shape)
    if method.elementwise and device.type == "cpu" and factor is not None:
        return _merge_elementwise(
            inputs, name, base, finetuned, method, params, adjustment, factor, generator, out_dtype
        )
    # Whole tensors run on torch's default threads: measured faster on an idle machine than leaving
    # a core to the reader and writer threads, which mostly wait on IO.
    task_vectors = []
    for checkpoint in inputs.finetuned:
        tensor = finetuned.pop(0)
        task_vector = _task_vector(tensor.to(device), base)
        _check_finite(task_vector, base, tensor, name, inputs.base, checkpoint)
        task_vectors.append(task_vector)
        del tensor
    return _combine(base, task_vectors, method, params, adjustment, generator)


def _write_block(
    writers: dict[str, StreamingSafetensorsWriter], plan: ShardPlan, directory: Path, block: _Block, merged
) -> None:
    """Append a merged block to its shard file, opened at its first block and closed after its last."""
    writer = writers.get(block.file)
    if writer is None:
        writer = writers[block.file] = StreamingSafetensorsWriter(directory / block.file, plan.files[block.file])
    if block.rows:
        writer.write_rows(block.tensor.name, merged)
    else:
        writer.write(block.tensor.name, merged)
    if block.closes_file:
        writers.pop(block.file).close()


def _stream_merge(
    inputs: MergeInputs,
    method: MergeMethod,
    params,
    plan: ShardPlan,
    directory: Path,
    *,
    device: torch.device,
    seed: int,
    adjust: AdjustmentProvider | None,
    hasher: _ContentHasher,
    progress,
) -> None:
    """Merge every planned block and write it into ``directory``.

    Three stages overlap: while a block merges, a reader thread reads (and hashes) the next one and a
    writer thread writes the previous one. ``preadv``, xxhash, file writes and torch's kernels all
    release the GIL, so the IO runs on another core beside the arithmetic instead of after it.
    Memory stays bounded: one block read ahead, at most one merged block waiting to be written. The
    blocks, their order, their arithmetic and the hashes are the same as merged one after another.
    """
    blocks = _blocks(plan, method, adjust)
    writers: dict[str, StreamingSafetensorsWriter] = {}
    with (
        ThreadPoolExecutor(1, thread_name_prefix="merge-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="merge-write") as writer,
    ):

        def read_next() -> tuple[_Block, Future] | None:
            block = next(blocks, None)
            return None if block is None else (block, reader.submit(_read_block, inputs, block, hasher))

        upcoming, writing, generator = read_next(), None, None
        while upcoming is not None:
            block, reading = upcoming
            base, finetuned = reading.result()
            upcoming = read_next()
            if block.first:
                generator = torch.Generator(device=device).manual_seed(_tensor_seed(seed, block.tensor.name))
            merged = _merge_block(
                inputs,
                block.tensor.name,
                base,
                finetuned,
                method,
                params,
                block.adjustment,
                device,
                generator,
                block.tensor.dtype,
            ).to(block.tensor.dtype)
            del base, finetuned
            if writing is not None:
                writing.result()
            writing = writer.submit(_write_block, writers, plan, directory, block, merged)
            progress.update(block.tensor.dtype.itemsize * merged.numel())
            del merged
        if writing is not None:
            writing.result()


def _row_blocks(shape: tuple[int, ...], method: MergeMethod, adjustment: Adjustment) -> list[tuple[int, int]] | None:
    """Blocks of rows to merge ``shape`` in, or None to merge it whole."""
    numel = math.prod(shape)
    if not method.elementwise or not shape or numel <= ROW_BLOCK_ELEMENTS:
        return None
    factor = adjustment.delta_factor
    if isinstance(factor, torch.Tensor) and factor.dim() > len(shape):
        return None
    step = max(1, ROW_BLOCK_ELEMENTS // (numel // shape[0]))
    return [(start, min(shape[0], start + step)) for start in range(0, shape[0], step)]


def _adjustment_rows(adjustment: Adjustment, shape: tuple[int, ...], rows: tuple[int, int]) -> Adjustment:
    """The adjustment for a block of rows: a full-rank per-entry factor is cut to those rows."""
    factor = adjustment.delta_factor
    if isinstance(factor, torch.Tensor) and factor.dim() == len(shape) and factor.shape[0] == shape[0] != 1:
        return replace(adjustment, delta_factor=factor[rows[0] : rows[1]])
    return adjustment


def _write_side_files(
    inputs: MergeInputs, destination: Path, settings: MergeSettings, output_dtype: torch.dtype
) -> None:
    source = inputs.base if settings.tokenizer_from == "base" else inputs.finetuned[0]
    config = dict(source.config)
    config["tie_word_embeddings"] = inputs.tied_output
    dtype_name = str(output_dtype).removeprefix("torch.")
    config["torch_dtype"] = dtype_name
    if "dtype" in config:
        config["dtype"] = dtype_name
    (destination / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = source.path / "generation_config.json"
    if generation.is_file():
        shutil.copyfile(generation, destination / "generation_config.json")
    else:
        from transformers import GenerationConfig

        GenerationConfig.from_dict(
            {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if key in config}
        ).save_pretrained(destination)
    for name in _tokenizer_files(source.path):
        shutil.copyfile(source.path / name, destination / name)


def _tokenizer_files(directory: Path) -> list[str]:
    return [name for name in TOKENIZER_FILES if (directory / name).is_file()] + sorted(
        path.name for path in directory.glob("*.tiktoken")
    )


def tokenizer_source(inputs: MergeInputs, tokenizer_from: str) -> Path:
    """The model directory whose config and tokenizer the merged model is saved with."""
    return inputs.base.path if tokenizer_from == "base" else inputs.finetuned[0].path


def check_tokenizer_source(source: Path, tokenizer_from: str, *, required: bool) -> dict:
    """What the merged model's tokenizer will be, checked before any weight is read.

    No tokenizer in ``source`` is an error when the merged model must be evaluated, and a warning
    for a merge-only use (the weights are still written, without a tokenizer).
    """
    if has_tokenizer(source):
        return {"from": str(source), "files": _tokenizer_files(source)}
    message = f"no tokenizer files in {source} (model_pair.tokenizer_from={tokenizer_from})"
    if required:
        raise ConfigError(
            f"{message}; evaluating the merged model needs its tokenizer: use a model directory "
            "with tokenizer files or set model_pair.tokenizer_from to the other model"
        )
    return {
        "from": str(source),
        "files": _tokenizer_files(source),
        "missing": f"{message}: the merged model is written without a tokenizer (only its weights and config)",
    }


@dataclass(frozen=True)
class MergePreflight:
    """What a merge was checked against before any weight is read."""

    output_dir: Path
    device: torch.device
    plan: ShardPlan
    tokenizer: dict


def preflight(inputs: MergeInputs, settings: MergeSettings) -> MergePreflight:
    """Every check on the settings and the output that needs no weight: run before the heavy work."""
    output_dir = Path(settings.output_dir).resolve()
    check_output_location(output_dir, overwrite=settings.overwrite)
    device = resolve_device(settings.device, "merge.device")
    planned = [PlannedTensor(name, shape, dtype) for name, shape, dtype in inputs.output_tensors]
    plan = plan_shards(planned, settings.shard_size)
    tokenizer = check_tokenizer_source(
        tokenizer_source(inputs, settings.tokenizer_from), settings.tokenizer_from, required=settings.require_tokenizer
    )
    if "missing" in tokenizer and tokenizer["missing"] not in inputs.warned:
        log.warning("%s", tokenizer["missing"])
        inputs.warned.add(tokenizer["missing"])
    if settings.overwrite or not output_dir.is_dir():
        check_free_space(output_dir, plan.total_size)
    return MergePreflight(output_dir, device, plan, tokenizer)


def run_merge(
    inputs: MergeInputs, method: MergeMethod, params, settings: MergeSettings, adjust: AdjustmentProvider | None = None
) -> MergeResult:
    """Merge every tensor and publish ``settings.output_dir`` atomically."""
    # Restricted once here rather than per tensor: the method sees only the parameters it declares,
    # those its fingerprint covers.
    params = parameter_values(method, params)
    checked = preflight(inputs, settings)
    output_dir, device, plan = checked.output_dir, checked.device, checked.plan
    if output_dir.is_dir() and not settings.overwrite:
        raise ConfigError(f"output directory {output_dir} already exists; set merge.overwrite=true to replace it")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temporary_dirs(output_dir):
        log.info("removing the unfinished merge %s left by a killed run", stale)
        shutil.rmtree(stale, ignore_errors=True)

    planned = [tensor for tensors in plan.files.values() for tensor in tensors]
    output_dtype = inputs.output_tensors[0][2]
    temporary = temporary_dir_for(output_dir)
    temporary.mkdir()
    hasher = _ContentHasher(1 + len(inputs.finetuned))
    started = time.time()
    log.info(
        "merging %d tensors with %s into %s (%d shard(s), %.2f GB)",
        len(planned),
        method.name,
        output_dir,
        len(plan.files),
        plan.total_size / 1e9,
    )
    try:
        with tqdm(total=plan.total_size, unit="B", unit_scale=True, desc=f"merge {method.name}") as progress:
            _stream_merge(
                inputs,
                method,
                params,
                plan,
                temporary,
                device=device,
                seed=settings.seed,
                adjust=adjust,
                hasher=hasher,
                progress=progress,
            )
        if plan.is_sharded:
            write_index(temporary, plan)
        _write_side_files(inputs, temporary, settings, output_dtype)
        manifest = build_manifest(
            inputs,
            method,
            params,
            settings,
            plan_files=list(plan.files),
            content_hashes=hasher.hexdigests(),
            seconds=time.time() - started,
            output_dtype=output_dtype,
        )
        manifest["tokenizer_files"] = checked.tokenizer
        manifest["vocabulary_check"] = inputs.vocabulary_check
        manifest["cost"] = cost_so_far()  # wall/CPU time, peak memory and hardware of this merge
        (temporary / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        publish_directory(temporary, output_dir, overwrite=settings.overwrite)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if error.errno == errno.ENOSPC:
            raise RuntimeFailure(
                f"no space left on the device while writing the merge into {output_dir} "
                f"({error.filename or temporary}): "
                f"its shards need {_size(plan.total_size)}; the partial output was removed, free space or choose "
                "another merge.output_dir and rerun"
            ) from error
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    log.info("merged model written to %s in %.1f s", output_dir, time.time() - started)
    return MergeResult(output_dir=output_dir, manifest=manifest)


def method_parameters(method: MergeMethod, params) -> dict:
    return parameter_values(method, params).as_dict()


def request_fingerprint(method: MergeMethod, params, base_id: str, finetuned_ids: Sequence[str], extra: dict) -> str:
    """What identifies a merge's result: method, its parameters, the inputs and the extras given."""
    payload = {
        "method": method.name,
        "parameters": method_parameters(method, params),
        "base": base_id,
        "finetuned": list(finetuned_ids),
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_manifest(
    inputs: MergeInputs,
    method: MergeMethod,
    params,
    settings: MergeSettings,
    *,
    plan_files: list[str],
    content_hashes: list[str],
    seconds: float,
    output_dtype: torch.dtype,
) -> dict:
    models = [inputs.base, *inputs.finetuned]
    roles = ["base"] + [f"finetuned[{i}]" for i in range(len(inputs.finetuned))]
    return {
        "method": method.name,
        "parameters": method_parameters(method, params),
        "seed": settings.seed,
        "inputs": [
            {"role": role, "path": str(model.path), "content_hash": digest, "tied_embeddings": model.tied_embeddings}
            for role, model, digest in zip(roles, models, content_hashes, strict=False)
        ],
        "output": {
            "dtype": str(output_dtype).removeprefix("torch."),
            "files": plan_files,
            "tied_embeddings": inputs.tied_output,
            "tensors": len(inputs.output_tensors),
        },
        "device": settings.device,
        "acm_exp_version": acm_exp.__version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 3),
        **settings.manifest_extra,
    }
