"""Benchmarks as data: turn a BenchmarkConfig into a list of examples (id, question, gold, row).

Rows come from the benchmark family's own loader when it has one (acm_exp.eval.tasks: the toy task,
LiveCodeBench), else from the offline copy (``local_path`` under ``data_dir``) when it exists, else
from the Hugging Face dataset ``source``. ``limit`` keeps a deterministic subset (see ``subset_indices``).
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.eval.gold import ANSWER_FORMATS, gold_answer
from acm_exp.eval.tasks.base import (
    FEWSHOT_EXEMPLARS,
    GRADERS,
    Example,
    fewshot_name,
    get_task,
    grader_name,
    task_name,
    task_of,
)
from acm_exp.paths import iter_jsonl

log = logging.getLogger(__name__)

__all__ = [
    "Example",
    "FieldSpec",
    "check_local_rows",
    "field_spec",
    "gold_text",
    "load_benchmark",
    "local_file",
    "parse_example",
    "read_rows",
    "subset_indices",
    "validate_benchmark",
]

# "math": a final answer graded against the gold; "code": programs run against tests;
# "multiple_choice": the choices scored by log-likelihood (no generation).
KINDS = ("math", "code", "multiple_choice")
HUB_OVERRIDE_KEYS = ("question_field", "answer_field", "answer_format", "id_field")
# The permutation behind eval.limit: fixed, so that every run, model and seed sees the same rows.
LIMIT_SEED = 0


@dataclass(frozen=True)
class FieldSpec:
    """Which columns hold the id, the question and the gold answer, and how the gold is parsed."""

    id_field: str | None
    question_field: str
    answer_field: str | None
    answer_format: str


# ---------------------------------------------------------------------------------------------
# Validation (cheap, no IO beyond checking that a local file exists)


def local_file(cfg: Mapping, data_dir: Path | None) -> Path | None:
    """The benchmark's offline copy when it exists: local_path, absolute or under data_dir."""
    if not cfg.get("local_path"):
        return None
    path = Path(cfg["local_path"]).expanduser()
    if not path.is_absolute():
        if data_dir is None:
            return None
        path = Path(data_dir) / path
    return path if path.is_file() else None


def validate_benchmark(key: str, cfg: Mapping, data_dir: Path | None) -> None:
    """Raise ConfigError on a benchmark config that cannot work; touches no network. A local file
    is parsed row by row (cached), so an empty or unparseable gold answer stops the run here."""
    where = f"eval.benchmarks.{key}"
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind={kind!r}; expected one of {KINDS}")
    family = task_of(cfg)
    if kind == "multiple_choice":
        if family.choice_question is None:
            raise ConfigError(
                f"{where}.kind=multiple_choice but task {family.name!r} scores no choices; expected a task "
                "with choice_question (e.g. hellaswag) or kind math/code"
            )
    elif grader_name(cfg) not in GRADERS:
        if cfg.get("grader"):
            raise ConfigError(f"{where}.grader={cfg.get('grader')!r}; expected one of {tuple(GRADERS)}")
        raise ConfigError(
            f"{where}.grader is null and task {task_name(cfg)!r} has no grader of its own; "
            f"expected a grader naming one of {tuple(GRADERS)}"
        )
    if cfg.get("answer_format") not in ANSWER_FORMATS:
        raise ConfigError(f"{where}.answer_format={cfg.get('answer_format')!r}; expected one of {ANSWER_FORMATS}")
    if fewshot_name(cfg) not in FEWSHOT_EXEMPLARS:
        raise ConfigError(f"{where}.fewshot_set={cfg.get('fewshot_set')!r}; expected one of {tuple(FEWSHOT_EXEMPLARS)}")
    max_new_tokens = cfg.get("max_new_tokens")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"{where}.max_new_tokens={max_new_tokens}; expected a positive integer or null")
    unknown = sorted(set(cfg.get("hub_overrides") or {}) - set(HUB_OVERRIDE_KEYS))
    if unknown:
        raise ConfigError(f"{where}.hub_overrides has unknown key(s) {unknown}; expected any of {HUB_OVERRIDE_KEYS}")
    overridden_format = (cfg.get("hub_overrides") or {}).get("answer_format")
    if overridden_format is not None and overridden_format not in ANSWER_FORMATS:
        raise ConfigError(
            f"{where}.hub_overrides.answer_format={overridden_format!r}; expected one of {ANSWER_FORMATS}"
        )
    unknown = sorted(set(cfg.get("options") or {}) - set(family.options))
    if unknown:
        raise ConfigError(f"{where}.options has unknown key(s) {unknown}; expected any of {family.options}")
    if kind in ("math", "multiple_choice") and not cfg.get("answer_field"):
        raise ConfigError(f"{where}.answer_field is empty; a {kind} benchmark needs its gold answer column")
    if local_file(cfg, data_dir) is None and not cfg.get("source") and not family.generates_rows:
        wanted = cfg.get("local_path") or "(no local_path)"
        raise ConfigError(
            f"{where}: local file {wanted!r} not found under data_dir={data_dir} and no hub source set; "
            "expected an existing local_path or a Hugging Face dataset id in source"
        )
    path = local_file(cfg, data_dir)
    if path is not None and family.checks_local_rows:
        stat = path.stat()
        check_local_rows(
            str(path), stat.st_mtime_ns, stat.st_size, field_spec(cfg, from_hub=False), str(cfg["name"]), family.name
        )


