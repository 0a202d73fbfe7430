"""ACM: activation capture, mutual information per capture point, and layer-wise coefficients.

statistics = compute_mi_statistics(base_dir, [finetuned_dir], texts, acm_cfg=cfg.acm)  # cached
coefficients = compute_coefficients(statistics, t=0.7)
coefficients.for_parameter(0, "model.layers.3.mlp.up_proj.weight")  # λ of layer 3

The config checks (``validate_acm_config``, ``check_estimator``) live here and need no torch, so a bad
value is reported before torch loads; every other name is imported from its module on first use.
"""

import numbers

from acm_exp.config import Against, Binning, Estimator
from acm_exp.devices import check_placement, dtype_name
from acm_exp.errors import ConfigError
from acm_exp.registry import lazy_attributes

AGAINST = Against.values()
ESTIMATORS = Estimator.values()
BINNINGS = Binning.values()

# name -> the module that defines it, imported on first use (these modules import torch).
_ON_FIRST_USE = {
    "MICache": "acm_exp.acm.cache",
    "model_identity": "acm_exp.acm.cache",
    "statistics_spec": "acm_exp.acm.cache",
    "capture_modules": "acm_exp.acm.capture",
    "capture_point_names": "acm_exp.acm.capture",
    "collect_mi_statistics": "acm_exp.acm.capture",
    "compute_mi_statistics": "acm_exp.acm.capture",
    "Coefficients": "acm_exp.acm.coefficients",
    "LayerCoefficients": "acm_exp.acm.coefficients",
    "compute_coefficients": "acm_exp.acm.coefficients",
    "layer_coefficients": "acm_exp.acm.coefficients",
    "point_for_parameter": "acm_exp.acm.coefficients",
    "mutual_information": "acm_exp.acm.mi",
    "MIStatistics": "acm_exp.acm.stats",
}

__getattr__ = lazy_attributes(__name__, _ON_FIRST_USE)


def check_estimator(estimator: str, bins: int | None, binning: str) -> None:
    """Raise ConfigError on an unknown estimator/binning or a bins value the estimator cannot use."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"acm.estimator={estimator!r}; expected one of {ESTIMATORS}")
    if estimator == "discrete":
        if bins is not None:
            raise ConfigError(f"acm.bins={bins} is only used by acm.estimator=histogram; set it to null for discrete")
        return
    if bins is None:
        raise ConfigError("acm.estimator=histogram needs acm.bins (an integer >= 2)")
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 2:
        raise ConfigError(f"acm.bins={bins!r}; expected an integer >= 2")
    if binning not in BINNINGS:
        raise ConfigError(f"acm.binning={binning!r}; expected one of {BINNINGS}")


def validate_acm_config(acm) -> None:
    """Raise ConfigError on a bad ``acm`` config group, before any weight is read."""
    if acm.against not in AGAINST:
        raise ConfigError(f"acm.against={acm.against!r}; expected one of {AGAINST}")
    check_estimator(acm.estimator, acm.bins, acm.binning)
    dtype_name(acm.dtype, "acm.dtype")
    check_placement(acm, "acm")


__all__ = [
    "AGAINST",
    "BINNINGS",
    "ESTIMATORS",
    "Coefficients",
    "LayerCoefficients",
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
