"""The benchmarks a config may name by ``kind``. Adding one: a module implementing
:class:`~spinegpt.eval_hooks.benchmark.Benchmark` and one line here."""

from __future__ import annotations

from spinegpt.eval_hooks import spinebench, spinebench_mm25
from spinegpt.eval_hooks.benchmark import Benchmark, BenchmarkError

BENCHMARKS: dict[str, Benchmark] = {
    spinebench.BENCHMARK.kind: spinebench.BENCHMARK,
    spinebench_mm25.BENCHMARK.kind: spinebench_mm25.BENCHMARK,
}


def kinds() -> list[str]:
    return list(BENCHMARKS)


def get(kind: str) -> Benchmark:
    try:
        return BENCHMARKS[kind]
    except KeyError:
        raise BenchmarkError(f"unknown benchmark kind {kind!r}; known: {', '.join(BENCHMARKS)}") from None
