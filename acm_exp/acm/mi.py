"""Mutual information between two paired activation tensors, in nats.

``discrete`` (the paper's estimator) treats every distinct value as one symbol and computes the
plug-in MI of the contingency table; it equals ``sklearn.metrics.mutual_info_score`` on the same
flattened arrays. ``histogram`` first bins each variable (equal-width or quantile bins), then does
the same on the bin indices.

Why it is fast: MI = H(X) + H(Y) − H(X, Y), and each entropy needs only symbol counts. A 16-bit
float (bfloat16, float16) *is* its own symbol id once viewed as uint16, so the marginal counts are
one ``bincount`` of 65,536 entries, with no ``unique`` and no sort. Symbols seen once cannot form a
pair seen more than once, and a pair seen once adds 0 to Σ c·log c: only symbols seen at least twice
get a compact id, every singleton goes to a "trash" id left out of the sum. The joint counts are
one more ``bincount`` over ``id_x * width + id_y``; when that table would be much larger than the
data, ids are ranked by frequency, only the frequent x frequent block is a table and the few pairs
with a rarer symbol are sorted. On CPU the numpy kernels run chunk by chunk in cache-sized buffers (they
are several times faster than torch's there); on an accelerator everything stays in torch on the
tensors' device, ``TORCH_CHUNK`` values at a time, into a dense table (at most the dense budget) or
the running distinct pairs, so its working memory does not grow with the activation (an lm_head
output of 2,048 tokens has 311M values). Wider dtypes (float32, integers) go through ``unique`` (a
sort) per variable.

With numba installed, compiled loops replace the numpy kernels for 16-bit floats on CPU (2-5x
faster, and no table as large as the joint): one counts both variables' symbols in one pass, one
lays the y ids out grouped by x id (a counting sort: 2 bytes a value, the MI's working memory) and
one counts each group in a small table that stays in L1, adding Σ c·log c over the group's distinct
y ids (compensated). The counts are the same, so is the MI up to the last bits of the float64 sum.
Without numba the numpy kernels run (the GPU machine's bundle leaves it out); they need 8 bytes a
value.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from acm_exp.acm import BINNINGS, ESTIMATORS, check_estimator  # noqa: F401 (read from here too)
from acm_exp.errors import DataError

# Whether the 16-bit CPU kernels are the compiled ones (tests switch it off to check the numpy ones).
# numba is optional (the numpy kernels compute the same counts) and imported on first use only.
COMPILED = importlib.util.find_spec("numba") is not None


@functools.cache
def _compiled(function):
    """``function`` compiled by numba; cache=True keeps the machine code next to this module, so
    later processes skip the few seconds of compiling."""
    import numba

    return numba.njit(cache=True, nogil=True)(function)


ArrayLike = torch.Tensor | np.ndarray

SYMBOLS_16BIT = 1 << 16
NEGATIVE_ZERO_16BIT = 0x8000
# Cells of a dense joint table, per value (bounded below and above): zeroing and scanning a table
# costs about 2 ns a cell, sorting about 30-50 ns a value, so a mostly empty table is not worth it.
DENSE_CELLS_PER_SAMPLE = 4
DENSE_CELLS_FLOOR = 1 << 20
DENSE_CELLS_CEILING = 1 << 26
# Values per chunk of the numpy kernels: the chunk's intp buffers stay in the CPU's caches.
CHUNK = 1 << 18
# Values per chunk of the torch kernels (accelerators): a few int64 buffers of this size at a time,
# whatever the activation's size (an lm_head output of 2,048 tokens has 311M values).
TORCH_CHUNK = 1 << 23


def _nan_codes(exponent_mask: int) -> np.ndarray:
    """Which uint16 bit patterns are NaN for a 16-bit float whose exponent bits are exponent_mask."""
    codes = np.arange(SYMBOLS_16BIT, dtype=np.int64)
    return (codes & 0x7FFF) > exponent_mask


# bfloat16: 8 exponent bits (0x7F80); float16: 5 exponent bits (0x7C00).
NAN_CODES = {torch.bfloat16: _nan_codes(0x7F80), torch.float16: _nan_codes(0x7C00)}


# ---------------------------------------------------------------------------------------------
# Inputs


def _flat(value: Any, name: str) -> ArrayLike:
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(-1)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DataError(f"mutual_information: {name} has dtype {array.dtype}; expected a real numeric array")
    return array.reshape(-1)


def _size(value: ArrayLike) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else value.size


def _uses_torch(x: ArrayLike, y: ArrayLike) -> bool:
    """Stay in torch when a tensor lives on an accelerator; CPU data goes to the numpy kernels."""
    return any(isinstance(v, torch.Tensor) and v.device.type != "cpu" for v in (x, y))


def _as_numpy(value: ArrayLike) -> np.ndarray:
    """A numpy view of CPU data; 16-bit torch floats become their uint16 bit patterns."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.is_complex():
        raise DataError(f"mutual_information: dtype {value.dtype} is not supported; expected a real dtype")
    if value.dtype in NAN_CODES:
        return value.contiguous().view(torch.int16).numpy().view(np.uint16)
    return value.contiguous().numpy()


