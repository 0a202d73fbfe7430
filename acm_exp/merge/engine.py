"""The streaming merge engine: the models, tensor by tensor, into sharded safetensors; the request
fingerprint and the manifest.

The engine owns everything but the arithmetic: it reads one tensor of every model at a time (a large
tensor of an elementwise method block of rows by block of rows), asks the method for the merged
delta, applies the coefficient provider's per-tensor adjustment (ACM, AIM, Sens-Merging), checks that
the result is finite in the output dtype, and streams it into a temporary directory that is
published by one rename only when complete. Its inputs and their checks are in
``acm_exp.merge.inputs`` (vocabularies: ``acm_exp.merge.vocabulary``), publishing in
``acm_exp.merge.publish`` (their public names are importable from here too), its use of memory and
threads in ``acm_exp.merge.memory``.

What identifies a merge (``request_fingerprint``): the method, the parameters it declares, the input
model ids and the extras the caller gives (dtype, seed, coefficients, side-file, head and vocabulary
choices). An
identical complete merge is reused by the caller. ``merge_manifest.json`` records the request, every
input's content hash (xxh3-128 over the stored tensors as they stream by), the output's dtype, files,
vocabulary and tied head, the package and torch versions, and the merge's cost.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import logging
import math
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import xxhash
from tqdm.auto import tqdm

from acm_exp.costs import cost_so_far
from acm_exp.errors import ConfigError, RuntimeFailure
from acm_exp.merge.checkpoint import (
    Checkpoint,
    PlannedTensor,
    ShardPlan,
    StreamingSafetensorsWriter,
    write_index,
)

# The inputs' and publishing's public names, importable from the engine as before its split.
from acm_exp.merge.finite import (
    check_inputs_finite,
    check_output_finite,
    check_task_vector_finite,
    fits,
    is_finite,
    surely_fits,
)
from acm_exp.merge.inputs import (  # noqa: F401
    ARCHITECTURE_KEYS,
    TIED_HEAD_MODES,
    MergeInputs,
    MergePreflight,
    MergeSettings,
    check_tokenizer_source,
    config_source,
    open_inputs,
    preflight,
    tokenizer_source,
    writes_tied_head,
)
from acm_exp.merge.memory import (
    LARGE_TEMPORARIES,
    BufferPool,
    freed_memory_kept,
    large_allocations_returned,
    one_thread,
)
from acm_exp.merge.publish import (  # noqa: F401
    MANIFEST_NAME,
    TOKENIZER_FILES,
    check_free_space,
    check_output_location,
    output_lock,
    publish_directory,
    read_manifest,
    remove_stale_temporary_dirs,
    size_text,
    temporary_dir_for,
    tokenizer_files,
    write_side_files,
)
from acm_exp.merge.registry import MergeMethod, parameter_values
from acm_exp.merge.vocabulary import align_rows, check_vocabularies, stored_rows  # noqa: F401
from acm_exp.version import __version__

log = logging.getLogger(__name__)

# An elementwise method merges tensors larger than this block of rows by block of rows, so the
# float32 working copies of an embedding or lm_head (0.5-2 GB each) never exist at once.
ROW_BLOCK_ELEMENTS = 1 << 23
# On CPU an elementwise method runs on a block chunk by chunk: a chunk's float32 working copies
# stay in cache and their memory is reused, where block-sized temporaries would each be fresh
# pages (page faults and zeroing cost more than the arithmetic). The same operations on the same
# values, so the same result; a multiple of every SIMD width, so no element changes loop path.
# A chunk's float32 working copies (256 KiB each) stay in a core's L2 cache beside the other
# threads' data (2^16 elements merged twice as fast as 2^18 per element on a 2 MiB L2); chunks are
# merged on one thread (see memory.one_thread), so no parallel-region start is paid per op.
CHUNK_ELEMENTS = 1 << 16
# Merged blocks waiting to be written, in bytes (at least one block waits).
WRITE_BEHIND = 1 << 26


@dataclass(frozen=True)
class Adjustment:
    """How one tensor's merge is weighted: θ = base_factor·θ0 + delta_factor ⊙ Δ(τ, model_weights)."""

    model_weights: tuple[float, ...] | None = None
    base_factor: float = 1.0
    delta_factor: float | torch.Tensor = 1.0


AdjustmentProvider = Callable[[str], Adjustment]


@dataclass
class MergeOutput:
    """A merge written by the engine: its directory and manifest (the API's result is
    ``acm_exp.outcomes.MergeResult``)."""

    output_dir: Path
    manifest: dict
    reused: bool = False


# The engine's result under its earlier name.
MergeResult = MergeOutput


