"""Average: (θ0 + Σ θi) / (N + 1) = θ0 + Σ wi·τi / (N + 1)."""

from acm_exp.merge.registry import MergeMethod, register
from acm_exp.merge.sparsify import weighted_sum_
from acm_exp.merge_parameters import ACM_PARAMETERS


def average_delta(task_vectors, weights, params, generator):
    return weighted_sum_(task_vectors, weights).div_(len(task_vectors) + 1)


register(
    MergeMethod(
        "average",
        average_delta,
        parameters=(),
        label="Average",
        description="uniform average of all models",
        elementwise=True,
    )
)
register(
    MergeMethod(
        "acm_average",
        average_delta,
        parameters=ACM_PARAMETERS,
        label="ACM-Average",
        coefficients="acm",
        plain="average",
        description="average with ACM layer-wise weights λi on each task vector",
        elementwise=True,
    )
)
