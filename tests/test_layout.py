"""The house keeps its rules: no import circles between the project's modules, each room imports
only what it may, no module named like one of Python's own, and the run folder's layout spelled in
one module."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from conftest import ROOT

PACKAGES = ("common", "data", "models", "losses", "reporting", "trainer")


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages and train.py, by dotted name."""
    modules = {"train": ROOT / "train.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, at its top or inside functions (a lazy import is a
    dependency too); imports for type checking alone are left out."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if type_checking_only(node):
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(path, known) - {name} for name, path in modules.items()}
    # a package's __init__ that imports nothing is no edge; importing a.b.c also runs a and a.b,
    # which import nothing here (each __init__ is a docstring), so the edges are the modules'
    return {
        name: {m for m in deps if m not in PACKAGES and modules[m].name != "__init__.py"}
        for name, deps in graph.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_the_projects_modules():
    assert cycles(import_graph()) == []


def test_each_room_imports_only_what_it_may():
    graph = import_graph()
    for module, deps in graph.items():
        room = module.split(".")[0]
        if room in ("common", "data", "models", "losses"):  # the lower rooms know nothing of the loop
            assert not {d for d in deps if d.startswith(("trainer", "reporting", "train"))}, module
        if module.startswith(("trainer.evaluation", "trainer.hooks", "trainer.loggers")):
            assert "trainer.trainer" not in deps and not any(d.startswith("trainer.shell") for d in deps), (
                module
            )
        if module.startswith("trainer.") and not module.startswith(("trainer.shell", "trainer.build")):
            assert not any(d.startswith("trainer.shell") for d in deps), module  # the loop never the shell
    builders = {module for module, deps in graph.items() if "trainer.trainer" in deps}
    assert builders == {"train"}  # only train.py (and the measuring tools) build a Trainer


def test_no_module_is_named_like_one_of_pythons_own():
    clashes = [name for name in project_modules() if name.rpartition(".")[2] in sys.stdlib_module_names]
    assert clashes == []


def test_the_run_folders_file_names_are_spelled_in_one_module():
    spelled = re.compile(
        r"""(["'])(checkpoints|last\.pt|best\.pt|metrics\.csv|per_class\.csv|metrics\.json|"""
        r"""classes\.csv|split\.csv|report\.html|galleries|sweep_results\.csv|\.hydra)\1"""
    )
    scripts = {str(path): path for path in (ROOT / "scripts").rglob("*.py")}
    places = [
        f"{path.relative_to(ROOT)}:{number}"
        for name, path in (project_modules() | scripts).items()
        if name != "common.run_folder"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if spelled.search(line.split("#")[0])
    ]
    assert places == []
