"""Publishing a merge: its place checked up front, a temporary directory, a lock, one rename.

A merge is written under a hidden temporary name beside its output directory
(``.<name>.tmp-<host>-<pid>-<random>``), its files are flushed to disk, and it is renamed into place
only when complete: a reader never sees a partial merge, and an existing output is replaced only
with ``merge.overwrite=true`` (renamed aside first, so the new one appears in one rename, then
deleted). Temporary directories left by killed runs on this host are removed by the next merge into
the same place. Merges into one directory hold a lock (``.<name>.lock`` beside it), so a second
identical request waits for the first and then finds its output complete (``read_manifest``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from acm_exp.errors import ConfigError
from acm_exp.merge.checkpoint import fsync_directory
from acm_exp.merge.validation import check_output_location  # noqa: F401 (read from here too)
from acm_exp.paths import nearest_existing

log = logging.getLogger(__name__)

MANIFEST_NAME = "merge_manifest.json"
# The tokenizer files a merged model is saved with (those the source model has).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


def read_manifest(output_dir: Path) -> dict | None:
    """The manifest of a complete merge in ``output_dir``; None when there is none (or it is unreadable)."""
    path = output_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def size_text(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.2f} MB"


def check_free_space(output_dir: Path, needed: int) -> None:
    existing = nearest_existing(output_dir.parent)
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ConfigError(
            f"not enough free space for the merge into {output_dir}: its shards need {size_text(needed)} but "
            f"{existing} has {size_text(free)} free; free space or choose another merge.output_dir"
        )


@contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the lock of ``output_dir``: merges into one directory run one after the other, so a second
    identical request waits for the first and then finds its output complete."""
    from filelock import FileLock

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output_dir.parent / f".{output_dir.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        log.info("another merge is writing %s; waiting for it to finish", output_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def temporary_dir_for(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_temporary_dirs(output_dir: Path) -> None:
    """Remove the unfinished merges into ``output_dir`` left by killed runs on this host."""
    for stale in _stale_temporary_dirs(output_dir):
        log.info("removing the unfinished merge %s left by a killed run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _stale_temporary_dirs(output_dir: Path) -> list[Path]:
    host = socket.gethostname()
    stale = []
    for candidate in output_dir.parent.glob(f".{output_dir.name}.tmp-*"):
        parts = candidate.name.rsplit(".tmp-", 1)[1].split("-")
        if len(parts) >= 2 and parts[0] == host and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            stale.append(candidate)
    return stale


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def publish_directory(temporary: Path, output_dir: Path, *, overwrite: bool) -> None:
    """Rename a finished directory into place; an existing one is replaced only when allowed.

    A replaced output is first renamed aside (so the new one appears in one rename) and then deleted;
    if it cannot be deleted, the warning says where it is.
    """
    fsync_directory(temporary)
    if output_dir.exists() or output_dir.is_symlink():
        if not overwrite:
            raise ConfigError(f"output directory {output_dir} already exists; set merge.overwrite=true to replace it")
        retired = output_dir.parent / f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(output_dir, retired)
        os.replace(temporary, output_dir)
        try:
            _remove(retired)
        except OSError as error:
            log.warning("the replaced output could not be deleted (%s); it is kept in %s", error.strerror, retired)
    else:
        os.replace(temporary, output_dir)
    fsync_directory(output_dir.parent)


def tokenizer_files(directory: Path) -> list[str]:
    return [name for name in TOKENIZER_FILES if (directory / name).is_file()] + sorted(
        path.name for path in directory.glob("*.tiktoken")
    )


def write_side_files(
    destination: Path, config: dict, config_dir: Path, tokenizer_dir: Path, *, dtype: str, updates: dict
) -> None:
    """What a merged model is saved with beside its weights: ``config`` (read from ``config_dir``) with
    its dtype and ``updates`` applied, the generation config of ``config_dir`` (built from the config's
    token ids when it has none), and the tokenizer files of ``tokenizer_dir``."""
    config = {**config, **updates, "torch_dtype": dtype}
    if "dtype" in config:
        config["dtype"] = dtype
    (destination / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = config_dir / "generation_config.json"
    if generation.is_file():
        shutil.copyfile(generation, destination / "generation_config.json")
    else:
        from transformers import GenerationConfig

        GenerationConfig.from_dict(
            {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if key in config}
        ).save_pretrained(destination)
    for name in tokenizer_files(tokenizer_dir):
        shutil.copyfile(tokenizer_dir / name, destination / name)