def run_merge(
    inputs: MergeInputs, method: MergeMethod, params, settings: MergeSettings, adjust: AdjustmentProvider | None = None
) -> MergeOutput:
    """Merge every tensor and publish ``settings.output_dir`` atomically."""
    # Restricted once here rather than per tensor: the method sees only the parameters it declares,
    # those its fingerprint covers.
    params = parameter_values(method, params)
    checked = preflight(inputs, settings)
    output_dir, device, plan = checked.output_dir, checked.device, checked.plan
    if output_dir.is_dir() and not settings.overwrite:
        raise ConfigError(f"output directory {output_dir} already exists; set merge.overwrite=true to replace it")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_dirs(output_dir)

    planned = [tensor for tensors in plan.files.values() for tensor in tensors]
    output_dtype = inputs.output_tensors[0][2]
    temporary = temporary_dir_for(output_dir)
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
        # Created inside the try: an interruption (Ctrl-C, SIGTERM) at any point removes it.
        temporary.mkdir()
        with (
            tqdm(total=plan.total_size, unit="B", unit_scale=True, desc=f"merge {method.name}") as progress,
            freed_memory_kept(),
        ):
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
        source = inputs.base if settings.tokenizer_from == "base" else inputs.finetuned[0]
        write_side_files(
            temporary,
            source.config,
            source.path,
            tokenizer_source(inputs, settings.tokenizer_from),
            dtype=str(output_dtype).removeprefix("torch."),
            updates={"tie_word_embeddings": inputs.tied_output, **_vocabulary_size(inputs, source.config)},
        )
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
        manifest["vocabulary"] = inputs.vocabulary.manifest_entry()
        manifest["cost"] = cost_so_far()  # wall/CPU time, peak memory and hardware of this merge
        (temporary / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        publish_directory(temporary, output_dir, overwrite=settings.overwrite)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if error.errno == errno.ENOSPC:
            raise RuntimeFailure(
                f"no space left on the device while writing the merge into {output_dir} "
                f"({error.filename or temporary}): "
                f"its shards need {size_text(plan.total_size)}; the partial output was removed, free space or choose "
                "another merge.output_dir and rerun"
            ) from error
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    log.info("merged model written to %s in %.1f s", output_dir, time.time() - started)
    return MergeOutput(output_dir=output_dir, manifest=manifest)


def _vocabulary_size(inputs: MergeInputs, config: dict) -> dict:
    """config.json's vocab_size, set to the rows written when an extension is dropped or kept."""
    return (
        {"vocab_size": inputs.vocabulary.output_rows} if inputs.vocabulary.extended and "vocab_size" in config else {}
    )


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
        "acm_exp_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 3),
        **settings.manifest_extra,
    }


# ---------------------------------------------------------------------------------------------
# Streaming


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
    # θ0 converted to float32 first (exactly): an in-place op with a bf16 operand runs torch's
    # element-by-element casting loop, 4x slower than the conversion and a float32 op together.
    base = base.to(torch.float32)
    if adjustment.base_factor == 1.0:
        return merged.add_(base)
    return merged.add_(base, alpha=adjustment.base_factor)


def _task_vector(finetuned: torch.Tensor, base: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """τ = θi − θ0 in float32, computed in a fresh copy of θi, or in ``out`` (θ0 converted to float32
    first, as in ``_combine``)."""
    copy = finetuned.to(torch.float32, copy=True) if out is None else out.copy_(finetuned)
    return copy.sub_(base.to(torch.float32))


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
    name: str,
    base: torch.Tensor,
    finetuned: list[torch.Tensor],
    method: MergeMethod,
    params,
    adjustment: Adjustment,
    factor: float | torch.Tensor,
    generator: torch.Generator,
    out: torch.Tensor,
    checkpoints: tuple[Checkpoint, Sequence[Checkpoint]],
) -> None:
    """An elementwise method's merge of a block into ``out``, CHUNK_ELEMENTS at a time.

    Every chunk's τi are computed in the same float32 buffers, which stay in cache (see CHUNK_ELEMENTS).
    Only the output is checked: a NaN or Inf in any input makes an elementwise (weighted-sum) merge
    non-finite, and only then are the inputs tested, to name the culprit (``checkpoints``: the base's
    and the fine-tuned models').
    """
    flat_merged, flat_base = out.view(-1), base.reshape(-1)
    flat_finetuned = [tensor.reshape(-1) for tensor in finetuned]
    # Float32 buffers reused chunk after chunk: each model's τ, and θ0's chunk (last).
    size = min(CHUNK_ELEMENTS, flat_base.numel())
    work = [torch.empty(size, dtype=torch.float32) for _ in range(1 + len(finetuned))]
    with one_thread():
        for start in range(0, flat_base.numel(), CHUNK_ELEMENTS):
            stop = min(start + CHUNK_ELEMENTS, flat_base.numel())
            base_chunk = work[-1][: stop - start].copy_(flat_base[start:stop])
            task_vectors = [
                _task_vector(tensor[start:stop], base_chunk, buffer[: stop - start])
                for tensor, buffer in zip(flat_finetuned, work[:-1], strict=True)
            ]
            chunk_factor = factor[start:stop] if isinstance(factor, torch.Tensor) and factor.dim() else factor
            chunk_adjustment = replace(adjustment, delta_factor=chunk_factor)
            merged = _combine(base_chunk, task_vectors, method, params, chunk_adjustment, generator)
            written = flat_merged[start:stop]
            written.copy_(merged)
            # Checked here while the chunk is in cache (the whole block costs 6x more once it is not).
            if not surely_fits(merged, out.dtype) and not is_finite(written):
                check_inputs_finite(name, base, finetuned, *checkpoints)
                check_output_finite(written, name)


