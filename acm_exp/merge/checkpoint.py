"""Checkpoint IO: lazy tensor-by-tensor reading and streaming sharded safetensors writing.

Reading is one tensor (or one block of rows) at a time, for single files and sharded checkpoints
with an index, located by the header parsed (and validated as strictly as safetensors' own loader
does) here. By default a tensor is read with ``pread`` into memory it owns. The merge engine reads
through a private memory map instead (``Checkpoint.mapped``): the tensor is then the page cache's
pages, with no copy, and ``release`` unmaps a block's pages once it is merged and written; without
that, the mapped pages of every open shard stay counted in the process's memory (two 1.2 GB
checkpoints merged through ``safe_open``'s map held 2.5 GB). Pickled ``.bin`` checkpoints are
refused unless the caller allows them (then loaded with ``weights_only=True``).

Writing plans the shards with huggingface_hub's sharding helper and streams every tensor to disk
as soon as it is merged: the safetensors header is computed up front from the planned shapes, so
no shard is ever held in memory whole.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
from huggingface_hub import split_state_dict_into_shards_factory

from acm_exp.errors import ConfigError
from acm_exp.merge.validation import parse_shard_size  # noqa: F401 (read from here too)
from acm_exp.models import read_model_config

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Shard names as transformers writes them (model-00001-of-00002.safetensors; model.safetensors unsharded).
SAFETENSORS_PATTERN = "model{suffix}.safetensors"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"

EMBEDDING_NAME = "model.embed_tokens.weight"
LM_HEAD_NAME = "lm_head.weight"

_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_DTYPE_CODES = {dtype: code for code, dtype in _SAFETENSORS_DTYPES.items()}

# One pread call moves at most this much (Linux caps a single read near 2 GiB).
_READ_BLOCK = 1 << 30


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str
    # Absolute byte offset of the data in a safetensors file (None for pickled checkpoints).
    offset: int | None = None

    @property
    def row_bytes(self) -> int:
        """Bytes per index of the first dimension (the whole tensor for a scalar)."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize


