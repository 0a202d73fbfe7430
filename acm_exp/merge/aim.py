"""AIM (Activation-Informed Merging): a base method's merge, relaxed where the base model is active.

Δ comes from the method named by ``merge.base_method`` (TIES in the paper's tables); the AIM
coefficient provider (:mod:`acm_exp.acm.importance`) then scales the delta of every weight but the
embeddings (linear and norm weights, as the official AIM code does; ``relax=linear``: linear weights
only) per input channel by 1 − imp·(1 − ω), where imp is the base's normalized mean |input
activation|: channels the base relies on most move least. Biases and an untied embedding are left
as the base method merged them; an embedding the merge keeps tied to lm_head is relaxed by lm_head's
factor, as the official code's shared parameter is (``tied_embedding=unrelaxed`` leaves it alone).
"""

from acm_exp.merge.registry import MergeMethod, get_wrapped_method, register
from acm_exp.merge_parameters import BASE_METHOD, OMEGA, RELAX, TIED_EMBEDDING


def aim_delta(task_vectors, weights, params, generator):
    return get_wrapped_method(params.base_method).delta(task_vectors, weights, params, generator)


register(
    MergeMethod(
        "aim",
        aim_delta,
        parameters=(OMEGA, BASE_METHOD, RELAX, TIED_EMBEDDING),
        label="AIM",
        coefficients="aim",
        wraps_base_method=True,
        description="the base method's merge relaxed per input channel by the base's activation importance",
    )
)
