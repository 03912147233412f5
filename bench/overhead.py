"""What does `spinegpt run` cost on top of the engine? Times one smoke stage both ways, side by side.

    python bench/overhead.py [--runs 3] [--nproc 2] [--stage foundation]

A: ``spinegpt run curricula/smoke.yaml --until STAGE`` -- data checks, the run manifest, the engine, the weight
   verification and hashing, the DONE marker.
B: the identical engine command, as ``spinegpt plan --json`` prints it, run bare (its data prepared beforehand,
   untimed).

Runs alternate A/B so drift on a shared machine hits both. Prints every time, the medians and the ratio A/B
(target <= 1.05). Use a warm torch-extensions cache (a first run compiles DeepSpeed's ops).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CURRICULUM = REPO / "curricula" / "smoke.yaml"


def spinegpt(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("spinegpt")), *args]


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"command failed ({code}); see {log}")
    return elapsed


def bare_command(stage: str, nproc: int, out: Path, env: dict[str, str]) -> list[str]:
    from spinegpt.train import plan, topology

    loaded = plan.load(CURRICULUM)
    built = plan.build(loaded, out, topology.launch_from_env(nproc))
    stage_plan = next(s for s in built.stages if s.stage.name == stage)
    built.data.prepare(stage_plan.stage.data, stage_plan.dataset.parent)
    env.update({k: v for k, v in stage_plan.env.items() if k not in env})
    return stage_plan.command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--stage", default="foundation", help="a stage of the first position (starts from the base)")
    args = parser.parse_args()

    from spinegpt.offline import tiny_model

    tiny_model.ensure()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    times: dict[str, list[float]] = {"spinegpt run": [], "bare engine": []}
    with tempfile.TemporaryDirectory(prefix="spinegpt-overhead-") as tmp:
        root = Path(tmp)
        for i in range(args.runs):
            out_a, out_b = root / f"a{i}", root / f"b{i}"
            command_b = bare_command(args.stage, args.nproc, out_b, env)
            command_a = spinegpt(
                "run", str(CURRICULUM), "--nproc", str(args.nproc), "--until", args.stage, "--output-dir", str(out_a)
            )
            order = [("spinegpt run", command_a), ("bare engine", command_b)]
            for name, command in order if i % 2 == 0 else reversed(order):
                seconds = timed(command, env, root / f"{name.replace(' ', '_')}-{i}.log")
                times[name].append(seconds)
                print(f"run {i + 1}/{args.runs}  {name:<13} {seconds:7.2f} s", flush=True)
            for out in (out_a, out_b):
                subprocess.run(["rm", "-rf", str(out)], check=True)

    a, b = statistics.median(times["spinegpt run"]), statistics.median(times["bare engine"])
    print()
    print(f"{'':14}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, values in times.items():
        print(f"{name:<14}{statistics.median(values):>10.2f}{min(values):>9.2f}{max(values):>9.2f}")
    ratio = a / b
    print(f"\nratio spinegpt/bare = {ratio:.3f}  (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    print(json.dumps({"stage": args.stage, "nproc": args.nproc, "runs": args.runs, "times": times, "ratio": ratio}))


if __name__ == "__main__":
    main()