def _as_torch(value: ArrayLike, device: torch.device) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    if tensor.is_complex():
        raise DataError(f"mutual_information: dtype {tensor.dtype} is not supported; expected a real dtype")
    return tensor.to(device)


# ---------------------------------------------------------------------------------------------
# Symbols: per value a raw symbol id, per id a count


@dataclass
class _Symbols:
    """codes[i] is value i's raw symbol id in [0, len(counts)); counts[id] how often id occurs.

    ``negative_zero`` is the raw id of -0.0 when it has one of its own (the 16-bit bit patterns):
    its count is already folded into id 0 (+0.0), since -0.0 == 0.0 is one symbol, as in numpy.
    """

    codes: Any
    counts: Any
    negative_zero: int | None = None


def _nan_error(name: str) -> DataError:
    return DataError(f"mutual_information: {name} contains NaN; expected finite activations (check the capture dtype)")


def _chunk_codes(codes: np.ndarray, start: int, buffer: np.ndarray) -> np.ndarray:
    """codes[start:start+CHUNK] as intp, converted into ``buffer`` when they are uint16 bit patterns.

    Converting chunk by chunk into one cache-sized buffer avoids materializing an 8-byte index per
    value (and the page faults of a fresh array that size): numpy's bincount and take want intp.
    """
    part = codes[start : start + CHUNK]
    if part.dtype == np.intp:
        return part
    converted = buffer[: part.size]
    np.copyto(converted, part, casting="unsafe")
    return converted


def _count_16bit_pair_loop(bits_x, bits_y):
    """Both variables' symbol counts in one pass over the pairs (two tables each, interleaved, so
    that consecutive equal symbols do not wait on each other's increment)."""
    counts_x = np.zeros((2, 65536), dtype=np.int64)
    counts_y = np.zeros((2, 65536), dtype=np.int64)
    even = bits_x.size - bits_x.size % 2
    for index in range(0, even, 2):
        counts_x[0, bits_x[index]] += 1
        counts_y[0, bits_y[index]] += 1
        counts_x[1, bits_x[index + 1]] += 1
        counts_y[1, bits_y[index + 1]] += 1
    for index in range(even, bits_x.size):
        counts_x[0, bits_x[index]] += 1
        counts_y[0, bits_y[index]] += 1
    return counts_x[0] + counts_x[1], counts_y[0] + counts_y[1]


def _count_16bit(bits: np.ndarray) -> np.ndarray:
    counts = np.zeros(SYMBOLS_16BIT, dtype=np.int64)
    buffer = np.empty(min(CHUNK, bits.size), dtype=np.intp)
    for start in range(0, bits.size, CHUNK):
        counts += np.bincount(_chunk_codes(bits, start, buffer), minlength=SYMBOLS_16BIT)
    return counts


def _symbols_16bit_numpy(bits: np.ndarray, dtype: torch.dtype, name: str, counts: np.ndarray | None = None) -> _Symbols:
    counts = _count_16bit(bits) if counts is None else counts
    if counts[NAN_CODES[dtype]].any():
        raise _nan_error(name)
    counts[0] += counts[NEGATIVE_ZERO_16BIT]
    counts[NEGATIVE_ZERO_16BIT] = 0
    return _Symbols(bits, counts, NEGATIVE_ZERO_16BIT)


