"""No import cycles in acm_exp: the graph of every import statement (module level and inside
functions alike), read with the stdlib ast module, has no loop.

``from package import name`` depends on ``package/__init__`` and, when ``name`` is a submodule, on
that submodule too; ``import a.b.c`` depends on ``a.b.c``. Imports of anything outside acm_exp
are left out, and so are those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
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


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if _type_checking_block(node):
            pending.extend([node.test, *node.orelse])
        else:
            pending.extend(ast.iter_child_nodes(node))


def imported_modules(importer: str, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``importer``'s import statements name (see the module docstring)."""
    tree = ast.parse(modules[importer].read_text(encoding="utf-8"), filename=str(modules[importer]))
    targets: set[str] = set()
    for node in _run_time_nodes(tree):
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
    assert graph["acm_exp.other"] == {"acm_exp", "acm_exp.sub", "acm_exp.sub.leaf"}
    assert find_cycle(graph) == ["acm_exp.other", "acm_exp.sub", "acm_exp.sub.leaf", "acm_exp.other"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_acm_exp_has_no_import_cycle():
    cycle = find_cycle(import_graph(module_files()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
