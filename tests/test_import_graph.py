"""The package's import structure: no cycle, and no import against its layers.

The graph holds every import statement, read with the stdlib ast module: at module level, inside
functions and under ``if TYPE_CHECKING:`` alike (a loop that only a type checker follows is still a
knot in the design). ``from package import name`` depends on ``package/__init__`` and, when ``name``
is a submodule, on that submodule too; ``import a.b.c`` depends on ``a.b.c``. Imports of anything
outside acm_exp are left out.

``LAYERS`` orders the modules from the leaves (errors, paths, the parameter declarations) up to the
entry points (the CLI, the Python API and the package's facade, ``acm_exp/__init__``): a module
imports its own layer or those below, never one above. Modules inside the package therefore import
each other by their full names (``import acm_exp.costs as costs``), never through the facade.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import acm_exp

PACKAGE_ROOT = Path(acm_exp.__file__).parent
PACKAGE = "acm_exp"


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(module: str, modules: dict[str, Path]) -> bool:
    return modules[module].name == "__init__.py"


def _absolute(node: ast.ImportFrom, importer: str, modules: dict[str, Path]) -> str:
    if not node.level:
        return node.module or ""
    # A package's own relative imports start at the package, a module's at its parent.
    anchor = importer.split(".")
    if not _is_package(importer, modules):
        anchor.pop()
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imported_modules(importer: str, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``importer``'s import statements name (see the module docstring)."""
    tree = ast.parse(modules[importer].read_text(encoding="utf-8"), filename=str(modules[importer]))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, importer, modules)
            targets.add(source)
            targets.update(f"{source}.{alias.name}" for alias in node.names)
    return {target for target in targets if target in modules and target != importer}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {module: imported_modules(module, modules) for module in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One loop of the graph as [a, b, ..., a], or None when it has none (iterative depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the search path, "done" once every successor is done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        state[start] = "open"
        while pending:
            successor = next(pending[-1], None)
            if successor is None:
                state[path.pop()] = "done"
                pending.pop()
            elif state.get(successor) == "open":
                return [*path[path.index(successor) :], successor]
            elif successor not in state:
                state[successor] = "open"
                path.append(successor)
                pending.append(iter(sorted(graph[successor])))
    return None


def test_the_graph_reads_every_kind_of_import(tmp_path):
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .leaf import name\n")
    (package / "sub" / "leaf.py").write_text("def f():\n    from acm_exp import other\n")
    (package / "other.py").write_text(
        "import acm_exp.sub.leaf\nfrom . import sub\nimport json\nif TYPE_CHECKING:\n    from acm_exp import late\n"
    )
    (package / "late.py").write_text("")
    modules = module_files(package)
    graph = import_graph(modules)
    assert graph["acm_exp.sub"] == {"acm_exp.sub.leaf"}
    assert graph["acm_exp.sub.leaf"] == {"acm_exp", "acm_exp.other"}
    assert graph["acm_exp.other"] == {"acm_exp", "acm_exp.sub", "acm_exp.sub.leaf", "acm_exp.late"}
    assert find_cycle(graph) == ["acm_exp.other", "acm_exp.sub", "acm_exp.sub.leaf", "acm_exp.other"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_acm_exp_has_no_import_cycle():
    cycle = find_cycle(import_graph(module_files()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# Bottom to top; fnmatch patterns of dotted module names. A new module must be placed here.
LAYERS = (
    (
        "foundation",
        (
            "acm_exp.errors",
            "acm_exp.registry",
            "acm_exp.choices",
            "acm_exp.version",
            "acm_exp.paths",
            "acm_exp.merge_parameters",
            "acm_exp.model_facts",
            "acm_exp.interrupts",
            "acm_exp.api_names",
        ),
    ),
    (
        "settings",
        (
            "acm_exp.config",
            "acm_exp.slurm",
            "acm_exp.devices",
            "acm_exp.memory",
            "acm_exp.costs",
            "acm_exp.failures",
            "acm_exp.coefficients_file",
        ),
    ),
    (
        "domain",
        (
            "acm_exp.models",
            "acm_exp.toy",
            "acm_exp.calibration",
            "acm_exp.significance",
            "acm_exp.merge",
            "acm_exp.merge.*",
            "acm_exp.acm",
            "acm_exp.acm.*",
            "acm_exp.eval",
            "acm_exp.eval.*",
            "acm_exp.stand_in",
            "acm_exp.stand_in.*",
        ),
    ),
    (
        "records",
        (
            "acm_exp.results",
            "acm_exp.run_identity",
            "acm_exp.coverage",
            "acm_exp.tracking",
            "acm_exp.outcomes",
            "acm_exp.needs",
            "acm_exp.figures",
            "acm_exp.figures.*",
        ),
    ),
    ("stages", ("acm_exp.stages", "acm_exp.overrides", "acm_exp.sweep", "acm_exp.prefetch", "acm_exp.cli_help")),
    ("entry", ("acm_exp", "acm_exp.__main__", "acm_exp.pipeline", "acm_exp.api")),
)


def layer_of(module: str) -> int | None:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatch(module, pattern) for pattern in patterns):
            return index
    return None


def imports_against_the_layers(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (importer, target)
        for importer, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(importer)  # type: ignore[operator]
    )


def test_every_module_has_a_layer():
    assert [module for module in module_files() if layer_of(module) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    assert imports_against_the_layers(import_graph(module_files())) == []


def test_the_layer_check_sees_an_import_from_below():
    graph = {"acm_exp.errors": {"acm_exp.stages"}, "acm_exp.stages": {"acm_exp.errors"}}
    assert imports_against_the_layers(graph) == [("acm_exp.errors", "acm_exp.stages")]
