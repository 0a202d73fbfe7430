"""Merging: the streaming engine and the methods behind a registry (one module per method).

``inputs`` opens and checks the models (``vocabulary``: their embedding rows), ``publish`` places
the output, ``engine`` streams the merge and writes its manifest; ``checkpoint`` reads and writes
safetensors.

Importing the package registers every method without loading torch (``validation`` needs only the
registry, so a bad value is reported in well under two seconds); the engine's names are imported on
first use.
"""

from acm_exp.merge import aim, average, breadcrumbs, dare, sens, task_arithmetic, ties  # noqa: F401  (registers)
from acm_exp.merge.registry import METHODS, MergeMethod, get_method, used_parameters
from acm_exp.registry import lazy_attributes

# name -> the module that defines it (these modules import torch).
_ON_FIRST_USE = {
    "Adjustment": "acm_exp.merge.engine",
    "MergeOutput": "acm_exp.merge.engine",
    "MergeResult": "acm_exp.merge.engine",
    "run_merge": "acm_exp.merge.engine",
    "MergeInputs": "acm_exp.merge.inputs",
    "MergeSettings": "acm_exp.merge.inputs",
    "open_inputs": "acm_exp.merge.inputs",
}

__getattr__ = lazy_attributes(__name__, _ON_FIRST_USE)


__all__ = [
    "METHODS",
    "Adjustment",
    "MergeInputs",
    "MergeMethod",
    "MergeOutput",
    "MergeResult",
    "MergeSettings",
    "get_method",
    "open_inputs",
    "run_merge",
    "used_parameters",
]
