"""Coefficient providers: what a weighted merge method needs beyond the plain merge.

A merge method names its provider (``MergeMethod.coefficients``: ``acm``, ``aim`` or ``sens``). A provider
checks its config sections before any weight is read (``validate``), then, as the pipeline's coefficient
stage, selects the calibration set, computes or loads its cached statistics and returns a
``CoefficientPlan``: the per-tensor ``Adjustment`` the merge engine applies, what the merge manifest
records, and the ``coefficients.json`` it wrote.

A new weighted method goes beside its math in ``acm_exp/acm/``: a module with a class following
``CoefficientProvider``, declared in ``PROVIDERS`` (``"module:Class"``: imported only when a run uses it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from acm_exp.costs import measure
from acm_exp.errors import ConfigError
from acm_exp.paths import data_dir as resolve_data_dir
from acm_exp.registry import Registry

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from acm_exp.calibration import CalibrationSet
    from acm_exp.merge import Adjustment, MergeMethod
    from acm_exp.models import ModelRef

log = logging.getLogger("acm_exp")

# provider name -> its class, imported on the name's first lookup.
PROVIDERS: Registry[type[CoefficientProvider]] = Registry(
    "coefficient provider",
    declared={
        "acm": "acm_exp.acm.acm_provider:ACMProvider",
        "aim": "acm_exp.acm.aim_provider:AIMProvider",
        "sens": "acm_exp.acm.sens_provider:SensProvider",
    },
    error=ConfigError,
)
# provider name -> the module holding its class.
PROVIDER_MODULES = {name: location.partition(":")[0] for name, location in PROVIDERS.declared.items()}


@dataclass
class CoefficientPlan:
    """What the merge needs from a coefficient provider, and what the manifest should record."""

    method: MergeMethod
    adjust: Callable[[str], Adjustment] | None = None
    manifest: dict = field(default_factory=dict)
    coefficients_path: Path | None = None
    calibration: CalibrationSet | None = None


@dataclass(frozen=True)
class CoefficientRequest:
    """Everything a provider reads: the job config, the weighted method, the resolved models (base first)
    and the run directory. ``merge_plain(method, output_dir)`` merges the inputs with a plain method
    (ACM against the merged model measures MI on that merge)."""

    cfg: DictConfig
    method: MergeMethod
    refs: list[ModelRef]
    model_dirs: list[Path]
    run_dir: Path
    merge_plain: Callable[[MergeMethod, Path], Path]


class CoefficientProvider(Protocol):
    name: str

    def validate(self, cfg: DictConfig) -> None:
        """Raise a one-line ConfigError on a bad value of the provider's config sections; no IO."""

    def plan(self, request: CoefficientRequest) -> CoefficientPlan:
        """Compute (or load from the cache) the statistics and return the merge's plan."""


def get_provider(name: str) -> CoefficientProvider:
    return PROVIDERS.get(name)()


class CalibratedProvider:
    """Base of the providers whose statistics come from the models' passes over the calibration set,
    with ACM's capture settings (``acm.device``, ``acm.dtype``, cache): checks those sections."""

    name: str

    def validate(self, cfg: DictConfig) -> None:
        from acm_exp.acm import validate_acm_config
        from acm_exp.calibration import validate_config

        validate_config(cfg.calibration)
        validate_acm_config(cfg.acm)


def select_calibration(cfg: DictConfig, run_dir: Path) -> CalibrationSet:
    """The run's calibration set (cached embeddings and selection), recorded in ``calibration.json``."""
    from acm_exp.calibration import select_calibration as select
    from acm_exp.calibration import write_calibration_record

    with measure("calibration"):
        calibration = select(cfg.calibration, data_dir=resolve_data_dir(cfg.data_dir), cache_dir=cfg.cache_dir)
    record_path = write_calibration_record(calibration, cfg.calibration, run_dir)
    log.info(
        "calibration: %s, %d samples (selection %s), recorded in %s",
        calibration.spec,
        len(calibration.texts),
        calibration.selection_hash,
        record_path,
    )
    return calibration


def calibration_manifest(calibration: CalibrationSet) -> dict:
    return {"spec": calibration.spec, "selection_hash": calibration.selection_hash, "samples": len(calibration.texts)}
