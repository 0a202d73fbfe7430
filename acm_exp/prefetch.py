"""Fetch what a run or a sweep needs from the Hugging Face hub ahead of time, for compute nodes without
internet (common on clusters):

    python -m acm_exp.prefetch [-m] <the same overrides as the run or sweep>
    python -m acm_exp.prefetch -m +experiment=l2s_7b          # every point of Table 1 at 7B
    python -m acm_exp.prefetch --check model_pair=qwen2.5-7b   # what is missing here; fetches nothing

Run it on a login node with internet and the same HF_HOME (or HF_HUB_CACHE / HF_DATASETS_CACHE) the
compute nodes see. It expands the sweep as ``python -m acm_exp -m`` does, validates every point, and
fetches each model (weights, config and tokenizer files), dataset (every benchmark without a local
copy) and calibration corpus and embedding model the points need, once each, through the same
loaders the runs use. It prints what it fetched, where, and how much disk each takes.

Every run checks the same list before any merge (``acm_exp.needs.check_resolvable``): each thing must be local (a
directory, a shipped or ``data_dir`` copy, the toy pair), in the Hugging Face cache, or reachable on
the hub; otherwise the run stops with one line naming what is missing and this command. With
``HF_HUB_OFFLINE=1`` (set it on compute nodes) the hub counts as unreachable, so nothing waits on a
network that is not there.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from acm_exp.errors import ConfigError, UserError
from acm_exp.needs import EMBEDDING, MODEL, Need, hub_cache, locate, run_needs, unreachable

# ---------------------------------------------------------------------------------------------
# Fetching


def disk_size(path: Path) -> int:
    """Bytes of the files under ``path``, counting each file once (hub snapshots link into blobs)."""
    seen: set[str] = set()
    total = 0
    for file in [path] if path.is_file() else path.rglob("*"):
        real = os.path.realpath(file)
        if real not in seen and os.path.isfile(real):
            seen.add(real)
            total += os.path.getsize(real)
    return total


def footprint(need: Need, location: Path) -> int:
    """Disk the need takes: its cache entry, plus the raw files datasets downloaded into the hub cache."""
    size = disk_size(location)
    raw = hub_cache() / f"datasets--{need.name.replace('/', '--')}"
    return size + (disk_size(raw) if need.via == "datasets" and raw.is_dir() else 0)


def size_text(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"


def fetch(need: Need, cfg: DictConfig) -> Path:
    """Download ``need`` through the loader a run uses, so that the run finds it in the cache."""
    from acm_exp.paths import data_dir

    if need.kind == MODEL:
        from acm_exp.models import ModelRef, resolve_model

        return resolve_model(ModelRef(need.used_as, need.name, need.revision), cache_dir=cfg.cache_dir)
    if need.kind == EMBEDDING:
        from acm_exp.calibration import embed_texts

        embed_texts(["prefetch"], str(cfg.calibration.embedding_model))
    elif need.used_as == "calibration.source":
        from acm_exp.calibration import load_corpus

        load_corpus(cfg.calibration, cfg.data_dir)
    else:
        from acm_exp.eval.benchmarks import load_benchmark

        key = need.used_as.removeprefix("eval.benchmarks.")
        load_benchmark(cfg.eval.benchmarks[key], data_dir(cfg.data_dir))
    location = locate(need)
    if location is None:
        raise UserError(f"{need.describe()} was fetched but is not where the runs look for it ({hub_cache().parent})")
    return location


def compose_points(arguments: Sequence[str]) -> list[tuple[list[str], DictConfig]]:
    """Every point of the run or sweep the arguments describe, composed as ``python -m acm_exp`` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from acm_exp.cli_help import CONF_DIR
    from acm_exp.config import register_configs
    from acm_exp.sweep import sweep_points

    register_configs()
    overrides = [argument for argument in arguments if argument not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
        primary = compose("config", overrides=fixed, return_hydra_config=True)
        points = sweep_points(primary.hydra.sweeper.get("params") or {}, overrides)
        return [(point, compose("config", overrides=point)) for point in points]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acm_exp.prefetch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other argument is an override or a sweep, as for python -m acm_exp.",
    )
    parser.add_argument("--check", action="store_true", help="only say what is local, cached or missing")
    options, arguments = parser.parse_known_args(argv)
    try:
        return _prefetch(arguments, check_only=options.check)
    except UserError as error:
        print(f"acm_exp.prefetch: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def _prefetch(arguments: Sequence[str], *, check_only: bool) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from acm_exp.failures import config_error_line
    from acm_exp.stages import validate

    try:
        points = compose_points(arguments)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(config_error_line(error)) from None
    wanted: dict[Need, DictConfig] = {}
    for point, cfg in points:
        try:
            validate(cfg)
        except ConfigError as error:
            raise ConfigError(f"sweep point [{' '.join(point)}]: {error}") from None
        for need in run_needs(cfg):
            wanted.setdefault(need, cfg)
    where = f"HF_HOME={hub_cache().parent}"
    print(f"{len(points)} point(s) need {len(wanted)} thing(s) from the Hugging Face hub ({where})")
    fetched_bytes, total_bytes, missing = 0, 0, 0
    for need, cfg in wanted.items():
        location = locate(need)
        if location is not None:
            status = "cached"
        elif check_only:
            reason = unreachable(need)
            status = "missing" if reason else "reachable"
            missing += 1
            print(f"  {status:9s} {need.describe()}: {reason or 'will be downloaded by the run'}")
            continue
        else:
            print(f"  fetching  {need.describe()} ...", flush=True)
            location = fetch(need, cfg)
            status = "fetched"
        size = footprint(need, location)
        total_bytes += size
        fetched_bytes += size if status == "fetched" else 0
        print(f"  {status:9s} {need.describe()}: {size_text(size)} in {location}")
    if check_only:
        print(f"{missing} of {len(wanted)} not in the cache")
        return 1 if missing else 0
    print(
        f"downloaded {size_text(fetched_bytes)}; {size_text(total_bytes)} on disk for these points. On compute "
        "nodes without internet, run with the same HF_HOME and HF_HUB_OFFLINE=1."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
