"""TIES: trim each τi to its largest-magnitude (1 − k) fraction, elect signs, disjoint mean, × α."""

from acm_exp.merge.registry import MergeMethod, register
from acm_exp.merge.sparsify import magnitude_trim, sign_consensus_mean
from acm_exp.merge_parameters import ACM_PARAMETERS, SCALE, K


def ties_delta(task_vectors, weights, params, generator):
    trimmed = [magnitude_trim(vector, params.k, in_place=True) for vector in task_vectors]
    return sign_consensus_mean(trimmed, weights).mul_(params.scale)


register(MergeMethod("ties", ties_delta, parameters=(SCALE, K), label="TIES"))
register(
    MergeMethod(
        "acm_ties",
        ties_delta,
        parameters=(SCALE, K, *ACM_PARAMETERS),
        label="ACM-TIES",
        coefficients="acm",
        plain="ties",
        description="TIES with ACM layer-wise coefficients on each trimmed, sign-agreeing task vector",
    )
)
