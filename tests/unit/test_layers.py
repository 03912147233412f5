"""The package layers, checked on the source: what may import what, function-local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from spinegpt.data_mixes import sources
from spinegpt.eval_hooks import registry
from spinegpt.eval_hooks.benchmark import Benchmark, BenchmarkError

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "train": REPO / "train",
    "data_mixes": REPO / "data_mixes",
    "eval_hooks": REPO / "eval_hooks",
    "core": REPO / "src" / "spinegpt",
}
# Who may import whom: spinegpt's core (config_io, files, proc, offline, ...) sits below everything; eval_hooks
# and data_mixes above it (data_mixes reads benchmark questions to decontaminate); train on top; the cli above all.
FORBIDDEN = {
    "core": ("spinegpt.train", "spinegpt.data_mixes", "spinegpt.eval_hooks"),
    "eval_hooks": ("spinegpt.train", "spinegpt.data_mixes"),
    "data_mixes": ("spinegpt.train",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _modules(package: str) -> list[Path]:
    files = sorted(PACKAGES[package].rglob("*.py"))
    if package == "core":  # the cli dispatches to every package; testing/ holds the CPU shims only
        files = [f for f in files if f.name != "cli.py" and "testing" not in f.parts]
    return files


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if name.startswith(FORBIDDEN[package])
    ]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def _module_name(path: Path) -> str:
    """``train/hooks/leader.py`` -> ``spinegpt.train.hooks.leader``; ``src/spinegpt/files.py`` -> ``spinegpt.files``."""
    relative = (
        path.relative_to(REPO / "src")
        if path.is_relative_to(REPO / "src")
        else Path("spinegpt") / path.relative_to(REPO)
    )
    parts = list(relative.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, at any depth of the file (function-local and
    type-checking imports count: each is a place where one module needs the other)."""
    files = {_module_name(path): path for path in _modules(package)}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for _, imported in _imports(path):
            # `from a.b import c` is recorded as a.b.c: the module a.b.c where it exists, else a.b.
            target = imported if imported in files else imported.rpartition(".")[0]
            if target in files and target != name:
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_circle_between_the_files_of_a_package(package: str) -> None:
    cycle = _cycle(_import_graph(package))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_package_code_logs_and_only_the_command_line_prints() -> None:
    """What a command outputs is printed by its handler (``cli.py``, ``*/commands.py``); everything said along the
    way goes through ``logging`` (one format, -q / -v, stderr)."""
    printing = []
    for package in PACKAGES:
        for path in _modules(package):
            if path.name == "commands.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                    printing.append(f"{path.relative_to(REPO)}:{node.lineno}")
                if isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load):
                    printing.append(f"{path.relative_to(REPO)}:{node.lineno} (print passed as a value)")
    assert not printing, "print() in package code:\n" + "\n".join(sorted(set(printing)))


def test_shipped_code_uses_only_the_cpu_shims_of_spinegpt_testing() -> None:
    shipped = [p for package in PACKAGES for p in PACKAGES[package].rglob("*.py") if "testing" not in p.parts]
    bad = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in shipped
        for line, name in _imports(path)
        if name.startswith("spinegpt.testing") and not name.startswith("spinegpt.testing.cpu_shims")
    ]
    assert not bad, "\n".join(bad)


def test_every_registered_benchmark_implements_the_protocol() -> None:
    for kind, bench in registry.BENCHMARKS.items():
        assert bench.kind == kind
        assert isinstance(bench, Benchmark), kind
    with pytest.raises(BenchmarkError, match="known: spinebench, spinebench_mm25"):
        registry.get("spinebench_v9")


def test_every_reader_declares_its_splits() -> None:
    assert set(sources.READERS) >= {"medical_o1", "medical_r1_distill", "medthoughts", "pubmedvision", "spinemed"}
    for name, info in sources.READERS.items():
        assert info.splits and set(info.splits) <= {"general", "non_spine", "spine"}, name