def _16bit_bits(value: ArrayLike) -> tuple[np.ndarray, torch.dtype] | None:
    """The uint16 bit patterns of a 16-bit float array and its dtype; None for any other dtype."""
    if isinstance(value, torch.Tensor) and value.dtype in NAN_CODES:
        return _as_numpy(value), value.dtype
    if not isinstance(value, torch.Tensor) and value.dtype == np.float16:
        return value.view(np.uint16), torch.float16
    return None


def _symbols_pair_numpy(x: ArrayLike, y: ArrayLike) -> tuple[_Symbols, _Symbols]:
    """Both variables' symbols; two 16-bit float arrays are counted in one compiled pass."""
    bits_x, bits_y = _16bit_bits(x), _16bit_bits(y)
    if COMPILED and bits_x is not None and bits_y is not None:
        counts_x, counts_y = _compiled(_count_16bit_pair_loop)(bits_x[0], bits_y[0])
        return (
            _symbols_16bit_numpy(*bits_x, "x", counts=counts_x),
            _symbols_16bit_numpy(*bits_y, "y", counts=counts_y),
        )
    return _symbols_numpy(x, "x"), _symbols_numpy(y, "y")


def _symbols_numpy(value: ArrayLike, name: str) -> _Symbols:
    bits = _16bit_bits(value)
    if bits is not None:
        return _symbols_16bit_numpy(*bits, name)
    array = _as_numpy(value)
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise _nan_error(name)
    # np.unique compares by value: -0.0 and 0.0 are one symbol, as in sklearn.
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    return _Symbols(inverse.reshape(-1).astype(np.intp, copy=False), counts)