@dataclass(frozen=True)
class _StreamedBlock:
    """One tensor, or one block of its rows, as the merge streams it: read, merged, written."""

    file: str
    tensor: PlannedTensor
    adjustment: Adjustment
    rows: tuple[int, int] | None
    # The tensor's first block starts its name in the content hashes and its DARE generator.
    first: bool
    # The last block of its shard file, which is closed once it is written.
    closes_file: bool

    @property
    def shape(self) -> tuple[int, ...]:
        shape = self.tensor.shape
        return shape if self.rows is None else (self.rows[1] - self.rows[0], *shape[1:])


def _blocks(plan: ShardPlan, method: MergeMethod, adjust: AdjustmentProvider | None) -> Iterator[_StreamedBlock]:
    """Every block to merge, in write order; a tensor's adjustment is computed when it is reached."""
    for file, tensors in plan.files.items():
        for position, tensor in enumerate(tensors):
            adjustment = adjust(tensor.name) if adjust else Adjustment()
            rows_list = _row_blocks(tensor.shape, method, adjustment) or [None]
            for index, rows in enumerate(rows_list):
                block_adjustment = _adjustment_rows(adjustment, tensor.shape, rows) if rows else adjustment
                last = position == len(tensors) - 1 and index == len(rows_list) - 1
                yield _StreamedBlock(file, tensor, block_adjustment, rows, index == 0, last)


# A read made for a block: which model, which tensor, which rows (None: all).
_Read = tuple[Checkpoint, str, "tuple[int, int] | None"]


def _read_block(
    inputs: MergeInputs, block: _StreamedBlock, hasher: _ContentHasher
) -> tuple[torch.Tensor, list[torch.Tensor], list[_Read]]:
    """θ0 and every θi of a block, added to the content hashes as stored (blocks arrive in order), and
    the reads made (released once the block is written).

    A vocabulary tensor whose rows differ between the models (acm_exp.merge.vocabulary) is read as
    each model stores it and aligned to the output's rows.
    """
    name = block.tensor.name
    if block.first:
        hasher.begin(name)
    model_rows = inputs.vocabulary.model_rows.get(name)
    if model_rows is not None:
        output_rows = block.tensor.shape[0]
        start, stop = block.rows or (0, output_rows)
    stored, reads = [], []
    for index, checkpoint in enumerate((inputs.base, *inputs.finetuned)):
        rows = block.rows if model_rows is None else stored_rows(model_rows[index], start, stop, output_rows)
        stored.append(checkpoint.get(name, rows))
        reads.append((checkpoint, name, rows))
        hasher.update(index, stored[-1])
    tensors = align_rows(stored, stop - start) if model_rows is not None else stored
    return tensors[0], tensors[1:], reads


