"""Model Breadcrumbs: drop the smallest k and the largest γ fraction of each τi, then sum × α."""

from acm_exp.merge.registry import MergeMethod, register
from acm_exp.merge.sparsify import outlier_and_magnitude_trim, weighted_sum
from acm_exp.merge_parameters import GAMMA, SCALE, K


def breadcrumbs_delta(task_vectors, weights, params, generator):
    trimmed = [outlier_and_magnitude_trim(vector, params.k, params.gamma) for vector in task_vectors]
    return weighted_sum(trimmed, weights).mul_(params.scale)


register(MergeMethod("breadcrumbs", breadcrumbs_delta, parameters=(SCALE, K, GAMMA), label="Breadcrumbs"))
