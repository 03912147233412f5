"""What the paper curriculum costs at the paper's scale, and what its throughput variant saves: ``spinegpt plan
--cost`` for both curricula, side by side, on bench/data_build.py's synthetic inputs (the paper's row counts).

    python bench/cost.py [--workdir DIR] [--scale 1.0] [--gpu A100-80GB] [--nproc 8] [--mfu M]
                         [--curricula curricula/spinegpt.yaml curricula/spinegpt_throughput.yaml]

The inputs are generated once into WORKDIR/inputs (shared with bench/data_build.py) and audited through each
curriculum's own stages (the offline tiny model carries the real Qwen tokenizer; the counts are cached in
WORKDIR/cache, so the second curriculum recounts nothing). The cost is computed for Qwen2.5-VL-7B's published shape on
``--nproc`` GPUs of one node, as the paper ran (8 x A100 80 GB).

The synthetic rows are shorter than real ones (their texts are a few sentences, their images 56-224 px): the
figures show what the cost model does with the paper's row counts and this spread of lengths, not what the paper's
data costs. Run ``spinegpt plan curricula/spinegpt.yaml --cost`` on your data for that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "curricula" / "spinegpt.yaml"
VARIANT = REPO / "curricula" / "spinegpt_throughput.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spinegpt-bench-data"))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (1.0 = the paper's)")
    parser.add_argument("--gpu", default="A100-80GB")
    parser.add_argument("--nproc", type=int, default=8)
    parser.add_argument("--mfu", type=float, help="default: measured (bench/results/gpu-*.txt) or assumed")
    parser.add_argument("--curricula", type=Path, nargs="+", default=[PAPER, VARIANT])
    args = parser.parse_args()
    args.curricula = [p.resolve() for p in args.curricula]
    import data_build  # beside this script: python puts the script's folder first on sys.path

    with contextlib.redirect_stdout(sys.stderr):  # the generator's progress is not part of the results
        inputs, counts = data_build.ensure_inputs(args.workdir, args.scale)
    os.environ["SPINEGPT_CACHE"] = str(args.workdir / "cache")
    from spinegpt.log import setup

    setup(verbosity=0)
    from spinegpt.train import cost, cost_plan, plan, topology
    from spinegpt.train.audit import audit_curriculum
    from spinegpt.train.memory import PUBLISHED

    gpu = cost.gpu_named(args.gpu)
    shape = PUBLISHED["Qwen/Qwen2.5-VL-7B-Instruct"]
    overrides = ["model=builtin:tiny-qwen2_5_vl", f"data_root={inputs}"]
    if args.scale != 1.0:  # the paper's 150k PubMedVision sample, scaled with the inputs
        overrides.append(f"stages.foundation.data.0.set={{pubmedvision.count: {round(150_000 * args.scale)}}}")
    print(
        f"# python bench/cost.py --scale {args.scale:g} --gpu {gpu.name} --nproc {args.nproc}   "
        f"({time.strftime('%Y-%m-%d')}, {len(os.sched_getaffinity(0))} CPU(s); nothing here needs a GPU)\n"
        f"# inputs: bench/data_build.py's, {counts['spinemed']:,} SpineMed-450k items, {counts['pubmedvision']:,} "
        "PubMedVision, the general text sets; counted with the real Qwen tokenizer, costed for Qwen2.5-VL-7B\n",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="spinegpt-bench-cost-") as tmp:
        for path in args.curricula:
            started = time.perf_counter()
            loaded = plan.load(path, overrides)
            built = plan.build(loaded, Path(tmp) / path.stem, topology.Launch(nproc_per_node=args.nproc))
            with contextlib.redirect_stdout(sys.stderr):
                audits = audit_curriculum(built, built.launch.world_size)
            costs = cost_plan.curriculum_cost(built, audits, gpu=gpu, mfu=args.mfu, shape=shape)
            seconds = time.perf_counter() - started
            print(f"## {_shown(path)}  (audited and costed in {seconds:.0f} s)\n{cost_plan.render(costs)}\n")
            results.append((path, costs))
    print(compare(results))
    print(json.dumps({_shown(p): c.model_dump(mode="json") for p, c in results}))


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def compare(results: list[tuple[Path, object]]) -> str:
    """Both curricula stage by stage: what each stage's settings, steps and time come to."""
    from spinegpt.train.cost_report import CurriculumCost

    lines = [
        "## side by side",
        f"{'stage':<12}{'curriculum':<28}{'batch':>12}{'steps':>9}{'micro/GPU':>11}{'tokens/step':>13}"
        f"{'GPU-h':>9}{'wall h':>8}{'MFU eff.':>9}",
    ]
    costed = [(p, c) for p, c in results if isinstance(c, CurriculumCost)]
    names = [s.stage for s in costed[0][1].stages]
    for name in names:
        for path, costs in costed:
            s = next(x for x in costs.stages if x.stage == name)
            how = "packed" if s.packing else "pad-free" if s.padding_free and s.micro_batch > 1 else ""
            batch = f"{s.micro_batch}x{s.grad_accum}x{s.gpus} {how}".rstrip()
            lines.append(
                f"{name:<12}{path.name:<28}{batch:>12}{s.steps:>9,}{s.micro_batches:>11,}{s.tokens_per_step:>13,.0f}"
                f"{s.gpu_hours:>9,.1f}{s.wall_hours:>8,.2f}{s.effective_mfu:>9.1%}"
            )
    base = costed[0][1]
    for path, costs in costed[1:]:
        saved = 1 - costs.gpu_hours / base.gpu_hours if base.gpu_hours else 0.0
        lines.append(
            f"total: {costed[0][0].name} {base.gpu_hours:,.1f} GPU-h ({base.wall_hours:,.2f} h wall); {path.name} "
            f"{costs.gpu_hours:,.1f} GPU-h ({costs.wall_hours:,.2f} h wall): {saved:.0%} saved"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
