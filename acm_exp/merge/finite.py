"""The merge's NaN/Inf checks: an input with NaN or Inf, and a merged tensor that is not finite in the
output dtype (float16 overflows past 65504), stop the merge with one line naming the tensor, before
anything is published.

The checks cost one fast reduction where all is well and the exact per-entry tests only where it is
not, to name the culprit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from acm_exp.errors import ConfigError, DataError
from acm_exp.merge.checkpoint import Checkpoint


def check_task_vector_finite(
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
    check_inputs_finite(name, base, [finetuned], base_checkpoint, [checkpoint])


def check_inputs_finite(
    name: str,
    base: torch.Tensor,
    finetuned: Sequence[torch.Tensor],
    base_checkpoint: Checkpoint,
    checkpoints: Sequence[Checkpoint],
) -> None:
    """Name the first input whose block of tensor ``name`` holds a NaN or Inf."""
    for tensor, source in zip((base, *finetuned), (base_checkpoint, *checkpoints), strict=True):
        if not torch.isfinite(tensor).all():
            raise ConfigError(f"tensor {name} of {source.path} contains NaN or Inf values")


def is_finite(tensor: torch.Tensor) -> bool:
    # The float32 sum is finite when every entry is, in one fast reduction; only a non-finite sum (large
    # finite entries can overflow it too) needs the exact test.
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) or bool(torch.isfinite(tensor).all())


def surely_fits(merged: torch.Tensor, dtype: torch.dtype) -> bool:
    """True when every entry of a chunk's float32 merge is finite and stays finite in ``dtype``.

    Σx² (a BLAS dot: one pass, four times cheaper than the sum of the converted chunk) is at least every
    x² and, summing a chunk's non-negative terms (2^16 in the engine), loses far less than the factor of four
    that half the limit leaves. False only says that the exact test on the output must decide.
    """
    limit = overflow_limit(dtype) / 2
    return float(torch.dot(merged, merged)) < limit * limit


def fits(merged: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether every entry of a float32 merge is finite and stays finite in ``dtype``: exactly, in one
    pass that allocates nothing (a NaN fails both comparisons)."""
    low, high = torch.aminmax(merged)
    limit = overflow_limit(dtype)
    return bool(low > -limit) and bool(high < limit)


def overflow_limit(dtype: torch.dtype) -> float:
    """The smallest float32 magnitude that rounds to ±Inf in ``dtype`` (round to nearest even)."""
    if dtype.itemsize >= 4:
        return math.inf
    info = torch.finfo(dtype)
    return info.max + info.eps * 2.0 ** math.floor(math.log2(info.max)) / 2


def check_output_finite(merged: torch.Tensor, name: str) -> None:
    """Stop the merge at a merged tensor that is Inf or NaN in the output dtype (float16 overflows past
    65504): it would be published as such, and a model with it generates garbage."""
    if is_finite(merged):
        return
    count = int((~torch.isfinite(merged)).sum())
    dtype = str(merged.dtype).removeprefix("torch.")
    remedy = (
        "set merge.dtype=bfloat16 or float32 to write it in a wider dtype"
        if merged.dtype == torch.float16
        else "check the inputs and the merge parameters (merge.scale)"
    )
    raise DataError(
        f"merged tensor {name} has {count} Inf/NaN value(s) in the output dtype {dtype} (largest finite {dtype}: "
        f"{torch.finfo(merged.dtype).max:.6g}); the merge was stopped and nothing was published: {remedy}"
    )
