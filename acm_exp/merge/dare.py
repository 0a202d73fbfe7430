"""DARE: drop each entry of τi with probability p, rescale the survivors by 1/(1 − p), then combine.

The combinations are the DARE rows of the L2S code (its ``mask_merging`` with a ``mask_apply_method``):

- ``combine=average``: average the sparsified models with the base, Σ τi' / (N + 1) (the "DARE" row);
- ``combine=ta``: task arithmetic, α Σ τi' ("DARE-TA");
- ``combine=ties``: the full TIES merge of the sparsified vectors: trim each to its largest-magnitude
  (1 − k) fraction, elect signs, disjoint mean, × α ("DARE-TIES").
"""

from acm_exp.merge.registry import MergeMethod, register
from acm_exp.merge.sparsify import magnitude_trim, random_drop, sign_consensus_mean, weighted_sum
from acm_exp.merge_parameters import ACM_PARAMETERS, COMBINE, SCALE, K, P


def dare_delta(task_vectors, weights, params, generator):
    COMBINE.check(params.combine)
    dropped = [random_drop(vector, params.p, generator) for vector in task_vectors]
    if params.combine == "average":
        return weighted_sum(dropped, weights).div_(len(task_vectors) + 1)
    if params.combine == "ta":
        return weighted_sum(dropped, weights).mul_(params.scale)
    trimmed = [magnitude_trim(vector, params.k) for vector in dropped]
    return sign_consensus_mean(trimmed, weights).mul_(params.scale)


def acm_dare_delta(task_vectors, weights, params, generator):
    # ACM-TA's form: α (1/N) Σ λi·τi'; the average and TIES combinations already divide.
    delta = dare_delta(task_vectors, weights, params, generator)
    return delta / len(task_vectors) if params.combine == "ta" else delta


DARE_PARAMETERS = (SCALE, P, COMBINE, K)

register(MergeMethod("dare", dare_delta, parameters=DARE_PARAMETERS, label="DARE"))
register(
    MergeMethod(
        "acm_dare",
        acm_dare_delta,
        parameters=(*DARE_PARAMETERS, *ACM_PARAMETERS),
        label="ACM-DARE",
        coefficients="acm",
        plain="dare",
        description="DARE with ACM layer-wise coefficients",
    )
)
