"""The package layers, checked on the source: what may import what, function-local imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from spinegpt.data_mixes import sources
from spinegpt.eval_hooks import registry
from spinegpt.eval_hooks.benchmark import Benchmark, BenchmarkError

REPO = Path(__file__).resolve().parents[1]
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
