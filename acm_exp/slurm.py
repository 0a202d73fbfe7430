"""SLURM through hydra-submitit-launcher: the launcher presets' sizing, and one-line errors instead of
tracebacks when the cluster cannot take the sweep.

Presets (conf/hydra/launcher/):
- ``hydra/launcher=slurm``: GPU tasks sized per experiment: ``gpus_per_node`` follows
  ``eval.vllm.tensor_parallel_size`` (the experiments at 14B and 32B set 2 and 4), and the CPUs, host
  memory and time limit follow ``model_pair.size`` (``TASK_RESOURCES``, through the ``acm_exp.slurm``
  resolver);
- ``hydra/launcher=slurm_cpu``: no GPU, small tasks, for CPU partitions and for trying it out with the
  toy pair.
Any key can still be set on the command line (``hydra.launcher.timeout_min=600``).

Errors, each one line with the remedy:
- the launcher plugin is not installed: ``pip install -e ".[slurm]"`` (``missing_extra_error``);
- Slurm's commands are not on PATH (not a login node): which ones (``check_launcher``);
- sbatch refuses the array (e.g. a GPU request on a partition without GPUs): sbatch's own reason
  (``sbatch_refusal``); ``SbatchErrorFilter`` keeps submitit from printing it a second time.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from acm_exp.errors import ConfigError

SLURM_EXTRA = 'pip install -e ".[slurm]"'
LAUNCHER_PLUGIN = "hydra_plugins.hydra_submitit_launcher"
SUBMITIT_SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# sbatch submits the array, srun starts each task, sacct tells the launcher how a task ended.
SLURM_COMMANDS = ("sbatch", "srun", "sacct")
RESOLVER = "acm_exp.slurm"

# Per sweep point, by model_pair.size (slurm/README.md, "Resources per model size"): CPUs, host
# memory in GB and the wall-time limit in minutes. GPUs come from eval.vllm.tensor_parallel_size.
TASK_RESOURCES: dict[str, dict[str, int]] = {
    "toy": {"cpus_per_task": 2, "mem_gb": 8, "timeout_min": 60},
    "1.5b": {"cpus_per_task": 8, "mem_gb": 64, "timeout_min": 240},
    "7b": {"cpus_per_task": 8, "mem_gb": 64, "timeout_min": 360},
    "14b": {"cpus_per_task": 16, "mem_gb": 128, "timeout_min": 480},
    "32b": {"cpus_per_task": 32, "mem_gb": 128, "timeout_min": 720},
}
# A pair of unknown size (model_pair=custom) gets the 7B sizing.
DEFAULT_SIZE = "7b"


def task_resource(key: str, size: Any) -> int:
    """``${acm_exp.slurm:<key>,${model_pair.size}}`` in conf/hydra/launcher/slurm.yaml."""
    sizing = TASK_RESOURCES.get(str(size).lower(), TASK_RESOURCES[DEFAULT_SIZE])
    if key not in sizing:
        raise ConfigError(f"${{{RESOLVER}:{key},...}}: unknown resource {key!r}; expected one of {tuple(sizing)}")
    return sizing[key]


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, task_resource)


# ---------------------------------------------------------------------------------------------
# Errors


def chooses_slurm_launcher(arguments: Sequence[str]) -> bool:
    return any(argument.startswith("hydra/launcher=slurm") for argument in arguments)


def missing_extra_error(arguments: Sequence[str]) -> str | None:
    """The one-line error for ``hydra/launcher=slurm*`` without the launcher plugin, else None."""
    if not chooses_slurm_launcher(arguments):
        return None
    try:
        installed = importlib.util.find_spec(LAUNCHER_PLUGIN) is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        installed = False
    if installed:
        return None
    return (
        "hydra/launcher=slurm needs the SLURM extra (hydra-submitit-launcher), which is not installed; "
        f"install it with {SLURM_EXTRA} (or run the sweep with slurm/array.sbatch, which needs only sbatch)"
    )


def check_launcher(launcher: Any) -> None:
    """Before a SLURM sweep is submitted: Slurm's commands must be here (a login node)."""
    if str(launcher.get("_target_", "")) != SUBMITIT_SLURM_TARGET:
        return
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        raise ConfigError(
            f"hydra/launcher=slurm submits with Slurm's commands, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH here; run the sweep from a Slurm login node "
            "(or drop hydra/launcher=slurm to run the points here, one after another)"
        )


def sbatch_reason(error: BaseException) -> str | None:
    """sbatch's own error lines in a submitit submission failure (FailedJobError), else None."""
    for item in (error, error.__cause__, error.__context__):
        if item is None or type(item).__name__ not in ("FailedJobError", "CalledProcessError"):
            continue
        text = str(getattr(item, "stderr", None) or item)
        lines = [line.strip() for line in text.splitlines() if "error" in line.lower()]
        reasons = [line.split("error:", 1)[-1].strip() for line in lines if line.startswith("sbatch")]
        if reasons:
            return "; ".join(dict.fromkeys(reason for reason in reasons if reason))
    return None


def sbatch_refusal(error: BaseException, launcher: dict | None) -> str | None:
    """The one-line error for a job array sbatch refused, with what was asked for; else None."""
    reason = sbatch_reason(error)
    if reason is None:
        return None
    asked = ""
    if launcher:
        keys = ("partition", "gpus_per_node", "gres", "cpus_per_task", "mem_gb", "timeout_min")
        settings = [f"{key}={launcher[key]}" for key in keys if launcher.get(key) is not None]
        asked = f" (asked: {', '.join(settings)})" if settings else ""
    return (
        f"sbatch refused the job array: {reason}{asked}; request what the partition has "
        "(hydra.launcher.partition=..., hydra.launcher.gpus_per_node=...), or use hydra/launcher=slurm_cpu "
        "on a partition without GPUs"
    )


class SbatchErrorFilter:
    """A stderr wrapper that drops what submitit prints of sbatch's error (``sbatch: error: ...``), which
    the CLI reports as its own one line; everything else passes through unchanged."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._dropped_line = False

    def write(self, text: str) -> int:
        if text.startswith("sbatch: error:"):
            self._dropped_line = True
            return len(text)
        if self._dropped_line and text == "\n":
            self._dropped_line = False
            return len(text)
        self._dropped_line = False
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def filtered_stderr() -> SbatchErrorFilter:
    return SbatchErrorFilter(sys.stderr)
