"""Benchmark families: one module each, registering how its benchmarks load, prompt and grade.

A benchmark config (conf/eval/benchmark/*.yaml) names its family in ``task``; configs written
before that key existed leave it null and are read as before: ``source: toy`` is the toy family,
any other benchmark the family its ``grader`` names. Two more keys name families by what they
borrow from them: ``grader`` (whose grader scores the responses) and ``fewshot_set`` (whose
exemplars the few-shot ``cot`` prompt shows). The generic code (acm_exp.eval.benchmarks, graders,
prompts, runner) only looks families up here.

Adding a benchmark: a module that calls ``register(TaskFamily(...))`` (imported in
``_BUILTIN_MODULES`` or by the caller before the run) plus a YAML naming it; see README.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acm_exp.errors import ConfigError

if TYPE_CHECKING:
    from acm_exp.eval.benchmarks import Example

_BUILTIN_MODULES = ("math", "gsm8k", "humaneval_pro", "livecodebench", "toy")
# Configs without ``task``: a source that names a family (the embedded toy task) selects it.
SOURCE_FAMILIES = {"toy": "toy"}

_FAMILIES: dict[str, TaskFamily] = {}
_builtins_loaded = False


@dataclass(frozen=True)
class Grade:
    extracted: str | None
    correct: bool
    # Code graders: the sandbox status ("passed", "failed", "timeout", ...); empty for math.
    status: str = ""


@dataclass(frozen=True)
class GradeSettings:
    """What the run configures about grading: ``timeout_s`` (None: the benchmark's official limit),
    ``code_grading`` ("official" or "lenient") and the sandbox ``isolation`` for code; the numeric
    rule (eval.grading.numeric) for math."""

    timeout_s: float | None = None
    code_grading: str = "official"
    isolation: str | None = None
    math_numeric: str = "precision"


@dataclass(frozen=True)
class Grader:
    grade: Callable[[Example, str, GradeSettings], Grade]
    # Whether grading runs programs (worth running in parallel, needs the sandbox timeout).
    runs_code: bool


@dataclass(frozen=True)
class CodePrompt:
    """How a code benchmark is prompted, whatever the role format around it."""

    # example row -> the task text (the user turn).
    text: Callable[[Mapping], str]
    # The system message under ChatML.
    system: str
    # example row -> text the response is made to start with (appended after the role format's
    # assistant opening; the grader puts it back in front of the response), or None.
    response_prefix: Callable[[Mapping], str] | None = None
    # Extra stop strings of the task (HumanEval-Pro: the closing fence of the block its prefix opens).
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskFamily:
    """One benchmark family. Every part is optional: a family without a loader reads the local
    file or the hub dataset of its config, one without a grader or exemplars lends none."""

    name: str
    # (benchmark config, its existing local file or None) -> rows; None: the generic file/hub loader.
    load_rows: Callable[[Mapping, Path | None], list[dict[str, Any]]] | None = None
    # Keys the benchmark's ``options`` may hold (read by load_rows).
    options: tuple[str, ...] = ()
    # Whether load_rows makes the rows itself (the toy task), so the config needs no local file or source.
    generates_rows: bool = False
    # Whether validation parses the local file in the configured columns (False where load_rows
    # reads it in a schema of its own).
    checks_local_rows: bool = True
    grader: Grader | None = None
    # (question, answer) pairs of the few-shot ``cot`` prompt, each answer ending in \boxed{}.
    exemplars: tuple[tuple[str, str], ...] = ()
    # Code benchmarks (kind: code): the task text and its pieces.
    code_prompt: CodePrompt | None = None
    # benchmark config -> extra results columns naming what the run read (acm_exp.results).
    result_columns: Callable[[Mapping], dict[str, Any]] | None = None


def register(family: TaskFamily) -> TaskFamily:
    """Add ``family`` under its name; a second family of the same name is a programming error."""
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"task family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (tests that register one of their own)."""
    _FAMILIES.pop(name, None)


def families() -> dict[str, TaskFamily]:
    """Every registered family by name, in alphabetical order (registration order depends on
    which module was imported first)."""
    _load_builtins()
    return dict(sorted(_FAMILIES.items()))


def get_task(name: str | None) -> TaskFamily:
    known = families()
    if name not in known:
        raise ConfigError(f"task family {name!r} is unknown; expected one of {tuple(known)}")
    return known[name]


def task_name(benchmark_cfg: Mapping) -> str | None:
    """The family a benchmark config names (``task``), or the one its older keys imply."""
    if benchmark_cfg.get("task"):
        return benchmark_cfg["task"]
    return SOURCE_FAMILIES.get(benchmark_cfg.get("source"), benchmark_cfg.get("grader"))


def task_of(benchmark_cfg: Mapping) -> TaskFamily:
    try:
        return get_task(task_name(benchmark_cfg))
    except ConfigError as error:
        raise ConfigError(f"benchmark {benchmark_cfg.get('name')}: {error}") from None


class FamilyParts(Mapping[str, Any]):
    """A live read-only view: family name -> one part (an attribute of TaskFamily), over the
    families that have it (e.g. the graders, the few-shot exemplar sets)."""

    def __init__(self, part: str) -> None:
        self._part = part

    def _present(self) -> dict[str, Any]:
        parts = {name: getattr(family, self._part) for name, family in families().items()}
        return {name: value for name, value in parts.items() if value}

    def __getitem__(self, name: str) -> Any:
        return self._present()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())


# Family name -> its grader / its few-shot exemplars / its code prompt, over the families that have one.
GRADERS: Mapping[str, Grader] = FamilyParts("grader")
FEWSHOT_EXEMPLARS: Mapping[str, tuple[tuple[str, str], ...]] = FamilyParts("exemplars")
CODE_PROMPTS: Mapping[str, CodePrompt] = FamilyParts("code_prompt")


def _load_builtins() -> None:
    # Imported on first use, not with this package: the family modules import the generic
    # modules, which import this registry.
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{module}")
