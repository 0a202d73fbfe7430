"""Merge config validation: everything cheap, before any weight is read.

The checks of the hyper-parameters come from their declarations (acm_exp.merge_parameters); a
parameter that the method does not read (nor the method it wraps) is also warned about when set
away from its default.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from acm_exp.devices import resolve_device, resolve_dtype
from acm_exp.merge.checkpoint import parse_shard_size
from acm_exp.merge.registry import MergeMethod, declared_parameters, get_method
from acm_exp.merge_parameters import MERGE_PARAMETERS, Parameter

log = logging.getLogger("acm_exp")


def validate_merge_config(merge: DictConfig) -> MergeMethod:
    """The method ``merge`` names; raise a one-line ConfigError on any bad value it reads."""
    method = get_method(merge.method)
    used = declared_parameters(method, merge.get("base_method"))
    # Every parameter set is checked, used or not: a bad value is a mistake even where it is ignored.
    for parameter in MERGE_PARAMETERS.values():
        if parameter.name in merge:
            parameter.check(merge[parameter.name])
    if merge.dtype is not None:
        resolve_dtype(merge.dtype, "merge.dtype")
    resolve_device(merge.device, "merge.device")
    parse_shard_size(merge.shard_size)
    _warn_unused_parameters(merge, used)
    if any(parameter.name == "scale" for parameter in used) and merge.scale < 0:
        log.warning(
            "merge.scale=%s is negative: the merge subtracts the task vectors (task-vector negation) instead "
            "of adding them",
            merge.scale,
        )
    return method


def _warn_unused_parameters(merge: DictConfig, used: tuple[Parameter, ...]) -> None:
    for parameter in MERGE_PARAMETERS.values():
        if parameter not in used and merge.get(parameter.name, parameter.default) != parameter.default:
            log.warning(
                "merge.%s=%s is not used by merge=%s (it uses: %s)",
                parameter.name,
                merge[parameter.name],
                merge.method,
                ", ".join(p.name for p in used) or "no parameters",
            )
