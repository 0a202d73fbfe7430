"""Benchmark families: one module each, registering how its benchmarks load, prompt and grade.

The registry (``FAMILIES``, an ``acm_exp.registry.Registry``) and the types the families share live in
``acm_exp.eval.tasks.base`` (re-exported here); the generic code (acm_exp.eval.benchmarks, graders,
prompts, runner) only looks families up. Built-in families: ``math`` (the boxed-answer benchmarks),
``gsm8k``, ``humaneval_pro`` and ``mbpp_pro`` (CodeEval-Pro), ``livecodebench``, ``hellaswag``
(multiple choice by log-likelihood) and ``toy``.

Adding a benchmark: a module that calls ``register(TaskFamily(...))`` (named in
``BUILTIN_MODULES`` or imported by the caller before the run) plus a YAML naming it in ``task``;
see README.md, "Add a benchmark".
"""

from acm_exp.eval.tasks.base import (
    BUILTIN_MODULES,
    CODE_PROMPTS,
    DEFAULT_FEWSHOT_SET,
    FAMILIES,
    FEWSHOT_EXEMPLARS,
    GRADERS,
    SOURCE_FAMILIES,
    ChoiceQuestion,
    CodePrompt,
    Example,
    FamilyParts,
    Grade,
    Grader,
    GradeSettings,
    TaskFamily,
    benchmark_hash_form,
    families,
    fewshot_name,
    get_task,
    grader_name,
    implied_task_name,
    register,
    task_name,
    task_of,
    unregister,
)

# The name this module gave the built-in list before the registry moved to base.py.
_BUILTIN_MODULES = BUILTIN_MODULES

__all__ = [
    "BUILTIN_MODULES",
    "CODE_PROMPTS",
    "DEFAULT_FEWSHOT_SET",
    "FAMILIES",
    "FEWSHOT_EXEMPLARS",
    "GRADERS",
    "SOURCE_FAMILIES",
    "ChoiceQuestion",
    "CodePrompt",
    "Example",
    "FamilyParts",
    "Grade",
    "GradeSettings",
    "Grader",
    "TaskFamily",
    "benchmark_hash_form",
    "families",
    "fewshot_name",
    "get_task",
    "grader_name",
    "implied_task_name",
    "register",
    "task_name",
    "task_of",
    "unregister",
]
