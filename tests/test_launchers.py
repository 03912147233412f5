"""launch/ scripts: --dry-run for one node, two nodes (rank 0 and 1), the DeepSpeed launcher and SLURM; and a real
two-"node" run on this machine, node 1 following node 0's stage markers."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
from spinegpt.train import manifest

from .conftest import REPO, spinegpt_command

SPINEGPT = spinegpt_command()[0]


def launch(script: str, *args: str, **env: str) -> str:
    full_env = {**os.environ, "SPINEGPT": SPINEGPT, **env}
    for key in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SPINEGPT_RUN_TOKEN"):
        if key not in env:
            full_env.pop(key, None)
    result = subprocess.run(
        ["bash", f"launch/{script}", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def engine_lines(output: str) -> dict[str, list[str]]:
    return {
        line.split(":")[0].strip("# "): shlex.split(line.split(": ", 1)[1])
        for line in output.splitlines()
        if line.startswith("#   ")
    }


@pytest.mark.parametrize("script", ["torchrun.sh", "deepspeed.sh", "slurm.sbatch"])
def test_scripts_parse(script: str) -> None:
    assert subprocess.run(["bash", "-n", f"launch/{script}"], cwd=REPO).returncode == 0


def test_torchrun_one_node(tmp_path: Path) -> None:
    out = launch(
        "torchrun.sh",
        "--dry-run",
        "curricula/spinegpt.yaml",
        "--output-dir",
        str(tmp_path / "r"),
        "stages.reports.max_steps=7",
        "--resume",
        GPUS_PER_NODE="8",
    )
    first = out.splitlines()[1]
    assert first == (
        f"NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 {SPINEGPT} run "
        f"curricula/spinegpt.yaml --nproc 8 --output-dir {tmp_path / 'r'} stages.reports.max_steps=7 "
        "--resume"
    )
    stages = engine_lines(out)
    assert list(stages) == ["foundation", "specialise", "reports"]
    for command in stages.values():
        assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    assert stages["reports"][stages["reports"].index("--max_steps") + 1] == "7"  # overrides pass through
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("rank", [0, 1])
def test_torchrun_two_nodes(rank: int) -> None:
    out = launch(
        "torchrun.sh",
        "--dry-run",
        "curricula/spinegpt.yaml",
        GPUS_PER_NODE="8",
        NNODES="2",
        NODE_RANK=str(rank),
        MASTER_ADDR="10.1.2.3",
        MASTER_PORT="29611",
    )
    assert f"NNODES=2 NODE_RANK={rank} MASTER_ADDR=10.1.2.3 MASTER_PORT=29611" in out
    for command in engine_lines(out).values():
        assert command[3:8] == [
            "--nnodes=2",
            f"--node_rank={rank}",
            "--master_addr=10.1.2.3",
            "--master_port=29611",
            "--nproc_per_node=8",
        ]


def test_deepspeed_launcher_with_a_hostfile(tmp_path: Path) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\ngpu-a slots=8\ngpu-b slots=8\n")
    out = launch("deepspeed.sh", "--dry-run", "--hostfile", str(hostfile), "curricula/spinegpt.yaml", "--bind-cores")
    assert out.splitlines()[0] == "# first host only: gpu-a"
    for command in engine_lines(out).values():
        assert command[1:9] == [
            "-m",
            "deepspeed.launcher.runner",
            f"--hostfile={hostfile}",
            "--master_addr=gpu-a",
            "--master_port=29500",
            "--bind_cores_to_rank",
            "--module",
            "swift.cli.sft",
        ]
    plan = json.loads(
        subprocess.run(
            [
                SPINEGPT,
                "plan",
                "curricula/spinegpt.yaml",
                "--launcher",
                "deepspeed",
                "--hostfile",
                str(hostfile),
                "--json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert plan["world_size"] == 16 and plan["launcher"] == "deepspeed"


def test_slurm_dry_run_two_nodes() -> None:
    out = launch(
        "slurm.sbatch",
        "--dry-run",
        "curricula/spinegpt.yaml",
        "--output-dir",
        "/shared/runs/x",
        SLURM_JOB_NODELIST="gpu-a,gpu-b",
        SLURM_NNODES="2",
        SLURM_GPUS_PER_NODE="a100:8",
        SLURM_JOB_ID="4242",
    )
    blocks = out.split("# srun task on ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["gpu-a", "gpu-b"]
    for rank, block in enumerate(blocks):
        assert f"NNODES=2 NODE_RANK={rank} MASTER_ADDR=gpu-a MASTER_PORT=29742" in block
        for command in engine_lines(block).values():
            assert f"--node_rank={rank}" in command and "--nproc_per_node=8" in command
            assert command[command.index("--output_dir") + 1].startswith("/shared/runs/x/stages/")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_in_lockstep_on_this_machine(tmp_path: Path) -> None:
    """Node 0 and node 1 (one rank each) train two stages together; only node 0 writes the run folder."""
    out = tmp_path / "run"
    env = {
        **os.environ,
        "NNODES": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "SPINEGPT_RUN_TOKEN": "test-lockstep",
    }
    args = [
        SPINEGPT,
        "run",
        "curricula/smoke.yaml",
        "stages.foundation.max_steps=2",
        "stages.specialise.max_steps=2",
        "--nproc",
        "1",
        "--until",
        "specialise",
        "--output-dir",
        str(out),
    ]
    logs = [(tmp_path / f"node{r}.log").open("w") for r in (0, 1)]
    nodes = [
        subprocess.Popen(args, cwd=REPO, env={**env, "NODE_RANK": str(r)}, stdout=logs[r], stderr=subprocess.STDOUT)
        for r in (1, 0)
    ]  # the follower may well start first
    try:
        codes = [p.wait(timeout=600) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    text = [(tmp_path / f"node{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], text
    data = json.loads((out / manifest.FILE).read_text())
    assert data["world_size"] == 2 and data["status"] == "partial"
    assert [s["status"] for s in data["stages"][:2]] == ["done", "done"]
    for stage in data["stages"][:2]:
        assert (Path(stage["dir"]) / "engine.node1.log").is_file()  # node 1 ran its ranks of every stage
        assert "--nnodes=2" in stage["command"]
    assert "node 0 marked the stage done" in text[1] and "waiting for node 0" in text[1]
