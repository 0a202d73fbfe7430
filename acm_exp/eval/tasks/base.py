"""The task registry: what a benchmark family is, and the generic code's way to look one up.

A benchmark config (conf/eval/benchmark/*.yaml) names its family in ``task``. Two more keys borrow
parts of a family by its name: ``grader`` (whose grader scores the responses) and ``fewshot_set``
(whose exemplars the few-shot ``cot`` prompt shows). Left null, both are the task's own: its grader,
and its exemplars (a task without exemplars falls back to the math family's, the Minerva MATH
prompt). Configs written before ``task`` existed leave it null: ``source: toy`` is then the toy
family and any other benchmark the family its ``grader`` names.

This module holds the data types every family module and the generic modules share (``Example``,
``Grade``, ``Grader``, ``TaskFamily``, ...) and imports nothing of theirs, so that the family modules
(acm_exp.eval.tasks.<family>) and the generic ones (benchmarks, prompts, graders, runner) both sit
above it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acm_exp.errors import ConfigError
from acm_exp.registry import Registry

# The built-in families, each registered by the module of its name (imported on the name's first lookup:
# the family modules import the generic modules, which import this registry).
BUILTIN_MODULES = ("math", "gsm8k", "humaneval_pro", "mbpp_pro", "livecodebench", "hellaswag", "toy")
# Configs without ``task``: a source that names a family (the embedded toy task) selects it.
SOURCE_FAMILIES = {"toy": "toy"}
# The exemplars of the few-shot ``cot`` prompt when neither the config nor its task names a set
# (the schema's default before ``fewshot_set`` could be left null).
DEFAULT_FEWSHOT_SET = "math"

FAMILIES: Registry[TaskFamily] = Registry(
    "task family", declared={name: f"acm_exp.eval.tasks.{name}" for name in BUILTIN_MODULES}, error=ConfigError
)


@dataclass(frozen=True)
class Example:
    """One benchmark item. ``row`` is the source record, which code graders and prompts read."""

    id: str
    question: str
    gold: str | None
    row: dict[str, Any] = field(repr=False, compare=False)


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
class ChoiceQuestion:
    """A multiple-choice item scored by log-likelihood (``kind: multiple_choice``), as
    lm-evaluation-harness scores one: each choice is the continuation ``delimiter + choice`` of
    ``context``; the answer is the choice of highest log-likelihood (``acc``) or of highest
    log-likelihood per character of the choice (``acc_norm``)."""

    context: str
    choices: tuple[str, ...]
    # Index of the right choice.
    gold: int
    # lm-evaluation-harness's target_delimiter.
    delimiter: str = " "

    @property
    def continuations(self) -> tuple[str, ...]:
        return tuple(self.delimiter + choice for choice in self.choices)


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
    # Multiple-choice benchmarks (kind: multiple_choice): example -> its context, choices and gold
    # index; raises ConfigError on a row it cannot read (checked at validation).
    choice_question: Callable[[Example], ChoiceQuestion] | None = None
    # benchmark config -> extra results columns naming what the run read (acm_exp.results).
    result_columns: Callable[[Mapping], dict[str, Any]] | None = None


# ---------------------------------------------------------------------------------------------
# The registry


def register(family: TaskFamily) -> TaskFamily:
    """Add ``family`` under its name; a second family of the same name is a programming error."""
    return FAMILIES.add(family.name, family)


def unregister(name: str) -> None:
    """Remove a family (tests that register one of their own)."""
    FAMILIES.remove(name)


def families() -> dict[str, TaskFamily]:
    """Every registered family by name, in alphabetical order (registration order depends on
    which module was imported first)."""
    return FAMILIES.as_dict()


def get_task(name: str | None) -> TaskFamily:
    return FAMILIES.get(name)  # type: ignore[arg-type]


def task_name(benchmark_cfg: Mapping) -> str | None:
    """The family a benchmark config names (``task``), or the one its older keys imply."""
    if benchmark_cfg.get("task"):
        return benchmark_cfg["task"]
    return implied_task_name(benchmark_cfg)


def implied_task_name(benchmark_cfg: Mapping) -> str | None:
    """The family a config without ``task`` means: its source's (toy), else its grader's."""
    return SOURCE_FAMILIES.get(benchmark_cfg.get("source"), benchmark_cfg.get("grader"))


def task_of(benchmark_cfg: Mapping) -> TaskFamily:
    try:
        return get_task(task_name(benchmark_cfg))
    except ConfigError as error:
        raise ConfigError(f"benchmark {benchmark_cfg.get('name')}: {error}") from None


def grader_name(benchmark_cfg: Mapping) -> str | None:
    """The family whose grader scores the benchmark: its ``grader``, else its task when the task
    has a grader; None when neither names one."""
    if benchmark_cfg.get("grader"):
        return benchmark_cfg["grader"]
    name = task_name(benchmark_cfg)
    family = families().get(name) if name else None
    return name if family is not None and family.grader is not None else None


def fewshot_name(benchmark_cfg: Mapping) -> str:
    """The family whose exemplars the few-shot ``cot`` prompt shows: ``fewshot_set``, else the
    task's own when it has exemplars, else DEFAULT_FEWSHOT_SET."""
    if benchmark_cfg.get("fewshot_set"):
        return benchmark_cfg["fewshot_set"]
    name = task_name(benchmark_cfg)
    family = families().get(name) if name else None
    return name if family is not None and family.exemplars else DEFAULT_FEWSHOT_SET


def benchmark_hash_form(benchmark_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A benchmark config as the config hash reads it (acm_exp.results.hashable_config): ``grader``
    and ``fewshot_set`` resolved, ``task`` left out where the older keys imply it. Configs written
    before ``task`` existed (task null, grader and fewshot_set spelled out) and the same benchmark
    naming its task with those two left to default hash alike, so recorded results keep their hash."""
    form = dict(benchmark_cfg)
    if form.get("grader") is None:
        form["grader"] = grader_name(form)
    if form.get("fewshot_set") is None:
        form["fewshot_set"] = fewshot_name(form)
    if form.get("task") is None or form["task"] == implied_task_name(form):
        form.pop("task", None)
    return form


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
