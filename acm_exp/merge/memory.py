"""How the merge engine uses memory and threads: buffers reused block after block, freed memory kept
in the process while merging (glibc), torch's CPU ops on one thread for cache-sized chunks.

Fresh memory costs more than it seems: any allocation above glibc's mmap threshold (32 MB at most)
is mapped anew and faulted in page by page, which on a virtual machine costs several times the copy
that fills it (reading 419 MB from the page cache took 1.0 s of CPU time into fresh memory and 0.06 s
into reused memory). None of this changes a value the merge computes.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


class BufferPool:
    """Byte buffers reused for the blocks the merge writes, kept by exact size (a model's layers repeat
    the same shapes) up to ``limit`` bytes in all. A buffer larger than ``largest`` is not kept: held
    idle, an embedding's would add to the memory its own merge needs at the next such tensor.

    Memory the process has touched before is reused without page faults. Fresh memory (any
    allocation above glibc's mmap threshold, at most 32 MB) is faulted in page by page, which on a
    virtual machine costs several times the copy that fills it: reading 419 MB from the page cache
    took 1.0 s of CPU time into fresh memory and 0.06 s into reused memory.
    """

    def __init__(self, limit: int, largest: int):
        self._limit, self._largest = limit, largest
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lent: dict[int, torch.Tensor] = {}
        self._held = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        with self._lock:
            stack = self._free.get(nbytes)
            buffer = stack.pop() if stack else None
            self._held -= nbytes if buffer is not None else 0
        buffer = torch.empty(nbytes, dtype=torch.uint8) if buffer is None else buffer
        with self._lock:
            self._lent[buffer.data_ptr()] = buffer
        return buffer

    def give(self, tensors: Sequence[torch.Tensor]) -> None:
        """Take back the buffers behind ``tensors`` (views of buffers it lent; others are ignored)."""
        with self._lock:
            for tensor in tensors:
                buffer = self._lent.pop(tensor.untyped_storage().data_ptr(), None)
                size = 0 if buffer is None else buffer.numel()
                if buffer is not None and size <= self._largest and self._held + size <= self._limit:
                    self._free.setdefault(size, []).append(buffer)
                    self._held += size


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """While merging, memory the merge frees stays in the process for the next tensor (glibc only).

    glibc gives every allocation above its mmap threshold (32 MB at most) back to the system when it
    is freed, so a method's temporaries (TIES: float32 copies of every large tensor) would be faulted
    in again, page by page, for the next tensor: a third of a TIES merge's CPU time on a virtual
    machine. At the end the defaults are restored and what the merge freed is given back.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    global _keeping
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    _keeping = True
    try:
        yield
    finally:
        _keeping = False
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


@contextmanager
def large_allocations_returned() -> Iterator[None]:
    """Inside ``freed_memory_kept``: what is allocated here for a tensor far larger than the rest (an
    embedding's float32 temporaries) is mapped afresh and returned when freed, as glibc does by
    default. Kept, those temporaries would leave holes that later allocations of other sizes fit
    badly, and the process would grow well past what it ever holds at once."""
    libc = _glibc()
    if libc is None or not _keeping:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.malloc_trim(0)


# A tensor whose float32 temporaries are larger than this is merged in large_allocations_returned().
LARGE_TEMPORARIES = 1 << 28
_keeping = False

# mallopt's parameters and glibc's defaults (malloc.h, malloc/malloc.c).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX, _INT_MAX = 128 * 1024, 65536, 2**31 - 1


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
        # gnu_get_libc_version exists in glibc only (musl's mallopt does nothing).
        return libc if hasattr(libc, "gnu_get_libc_version") else None
    except (OSError, AttributeError):
        return None


@contextmanager
def one_thread():
    """torch's CPU ops on one thread: waking and joining the other threads for every op on a chunk
    this small costs more than the op (much more on a busy machine, where a woken thread may wait
    for a core). The result does not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
