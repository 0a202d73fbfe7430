"""Task Arithmetic: θ0 + α Σ τi. ACM-TA: θ0 + α (1/N) Σ λi·τi (the paper's form, α = 1 by default)."""

from acm_exp.merge.registry import MergeMethod, register
from acm_exp.merge.sparsify import weighted_sum_
from acm_exp.merge_parameters import ACM_PARAMETERS, SCALE


def task_arithmetic_delta(task_vectors, weights, params, generator):
    # α folded into the weights: one pass over the tensor fewer than scaling the sum.
    return weighted_sum_(task_vectors, [params.scale * w for w in weights])


def acm_task_arithmetic_delta(task_vectors, weights, params, generator):
    return weighted_sum_(task_vectors, [params.scale * w / len(task_vectors) for w in weights])


register(MergeMethod("task_arithmetic", task_arithmetic_delta, parameters=(SCALE,), label="TA", elementwise=True))
register(
    MergeMethod(
        "acm_ta",
        acm_task_arithmetic_delta,
        parameters=(SCALE, *ACM_PARAMETERS),
        label="ACM-TA",
        coefficients="acm",
        plain="task_arithmetic",
        description="Task Arithmetic with ACM layer-wise coefficients",
        elementwise=True,
    )
)
