"""On-disk cache of MI statistics, shared by every run of a sweep over t (or shift/reduce).

The statistics depend on the models, the calibration texts, max_tokens, the capture dtype, the device
type and the estimator; never on t. Their key is a hash of those, with a cheap model identity: hashing
multi-GB weight files would cost more than the capture, so a model is its path (or, in a Hugging Face
cache snapshot, its repository and commit), the name, size and mtime of its weight files, and the
content of its config and tokenizer files.

Device type, not placement: the key says ``cpu`` or ``cuda`` (``torch.device.type`` of the device the
models compute on; a placement over several GPUs, with or without CPU offload, computes on ``cuda``),
because bf16 matmuls round differently on CPU and GPU and the discrete MI counts exact values. Which
GPUs, how many, and what is offloaded do not enter the key; the entry records the hardware it was
computed on (``computed_on``, e.g. ``cuda: NVIDIA H100 80GB HBM3``) and reusing it on other hardware of
the same type is logged. Entries written before the key held the device type (the same spec without
``device_type``) are adopted only when their recorded ``computed_on`` is of this run's device type;
any other such entry is left alone, with a warning saying why.

Layout: ``cache_root(cache_dir)/<kind>/<key>/<file_name>`` (``mi/<key>/mi_statistics.npz``; AIM's and
Sens-Merging's statistics use the same class) with ``spec.json`` beside it, each written to a temporary
name and published with ``os.replace`` (atomic on POSIX filesystems), under
a file lock so that two tasks of a SLURM array never compute the same statistics twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from acm_exp.acm.stats import MIStatistics
from acm_exp.costs import measure, note_cache_hit, note_computed
from acm_exp.errors import ConfigError, DataError
from acm_exp.paths import atomic_write, cache_root, sha256_file

log = logging.getLogger(__name__)

# Bump when capture or estimation changes meaning (capture points, tokenization, MI formula).
CAPTURE_VERSION = 1
SPEC_FILE = "spec.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CONTENT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
_HUB_SNAPSHOT = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/?$")


def model_identity(path: str | Path) -> dict[str, Any]:
    """A cheap, stable identity of a model directory (see the module docstring)."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"model directory {str(path)!r} does not exist")
    if not (directory / "config.json").is_file():
        raise ConfigError(f"model directory {str(path)!r} has no config.json")
    snapshot = _HUB_SNAPSHOT.search(directory.as_posix())
    identity: dict[str, Any]
    if snapshot:
        # A hub snapshot is immutable: its commit names the weights wherever the cache lives.
        identity = {"hub": f"{snapshot['owner']}/{snapshot['name']}", "revision": snapshot["commit"]}
    else:
        identity = {"path": str(directory.resolve())}
    weights = []
    for file in sorted(directory.iterdir()):
        if file.suffix in WEIGHT_SUFFIXES and file.is_file():
            stat = file.stat()
            weights.append([file.name, stat.st_size] if snapshot else [file.name, stat.st_size, stat.st_mtime_ns])
    if not weights:
        raise ConfigError(f"model directory {str(path)!r} has no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    identity["weights"] = weights
    identity["content"] = {
        name: sha256_file(directory / name) for name in CONTENT_FILES if (directory / name).is_file()
    }
    return identity


def texts_hash(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()


def device_kind(device: torch.device | str) -> str:
    """The kind of hardware a computation ran on: 'cpu', or the accelerator's name ('cuda: NVIDIA H200')."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(device.index or 0)}"
    return device.type


def device_type(device: torch.device | str) -> str:
    """What a cache key records of the compute device: its type ('cpu', 'cuda'), not its index."""
    return torch.device(device).type


def _type_of_kind(kind: str | None) -> str | None:
    """The device type of a recorded ``device_kind`` ('cuda: NVIDIA H200' -> 'cuda')."""
    return kind.split(":", 1)[0].strip() if kind else None


def statistics_spec(
    base_path: str | Path,
    compared_paths: Sequence[str | Path],
    texts: Sequence[str],
    *,
    max_tokens: int | None,
    dtype: str,
    estimator: str,
    bins: int | None,
    binning: str,
    device_type: str,
) -> dict[str, Any]:
    """Everything the MI statistics depend on; its hash is the cache key.

    ``device_type``: 'cpu' or 'cuda' (see the module docstring); the placement (which devices, how
    many, offload) is not part of it: the entry's metadata records the hardware instead."""
    return {
        "capture_version": CAPTURE_VERSION,
        "base": model_identity(base_path),
        "compared": [model_identity(path) for path in compared_paths],
        "texts_sha256": texts_hash(texts),
        "num_texts": len(texts),
        "max_tokens": max_tokens,
        "dtype": dtype,
        "device_type": device_type,
        "estimator": estimator,
        "bins": bins if estimator == "histogram" else None,
        "binning": binning if estimator == "histogram" else None,
    }


def spec_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


class StatisticsCache:
    """The cache entry of one statistics spec, for any statistics type with ``save(handle)``,
    ``load(path)`` and a ``metadata`` dict (MI for ACM, input importance for AIM, layer
    sensitivity for Sens-Merging). ``kind`` names the folder under the cache root."""

    kind = "mi"
    file_name = "mi_statistics.npz"
    statistics_type: type = MIStatistics
    label = "MI statistics"

    def __init__(
        self, spec: dict[str, Any], cache_dir: str | Path | None = None, device: torch.device | str | None = None
    ):
        self.spec = spec
        self.device_kind = device_kind(device) if device is not None else None
        self.key = spec_key(spec)
        self.directory = cache_root(cache_dir) / self.kind / self.key
        self.statistics_path = self.directory / self.file_name
        self.lock_path = self.directory.parent / f"{self.key}.lock"
        # Where this spec's entry lived before the key held the device type (None: nothing to look for).
        self.legacy_directory = None
        if "device_type" in spec:
            legacy_spec = {name: value for name, value in spec.items() if name != "device_type"}
            self.legacy_directory = self.directory.parent / spec_key(legacy_spec)

    def load(self):
        statistics = self._read(self.statistics_path)
        return None if statistics is None else self._annotate(statistics)

    def _read(self, path: Path):
        if not path.is_file():
            return None
        try:
            return self.statistics_type.load(path)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, DataError) as error:
            log.warning("ignoring the unreadable %s cache entry %s (%s)", self.label, path, error)
            return None

    def _adopt_legacy_entry(self):
        """The entry of this spec from before the key held the device type, stored under the new key,
        when its recorded hardware is of this spec's device type; else None (a mismatch is logged)."""
        if self.legacy_directory is None:
            return None
        statistics = self._read(self.legacy_directory / self.file_name)
        if statistics is None:
            return None
        computed_on = statistics.metadata.get("computed_on")
        wanted = self.spec["device_type"]
        if _type_of_kind(computed_on) != wanted:
            log.warning(
                "not reusing the %s in %s: computed on %s, and this run computes on %s (bf16 rounds differently "
                "across device types, and the cache key now includes the device type); computing them again",
                self.label,
                self.legacy_directory,
                computed_on or "an unrecorded device",
                wanted,
            )
            return None
        log.info(
            "%s from %s (computed on %s before the cache key held the device type), now stored in %s",
            self.label,
            self.legacy_directory,
            computed_on,
            self.directory,
        )
        self.store(statistics)
        return statistics

    def store(self, statistics) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.directory / SPEC_FILE, lambda h: h.write(json.dumps(self.spec, indent=2, sort_keys=True).encode())
        )
        statistics.metadata = {**statistics.metadata, "spec": self.spec}
        atomic_write(self.statistics_path, statistics.save)
        self._annotate(statistics)

    def _warn_if_other_hardware(self, statistics) -> None:
        computed_on = statistics.metadata.get("computed_on")
        if self.device_kind and computed_on and computed_on != self.device_kind:
            log.warning(
                "%s in %s were computed on %s; this run would compute them on %s. bf16 kernels round "
                "differently across hardware, so values may differ slightly; set another cache_dir to "
                "recompute here",
                self.label,
                self.directory,
                computed_on,
                self.device_kind,
            )

    def _annotate(self, statistics):
        statistics.metadata = {**statistics.metadata, "cache_key": self.key, "cache_dir": str(self.directory)}
        return statistics

    def get_or_compute(self, compute: Callable[[], Any]):
        """The cached statistics, or ``compute()`` stored under the lock (computed once across tasks)."""
        cached = self.load()
        if cached is not None:
            log.info("%s from the cache: %s", self.label, self.directory)
            self._warn_if_other_hardware(cached)
            note_cache_hit(cached.metadata.get("cost"))
            return cached
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path)):
            cached = self.load()  # another task may have finished it while we waited
            if cached is not None:
                log.info("%s computed by another task: %s", self.label, self.directory)
                note_cache_hit(cached.metadata.get("cost"))
                return cached
            adopted = self._adopt_legacy_entry()
            if adopted is not None:
                self._warn_if_other_hardware(adopted)
                note_cache_hit(adopted.metadata.get("cost"))
                return adopted
            with measure(self.label) as cost:
                statistics = compute()
            # The entry keeps what computing it cost, so a later run served from it can report that.
            statistics.metadata = {**statistics.metadata, "cost": cost.as_original(), "computed_on": self.device_kind}
            note_computed(statistics.metadata["cost"])
            self.store(statistics)
            log.info("%s cached in %s", self.label, self.directory)
            return statistics


class MICache(StatisticsCache):
    """MI statistics of ACM: ``cache_root/mi/<key>``."""
