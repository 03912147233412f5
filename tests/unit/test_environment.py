"""Every process spinegpt starts gets the same environment from the curriculum: the engine on node 0 and on the
other nodes, and the evaluations of a run and of a sweep."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from spinegpt.train import curriculum, multinode, plan, sweep, topology

from ..conftest import CURRICULA, REPO


def test_a_follower_node_gets_the_threads_node0_gets_for_offloaded_adam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun gives every rank OMP_NUM_THREADS=1; node 0 raises it for a CPU-offloaded optimizer, and the other
    nodes' ranks run the same optimizer steps on their own CPUs."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for key, value in {"NNODES": "2", "NODE_RANK": "1", "SPINEGPT_RUN_TOKEN": "t-1"}.items():
        monkeypatch.setenv(key, value)
    # The paper's curriculum (the smoke one pins OMP_NUM_THREADS=1 for a 2-core machine), stage 1 offloaded.
    loaded = curriculum.load(CURRICULA / "spinegpt.yaml", ["stages.foundation.deepspeed=zero3_offload"])
    built = plan.build(loaded, tmp_path / "run", topology.launch_from_env(nproc=2))
    first = built.stages[0]
    first.dir.mkdir(parents=True)
    marker = {"token": "t-1", "written_at": time.time(), "attempt": 1, "engine_args": first.engine_args}
    (first.dir / multinode.LAUNCH).write_text(json.dumps(marker))
    seen: list[dict[str, str]] = []

    def engine(command: list[str], env: dict[str, str], *rest: Any) -> int:
        seen.append(env)
        return 1  # stop after the first launch

    with pytest.raises(Exception, match="exited with code 1"):
        multinode.Follower(built, engine).run()
    print("OMP", seen[0].get("OMP_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS"))
    assert seen and int(seen[0]["OMP_NUM_THREADS"]) >= 1
    assert seen[0]["USE_HF"] == "1" and seen[0]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    # one GPU per process, whatever is visible: ms-swift's device_map mode would refuse DeepSpeed
    assert seen[0]["SWIFT_SINGLE_DEVICE_MODE"] == "1"


def test_a_sweeps_evaluation_reads_the_hub_the_curriculum_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without USE_HF the engine fetches a hub id from ModelScope: the base row's model would come from elsewhere."""
    monkeypatch.delenv("USE_HF", raising=False)
    loaded = sweep.load(REPO / "curricula" / "ablations" / "smoke", [], tmp_path / "sweep")
    row = loaded.rows[0]
    seen: list[dict[str, str]] = []

    def run(model: str, job: Any, out_dir: Path, env: dict[str, str], *rest: Any, **kw: Any) -> dict[str, Any]:
        seen.append(env)
        return {"benchmarks": {loaded.spec.benchmark.label: {"scores": {"text": {}}}}}

    monkeypatch.setattr(sweep.eval_launch, "run", run)
    sweep.evaluate(loaded, row, "Qwen/Qwen2.5-VL-7B-Instruct")
    assert seen[0]["USE_HF"] == "1" and seen[0]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
