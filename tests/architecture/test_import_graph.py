"""The package's import graph: arrows point one way (no circles) and the bottom layer,
:mod:`drdm.spatial`, imports nothing else of the package but the leaves (:data:`LEAVES`: the
choice vocabularies and the error type, which import no other part of the package).

Every ``import`` statement counts, at module level or inside a function (a lazy import
hides a circle, it does not remove it); only ``if TYPE_CHECKING:`` blocks are left out.
The old import paths of the pre-release layout are gone (CHANGELOG, "Removed"), not kept as
re-exports.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import drdm

SRC = Path(drdm.__file__).resolve().parent

#: module paths of the pre-release layout, removed (their new homes in CHANGELOG, "Removed")
REMOVED = [
    "drdm._deprecated",
    "drdm.jobs",
    "drdm.deform",
    "drdm.transforms",
    "drdm.bank",
    "drdm.baselines.factory",
    "drdm.pipeline",
    "drdm.official",
    "drdm.diffusion.official",
    "drdm.training.checkpoint",
    "drdm.io.nifti",
]


#: torch-free modules that import nothing of the package but each other; any module may
#: import them
LEAVES = {"drdm.choices", "drdm.errors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (resolved to modules, not names in them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in known:
                        found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    stem = base[: len(base) - (child.level - 1)]
                    target = ".".join(stem + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    if sub in known:
                        found.add(sub)
                    elif target in known:
                        found.add(target)
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_leaves_import_only_leaves():
    graph = import_graph()
    for name in LEAVES:
        assert graph[name] <= LEAVES, f"{name} imports {sorted(graph[name] - LEAVES)}"


def test_spatial_imports_nothing_else_of_the_package():
    graph = import_graph()
    for name, targets in graph.items():
        if name == "drdm.spatial" or name.startswith("drdm.spatial."):
            outside = {t for t in targets if not t.startswith("drdm.spatial")} - LEAVES
            assert not outside, f"{name} imports {sorted(outside)}"


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("drdm.spatial", "drdm"),
        ("drdm.nn", "drdm.sampling"),
        ("drdm.diffusion", "drdm.sampling"),
        ("drdm.baselines", "drdm.pipelines"),
        ("drdm.viz", "drdm.batch"),
        ("drdm.pipelines", "drdm.batch"),
        ("drdm.pipelines", "drdm.cli"),
        ("drdm.batch", "drdm.cli"),
        ("drdm.training", "drdm.cli"),
    ],
)
def test_no_upward_imports(lower, upper):
    graph = import_graph()
    for name, targets in graph.items():
        if name == lower or name.startswith(lower + "."):
            bad = {
                t
                for t in targets
                if (t == upper or t.startswith(upper + "."))
                and not (t == lower or t.startswith(lower + "."))
                and not (upper == "drdm" and t.startswith("drdm.spatial"))
            }
            if upper == "drdm":
                bad = {t for t in bad if not t.startswith("drdm.spatial")} - LEAVES
            assert not bad, f"{name} imports the upper layer: {sorted(bad)}"


@pytest.mark.parametrize("old", REMOVED)
def test_the_pre_release_paths_are_gone(old):
    assert old not in modules()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("drdm.baselines", "make_method"),
        ("drdm.baselines", "METHODS"),
        ("drdm.io", "write_ddf"),
        ("drdm.io", "write_volume"),
        ("drdm.model", "OFFICIAL_IMAGE_SIZE"),
        ("drdm.pipelines.core", "_stack_t"),
        ("drdm.pipelines.core", "ANISOTROPY_RATIO"),
    ],
)
def test_no_aliases_of_moved_names(module, name):
    assert not hasattr(importlib.import_module(module), name)