def _merge_block(
    inputs: MergeInputs,
    block: _StreamedBlock,
    base: torch.Tensor,
    finetuned: list[torch.Tensor],
    method: MergeMethod,
    params,
    device: torch.device,
    generator: torch.Generator,
    pool: BufferPool,
    reads: list[_Read],
) -> torch.Tensor:
    """Merge a block from its θ0 and θi as read into a buffer of ``pool`` (the output dtype, on the CPU),
    checked finite there; consumes ``finetuned``.

    An elementwise method on CPU merges the block chunk by chunk (``_merge_elementwise``). Otherwise
    each θi's pages are given up as soon as its τi is computed and checked, θ0's once the merge is,
    and the output buffer is taken only then: the method's float32 temporaries are the only large
    memory held while it runs.
    """
    if not base.dtype.is_floating_point:
        return base
    name, adjustment = block.tensor.name, block.adjustment
    base = base.to(device)

    def output() -> torch.Tensor:
        nbytes = math.prod(block.shape) * block.tensor.dtype.itemsize
        return pool.take(nbytes).view(block.tensor.dtype).view(block.shape)

    factor = _chunked_factor(adjustment.delta_factor, base.shape)
    if method.elementwise and device.type == "cpu" and factor is not None:
        out, checkpoints = output(), (inputs.base, inputs.finetuned)
        _merge_elementwise(name, base, finetuned, method, params, adjustment, factor, generator, out, checkpoints)
        return out
    # Whole tensors run on torch's default threads: measured faster on an idle machine than leaving
    # a core to the reader and writer threads, which mostly wait on IO.
    large = math.prod(block.shape) * 4 > LARGE_TEMPORARIES
    with large_allocations_returned() if large else contextlib.nullcontext():
        # θ0 in float32 once for τ and the final sum; a large tensor's is converted for each instead,
        # so that it does not add to the method's temporaries.
        base32 = base if large else base.to(torch.float32)
        task_vectors = []
        for index, checkpoint in enumerate(inputs.finetuned, start=1):
            tensor = finetuned.pop(0)
            task_vector = _task_vector(tensor.to(device), base32)
            check_task_vector_finite(task_vector, base, tensor, name, inputs.base, checkpoint)
            task_vectors.append(task_vector)
            del tensor
            _release(pool, reads[index : index + 1])
        merged = _combine(base32, task_vectors, method, params, adjustment, generator)
        _release(pool, reads[:1])
        in_range = fits(merged, block.tensor.dtype)
        out = output().copy_(merged)
        del merged, task_vectors, base32
    if not in_range:
        check_output_finite(out, name)
    return out


def _write_block(
    writers: dict[str, StreamingSafetensorsWriter], plan: ShardPlan, directory: Path, block: _StreamedBlock, merged
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


def _finish_write(pool: BufferPool, future: Future, reads: list[_Read], merged: torch.Tensor) -> None:
    future.result()
    _release(pool, reads, merged)


def _release(pool: BufferPool, reads: list[_Read], merged: torch.Tensor | None = None) -> None:
    """Memory a block no longer needs is free for the blocks to come: its inputs' mapped pages, and once
    it is written its output buffer (a merged tensor that is not one of ``pool``'s is left alone)."""
    for checkpoint, name, rows in reads:
        checkpoint.release(name, rows)
    if merged is not None:
        pool.give([merged])


def _output_pool(plan: ShardPlan) -> BufferPool:
    """Output buffers for two blocks of every size written (the one being written, the next), none of a
    tensor whose float32 temporaries count as large (see memory.large_allocations_returned)."""
    largest = LARGE_TEMPORARIES // 4 * 2
    sizes = {min(math.prod(t.shape) * t.dtype.itemsize, largest) for tensors in plan.files.values() for t in tensors}
    return BufferPool(2 * sum(sizes), largest)


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
    writer thread writes the previous one. Page faults, xxhash, file writes and torch's kernels all
    release the GIL, so the IO runs on another core beside the arithmetic instead of after it. The
    inputs are read through memory maps (the page cache's pages, not copies; unmapped once their block
    is written) and the output blocks' buffers are reused (``BufferPool``), so memory stays bounded:
    one block read ahead, merged blocks waiting to be written up to WRITE_BEHIND bytes (at least one).
    The blocks, their order, their arithmetic and the hashes are the same as merged one after another.
    """
    blocks = _blocks(plan, method, adjust)
    pool = _output_pool(plan)
    checkpoints = (inputs.base, *inputs.finetuned)
    writers: dict[str, StreamingSafetensorsWriter] = {}
    with (
        ThreadPoolExecutor(1, thread_name_prefix="merge-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="merge-write") as writer,
    ):

        def read_next() -> tuple[_StreamedBlock, Future] | None:
            block = next(blocks, None)
            return None if block is None else (block, reader.submit(_read_block, inputs, block, hasher))

        for checkpoint in checkpoints:
            checkpoint.mapped = True
        try:
            upcoming, writing, generator = read_next(), collections.deque(), None
            while upcoming is not None:
                block, reading = upcoming
                base, finetuned, reads = reading.result()
                upcoming = read_next()
                if block.first:
                    generator = torch.Generator(device=device).manual_seed(_tensor_seed(seed, block.tensor.name))
                merged = _merge_block(inputs, block, base, finetuned, method, params, device, generator, pool, reads)
                del base, finetuned
                # Writes queue up to WRITE_BEHIND bytes (at least one block), so that a write the page
                # cache holds up for a moment does not stop the merge.
                while writing and sum(entry[2].nbytes for entry in writing) + merged.nbytes > WRITE_BEHIND:
                    _finish_write(pool, *writing.popleft())
                future = writer.submit(_write_block, writers, plan, directory, block, merged)
                writing.append((future, reads, merged))
                progress.update(block.tensor.dtype.itemsize * merged.numel())
                del merged
            while writing:
                _finish_write(pool, *writing.popleft())
        finally:
            for checkpoint in checkpoints:
                checkpoint.mapped = False


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
