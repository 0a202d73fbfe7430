"""Sweeps: validate every point of a Hydra multirun before the first job is launched.

Hydra composes each job's config only when the job starts, so a bad value in the last point of a
sweep would fail after the earlier points had run (or, on SLURM, after the array was submitted).
``ValidateSweep`` is a Hydra callback (registered in conf/config.yaml) that expands the sweep the
way Hydra's basic sweeper does (``hydra.sweeper.params`` first, then the command line, cartesian
product), composes every point and runs the pipeline's validation on it: one bad point stops the
whole sweep with a one-line error naming the point, before any weight is read or any job submitted.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from acm_exp.errors import ConfigError

log = logging.getLogger("acm_exp")


def sweep_points(params: Mapping[str, Any], overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job: ``params`` (hydra.sweeper.params) then ``overrides``,
    each sweep (``a,b``, ``range(...)``, ...) expanded, in the basic sweeper's order."""
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    axes = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            axes.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)]


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra import compose

        from acm_exp.stages import validate

        points = sweep_points(config.hydra.sweeper.get("params") or {}, config.hydra.overrides.task)
        log.info("validating the %d points of the sweep before launching any", len(points))
        for point in points:
            try:
                validate(compose(config_name=config.hydra.job.config_name, overrides=point))
            except ConfigError as error:
                print(f"acm_exp: error: sweep point [{' '.join(point)}]: {error}", file=sys.stderr)
                sys.exit(2)