@functools.lru_cache(maxsize=64)
def check_local_rows(path: str, mtime_ns: int, size: int, fields: FieldSpec, benchmark: str, task: str) -> int:
    """Parse every row of a local benchmark file, so a malformed row (a missing column, an empty or
    unparseable gold answer, a choice question its family cannot read) fails at validation, before
    any model loads, not mid-run. Cached on (path, mtime, size): a sweep validates the same files
    once per point."""
    rows = read_rows(Path(path))
    if not rows:
        raise ConfigError(f"benchmark {benchmark}: {path} has no rows; expected at least one example")
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(
                f"benchmark {benchmark}: row {position} of {path} is a {type(row).__name__}; "
                "expected an object with the configured columns"
            )
        example = parse_example(row, position, fields, benchmark, source=path)
        check_choice_question(example, position, task, benchmark, path)
    return len(rows)


def check_choice_question(example: Example, position: int, task: str, benchmark: str, source: str | Path) -> None:
    """A multiple-choice family reads the example's context, choices and gold index, or says which
    row it cannot read; other families have nothing to check here."""
    read_question = get_task(task).choice_question
    if read_question is None:
        return
    try:
        read_question(example)
    except ConfigError as error:
        raise ConfigError(f"benchmark {benchmark}: row {position} of {source}: {error}") from None


# ---------------------------------------------------------------------------------------------
# Subsets


def subset_indices(num_rows: int, limit: int | None) -> list[int]:
    """Row positions kept under ``limit``: the first ``limit`` of one fixed permutation, in file order.

    A permutation (rather than the first rows) keeps a small subset representative of files sorted
    by subject or difficulty; the prefix of one permutation makes every smaller subset nested in a
    larger one, so results at limit 20 and 100 are comparable.
    """
    if limit is None or limit >= num_rows:
        return list(range(num_rows))
    if limit < 1:
        raise ConfigError(f"eval.limit={limit}; expected a positive integer or null")
    order = list(range(num_rows))
    random.Random(LIMIT_SEED).shuffle(order)
    return sorted(order[:limit])


# ---------------------------------------------------------------------------------------------
# Loading


def load_benchmark(cfg: Mapping, data_dir: Path | None = None, limit: int | None = None) -> list[Example]:
    """Load, subset and parse one benchmark; the gold answers are normalized with its answer_format."""
    name = cfg["name"]
    path = local_file(cfg, data_dir)
    family = task_of(cfg)
    if family.load_rows is not None:
        rows = family.load_rows(cfg, path)
        fields = field_spec(cfg, from_hub=False)
    elif path is not None:
        log.info("benchmark %s: reading %s", name, path)
        rows = read_rows(path)
        fields = field_spec(cfg, from_hub=False)
    elif cfg.get("source"):
        rows = _load_hub(cfg)
        fields = field_spec(cfg, from_hub=True)
    else:
        raise ConfigError(
            f"benchmark {name}: local file {cfg.get('local_path')!r} not found under "
            f"data_dir={data_dir} and no hub source; expected one of them"
        )
    if not rows:
        raise ConfigError(f"benchmark {name}: the source has no rows; expected at least one example")
    source = path if path is not None else cfg.get("source") or family.name
    examples = []
    for position in subset_indices(len(rows), limit):
        example = parse_example(rows[position], position, fields, name, source=source)
        check_choice_question(example, position, family.name, name, source)
        examples.append(example)
    return examples


