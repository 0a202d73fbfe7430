"""Sens-Merging: task arithmetic whose decoder layers are re-balanced by parameter sensitivity.

Every tensor gets θ0 + α·τ; the Sens-Merging coefficient provider (:mod:`acm_exp.acm.sensitivity`)
then turns each decoder layer's tensors into c_base·θ0 + c_ft·α·τ, with per-layer weights
[c_base, c_ft] = 2·softmax([(1 − α)·s_base, α·s_ft] / T) from the two models' sensitivities.
"""

from acm_exp.merge.registry import MergeMethod, register
from acm_exp.merge.sparsify import weighted_sum_
from acm_exp.merge_parameters import ALPHA, TEMPERATURE


def sens_delta(task_vectors, weights, params, generator):
    return weighted_sum_(task_vectors, [params.alpha * w for w in weights])


register(
    MergeMethod(
        "sens",
        sens_delta,
        parameters=(ALPHA, TEMPERATURE),
        label="Sens-Merging",
        coefficients="sens",
        elementwise=True,
        description="task arithmetic (α) with per-layer weights from gradient sensitivity",
    )
)
