"""Merge config validation: everything cheap, before any weight is read, and without torch (a bad value
is reported before torch loads; ``tests/test_fast_start.py`` checks it).

The checks of the hyper-parameters come from their declarations (acm_exp.merge_parameters); a
parameter that the method does not read (nor the method it wraps) is also warned about when set
away from its default.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub.serialization._base import parse_size_to_int
from omegaconf import DictConfig

from acm_exp.devices import check_device, dtype_name
from acm_exp.errors import ConfigError
from acm_exp.merge.registry import MergeMethod, declared_parameters, get_method
from acm_exp.merge_parameters import MERGE_PARAMETERS, Parameter
from acm_exp.paths import nearest_existing, write_probe_error

log = logging.getLogger("acm_exp")

# model_pair.tied_head: a tied base stays tied, or lm_head is merged as a tensor of its own (inputs.open_inputs).
TIED_HEAD_MODES = ("tie", "untie")


def validate_merge_config(merge: DictConfig) -> MergeMethod:
    """The method ``merge`` names; raise a one-line ConfigError on any bad value it reads."""
    method = get_method(merge.method)
    used = declared_parameters(method, merge.get("base_method"))
    # Every parameter set is checked, used or not: a bad value is a mistake even where it is ignored.
    for parameter in MERGE_PARAMETERS.values():
        if parameter.name in merge:
            parameter.check(merge[parameter.name])
    if merge.dtype is not None:
        dtype_name(merge.dtype, "merge.dtype")
    check_device(merge.device, "merge.device")
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


def parse_shard_size(value: int | str) -> int:
    """``merge.shard_size`` in bytes: a byte count or a size with a unit (5GB, 500MB, 0.5TB, 100KB)."""
    text = str(value).strip()
    try:
        size = int(text) if text.isdigit() else parse_size_to_int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise ConfigError(f"merge.shard_size={value!r}; expected a positive size such as 5GB, 500MB or a byte count")
    return size


def check_output_location(output_dir: Path, *, overwrite: bool) -> None:
    """Fail before any weight is read when a merge could not be written and published at ``output_dir``.

    An existing directory is left to the caller (reused, refused, or replaced with ``overwrite``);
    anything else in the way, an unwritable place, is an error here. Writability is probed by
    creating and removing a file where the output's directories will be created.
    """
    if (output_dir.exists() or output_dir.is_symlink()) and not output_dir.is_dir() and not overwrite:
        raise ConfigError(
            f"merge.output_dir {output_dir} is a file, not a directory; remove it, choose another "
            "merge.output_dir, or set merge.overwrite=true to replace it"
        )
    existing = nearest_existing(output_dir.parent)
    if not existing.is_dir():
        raise ConfigError(f"merge.output_dir {output_dir} cannot be created: {existing} is a file, not a directory")
    error = write_probe_error(existing, prefix=f".{output_dir.name}")
    if error is not None:
        raise ConfigError(
            f"merge.output_dir {output_dir} is not writable: cannot create a file in {existing} "
            f"({error.strerror}); choose a writable merge.output_dir"
        )