def field_spec(cfg: Mapping, *, from_hub: bool) -> FieldSpec:
    overrides = dict(cfg.get("hub_overrides") or {}) if from_hub else {}
    merged = {key: overrides.get(key, cfg.get(key)) for key in HUB_OVERRIDE_KEYS}
    return FieldSpec(**merged)


def parse_example(
    row: Mapping[str, Any], position: int, fields: FieldSpec, benchmark: str, *, source: str | Path = "the source"
) -> Example:
    """One row as an Example, its gold parsed by the answer format. A row whose gold answer is
    missing, empty or unparseable is refused with one line naming ``source`` (the file or hub id)
    and the row: graded, it would silently count as wrong."""
    question = _column(row, fields.question_field, benchmark, position)
    gold = None
    if fields.answer_field:
        raw_gold = _column(row, fields.answer_field, benchmark, position)
        gold = parse_gold(raw_gold, fields, benchmark, position, source)
    identifier = row.get(fields.id_field) if fields.id_field else None
    return Example(
        id=str(position if identifier is None else identifier),
        question=str(question),
        gold=gold,
        row=dict(row),
    )


def parse_gold(raw_gold: Any, fields: FieldSpec, benchmark: str, position: int, source: str | Path) -> str:
    """The gold answer of one row by the benchmark's answer_format (acm_exp.eval.grading.gold_answer),
    or a ConfigError naming the file and row when it is empty or cannot be parsed."""
    where = f"benchmark {benchmark}: row {position} of {source}"
    text = "" if raw_gold is None else gold_text(raw_gold)
    if not text.strip():
        raise ConfigError(
            f"{where} has an empty gold answer in column {fields.answer_field!r}; expected a non-empty answer "
            "(fix or drop the row)"
        )
    try:
        gold = gold_answer(text, fields.answer_format)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"{where}: gold answer {_shorten(text)!r} cannot be parsed as answer_format={fields.answer_format!r} "
            f"({_one_line(error)}); expected a {fields.answer_format} gold answer"
        ) from None
    if not isinstance(gold, str) or not gold.strip():
        raise ConfigError(
            f"{where}: gold answer {_shorten(text)!r} parses to nothing under answer_format="
            f"{fields.answer_format!r}; expected a {fields.answer_format} gold answer"
        )
    return gold


def _shorten(text: str, limit: int = 60) -> str:
    flat = _one_line(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def gold_text(raw_gold: Any) -> str:
    """A gold value as text: numbers become strings, lists (OlympiadBench) their Python rendering."""
    if isinstance(raw_gold, str):
        return raw_gold
    if isinstance(raw_gold, (list, tuple)):
        return str([str(item) for item in raw_gold])
    return str(raw_gold)


def _column(row: Mapping[str, Any], column: str, benchmark: str, position: int) -> Any:
    if column not in row:
        raise ConfigError(
            f"benchmark {benchmark}: column {column!r} not in row {position}; expected one of {sorted(row)}"
        )
    return row[column]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (a list, or an object with a list under "data") or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [row for _, row in iter_jsonl(path, "benchmark file")]
    if suffix == ".json":
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"benchmark file {path} is not valid JSON ({error}); expected a JSON list of rows"
            ) from None
        if isinstance(content, dict) and isinstance(content.get("data"), list):
            return content["data"]
        if isinstance(content, list):
            return content
        raise ConfigError(f"{path}: expected a JSON list of rows (or an object with a 'data' list)")
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    raise ConfigError(f"{path}: unsupported file type {suffix!r}; expected .jsonl, .json or .parquet")


def _load_hub(cfg: Mapping) -> list[dict[str, Any]]:
    import datasets

    source, subset, split = cfg["source"], cfg.get("subset"), cfg.get("split", "test")
    log.info("benchmark %s: loading hub dataset %s (%s, split %s)", cfg["name"], source, subset, split)
    try:
        dataset = datasets.load_dataset(source, subset, split=split)
    except Exception as error:  # offline, unknown id, bad split: all surface as one clear message
        raise ConfigError(
            f"benchmark {cfg['name']}: cannot load hub dataset {source!r} (subset {subset}, split {split}): "
            f"{type(error).__name__}: {error}; expected network access or a local copy at "
            f"data_dir/{cfg.get('local_path')}"
        ) from error
    return [dict(row) for row in dataset]
