"""Several torchrun nodes, each running ``spinegpt run``: node 0 leads, the others follow it through marker files
in the (shared) run folder.

Node 0 writes ``<stage>/launch.json`` (its engine arguments) right before starting its own ranks, and ``DONE.json``
once the stage is verified; everything else (data, manifest, verification, eval) is node 0's. A follower that fails
writes ``FAILED.node<N>.json`` so node 0 stops its engine at once; node 0 that fails writes ``ABORT.json`` so the
followers stop waiting. A marker counts only if it carries this launch's token; without an explicit token
(SPINEGPT_RUN_TOKEN or a SLURM job) only markers written after this node started count, so a stale marker of an
earlier attempt is never replayed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.train import swift_adapter
from spinegpt.train.plan import Plan, StagePlan
from spinegpt.train.stage import (
    Engine,
    RunError,
    StageFailed,
    StageResult,
    engine_console,
    engine_env,
    is_done,
)

from spinegpt.files import write_json_atomic
from spinegpt.proc import say

LAUNCH = "launch.json"
ABORT = "ABORT.json"
NODE_FAILED = "FAILED.node{rank}.json"


def run_token() -> str:
    """Identifies one launch of a multi-node run on every node (launch/ scripts set it; SLURM gives a job id)."""
    explicit = os.environ.get("SPINEGPT_RUN_TOKEN")
    if explicit:
        return explicit
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm-{job}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return "unset"


def _marker(path: Path, token: str, since: float) -> dict[str, Any] | None:
    """A cross-node marker file, if it belongs to this launch and was written after ``since`` (a few seconds of
    clock skew between nodes allowed); stale markers of earlier attempts are ignored."""
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("token") != token or marker.get("written_at", 0) < since - 5:
        return None
    return marker


@dataclass
class Leader:
    """Node 0's side: tell the followers what to start, notice when one of them failed, tell them when to stop."""

    plan: Plan
    opened_at: float
    """Start of this attempt; markers of other nodes count only from here."""

    def announce(self, stage: StagePlan, command: list[str], attempt: int) -> None:
        """The other nodes start the same stage with the same arguments (resume checkpoint included)."""
        args = command[command.index(swift_adapter.ENGINE_MODULE) + 1 :]
        write_json_atomic(
            stage.dir / LAUNCH,
            {
                "token": run_token(),
                "written_at": time.time(),
                "attempt": attempt,
                "engine_args": args,
                "env": stage.env,
            },
        )

    def follower_failure(self, stage: StagePlan) -> str | None:
        """Why another node gave up on this stage, if one did during this attempt."""
        for rank in range(1, self.plan.launch.nnodes):
            marker = _marker(stage.dir / NODE_FAILED.format(rank=rank), run_token(), self.opened_at)
            if marker is not None:
                return f"node {rank} failed: {marker.get('error')}"
        return None

    def abort(self, error: BaseException) -> None:
        # Followers wait for node 0's markers; tell them the run stopped instead of leaving them waiting.
        write_json_atomic(
            self.plan.output_dir / ABORT, {"token": run_token(), "written_at": time.time(), "error": str(error)}
        )


class Follower:
    """A torchrun node other than 0: runs each stage's engine when node 0 says so, until node 0 marks it done."""

    POLL_S = 1.0

    def __init__(self, plan: Plan, engine: Engine, until: str | None = None):
        self.plan = plan
        self.engine = engine
        self.until = until
        self.started = time.time()
        self.token = run_token()
        self.timeout_s = float(os.environ.get("SPINEGPT_FOLLOWER_TIMEOUT", str(7 * 24 * 3600)))

    def _fresh(self, marker: dict[str, Any]) -> bool:
        if marker.get("token") != self.token:
            return False
        return self.token != "unset" or marker.get("written_at", 0) >= self.started - 120

    def run(self) -> list[StageResult]:
        rank = self.plan.launch.node_rank
        say(f"node {rank}: following node 0 ({self.plan.launch.master_addr}) for {len(self.plan.stages)} stage(s)")
        results = []
        for stage in self.plan.stages:
            try:
                results.append(self._stage(stage, rank))
            except Exception as exc:
                # Node 0 may be waiting in the rendezvous for this node's ranks: tell it, so it stops now
                # instead of after torchrun's rendezvous timeout.
                stage.dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(
                    stage.dir / NODE_FAILED.format(rank=rank),
                    {"token": self.token, "written_at": time.time(), "node": rank, "error": str(exc)},
                )
                raise
            if stage.stage.name == self.until:
                break
        return results

    def _stage(self, stage: StagePlan, rank: int) -> StageResult:
        label = f"[{stage.index + 1}/{len(self.plan.stages)} {stage.stage.name}] node {rank}:"
        ran: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        waiting_said = False
        while not is_done(stage.dir):
            abort = _marker(self.plan.output_dir / ABORT, self.token, self.started)
            if abort is not None:
                raise RunError(f"{label} node 0 stopped the run: {abort.get('error')}")
            marker_path = stage.dir / LAUNCH
            marker = json.loads(marker_path.read_text()) if marker_path.is_file() else None
            if marker and self._fresh(marker) and marker["attempt"] not in ran:
                ran.add(marker["attempt"])
                command = swift_adapter.command(marker["engine_args"], self.plan.launch, stage.command[0])
                say(f"{label} starting its ranks")
                log = stage.dir / f"engine.node{rank}.log"
                code = self.engine(command, engine_env(stage), log, engine_console(label), stage.dir, None)
                if code != 0:
                    raise StageFailed(f"{label} the engine exited with code {code}; log {log}")
                continue
            if time.monotonic() > deadline:
                raise RunError(f"{label} node 0 did not start or finish the stage within {self.timeout_s:.0f}s")
            if not waiting_said:
                say(f"{label} waiting for node 0")
                waiting_said = True
            time.sleep(self.POLL_S)
        say(f"{label} node 0 marked the stage done")
        return StageResult(stage.stage.name, "done", stage.final)
