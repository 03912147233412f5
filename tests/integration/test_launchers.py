"""launch/ scripts: --dry-run for one node, two nodes (rank 0 and 1), the DeepSpeed launcher and SLURM; node 0 and a
follower stop each other when one fails."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from spinegpt.train import curriculum, manifest, multinode, plan, runner, topology
from spinegpt.train.errors import RunError, StageFailed

from ..conftest import REPO, spinegpt_command

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


def test_launchers_put_spinegpts_environment_on_path() -> None:
    """DeepSpeed compiles CPU Adam with the environment's own ninja, off PATH under srun or ssh."""
    script = "source launch/common.sh; use_spinegpt_env; command -v spinegpt; echo $PATH"
    env = {"SPINEGPT": SPINEGPT, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    found, path = result.stdout.split()
    assert found == SPINEGPT and path.startswith(str(Path(SPINEGPT).parent) + ":")


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


def _smoke_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_rank: int) -> plan.Plan:
    for key, value in {"NNODES": "2", "NODE_RANK": str(node_rank), "SPINEGPT_RUN_TOKEN": "t-1"}.items():
        monkeypatch.setenv(key, value)
    loaded = curriculum.load(REPO / "curricula" / "smoke.yaml")
    return plan.build(loaded, tmp_path / "run", topology.launch_from_env(nproc=1))


def test_node0_stops_its_engine_when_a_follower_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    """Node 1 giving up must stop node 0 at once, not after torchrun's rendezvous timeout; and node 0's failure
    is written where followers look, so they stop too."""
    built = _smoke_plan(tmp_path, monkeypatch, 0)
    first = built.stages[0]
    seen: list[str] = []

    def engine(command: list[str], env: dict[str, str], log: Path, label: str, *rest: object) -> int:
        stop = rest[-1]
        assert callable(stop) and stop() is None  # no failure yet
        launch_marker = json.loads((first.dir / multinode.LAUNCH).read_text())
        assert launch_marker["token"] == "t-1"
        manifest.write_json_atomic(
            first.dir / multinode.NODE_FAILED.format(rank=1),
            {"token": "t-1", "written_at": time.time(), "error": "its engine exited with code 1"},
        )
        seen.append(str(stop()))
        return -15  # what the stop watcher's SIGTERM gives

    with pytest.raises(StageFailed, match="node 1 failed: its engine exited with code 1"):
        runner.Runner(built, engine=engine).run()
    assert seen == ["node 1 failed: its engine exited with code 1"]
    abort = json.loads((built.output_dir / multinode.ABORT).read_text())
    assert abort["token"] == "t-1" and "node 1 failed" in abort["error"]
    assert json.loads((built.output_dir / manifest.FILE).read_text())["status"] == "failed"


def test_follower_stops_when_node0_aborts_and_ignores_stale_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _smoke_plan(tmp_path, monkeypatch, 1)
    built.output_dir.mkdir(parents=True)
    abort = built.output_dir / multinode.ABORT
    # A marker of another launch (other token) or of an earlier attempt (written long before) is not this run's.
    manifest.write_json_atomic(abort, {"token": "t-0", "written_at": time.time(), "error": "old"})
    follower = multinode.Follower(built, _no_engine)
    follower.POLL_S = 0.05
    follower.timeout_s = 1.0
    with pytest.raises(RunError, match="did not start or finish"):
        follower.run()
    assert json.loads((built.stages[0].dir / multinode.NODE_FAILED.format(rank=1)).read_text())["token"] == "t-1"
    manifest.write_json_atomic(abort, {"token": "t-1", "written_at": time.time() - 3600, "error": "stale"})
    with pytest.raises(RunError, match="did not start or finish"):
        follower.run()
    manifest.write_json_atomic(abort, {"token": "t-1", "written_at": time.time(), "error": "data check failed"})
    with pytest.raises(RunError, match="node 0 stopped the run: data check failed"):
        follower.run()


def _no_engine(*args: object) -> int:
    raise AssertionError("no launch marker was written, so no engine may start")


def test_a_follower_notices_that_node0_died_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: with node 0 dead between stages, the other nodes waited SPINEGPT_FOLLOWER_TIMEOUT (7 days)."""
    built = _smoke_plan(tmp_path, monkeypatch, 1)
    built.output_dir.mkdir(parents=True)
    follower = multinode.Follower(built, _no_engine)
    follower.POLL_S, follower.dead_after_s = 0.05, 1.0
    with multinode.Heartbeat(built.output_dir):  # node 0 beats (once: BEAT_EVERY_S is long) ...
        time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(RunError, match=r"node 0's heartbeat .* stopped"):  # ... then dies
        follower.run()
    assert time.monotonic() - started < 10
    silent = multinode.Follower(built, _no_engine)  # node 0 never started at all
    (built.output_dir / multinode.HEARTBEAT).unlink()
    silent.POLL_S, silent.first_beat_s = 0.05, 0.5
    with pytest.raises(RunError, match="gave no sign of life"):
        silent.run()


def test_a_beating_node0_keeps_its_followers_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multinode, "BEAT_EVERY_S", 0.1)
    built = _smoke_plan(tmp_path, monkeypatch, 1)
    built.output_dir.mkdir(parents=True)
    follower = multinode.Follower(built, _no_engine)
    follower.POLL_S, follower.dead_after_s, follower.timeout_s = 0.05, 1.0, 3.0
    with multinode.Heartbeat(built.output_dir), pytest.raises(RunError, match="did not start or finish"):
        follower.run()  # alive the whole time: the follower waits out its own timeout, not the dead-leader check
