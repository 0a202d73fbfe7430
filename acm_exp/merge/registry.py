"""Merge methods by name. A method is a pure function of tensors; it never opens a file.

Each method computes the merged *delta* Δ for one tensor from the task vectors τi = θi − θ0 and
per-model weights wi (1 for the plain methods; λi for ACM). The engine adds θ0 (scaled as the
coefficient provider asks) and owns all IO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from acm_exp.errors import ConfigError

# (task_vectors, weights, params, generator) -> delta; params is the merge config (scale, k, p, ...).
DeltaFunction = Callable[[Sequence[torch.Tensor], Sequence[float], object, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    delta: DeltaFunction
    # Config fields the method reads; a sweep over any other field would change nothing.
    parameters: tuple[str, ...]
    # Who supplies per-tensor weights: None (all 1), "acm", "aim" or "sens".
    coefficients: str | None = None
    # For a coefficient-weighted method, the plain method it weights (acm_ties -> ties).
    plain: str | None = None
    description: str = ""
    # Δ at an entry depends only on the τi at that entry (no per-tensor statistic, no RNG stream),
    # so the engine may merge a large tensor block of rows by block of rows.
    elementwise: bool = False
    # Δ is that of the method named by merge.base_method, re-weighted afterwards (AIM relaxes a
    # TIES merge): the method then also reads that method's parameters.
    wraps_base_method: bool = False


METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    if method.name in METHODS:
        raise RuntimeError(f"merge method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


def registered_methods() -> dict[str, MergeMethod]:
    # Importing the package registers every method module.
    import acm_exp.merge  # noqa: F401

    return METHODS


def get_method(name: str) -> MergeMethod:
    try:
        return registered_methods()[name]
    except KeyError:
        raise ConfigError(f"unknown merge method {name!r}; expected one of {sorted(METHODS)}") from None


def used_parameters(method: MergeMethod, base_method: str | None = None) -> tuple[str, ...]:
    """Merge config fields that ``method`` reads, including those of the method it wraps."""
    if not method.wraps_base_method:
        return method.parameters
    wrapped = get_wrapped_method(base_method)
    return tuple(dict.fromkeys(method.parameters + wrapped.parameters))


def get_wrapped_method(name: str | None) -> MergeMethod:
    """The plain method a wrapping method (AIM) applies; it must take no coefficients itself."""
    methods = registered_methods()
    method = methods.get(str(name))
    if method is None or method.coefficients is not None or method.wraps_base_method:
        plain = sorted(m.name for m in methods.values() if m.coefficients is None and not m.wraps_base_method)
        raise ConfigError(f"merge.base_method={name!r}; expected a plain merge method, one of {plain}")
    return method
