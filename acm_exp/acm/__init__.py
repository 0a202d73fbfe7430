"""ACM: activation capture, mutual information per capture point, and layer-wise coefficients.

statistics = compute_mi_statistics(base_dir, [finetuned_dir], texts, acm_cfg=cfg.acm)  # cached
coefficients = compute_coefficients(statistics, t=0.7)
coefficients.for_parameter(0, "model.layers.3.mlp.up_proj.weight")  # λ of layer 3
"""

from acm_exp.acm.cache import MICache, model_identity, statistics_spec
from acm_exp.acm.capture import (
    capture_modules,
    capture_point_names,
    collect_mi_statistics,
    compute_mi_statistics,
)
from acm_exp.acm.coefficients import (
    Coefficients,
    compute_coefficients,
    layer_coefficients,
    point_for_parameter,
)
from acm_exp.acm.mi import BINNINGS, ESTIMATORS, check_estimator, mutual_information
from acm_exp.acm.stats import MIStatistics
from acm_exp.config import Against
from acm_exp.devices import dtype_name, placement_of
from acm_exp.errors import ConfigError

AGAINST = Against.values()


def validate_acm_config(acm) -> None:
    """Raise ConfigError on a bad ``acm`` config group, before any weight is read."""
    if acm.against not in AGAINST:
        raise ConfigError(f"acm.against={acm.against!r}; expected one of {AGAINST}")
    check_estimator(acm.estimator, acm.bins, acm.binning)
    dtype_name(acm.dtype, "acm.dtype")
    placement_of(acm, "acm")


__all__ = [
    "AGAINST",
    "BINNINGS",
    "ESTIMATORS",
    "Coefficients",
    "MICache",
    "MIStatistics",
    "capture_modules",
    "capture_point_names",
    "check_estimator",
    "collect_mi_statistics",
    "compute_coefficients",
    "compute_mi_statistics",
    "layer_coefficients",
    "model_identity",
    "mutual_information",
    "point_for_parameter",
    "statistics_spec",
    "validate_acm_config",
]