@functools.lru_cache(maxsize=16)
def _nan_codes_on(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(NAN_CODES[dtype]).to(device)


def _torch_codes(codes: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """codes[start:stop] as int64 symbol ids; int16 codes are 16-bit float bit patterns (0..65535)."""
    part = codes[start:stop].to(torch.int64)
    return part.bitwise_and_(0xFFFF) if codes.dtype == torch.int16 else part


def _symbols_torch(tensor: torch.Tensor, name: str) -> _Symbols:
    if tensor.dtype in NAN_CODES:
        # The bit patterns stay 2 bytes a value (a view, no copy); counting converts a chunk at a time.
        codes = tensor.contiguous().view(torch.int16)
        counts = torch.zeros(SYMBOLS_16BIT, dtype=torch.int64, device=tensor.device)
        for start in range(0, codes.numel(), TORCH_CHUNK):
            counts += torch.bincount(_torch_codes(codes, start, start + TORCH_CHUNK), minlength=SYMBOLS_16BIT)
        if bool(counts[_nan_codes_on(tensor.dtype, tensor.device)].any()):
            raise _nan_error(name)
        counts[0] += counts[NEGATIVE_ZERO_16BIT]
        counts[NEGATIVE_ZERO_16BIT] = 0
        return _Symbols(codes, counts, NEGATIVE_ZERO_16BIT)
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    if tensor.is_floating_point():
        if bool(torch.isnan(tensor).any()):
            raise _nan_error(name)
        # torch.unique may keep -0.0 and 0.0 apart; adding +0.0 turns every -0.0 into +0.0.
        tensor = tensor + 0.0
    _, inverse, counts = torch.unique(tensor, return_inverse=True, return_counts=True)
    return _Symbols(inverse.reshape(-1), counts)


# ---------------------------------------------------------------------------------------------
# Histogram binning: symbols are bin indices


def _bin_edges(values: torch.Tensor, bins: int, binning: str) -> torch.Tensor:
    """The bins - 1 inner edges; bin i holds edges[i-1] <= v < edges[i] (the last bin is closed)."""
    if binning == "uniform":
        low, high = values.min(), values.max()
        fractions = torch.arange(1, bins, dtype=torch.float64, device=values.device) / bins
        return low + (high - low) * fractions
    # Quantiles with linear interpolation between order statistics (numpy's default method).
    ordered = torch.sort(values).values
    positions = torch.arange(1, bins, dtype=torch.float64, device=values.device) / bins * (values.numel() - 1)
    lower = positions.floor().long()
    upper = positions.ceil().long()
    fraction = positions - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def bin_indices(values: ArrayLike, bins: int, binning: str) -> torch.Tensor:
    """Each value's histogram bin in [0, bins), computed in float64 on the values' device."""
    tensor = _as_torch(values, values.device if isinstance(values, torch.Tensor) else torch.device("cpu"))
    tensor = tensor.reshape(-1).to(torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise DataError("mutual_information: histogram binning needs finite values; got NaN or Inf")
    if bool(tensor.min() == tensor.max()):
        return torch.zeros_like(tensor, dtype=torch.int64)
    return torch.searchsorted(_bin_edges(tensor, bins, binning), tensor, right=True)


def _symbols_from_bins(indices: torch.Tensor, bins: int, use_torch: bool) -> _Symbols:
    if use_torch:
        return _Symbols(indices, torch.bincount(indices, minlength=bins))
    codes = indices.numpy().astype(np.intp, copy=False)
    return _Symbols(codes, np.bincount(codes, minlength=bins))


# ---------------------------------------------------------------------------------------------
# Counting


def _sum_xlogx_numpy(counts: np.ndarray) -> float:
    """Σ c·log c over the counts; 0 and 1 add nothing."""
    repeated = counts[counts > 1].astype(np.float64)
    # Not np.dot: BLAS would wake its thread pool for a reduction this cheap.
    return float((repeated * np.log(repeated)).sum())


def _sum_xlogx_torch(counts: torch.Tensor) -> float:
    repeated = counts[counts > 1].to(torch.float64)
    return float((repeated * repeated.log()).sum())


def _compact_ids_numpy(symbols: _Symbols) -> tuple[np.ndarray, int]:
    """Raw id -> compact id for symbols seen at least twice, in raw id order; others -> trash id K.

    Raw order is value order within each sign for 16-bit floats, so correlated activations land
    near the table's diagonal, where the counting stays in cache.
    """
    repeated = symbols.counts > 1
    ids = np.cumsum(repeated) - 1
    kept = int(ids[-1]) + 1
    ids[~repeated] = kept
    if symbols.negative_zero is not None:
        ids[symbols.negative_zero] = ids[0]
    return ids.astype(np.intp, copy=False), kept


def _frequency_ids_numpy(symbols: _Symbols) -> tuple[np.ndarray, int]:
    """Raw id -> rank by decreasing count among symbols seen at least twice; all others -> the trash
    rank K. Frequent symbols first: the dense part of the joint table then covers most values."""
    counts = symbols.counts
    repeated = np.flatnonzero(counts > 1)
    order = repeated[np.argsort(-counts[repeated], kind="stable")]
    ids = np.full(counts.size, order.size, dtype=np.intp)
    ids[order] = np.arange(order.size)
    if symbols.negative_zero is not None:
        ids[symbols.negative_zero] = ids[0]
    return ids, order.size


def _compact_ids_torch(symbols: _Symbols) -> tuple[torch.Tensor, int]:
    """Raw id -> compact id for symbols seen at least twice; every other id -> the trash id K."""
    repeated = symbols.counts > 1
    ids = torch.cumsum(repeated, 0) - 1
    kept = int(ids[-1]) + 1
    ids[~repeated] = kept
    if symbols.negative_zero is not None:
        ids[symbols.negative_zero] = ids[0]
    return ids, kept


def _dense_cell_budget(samples: int) -> int:
    return int(min(max(DENSE_CELLS_PER_SAMPLE * samples, DENSE_CELLS_FLOOR), DENSE_CELLS_CEILING))


def _run_lengths_sum_xlogx(keys: np.ndarray) -> float:
    """Σ c·log c over the multiplicities of the keys, by sorting them."""
    if keys.size == 0:
        return 0.0
    keys.sort()
    starts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return _sum_xlogx_numpy(np.diff(np.concatenate(([0], starts, [keys.size]))))


def _joint_dense_numpy(
    sx: _Symbols, sy: _Symbols, ids_x: np.ndarray, ids_y: np.ndarray, kept_x: int, kept_y: int
) -> float:
    """Every pair in one table of (K_x + 1) x (K_y + 1) cells; the last row and column are trash."""
    width = kept_y + 1
    size = sx.codes.size
    keys = np.empty(size, dtype=np.intp)
    row_table = ids_x * width
    buffer, column = np.empty(min(CHUNK, size), dtype=np.intp), np.empty(min(CHUNK, size), dtype=np.intp)
    for start in range(0, size, CHUNK):
        stop = min(start + CHUNK, size)
        np.take(row_table, _chunk_codes(sx.codes, start, buffer), out=keys[start:stop])
        np.take(ids_y, _chunk_codes(sy.codes, start, buffer), out=column[: stop - start])
        keys[start:stop] += column[: stop - start]
    table = np.bincount(keys, minlength=(kept_x + 1) * width).reshape(kept_x + 1, width)
    # The trash row (x seen once) and column (y seen once) hold pairs that each occur once.
    table[kept_x, :] = 0
    table[:, kept_y] = 0
    return _sum_xlogx_numpy(table.reshape(-1))


def _joint_split_numpy(
    sx: _Symbols, sy: _Symbols, ids_x: np.ndarray, ids_y: np.ndarray, kept_x: int, kept_y: int, budget: int
) -> float:
    """Pairs of frequent symbols in a dense table of at most ``budget`` cells, the rest sorted.

    Ids are ranks by frequency, so the frequent x frequent block holds nearly every value while
    its table stays about as large as the data; the few pairs involving a rarer symbol are sorted.
    """
    frequent_x = min(kept_x, max(1, math.isqrt(int(budget))))
    frequent_y = min(kept_y, int(budget) // frequent_x)
    outside_cell = frequent_x * frequent_y  # one extra cell collects every pair left to the sort
    size = sx.codes.size
    keys = np.empty(size, dtype=np.intp)
    buffer = np.empty(min(CHUNK, size), dtype=np.intp)
    rows, columns = np.empty_like(buffer), np.empty_like(buffer)
    rare_keys = []
    for start in range(0, size, CHUNK):
        stop = min(start + CHUNK, size)
        row, column, key = rows[: stop - start], columns[: stop - start], keys[start:stop]
        np.take(ids_x, _chunk_codes(sx.codes, start, buffer), out=row)
        np.take(ids_y, _chunk_codes(sy.codes, start, buffer), out=column)
        outside = (row >= frequent_x) | (column >= frequent_y)
        np.multiply(row, frequent_y, out=key)
        key += column
        if outside.any():
            key[outside] = outside_cell
            rare_rows, rare_columns = row[outside], column[outside]
            repeated = (rare_rows < kept_x) & (rare_columns < kept_y)  # the trash ids are K_x and K_y
            rare_keys.append(rare_rows[repeated] * kept_y + rare_columns[repeated])
    table = np.bincount(keys, minlength=outside_cell + 1)
    table[outside_cell] = 0
    rare = np.concatenate(rare_keys) if rare_keys else np.empty(0, dtype=np.intp)
    if kept_x * kept_y < 2**31:
        rare = rare.astype(np.int32)  # sorting 4-byte keys is faster
    return _sum_xlogx_numpy(table) + _run_lengths_sum_xlogx(rare)


# c·log c for the counts below 2^16 (most cells of a joint table), so the compiled loop looks them up.
_XLOGX_LIMIT = 1 << 16


@functools.lru_cache(maxsize=1)
def _xlogx_table() -> np.ndarray:
    counts = np.arange(_XLOGX_LIMIT, dtype=np.float64)
    counts[0] = 1.0  # 0·log 0 = 0, like 1·log 1: a cell counted once or not at all adds nothing
    return counts * np.log(counts)


def _grouped_by_row(codes_x, codes_y, ids_x, ids_y, row_starts):
    """The y ids of the values whose x id is kept (< K_x), in groups by x id (a counting sort)."""
    kept_x = row_starts.size - 1
    fill = row_starts[:-1].copy()
    columns = np.empty(row_starts[kept_x], dtype=np.uint16)
    for index in range(codes_x.size):
        row = ids_x[codes_x[index]]
        if row < kept_x:
            columns[fill[row]] = ids_y[codes_y[index]]
            fill[row] += 1
    return columns


def _grouped_sum_xlogx(columns, row_starts, counts, xlogx, touched):
    """Σ c·log c over the pair counts, one x id's group at a time (its counts stay in L1).

    Each group counts its y ids, noting every id on its first count in ``touched``, then adds and
    zeroes only the touched counts (a group has far fewer distinct y ids than values). The trash
    column K_y (y seen once) is left out; the per-group sums are added with Neumaier's compensation,
    so the total does not drift with the number of groups.
    """
    kept_y = counts.size - 1
    total, compensation = 0.0, 0.0
    for row in range(row_starts.size - 1):
        distinct = 0
        for index in range(row_starts[row], row_starts[row + 1]):
            column = columns[index]
            if counts[column] == 0:
                touched[distinct] = column
                distinct += 1
            counts[column] += 1
        counts[kept_y] = 0
        part = 0.0
        for position in range(distinct):
            column = touched[position]
            count = counts[column]
            part += xlogx[count] if count < xlogx.size else count * np.log(count)
            counts[column] = 0
        updated = total + part
        if abs(total) >= abs(part):
            compensation += (total - updated) + part
        else:
            compensation += (part - updated) + total
        total = updated
    return total + compensation


def _joint_16bit_compiled(
    sx: _Symbols, sy: _Symbols, ids_x: np.ndarray, ids_y: np.ndarray, kept_x: int, kept_y: int
) -> float:
    # Group sizes are the x ids' counts (the -0.0 code's count is already folded into +0.0's).
    row_counts = np.bincount(ids_x, weights=sx.counts, minlength=kept_x + 1)[:kept_x]
    row_starts = np.zeros(kept_x + 1, dtype=np.int64)
    np.cumsum(row_counts.astype(np.int64), out=row_starts[1:])
    group_by_row = _compiled(_grouped_by_row)
    columns = group_by_row(sx.codes, sy.codes, ids_x.astype(np.int32), ids_y.astype(np.uint16), row_starts)
    # Zeroed per-group counts; int32 (half the cache footprint) unless a group could overflow it.
    counts = np.zeros(kept_y + 1, dtype=np.int32 if sx.codes.size < 2**31 else np.int64)
    touched = np.empty(kept_y + 1, dtype=np.uint16)
    return _compiled(_grouped_sum_xlogx)(columns, row_starts, counts, _xlogx_table(), touched)


def _joint_sum_xlogx_numpy(sx: _Symbols, sy: _Symbols) -> float:
    ids_x, kept_x = _compact_ids_numpy(sx)
    ids_y, kept_y = _compact_ids_numpy(sy)
    if kept_x == 0 or kept_y == 0:
        return 0.0  # every value of one variable is unique, hence every pair
    if COMPILED and sx.negative_zero is not None and sy.negative_zero is not None:
        return _joint_16bit_compiled(sx, sy, ids_x, ids_y, kept_x, kept_y)
    budget = _dense_cell_budget(sx.codes.size)
    if (kept_x + 1) * (kept_y + 1) <= budget:
        return _joint_dense_numpy(sx, sy, ids_x, ids_y, kept_x, kept_y)
    ids_x, _ = _frequency_ids_numpy(sx)
    ids_y, _ = _frequency_ids_numpy(sy)
    return _joint_split_numpy(sx, sy, ids_x, ids_y, kept_x, kept_y, budget)


def _joint_sum_xlogx_torch(sx: _Symbols, sy: _Symbols) -> float:
    """Σ c·log c over the pair counts, TORCH_CHUNK values at a time (bounded working memory on a GPU):
    into one table of (K_x + 1) x (K_y + 1) cells when it fits the dense budget, else as the running
    unique pair keys and their counts (pairs with a symbol seen once are left out: they add 0)."""
    ids_x, kept_x = _compact_ids_torch(sx)
    ids_y, kept_y = _compact_ids_torch(sy)
    if kept_x == 0 or kept_y == 0:
        return 0.0
    width = kept_y + 1
    cells = (kept_x + 1) * width
    size = sx.codes.numel()
    dense = cells <= _dense_cell_budget(size)
    table = torch.zeros(cells if dense else 0, dtype=torch.int64, device=sx.codes.device)
    keys, counts = table[:0], table[:0]  # sparse: the distinct pair keys so far, and their counts
    for start in range(0, size, TORCH_CHUNK):
        row = ids_x[_torch_codes(sx.codes, start, start + TORCH_CHUNK)]
        column = ids_y[_torch_codes(sy.codes, start, start + TORCH_CHUNK)]
        if dense:
            table.index_add_(0, row * width + column, torch.ones_like(row))
            continue
        repeated = (row < kept_x) & (column < kept_y)
        chunk_keys, chunk_counts = torch.unique(row[repeated] * kept_y + column[repeated], return_counts=True)
        keys, inverse = torch.unique(torch.cat([keys, chunk_keys]), return_inverse=True)
        counts = torch.zeros_like(keys).index_add_(0, inverse, torch.cat([counts, chunk_counts]))
    if not dense:
        return _sum_xlogx_torch(counts)
    table = table.reshape(kept_x + 1, width)
    # The trash row (x seen once) and column (y seen once) hold pairs that each occur once.
    table[kept_x, :] = 0
    table[:, kept_y] = 0
    return _sum_xlogx_torch(table.reshape(-1))


def _mi_from_symbols(sx: _Symbols, sy: _Symbols, samples: int, use_torch: bool) -> float:
    if int((sx.counts > 0).sum()) <= 1 or int((sy.counts > 0).sum()) <= 1:
        return 0.0  # a constant carries no information (sklearn returns 0.0 here as well)
    if use_torch:
        marginals = _sum_xlogx_torch(sx.counts) + _sum_xlogx_torch(sy.counts)
        joint = _joint_sum_xlogx_torch(sx, sy)
    else:
        marginals = _sum_xlogx_numpy(sx.counts) + _sum_xlogx_numpy(sy.counts)
        joint = _joint_sum_xlogx_numpy(sx, sy)
    # H(X) + H(Y) - H(X,Y) with H = log n - Σ c log c / n.
    return max(0.0, math.log(samples) - (marginals - joint) / samples)


# ---------------------------------------------------------------------------------------------
# Public


def mutual_information(
    x: ArrayLike, y: ArrayLike, estimator: str = "discrete", bins: int | None = None, binning: str = "uniform"
) -> float:
    """MI in nats between the flattened ``x`` and ``y`` (paired value by value).

    ``discrete``: every distinct value is a symbol (equals sklearn's ``mutual_info_score``);
    ``histogram``: ``bins`` equal-width (``uniform``) or equal-mass (``quantile``) bins per variable.
    """
    check_estimator(estimator, bins, binning)
    flat_x, flat_y = _flat(x, "x"), _flat(y, "y")
    samples = _size(flat_x)
    other = _size(flat_y)
    if samples != other:
        raise DataError(
            f"mutual_information: x has {samples} values and y has {other}; expected paired arrays of equal size"
        )
    if samples == 0:
        raise DataError("mutual_information: x and y are empty; expected at least one paired value")
    use_torch = _uses_torch(flat_x, flat_y)
    if use_torch:
        device = next(v.device for v in (flat_x, flat_y) if isinstance(v, torch.Tensor) and v.device.type != "cpu")
        flat_x, flat_y = _as_torch(flat_x, device), _as_torch(flat_y, device)
    if estimator == "discrete" and use_torch:
        sx, sy = _symbols_torch(flat_x, "x"), _symbols_torch(flat_y, "y")
    elif estimator == "discrete":
        sx, sy = _symbols_pair_numpy(flat_x, flat_y)
    else:
        sx = _symbols_from_bins(bin_indices(flat_x, bins, binning), bins, use_torch)
        sy = _symbols_from_bins(bin_indices(flat_y, bins, binning), bins, use_torch)
    if samples == 1:
        return 0.0
    return _mi_from_symbols(sx, sy, samples, use_torch)


def discrete_mi_torch(x: torch.Tensor, y: torch.Tensor) -> float:
    """The discrete estimator's torch kernels on the tensors' own device (CPU included).

    :func:`mutual_information` picks them for accelerator tensors; this entry point lets the CPU
    test suite check them against sklearn.
    """
    flat_x, flat_y = _flat(x, "x"), _flat(y, "y")
    if flat_x.numel() != flat_y.numel() or flat_x.numel() == 0:
        raise DataError(
            f"discrete_mi_torch: sizes {flat_x.numel()} and {flat_y.numel()}; expected equal, non-zero sizes"
        )
    if flat_x.numel() == 1:
        return 0.0
    return _mi_from_symbols(_symbols_torch(flat_x, "x"), _symbols_torch(flat_y, "y"), flat_x.numel(), True)
