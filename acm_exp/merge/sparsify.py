"""Building blocks shared by the methods: magnitude trimming, random dropping, sign consensus.

torch is imported by the functions that use it: the method modules import this one when they
register, and registering must stay light (validation needs the registry, not torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def keep_count(numel: int, drop_fraction: float) -> int:
    # The epsilon keeps 1 - 0.8 = 0.19999999999999996 from losing an entry to float rounding.
    return min(numel, max(0, math.floor((1.0 - drop_fraction) * numel + 1e-9)))


def magnitude_trim(tensor: torch.Tensor, drop_fraction: float, *, in_place: bool = False) -> torch.Tensor:
    """Zero the ``drop_fraction`` smallest-magnitude entries: exactly ``keep_count`` entries survive.

    The survivors are the entries above the ``keep``-th largest magnitude plus, among the entries
    equal to it, the ones with the lowest flat indices: the result is deterministic even with ties,
    which are common in task vectors of bf16 checkpoints. ``in_place``: zero them in ``tensor``
    itself (the same values, without a tensor's worth of fresh memory).
    """
    import torch

    keep = keep_count(tensor.numel(), drop_fraction)
    if keep >= tensor.numel():
        return tensor
    if keep == 0:
        return torch.zeros_like(tensor)
    flat = tensor.reshape(-1)
    magnitudes = flat.abs()
    if magnitudes.device.type == "cpu" and magnitudes.numel() >= _SAMPLED_SELECTION_MIN:
        # kth_largest's selection, made in the magnitudes' own memory (a copy of a tensor this large
        # costs more than the selection), which leaves them out of order: recomputed in place. The
        # entries above the threshold are all past its position then, so they are counted there.
        position = magnitudes.numel() - keep
        magnitudes.numpy().partition(position)
        threshold = magnitudes[position].clone()
        above = int(torch.count_nonzero(magnitudes[position + 1 :] > threshold))
        torch.abs(flat, out=magnitudes)
        kept = magnitudes > threshold
    else:
        threshold = kth_largest(magnitudes, keep)
        kept = magnitudes > threshold
        above = int(torch.count_nonzero(kept))
    missing = keep - above
    # Keeping a zero changes nothing, so ties only matter above zero (where they are few).
    if missing > 0 and bool(threshold > 0):
        _keep_first_ties(kept, magnitudes, threshold, missing)
    del magnitudes
    if in_place:
        return flat.masked_fill_(kept.logical_not_(), 0).view_as(tensor)
    return torch.where(kept, flat, 0).view_as(tensor)


# Entries per block when scanning for ties: bounds the index tensors nonzero() allocates.
_TIE_BLOCK = 1 << 22


def _keep_first_ties(kept: torch.Tensor, magnitudes: torch.Tensor, threshold: torch.Tensor, count: int) -> None:
    """Mark the first ``count`` entries (by index) whose magnitude equals ``threshold`` as kept."""
    import torch

    for start in range(0, magnitudes.numel(), _TIE_BLOCK):
        ties = magnitudes[start : start + _TIE_BLOCK] == threshold
        found = int(torch.count_nonzero(ties))
        if found <= count:
            # Every tie of the block is kept: no index list needed.
            kept[start : start + _TIE_BLOCK].logical_or_(ties)
            count -= found
        else:
            kept[start + torch.nonzero(ties).squeeze(1)[:count]] = True
            count = 0
        if count == 0:
            return


# Below this size torch.kthvalue is already fast; above it, estimate the answer from a sample first.
_SAMPLED_SELECTION_MIN = 1 << 20
_SAMPLE_SIZE = 1 << 18
# Half-width of the rank window around the sampled estimate, as a fraction of the entries: 6.5 to 8
# standard errors of a quantile estimated from 2^18 samples (keep fractions 0.5 to 0.2), so the
# window almost never misses.
_RANK_MARGIN = 0.0064


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest entry of a 1-D tensor (1 <= k <= numel), exactly, as a 0-d tensor.

    On the CPU, numpy's introselect (``np.partition``, on a copy) finds it in about a third of the time
    of the sampled selection below and a sixth of ``torch.kthvalue``'s (a quickselect over a copy,
    single-threaded); on an accelerator, the sampled selection (``sampled_kth_largest``).
    """
    import torch

    count = values.numel()
    if count < _SAMPLED_SELECTION_MIN:
        return torch.kthvalue(values, count - k + 1).values
    if values.device.type == "cpu":
        import numpy as np

        return torch.tensor(np.partition(values.numpy(), count - k)[count - k])
    return sampled_kth_largest(values, k)


def sampled_kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """``kth_largest`` by sampling: a seeded random sample brackets the answer between two values; one
    pass counts the entries above the bracket and gathers the few inside it, and the exact selection
    runs on those alone (about 2x faster than ``torch.kthvalue`` on the whole tensor). If the bracket
    misses, the full selection runs: the answer is exact either way, only the time depends on the sample.
    """
    import torch

    count = values.numel()
    generator = torch.Generator(device=values.device).manual_seed(0)
    sample_index = torch.randint(count, (_SAMPLE_SIZE,), generator=generator, device=values.device)
    sample = values[sample_index]
    # Sample positions (ascending) bracketing the k-th largest, i.e. the (count - k + 1)-th smallest.
    quantile = 1.0 - k / count
    low_position = math.floor((quantile - _RANK_MARGIN) * _SAMPLE_SIZE)
    high_position = math.ceil((quantile + _RANK_MARGIN) * _SAMPLE_SIZE)
    if low_position >= 0 and high_position < _SAMPLE_SIZE:
        # Two selections instead of sorting the sample: the same two values, in a third of the time.
        low = torch.kthvalue(sample, low_position + 1).values
        high = torch.kthvalue(sample, high_position + 1).values
        above = int(torch.count_nonzero(values > high))
        window = values[(values >= low) & (values <= high)]
        if above < k <= above + window.numel():
            return torch.kthvalue(window, window.numel() - (k - above) + 1).values
    return torch.kthvalue(values, count - k + 1).values


def outlier_and_magnitude_trim(tensor: torch.Tensor, drop_fraction: float, outlier_fraction: float) -> torch.Tensor:
    """Model Breadcrumbs: drop the smallest ``drop_fraction`` and the largest ``outlier_fraction``."""
    import torch

    flat = tensor.reshape(-1)
    order = torch.argsort(flat.abs(), descending=True)
    top_dropped = min(flat.numel(), math.floor(outlier_fraction * flat.numel() + 1e-9))
    keep = keep_count(flat.numel(), drop_fraction)
    kept = order[top_dropped : top_dropped + keep]
    trimmed = torch.zeros_like(flat)
    trimmed[kept] = flat[kept]
    return trimmed.view_as(tensor)


def random_drop(tensor: torch.Tensor, drop_probability: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: drop each entry with probability p and rescale the survivors by 1/(1-p)."""
    import torch

    if drop_probability == 0.0:
        return tensor
    keep = torch.rand(tensor.shape, generator=generator, device=tensor.device) >= drop_probability
    return tensor * keep / (1.0 - drop_probability)


def weighted_sum(task_vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ wi·τi, in a new tensor (never an input), which the caller may scale in place."""
    total = task_vectors[0] * float(weights[0])
    for vector, weight in zip(task_vectors[1:], weights[1:], strict=False):
        total.add_(vector, alpha=float(weight))
    return total


def weighted_sum_(task_vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ wi·τi computed in the first task vector, which it overwrites: the same operations, so the same
    values, as ``weighted_sum``, without a tensor's worth of fresh memory."""
    total = task_vectors[0].mul_(float(weights[0]))
    for vector, weight in zip(task_vectors[1:], weights[1:], strict=False):
        total.add_(vector, alpha=float(weight))
    return total


def sign_consensus_mean(task_vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES: elect a sign per entry by the sign of the sum, then average the agreeing entries.

    The average is over the models whose (nonzero) entry agrees with the elected sign (the
    "disjoint mean"); each agreeing entry enters with its model's weight, so with weights wi the
    result is Σ wi·mi·τi / Σ mi (for one model: w·τ). An entry whose sum is exactly zero elects
    no sign and stays zero. Callers may scale the result in place; with one model it is computed in
    that model's task vector.
    """
    import torch

    if len(task_vectors) == 1:
        # Every nonzero entry agrees with its own sign: the mean of one is w·τ.
        return task_vectors[0].mul_(float(weights[0]))
    elected = weighted_sum(task_vectors, [1.0] * len(task_vectors)).sign_()
    merged = torch.zeros_like(task_vectors[0])
    agreeing = torch.zeros_like(task_vectors[0])
    for vector, weight in zip(task_vectors, weights, strict=False):
        # Same nonzero sign as the elected one (elected is -1, 0 or +1).
        agrees = (vector * elected) > 0
        merged.add_(torch.where(agrees, vector, 0.0), alpha=float(weight))
        agreeing.add_(agrees)
    return merged.div_(agreeing.clamp_(min=1.0))
