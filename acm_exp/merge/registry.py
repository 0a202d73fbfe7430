"""Merge methods by name. A method is a pure function of tensors; it never opens a file.

Each method computes the merged *delta* Δ for one tensor from the task vectors τi = θi − θ0 and
per-model weights wi (1 for the plain methods; λi for ACM). The engine adds θ0 (scaled as the
coefficient provider asks) and owns all IO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acm_exp.errors import ConfigError
from acm_exp.merge_parameters import MERGE_PARAMETERS, Parameter
from acm_exp.registry import Registry

if TYPE_CHECKING:
    import torch


class MethodParameters:
    """The values of the parameters one merge method declares, read as attributes (``params.k``).

    Reading any other parameter raises: a method must not depend on a value that its merge
    fingerprint does not cover.
    """

    __slots__ = ("_method", "_values")

    def __init__(self, method: str, values: Mapping[str, Any]):
        object.__setattr__(self, "_method", method)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        method = object.__getattribute__(self, "_method")
        raise AttributeError(
            f"merge method {method!r} reads merge.{name}, which it does not declare (declared: "
            f"{', '.join(values) or 'none'}); add it to the method's parameters"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("merge parameters are read-only")

    def as_dict(self) -> dict[str, Any]:
        return dict(object.__getattribute__(self, "_values"))


# (task_vectors, weights, params, generator) -> delta; params holds the method's declared parameters.
# The task vectors are the caller's float32 temporaries: a method may compute its delta in their memory.
DeltaFunction = Callable[
    [Sequence["torch.Tensor"], Sequence[float], MethodParameters, "torch.Generator"], "torch.Tensor"
]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    delta: DeltaFunction
    # The hyper-parameters the method reads (declared in acm_exp.merge_parameters); the method sees
    # only these, and a sweep over any other would change nothing.
    parameters: tuple[Parameter, ...]
    # How figures and tables name the method.
    label: str
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


# name -> method; complete once the package is imported (its __init__ imports every method's module).
METHODS: dict[str, MergeMethod] = {}


METHOD_REGISTRY: Registry[MergeMethod] = Registry(
    "merge method", error=ConfigError, unknown="unknown {kind} {name!r}; expected one of {known}", entries=METHODS
)


def register(method: MergeMethod) -> MergeMethod:
    for parameter in method.parameters:
        if MERGE_PARAMETERS.get(parameter.name) is not parameter:
            raise RuntimeError(f"merge method {method.name!r}: parameter {parameter.name!r} is not declared")
    return METHOD_REGISTRY.add(method.name, method)


def registered_methods() -> dict[str, MergeMethod]:
    # Complete: importing this module imports the package first, whose __init__ registers every method.
    return METHODS


def get_method(name: str) -> MergeMethod:
    return METHOD_REGISTRY.get(name)


def used_parameters(method: MergeMethod, base_method: str | None = None) -> tuple[str, ...]:
    """Names of the merge config fields that ``method`` reads, including those of the method it wraps."""
    return tuple(parameter.name for parameter in declared_parameters(method, base_method))


def declared_parameters(method: MergeMethod, base_method: str | None = None) -> tuple[Parameter, ...]:
    """The parameters ``method`` reads, including those of the method it wraps."""
    if not method.wraps_base_method:
        return method.parameters
    wrapped = get_wrapped_method(base_method)
    return tuple(dict.fromkeys(method.parameters + wrapped.parameters))


def parameter_values(method: MergeMethod, config: Any) -> MethodParameters:
    """The values ``method`` reads from ``config`` (a merge config, or values already restricted)."""
    if isinstance(config, MethodParameters):
        return config
    base_method = getattr(config, "base_method", None) if method.wraps_base_method else None
    return MethodParameters(method.name, {name: getattr(config, name) for name in used_parameters(method, base_method)})


def get_wrapped_method(name: str | None) -> MergeMethod:
    """The plain method a wrapping method (AIM) applies; it must take no coefficients itself."""
    methods = registered_methods()
    method = methods.get(str(name))
    if method is None or method.coefficients is not None or method.wraps_base_method:
        plain = sorted(m.name for m in methods.values() if m.coefficients is None and not m.wraps_base_method)
        raise ConfigError(f"merge.base_method={name!r}; expected a plain merge method, one of {plain}")
    return method
