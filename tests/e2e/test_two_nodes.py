"""Two "nodes" on this machine: node 1 follows node 0's stage markers and both train two stages in lockstep."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from spinegpt.train import manifest

from ..conftest import REPO, spinegpt_command


def _free_port() -> int:
    """A free port below the ephemeral range: a port the kernel handed out once may be handed out again to
    some other connection (gloo opens many) before torchrun binds it."""
    for port in random.sample(range(20000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


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
        *spinegpt_command(),
        "run",
        "curricula/smoke.yaml",
        "eval=null",  # two nodes train; the evaluation after each stage is tested elsewhere
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
    # Own sessions, so a hang is cleaned up with every rank (torchrun and its workers), not just the front process.
    nodes = {
        r: subprocess.Popen(
            args, cwd=REPO, env={**env, "NODE_RANK": str(r)}, stdout=logs[r], stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for r in (1, 0)
    }  # fmt: skip  # the follower may well start first
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline and any(p.poll() is None for p in nodes.values()):
        time.sleep(1)
    for p in nodes.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    codes = [nodes[r].returncode for r in (0, 1)]
    text = [(tmp_path / f"node{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], _diagnosis(out, text)
    data = json.loads((out / manifest.FILE).read_text())
    assert data["world_size"] == 2 and data["status"] == "partial"
    assert [s["status"] for s in data["stages"][:2]] == ["done", "done"]
    for stage in data["stages"][:2]:
        assert (Path(stage["dir"]) / "engine.node1.log").is_file()  # node 1 ran its ranks of every stage
        assert "--nnodes=2" in stage["command"]
    assert "node 0 marked the stage done" in text[1] and "waiting for node 0" in text[1]


def _diagnosis(out: Path, node_logs: list[str]) -> str:
    """Everything a hung or failed two-node run left behind, for the failure message."""
    parts = [f"--- node {r} console ---\n{text[-4000:]}" for r, text in enumerate(node_logs)]
    for log in sorted(out.glob("stages/*/engine*.log")):
        parts.append(f"--- {log.relative_to(out)} ---\n{log.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)
