"""The package declares what it imports, and the README's set-up commands are the ones CI runs."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "acm_exp"
# Imported only on paths that need an extra; each must be declared in that extra.
OPTIONAL_IMPORTS = {"vllm": ("gpu", "vllm-cpu"), "submitit": ("slurm",), "hydra_plugins": ("slurm",)}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(spec).name) for spec in requirements}


def imported_top_level_modules() -> dict[str, Path]:
    """Third-party top-level module -> a file importing it, over every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("acm_exp", "__future__"):
                    found.setdefault(top, path)
    return found


def test_every_runtime_import_is_a_declared_dependency():
    project = _pyproject()["project"]
    runtime = _names(project["dependencies"])
    extras = {name: _names(specs) for name, specs in project["optional-dependencies"].items()}
    distributions = packages_distributions()
    missing = []
    for module, where in imported_top_level_modules().items():
        if module in OPTIONAL_IMPORTS:
            for extra in OPTIONAL_IMPORTS[module]:
                assert extras.get(extra), f"{module} is imported by {where} but the extra [{extra}] is empty"
            continue
        providers = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not providers & runtime:
            missing.append(f"{module} ({where.relative_to(ROOT)}; provided by {sorted(providers)})")
    assert not missing, f"imported but not in [project.dependencies]: {missing}"


def test_accelerate_is_a_runtime_dependency():
    # transformers' device_map needs it; without it the README's main job died after building the toy pair.
    assert "accelerate" in _names(_pyproject()["project"]["dependencies"])


def test_dev_only_packages_are_not_imported_by_the_package():
    dev_only = _names(_pyproject()["project"]["optional-dependencies"]["dev"]) - _names(
        _pyproject()["project"]["dependencies"]
    )
    distributions = packages_distributions()
    for module, where in imported_top_level_modules().items():
        providers = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if module not in OPTIONAL_IMPORTS:
            assert not providers & dev_only, f"{where} imports {module}, which only the dev extra installs"


def readme_setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_states_exactly_two_setup_commands():
    commands = readme_setup_commands()
    assert len(commands) == 2, commands
    install_and_run, run_tests = commands
    assert "-e ." in install_and_run and "[dev]" not in install_and_run and install_and_run.endswith("-m acm_exp")
    assert '-e ".[dev]"' in run_tests and run_tests.endswith("-m pytest")


@pytest.mark.parametrize("index", [0, 1])
def test_ci_runs_each_readme_command_verbatim(index):
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    command = readme_setup_commands()[index]
    assert any(command in line for line in ci_lines), f"not in .ci/run verbatim: {command}"
