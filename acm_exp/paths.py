"""Where things live on disk: the user cache, and the offline copies of benchmark data."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import platformdirs

from acm_exp.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root(configured: str | os.PathLike | None = None) -> Path:
    """The cache directory: the configured one, else $ACM_EXP_CACHE, else the user cache dir."""
    chosen = configured or os.environ.get("ACM_EXP_CACHE") or platformdirs.user_cache_dir("acm_exp")
    return Path(chosen).expanduser()


# The benchmark and calibration copies the package ships (see data/README.md for their provenance).
PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "data"


def data_dir(configured: str | os.PathLike | None = None) -> Path:
    """Where offline benchmark and calibration copies are read: the configured folder (``data_dir``),
    else ``$ACM_EXP_DATA_DIR``, else the copies shipped in the package.

    A folder that is named but does not exist is an error rather than a silent fallback: the run
    would otherwise read other files than the user pointed it at."""
    for name, candidate in (("data_dir", configured), ("$ACM_EXP_DATA_DIR", os.environ.get("ACM_EXP_DATA_DIR"))):
        if candidate:
            folder = Path(candidate).expanduser()
            if not folder.is_dir():
                raise ConfigError(
                    f"{name}={str(candidate)!r} is not a directory; expected a folder of benchmark and "
                    f"calibration copies (unset it to use the shipped copies in {PACKAGED_DATA_DIR})"
                )
            return folder
    return PACKAGED_DATA_DIR


def shared_data_dir(configured: str | os.PathLike | None = None) -> Path:
    """The earlier name of :func:`data_dir`, kept for callers that use it."""
    return data_dir(configured)


RESULTS_DIR_ENV = "ACM_EXP_RESULTS_DIR"


def resolve_results_dir(configured: str | os.PathLike | None = None) -> Path:
    """The results table's directory: the configured one (``logger.results_dir``), else
    $ACM_EXP_RESULTS_DIR, else ./outputs/results (beside Hydra's outputs)."""
    chosen = configured or os.environ.get(RESULTS_DIR_ENV) or Path.cwd() / "outputs" / "results"
    return Path(chosen).expanduser().absolute()


def sha256_file(path: str | os.PathLike) -> str:
    """The file's SHA-256, read in 1 MiB blocks (model weights do not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists, else its nearest existing ancestor (where it would be created)."""
    existing = Path(path)
    while not existing.exists():
        existing = existing.parent
    return existing


def write_probe_error(directory: Path, prefix: str = ".acm_exp") -> OSError | None:
    """Create and remove a temporary file in ``directory``; the OSError when that fails, else None.

    The one reliable writability test (permission bits say nothing on a read-only mount or for root)."""
    try:
        descriptor, probe = tempfile.mkstemp(dir=directory, prefix=f"{prefix}-write-probe-")
    except OSError as error:
        return error
    os.close(descriptor)
    os.unlink(probe)
    return None


def check_writable_dir(path: str | os.PathLike, key: str) -> Path:
    """Raise ConfigError unless ``path`` is, or can be created as, a writable directory.

    Probes with a temporary file in the directory, or in its nearest existing ancestor when it does
    not exist yet, so a read-only or misplaced output fails at validation instead of after the work;
    nothing is left behind."""
    target = Path(path).expanduser().absolute()
    existing = nearest_existing(target)
    if not existing.is_dir():
        where = "is a file" if existing == target else f"is below the file {existing}"
        raise ConfigError(f"{key}={str(target)!r} {where}; expected a directory (created if missing)")
    error = write_probe_error(existing)
    if error is not None:
        raise ConfigError(
            f"{key}={str(target)!r} is not writable ({error.strerror} in {existing}); expected a writable directory"
        )
    return target


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(handle)`` under a temporary name beside it, then rename it over.

    Readers (and concurrent writers, e.g. SLURM tasks on a shared filesystem) see the old file or
    the complete new one, never a partial one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def iter_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; ConfigError names the bad line.

    ``what`` names the file in messages ("calibration file", "samples file")."""
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"{what} {path} line {line_number} is not JSON ({error.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise ConfigError(
                    f"{what} {path} line {line_number} is a {type(record).__name__}; expected a JSON object"
                )
            yield line_number, record