@dataclass
class Checkpoint:
    """A model directory's weights, known by their headers only until a tensor is asked for."""

    path: Path
    config: dict
    tensors: dict[str, TensorInfo]
    is_pickle: bool = False
    # Read through a private memory map of each shard instead of pread (the merge engine's streaming):
    # a tensor is then the file's cached pages, not a copy, and ``release`` unmaps a finished block's.
    mapped: bool = field(default=False, repr=False)
    _handles: dict[str, object] = field(default_factory=dict, repr=False)
    _maps: dict[str, mmap.mmap] = field(default_factory=dict, repr=False)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False)) and LM_HEAD_NAME not in self.tensors

    @property
    def weight_files(self) -> list[str]:
        return sorted({info.file for info in self.tensors.values()})

    def resolved_name(self, name: str) -> str:
        """The stored tensor behind ``name``: a tied model's lm_head is its embedding."""
        if name == LM_HEAD_NAME and self.tied_embeddings:
            return EMBEDDING_NAME
        return name

    def info(self, name: str) -> TensorInfo:
        return self.tensors[self.resolved_name(name)]

    def has(self, name: str) -> bool:
        return self.resolved_name(name) in self.tensors

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor ``name``, or only its rows ``[start, stop)`` along the first dimension."""
        stored = self.resolved_name(name)
        info = self.tensors[stored]
        if self.is_pickle:
            tensor = self._pickle_shard(info.file)[stored]
            return tensor if rows is None else tensor[rows[0] : rows[1]]
        start, stop = rows if rows is not None else (0, info.shape[0] if info.shape else 1)
        shape = (stop - start, *info.shape[1:]) if info.shape else ()
        return self._read(info, info.offset + start * info.row_bytes, shape)

    def release(self, name: str, rows: tuple[int, int] | None = None) -> None:
        """Unmap the whole pages of what ``get(name, rows)`` returned through the map (the page cache
        keeps them): otherwise they would stay counted in the process's memory until it closes."""
        info = self.info(name)
        if not self.mapped or self.is_pickle or info.file not in self._maps:
            return
        start, stop = rows if rows is not None else (0, info.shape[0] if info.shape else 1)
        first = -(-(info.offset + start * info.row_bytes) // mmap.PAGESIZE) * mmap.PAGESIZE
        last = (info.offset + stop * info.row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            self._maps[info.file].madvise(mmap.MADV_DONTNEED, first, last - first)

    def _read(self, info: TensorInfo, offset: int, shape: tuple[int, ...]) -> torch.Tensor:
        size = math.prod(shape) * info.dtype.itemsize
        if self.mapped and size:
            # A private (copy-on-write) map: the tensor may be written without touching the file.
            if info.file not in self._maps:
                with open(self.path / info.file, "rb") as handle:
                    self._maps[info.file] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
            count = size // info.dtype.itemsize
            return torch.frombuffer(self._maps[info.file], dtype=info.dtype, count=count, offset=offset).reshape(shape)
        if info.file not in self._handles:
            self._handles[info.file] = self._stack.enter_context(open(self.path / info.file, "rb", buffering=0))
        data = torch.empty(size, dtype=torch.uint8)
        _pread_into(self._handles[info.file], memoryview(data.numpy()), offset, self.path / info.file)
        # Safetensors stores little-endian data, the byte order of every platform torch runs on.
        return data.view(info.dtype).reshape(shape)

    def _pickle_shard(self, file: str) -> dict[str, torch.Tensor]:
        # One pickled shard is memory-mapped at a time; keep only the current one open.
        if file not in self._handles:
            self._handles.clear()
            self._handles[file] = torch.load(self.path / file, map_location="cpu", weights_only=True, mmap=True)
        return self._handles[file]

    def close(self) -> None:
        self._handles.clear()
        self._stack.close()
        for mapped in self._maps.values():
            try:
                mapped.close()
            except BufferError:  # a tensor still uses it: unmapped when the last one goes
                pass
        self._maps.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pread_into(handle: BinaryIO, target: memoryview, offset: int, path: Path) -> None:
    filled = 0
    while filled < len(target):
        count = os.preadv(handle.fileno(), [target[filled : filled + _READ_BLOCK]], offset + filled)
        if count == 0:
            raise ConfigError(f"{path} is truncated: a tensor's data ends past the end of the file")
        filled += count


def _read_header(path: Path) -> tuple[dict, int]:
    """The safetensors header and the offset where the data begins."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ConfigError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", prefix)
        # Checked before reading: a corrupt length would otherwise ask for an enormous buffer.
        header = None
        if 8 + length <= path.stat().st_size:
            try:
                header = json.loads(handle.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
        if not isinstance(header, dict):
            raise ConfigError(f"{path} has a corrupt safetensors header")
        return header, 8 + length


def read_safetensors_header(path: Path) -> dict:
    return _read_header(path)[0]


def _safetensors_tensors(directory: Path, files: Iterable[str]) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        path = directory / file
        header, data_start = _read_header(path)
        for name, info in _validated_header(path, file, header, data_start).items():
            if name in tensors:
                raise ConfigError(f"tensor {name!r} is stored twice: in {directory / tensors[name].file} and in {path}")
            tensors[name] = info
    return tensors


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _validated_header(path: Path, file: str, header: dict, data_start: int) -> dict[str, TensorInfo]:
    """The tensors a safetensors header declares, after the checks safetensors' own loader makes.

    The data is read at these offsets directly, so a header must describe its data section exactly:
    every tensor's byte span fits the section and matches its dtype and shape, and the spans tile
    the section with no overlap (two tensors aliasing the same bytes) and no gap (bytes that belong
    to no tensor), as the format requires.
    """
    data_length = path.stat().st_size - data_start
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise ConfigError(
                f"tensor {name!r} in {path} has a malformed header entry; expected dtype, shape and data_offsets"
            )
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
        if dtype is None:
            raise ConfigError(
                f"tensor {name!r} in {path} has unsupported dtype {code!r}; expected one of "
                f"{sorted(_SAFETENSORS_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(_is_count(size) for size in shape):
            raise ConfigError(f"tensor {name!r} in {path} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise ConfigError(f"tensor {name!r} in {path} has invalid data offsets {offsets!r}")
        begin, end = offsets
        needed = _nbytes(tuple(shape), dtype)
        if end - begin != needed:
            raise ConfigError(
                f"tensor {name!r} in {path}: data offsets {begin}..{end} hold {end - begin} bytes but its shape "
                f"{shape} {code} needs {needed}; the file is corrupt"
            )
        if end > data_length:
            raise ConfigError(
                f"tensor {name!r} in {path}: data offsets {begin}..{end} end past the {data_length}-byte data "
                "section; the file is truncated or corrupt"
            )
        spans.append((begin, end, name))
        tensors[name] = TensorInfo(tuple(shape), dtype, file, offset=data_start + begin)
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise ConfigError(
                f"tensors {previous!r} and {name!r} in {path} overlap (data bytes {begin}..{min(end, position)} "
                "belong to both); the header aliases one tensor's data to another, so the file is corrupt"
            )
        if begin > position:
            raise ConfigError(
                f"data bytes {position}..{begin} of {path} belong to no tensor (gap before {name!r}); the header "
                "does not describe the data, so the file is corrupt"
            )
        position, previous = end, name
    if position != data_length:
        raise ConfigError(
            f"data bytes {position}..{data_length} of {path} belong to no tensor (after the last one, {previous!r}); "
            "the header does not describe the data, so the file is corrupt"
        )
    return tensors


def _index_files(index_path: Path) -> list[str]:
    """The shard files a checkpoint index names, each checked to exist."""
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{index_path} is not valid JSON ({error})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ConfigError(f"{index_path} has no weight_map object (tensor name -> shard file)")
    files = sorted(set(weight_map.values()))
    for file in files:
        if not (index_path.parent / file).is_file():
            raise ConfigError(f"{index_path} names the shard {file}, which is missing from {index_path.parent}")
    return files


def _check_index_placement(index_path: Path, tensors: dict[str, TensorInfo]) -> None:
    """Every tensor sits in the shard the index names for it, and the index names every tensor."""
    weight_map = json.loads(index_path.read_text())["weight_map"]
    for name, file in weight_map.items():
        if name not in tensors:
            raise ConfigError(f"{index_path} places tensor {name!r} in {file}, which does not hold it")
        if tensors[name].file != file:
            raise ConfigError(f"{index_path} places tensor {name!r} in {file}, but it is in {tensors[name].file}")
    unlisted = sorted(set(tensors) - set(weight_map))
    if unlisted:
        raise ConfigError(f"{index_path} does not list tensor {unlisted[0]!r} (in {tensors[unlisted[0]].file})")


def _pickle_tensors(directory: Path, files: Iterable[str]) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        state = torch.load(directory / file, map_location="meta", weights_only=True, mmap=True)
        for name, tensor in state.items():
            tensors[name] = TensorInfo(tuple(tensor.shape), tensor.dtype, file)
    return tensors


def open_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> Checkpoint:
    """Read a model directory's config and tensor headers (no weights)."""
    directory = Path(path)
    config = read_model_config(directory)
    if (directory / SAFETENSORS_INDEX).is_file():
        index_path = directory / SAFETENSORS_INDEX
        tensors = _safetensors_tensors(directory, _index_files(index_path))
        _check_index_placement(index_path, tensors)
        return Checkpoint(directory, config, tensors)
    if (directory / SAFETENSORS_SINGLE).is_file():
        return Checkpoint(directory, config, _safetensors_tensors(directory, [SAFETENSORS_SINGLE]))
    pickle_files = (
        _index_files(directory / PICKLE_INDEX)
        if (directory / PICKLE_INDEX).is_file()
        else [PICKLE_SINGLE]
        if (directory / PICKLE_SINGLE).is_file()
        else []
    )
    if pickle_files:
        if not allow_pickle:
            raise ConfigError(
                f"model directory {directory} holds only pickled .bin weights; refusing to unpickle them "
                "(set model_pair.allow_pickle=true to load them with torch.load(weights_only=True))"
            )
        return Checkpoint(directory, config, _pickle_tensors(directory, pickle_files), is_pickle=True)
    raise ConfigError(
        f"model directory {directory} has no safetensors weights ({SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX})"
    )


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class ShardPlan:
    """Which tensors go to which file, in write order."""

    files: dict[str, list[PlannedTensor]]
    total_size: int

    @property
    def is_sharded(self) -> bool:
        return len(self.files) > 1


def plan_shards(tensors: list[PlannedTensor], max_shard_size: int | str) -> ShardPlan:
    """Group tensors into shards with huggingface_hub's splitter, as ``save_pretrained`` names and fills them.

    The splitter's framework-neutral form is fed the planned sizes: its torch form would import
    torch.distributed (0.6 s of start-up) only to learn that planned tensors share no storage.
    """
    by_name = {t.name: t for t in tensors}
    split = split_state_dict_into_shards_factory(
        by_name,
        get_storage_size=lambda tensor: _nbytes(tensor.shape, tensor.dtype),
        filename_pattern=SAFETENSORS_PATTERN,
        max_shard_size=parse_shard_size(max_shard_size),
    )
    files = {file: [by_name[name] for name in names] for file, names in split.filename_to_tensors.items()}
    return ShardPlan(files=files, total_size=int(split.metadata["total_size"]))


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def safetensors_header(tensors: list[PlannedTensor], metadata: dict[str, str] | None = None) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        size = _nbytes(tensor.shape, tensor.dtype)
        header[tensor.name] = {
            "dtype": _DTYPE_CODES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    # The format wants the data to start 8-byte aligned; pad the header with spaces.
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded


class StreamingSafetensorsWriter:
    """Writes one safetensors file tensor by tensor, in the order of its precomputed header.

    A tensor arrives whole (``write``) or as consecutive blocks of rows (``write_rows``), so a
    large tensor never has to be in memory at once.
    """

    def __init__(self, path: Path, tensors: list[PlannedTensor]):
        self._expected = list(tensors)
        self._position = 0
        self._rows_written = 0
        self._handle = open(path, "wb")
        self._handle.write(safetensors_header(tensors))

    def write(self, name: str, tensor: torch.Tensor) -> None:
        planned = self._next(name, tensor)
        if tuple(tensor.shape) != planned.shape or self._rows_written:
            raise RuntimeError(f"tensor {name} {tuple(tensor.shape)} does not match the planned {planned.shape}")
        self._write_bytes(tensor)
        self._position += 1

    def write_rows(self, name: str, rows: torch.Tensor) -> None:
        """Append the next block of rows (first dimension) of tensor ``name``."""
        planned = self._next(name, rows)
        if (
            not planned.shape
            or tuple(rows.shape[1:]) != planned.shape[1:]
            or self._rows_written + rows.shape[0] > planned.shape[0]
        ):
            raise RuntimeError(
                f"rows {self._rows_written}..{self._rows_written + (rows.shape[0] if rows.dim() else 0)} "
                f"{tuple(rows.shape)} do not fit the planned {name} {planned.shape}"
            )
        self._write_bytes(rows)
        self._rows_written += rows.shape[0]
        if self._rows_written == planned.shape[0]:
            self._position += 1
            self._rows_written = 0

    def _next(self, name: str, tensor: torch.Tensor) -> PlannedTensor:
        if self._position >= len(self._expected):
            raise RuntimeError(f"tensor {name} written after the last planned tensor")
        planned = self._expected[self._position]
        if name != planned.name or tensor.dtype != planned.dtype:
            raise RuntimeError(
                f"tensor {name} {tensor.dtype} does not match the planned {planned.name} {planned.dtype}"
            )
        return planned

    def _write_bytes(self, tensor: torch.Tensor) -> None:
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._handle.write(memoryview(data.numpy()))

    def close(self) -> None:
        self._handle.close()
        if self._position != len(self._expected):
            raise RuntimeError(f"shard closed after {self._position} of {len(self._expected)} tensors")


def write_index(directory: Path, plan: ShardPlan) -> None:
    weight_map = {t.name: file for file, tensors in plan.files.items() for t in tensors}
    index = {"metadata": {"total_size": plan.total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
