"""Per-sample records on disk: one JSONL file per (benchmark, seed), written atomically and reused.

A file is reused only when it is complete for the current request: the same example ids, in the
same order, with the same prompts. Anything else (a smaller limit, a changed prompt, a truncated
or corrupt file) is regenerated; a run killed midway thus redoes only the missing files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from acm_exp.paths import atomic_write

log = logging.getLogger(__name__)


def samples_path(samples_dir: Path, benchmark: str, seed: int, *, several_seeds: bool) -> Path:
    """<samples_dir>/<benchmark>.jsonl, or <benchmark>__seed<k>.jsonl when several seeds run."""
    suffix = f"__seed{seed}" if several_seeds else ""
    return Path(samples_dir) / f"{benchmark}{suffix}.jsonl"


def write_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def cost_path(samples: Path) -> Path:
    """``<out>/costs/<benchmark>.json`` for ``<out>/samples/<benchmark>.jsonl``: what generating that
    samples file cost, reported again when a later run reuses it."""
    return samples.parent.parent / "costs" / f"{samples.stem}.json"


def write_cost(samples: Path, cost: Mapping[str, Any]) -> None:
    write_atomic(cost_path(samples), json.dumps(dict(cost), sort_keys=True) + "\n")


def read_cost(samples: Path) -> dict[str, Any] | None:
    """The recorded cost of a samples file, or None (older files have none)."""
    try:
        cost = json.loads(cost_path(samples).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return cost if isinstance(cost, dict) else None


def read_records(path: Path) -> list[dict[str, Any]] | None:
    """The records of a samples file, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (OSError, json.JSONDecodeError) as error:
        log.warning("ignoring unreadable samples file %s (%s)", path, error)
        return None


def reusable_records(path: Path, ids: Sequence[str], prompts: Sequence[str]) -> list[dict[str, Any]] | None:
    """The stored records when they cover exactly these examples with these prompts, else None."""
    records = read_records(path)
    if records is None:
        return None
    if len(records) != len(ids):
        log.info("samples %s hold %d of %d examples: regenerating", path, len(records), len(ids))
        return None
    if [r.get("id") for r in records] != list(ids) or [r.get("prompt") for r in records] != list(prompts):
        log.info("samples %s were made for other examples or prompts: regenerating", path)
        return None
    return records
