"""The embedded toy task (acm_exp.toy): generated in memory, no file, no network.

Its benchmark config (``source: toy``) is graded by the math family's grader and prompted by the
``toy`` prompt format (or any other); ``options`` n and seed choose the generated problems. A local
file, when the config names an existing one, is read instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acm_exp.eval.tasks.base import TaskFamily, register

TOY_OPTIONS = ("n", "seed")


def load_toy_rows(cfg: Mapping, path: Path | None) -> list[dict[str, Any]]:
    from acm_exp.eval.benchmarks import read_rows
    from acm_exp.toy import toy_problems

    if path is not None:
        return read_rows(path)
    options = dict(cfg.get("options") or {})
    return [
        dict(row)
        for row in toy_problems(
            cfg.get("split", "test"), n=int(options.get("n", 100)), seed=int(options.get("seed", 0))
        )
    ]


TOY = register(TaskFamily("toy", load_rows=load_toy_rows, options=TOY_OPTIONS, generates_rows=True))
