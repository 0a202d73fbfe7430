"""Merge hyper-parameters, each declared once: name, default, valid values, display label and doc.

A merge method lists the declarations it reads (``MergeMethod(..., parameters=(SCALE, K))``); from
them come the merge config schema (:class:`acm_exp.config.MergeConfig`), the per-method range and
choice checks (:mod:`acm_exp.merge.validation`), the results columns (:mod:`acm_exp.results`) and
the merge fingerprint and manifest (:mod:`acm_exp.merge.engine`).

Outside the ``acm_exp.merge`` package on purpose: the config schema is built from this module, and
importing the package would import torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from acm_exp.choices import Choice
from acm_exp.errors import ConfigError


class Combine(Choice):
    """How DARE combines the sparsified task vectors (acm_exp.merge.dare)."""

    average = "average"
    ta = "ta"
    ties = "ties"


class Shift(Choice):
    """What ACM subtracts from MI before the sigmoid (acm_exp.acm.coefficients)."""

    per_point_max = "per_point_max"
    global_max = "global_max"
    none = "none"


class Reduce(Choice):
    """How ACM reduces over calibration samples (acm_exp.acm.coefficients)."""

    mean_of_sigmoids = "mean_of_sigmoids"
    sigmoid_of_mean = "sigmoid_of_mean"


class Relax(Choice):
    """Which weights AIM relaxes (acm_exp.acm.importance)."""

    all = "all"
    linear = "linear"


class TiedEmbedding(Choice):
    """What AIM does to an embedding the merge keeps tied to lm_head (acm_exp.acm.importance)."""

    head = "head"
    unrelaxed = "unrelaxed"


@dataclass(frozen=True)
class Parameter:
    """One merge hyper-parameter: a number within bounds, a choice of an enum, or free text.

    A number must lie between ``low`` and ``high`` (infinite bounds still demand a finite value),
    each end closed unless ``low_open``/``high_open``; free text (``kind=str``) is checked by whoever
    knows its valid values (base_method: the method registry).
    """

    name: str
    default: Any
    label: str
    doc: str
    kind: type = float
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    # Said after the expected range in an error message: what the number means.
    meaning: str = ""

    def expected(self) -> str:
        """What a valid value is, as an error message says it."""
        if issubclass(self.kind, Choice):
            return f"one of {self.kind.values()}"
        if self.kind is str:
            return "a string"
        if math.isinf(self.low) and math.isinf(self.high):
            text = "a finite number"
        elif self.low == 0 and self.low_open and math.isinf(self.high):
            text = "a positive number"
        else:
            is_fraction = (self.low, self.high, self.low_open, self.high_open) == (0, 1, False, True)
            interval = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            text = f"a {'fraction' if is_fraction else 'number'} in {interval}"
        return f"{text} ({self.meaning})" if self.meaning else text

    def accepts(self, value: Any) -> bool:
        if issubclass(self.kind, Choice):
            return isinstance(value, str) and value in self.kind.values()
        if self.kind is str:
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def check(self, value: Any) -> None:
        """Raise a one-line ConfigError naming ``merge.<name>=<value>`` unless the value is valid."""
        if not self.accepts(value):
            raise ConfigError(f"merge.{self.name}={value!r}; expected {self.expected()}")


def fraction(name: str, default: float, label: str, doc: str) -> Parameter:
    return Parameter(name, default, label, doc, low=0.0, high=1.0, high_open=True)


SCALE = Parameter(
    "scale", 1.0, "α", "global scale of the merged task vector (Task Arithmetic's λ, TIES' scaling); < 0 negates"
)
K = fraction("k", 0.8, "k", "TIES: fraction of each task vector's entries dropped by magnitude, per tensor")
P = fraction("p", 0.3, "p", "DARE: drop probability; survivors are rescaled by 1/(1-p)")
COMBINE = Parameter(
    "combine",
    Combine.ta,
    "combine",
    "DARE: how the sparsified task vectors are combined",
    Combine,
)
GAMMA = fraction("gamma", 0.01, "γ", "Model Breadcrumbs: fraction of the largest-magnitude entries dropped (outliers)")
T = Parameter("t", 0.7, "t", "ACM: coefficient temperature", meaning="the sigmoid temperature, negative allowed")
SHIFT = Parameter(
    "shift",
    Shift.per_point_max,
    "shift",
    "ACM: what MI is shifted by before the sigmoid, λ = 1 − mean σ(t·(MI − shift)): each capture point's maximum "
    "over the samples, one global maximum, or none",
    Shift,
)
REDUCE = Parameter(
    "reduce",
    Reduce.mean_of_sigmoids,
    "reduce",
    "ACM: over the samples, the mean of the sigmoids (the paper's λ) or the sigmoid of the mean MI",
    Reduce,
)
OMEGA = Parameter("omega", 0.4, "ω", "AIM: relaxation floor", low=0.0, high=1.0)
BASE_METHOD = Parameter("base_method", "ties", "base method", "AIM: the plain method whose merge AIM relaxes", str)
RELAX = Parameter(
    "relax",
    Relax.all,
    "relax",
    "AIM: 'all' relaxes every weight but the embeddings (norms included, as the official AIM code does), "
    "'linear' the linear layers only",
    Relax,
)
TIED_EMBEDDING = Parameter(
    "tied_embedding",
    TiedEmbedding.head,
    "tied embedding",
    "AIM on a merge that keeps lm_head tied to the embedding: 'head' relaxes the shared matrix by lm_head's "
    "input importance (the official AIM code writes the relaxed lm_head into the shared parameter), "
    "'unrelaxed' leaves it as the base method merged it",
    TiedEmbedding,
)
ALPHA = Parameter(
    "alpha",
    0.7,
    "α (Sens)",
    "Sens-Merging: weight of the fine-tuned model",
    low=0.0,
    high=1.0,
    meaning="the fine-tuned model's weight",
)
TEMPERATURE = Parameter(
    "temperature",
    2.0,
    "T",
    "Sens-Merging: softmax temperature",
    low=0.0,
    low_open=True,
    meaning="the softmax temperature",
)

# Every declared parameter, in the order of the config schema and the results columns.
MERGE_PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        SCALE,
        K,
        P,
        COMBINE,
        GAMMA,
        T,
        SHIFT,
        REDUCE,
        OMEGA,
        BASE_METHOD,
        RELAX,
        TIED_EMBEDDING,
        ALPHA,
        TEMPERATURE,
    )
}


# ACM's coefficient settings, read by every ACM method.
ACM_PARAMETERS = (T, SHIFT, REDUCE)
