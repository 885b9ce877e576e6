"""The package's shape: no import cycle (deferred imports included), torch-free readers, small files."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sweeper"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Every sweeper module `path` imports, at any depth of the file (function bodies too):
    `from .x import y` counts as x.y when y is a module, else as x."""
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in modules else source)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path a -> b -> ... -> a, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_relative_and_deferred_imports():
    graph = import_graph()
    assert "sweeper.runs" in graph["sweeper.launch.planner"]  # from ..runs import ...
    assert "sweeper.train.pack" in graph["sweeper.launch.job"]  # inside a method body
    assert "sweeper.train.methods.relora" in graph["sweeper.train.methods"]  # from . import relora


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    "module", ["sweeper.results.collect", "sweeper.results.report", "sweeper.results.status", "sweeper.launch.planner"]
)
def test_readers_and_planner_do_not_import_torch_or_ray(module):
    code = f"import sys, {module}; assert not {{'torch', 'ray'}} & set(sys.modules), 'torch or ray imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_file_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long


def test_each_stage_names_its_public_api():
    for stage in ("data", "train", "launch", "results"):
        init = PACKAGE / stage / "__init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), stage
        assert any(isinstance(n, ast.Assign) and n.targets[0].id == "__all__" for n in tree.body), stage


KIND_COMPARISON = re.compile(
    r"""(==|!=|\bin\b)\s*\(?\s*["'](local|slurm|ray)["']|["'](local|slurm|ray)["']\s*(==|!=)"""
)


def test_only_the_backends_know_their_names():
    """No launcher-kind string comparison outside sweeper/launch/backends (the registry answers)."""
    backends = PACKAGE / "launch" / "backends"
    files = [p for p in PACKAGE.rglob("*.py") if backends not in p.parents]
    files += list((PACKAGE.parent / "hydra_plugins").rglob("*.py"))
    found = [
        f"{p.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if KIND_COMPARISON.search(line)
    ]
    assert not found, found
    assert KIND_COMPARISON.search('if kind == "slurm":') and KIND_COMPARISON.search("kind in ('local', 'x')")
