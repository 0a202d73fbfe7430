"""Merging: the streaming engine and the methods behind a registry (one module per method)."""

from acm_exp.merge import aim, average, breadcrumbs, dare, sens, task_arithmetic, ties  # noqa: F401  (registers)
from acm_exp.merge.engine import Adjustment, MergeInputs, MergeResult, MergeSettings, open_inputs, run_merge
from acm_exp.merge.registry import METHODS, MergeMethod, get_method, used_parameters

__all__ = [
    "METHODS",
    "Adjustment",
    "MergeInputs",
    "MergeMethod",
    "MergeResult",
    "MergeSettings",
    "get_method",
    "open_inputs",
    "run_merge",
    "used_parameters",
]
