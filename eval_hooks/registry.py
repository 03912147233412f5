"""The benchmarks a config may name by ``kind``. Adding one: a module implementing
:class:`~spinegpt.eval_hooks.benchmark.Benchmark` and one line here."""

from __future__ import annotations

from spinegpt.eval_hooks import mcq, mmmu, spinebench, spinebench_mm25, vqa
from spinegpt.eval_hooks.benchmark import Benchmark, BenchmarkError

BENCHMARKS: dict[str, Benchmark] = {
    spinebench.BENCHMARK.kind: spinebench.BENCHMARK,
    spinebench_mm25.BENCHMARK.kind: spinebench_mm25.BENCHMARK,
    # General medicine: does spine specialisation cost what the model knew before?
    vqa.VQA_RAD.kind: vqa.VQA_RAD,
    vqa.PATH_VQA.kind: vqa.PATH_VQA,
    vqa.SLAKE.kind: vqa.SLAKE,
    mcq.PMC_VQA.kind: mcq.PMC_VQA,
    mmmu.BENCHMARK.kind: mmmu.BENCHMARK,
    mcq.MEDQA.kind: mcq.MEDQA,
}


def kinds() -> list[str]:
    return list(BENCHMARKS)


def get(kind: str) -> Benchmark:
    try:
        return BENCHMARKS[kind]
    except KeyError:
        raise BenchmarkError(f"unknown benchmark kind {kind!r}; known: {', '.join(BENCHMARKS)}") from None
