"""What identifies a run: the config hash, the run id, the sweep id, the git commit, timestamps.

The config hash covers everything that changes results and nothing else: not where things are
stored, whether to redo, how to log (``HASH_EXCLUDED_KEYS``), nor the merge parameters the method
ignores. The embedded toy pair's version is part of it, so results of an older toy never count as
complete for a newer one. Two runs with equal hashes compute the same thing; the results table
(``acm_exp.results``) keys its rows on it and a run whose hash has complete results is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from acm_exp.errors import ConfigError
from acm_exp.merge_parameters import MERGE_PARAMETERS
from acm_exp.paths import REPO_ROOT

HYPER_PARAMETERS = tuple(MERGE_PARAMETERS)

# Keys of the resolved config that never change results: where things are stored, whether to
# redo, how to log. Dotted paths; "*" matches any key at that level.
HASH_EXCLUDED_KEYS = (
    "hydra",
    "logger",
    "force",
    "cache_dir",
    "data_dir",
    "merge.output_dir",
    "merge.overwrite",
    "merge.shard_size",
    "acm.cache_dir",
    # Where and how the models are placed (devices, budgets, offload, tensor parallelism, recomputed
    # activations), never what is computed: as the statistics cache keys (tests/test_placement.py).
    "acm.device",
    "acm.max_memory",
    "acm.offload_dir",
    "sens.device",
    "sens.max_memory",
    "sens.offload_dir",
    "sens.gradient_checkpointing",
    "eval.vllm.tensor_parallel_size",
    "eval.grading_workers",
    "eval.benchmarks.*.local_path",
)
# Keys added to the schema after results were recorded: left out while null (what configs written
# before them mean), so those configs keep their hash.
HASH_EXCLUDED_WHEN_NULL_KEYS = ("eval.benchmarks.*.task", "calibration.response_template")
# Keys added to the schema after results were recorded, whose default computes what configs written
# before them did: left out at that default, so those configs keep their hash.
HASH_EXCLUDED_AT_DEFAULT = {("model_pair", "vocabulary"): "base"}


def method_usage(merge: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """(merge parameters the method reads, who supplies its coefficients); every parameter if unknown."""
    from acm_exp.merge import get_method, used_parameters  # lazy: the merge package imports torch

    try:
        method = get_method(str(merge["method"]))
        return used_parameters(method, merge.get("base_method")), method.coefficients
    except ConfigError:
        return HYPER_PARAMETERS, "acm"


def _drop_key(tree: Any, path: Sequence[str], *, only_null: bool = False) -> None:
    if not isinstance(tree, dict) or not path:
        return
    head, rest = path[0], path[1:]
    keys = list(tree) if head == "*" else [head]
    for key in keys:
        if key not in tree:
            continue
        if rest:
            _drop_key(tree[key], rest, only_null=only_null)
        elif not only_null or tree[key] is None:
            del tree[key]


def hashable_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config restricted to what changes results (see HASH_EXCLUDED_KEYS)."""
    if isinstance(cfg, DictConfig):
        tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    else:
        tree = json.loads(json.dumps(cfg, default=str))
    for dotted in HASH_EXCLUDED_KEYS:
        _drop_key(tree, dotted.split("."))
    for dotted in HASH_EXCLUDED_WHEN_NULL_KEYS:
        _drop_key(tree, dotted.split("."), only_null=True)
    for (section, key), default in HASH_EXCLUDED_AT_DEFAULT.items():
        if isinstance(tree.get(section), dict) and tree[section].get(key) == default:
            del tree[section][key]
    merge = tree.get("merge")
    if isinstance(merge, dict) and "method" in merge:
        used, coefficients = method_usage(merge)
        for name in HYPER_PARAMETERS:
            if name not in used:
                merge.pop(name, None)
        # A method without coefficients reads neither the calibration set nor the capture settings
        # (acm: ACM's and AIM's activation pass; sens: Sens-Merging's gradient pass).
        if coefficients is None:
            tree.pop("calibration", None)
        if coefficients not in ("acm", "aim"):
            tree.pop("acm", None)
        if coefficients != "sens":
            tree.pop("sens", None)
    _normalize_benchmarks(tree)
    _pin_toy_version(tree)
    return tree


def _pin_toy_version(tree: dict[str, Any]) -> None:
    """``toy:base`` names whatever the current toy recipe builds: with its version in the hash, results
    of an older toy pair never count as complete for a newer one (nor its rows as the same entry)."""
    from acm_exp.toy import TOY_VERSION, is_toy_id

    pair = tree.get("model_pair")
    if not isinstance(pair, dict):
        return
    models = [pair.get("base"), *(pair.get("finetuned") or [])]
    if any(is_toy_id(model) for model in models):
        pair["toy_version"] = TOY_VERSION


def _normalize_benchmarks(tree: dict[str, Any]) -> None:
    """Each benchmark in its hash form (acm_exp.eval.tasks.benchmark_hash_form): a shipped benchmark
    that names its task and leaves grader/fewshot_set to it hashes as it did before it named them."""
    benchmarks = tree.get("eval", {}).get("benchmarks") if isinstance(tree.get("eval"), dict) else None
    if not isinstance(benchmarks, dict) or not benchmarks:
        return
    from acm_exp.eval.tasks import benchmark_hash_form  # lazy: the registry loads the task families

    tree["eval"]["benchmarks"] = {
        key: benchmark_hash_form(value) if isinstance(value, dict) else value for key, value in benchmarks.items()
    }


def config_hash(cfg: DictConfig | Mapping[str, Any]) -> str:
    """16 hex digits identifying what a run computes (two runs with equal hashes give equal results)."""
    payload = json.dumps(hashable_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_run_id(cfg: DictConfig, hash_: str | None = None) -> str:
    """``<model_pair>__<method>__<config hash>``: stable, so an identical rerun replaces its rows."""
    return f"{cfg.model_pair.name}__{cfg.merge.method}__{hash_ or config_hash(cfg)}"


def sweep_id_from_dir(sweep_dir: str | os.PathLike) -> str:
    """A sweep's id from its directory: its last two components (Hydra's date/time), joined by '_'."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("/", "")]
    return "_".join(parts[-2:])


def detect_sweep_dir() -> Path | None:
    """The directory of the Hydra multirun this process belongs to, or None outside a multirun.

    Taken from the job's output directory minus its sweep subdir rather than from hydra.sweep.dir,
    which may hold a ${now:} that a SLURM task would resolve to its own start time.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    output_dir = Path(hydra_cfg.runtime.output_dir)
    subdir = Path(str(hydra_cfg.sweep.subdir))
    depth = len(subdir.parts)
    if depth and output_dir.parts[-depth:] == subdir.parts:
        return Path(*output_dir.parts[:-depth])
    return Path(str(hydra_cfg.sweep.dir))


def detect_sweep_id() -> str | None:
    """The id of the Hydra multirun this process belongs to (``sweep_id_from_dir``), or None."""
    directory = detect_sweep_dir()
    return None if directory is None else sweep_id_from_dir(directory)


def job_overrides() -> list[str] | None:
    """The command-line overrides of the Hydra job this process runs (a sweep point's own values), or
    None outside Hydra (the Python API, tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    return [str(override) for override in HydraConfig.get().overrides.task]


@functools.cache
def git_commit(repo: Path = REPO_ROOT) -> str:
    """HEAD of the checkout the code runs from (``-dirty`` with uncommitted changes), else 'unknown'."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def timestamp(value: datetime | str | None) -> str | None:
    """ISO 8601 in UTC (seconds), or the given string unchanged."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")
