"""Several torchrun nodes, each running ``spinegpt run``: node 0 leads, the others follow it through marker files
in the (shared) run folder.

Node 0's side is :class:`spinegpt.train.hooks.leader.LeaderHook`; this module holds the markers and the followers.
Node 0 writes ``<stage>/launch.json`` (its engine arguments) right before starting its own ranks, and ``DONE.json``
once the stage is verified; everything else (data, manifest, verification, eval) is node 0's. A follower that fails
writes ``FAILED.node<N>.json`` so node 0 stops its engine at once; node 0 that fails writes ``ABORT.json`` so the
followers stop waiting. A marker counts only if it carries this launch's token; without an explicit token
(SPINEGPT_RUN_TOKEN or a SLURM job) only markers written after this node started count, so a stale marker of an
earlier attempt is never replayed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from spinegpt.files import write_json_atomic
from spinegpt.train import environment, swift_adapter
from spinegpt.train.errors import RunError, StageFailed
from spinegpt.train.plan import Plan, StagePlan
from spinegpt.train.stage import Engine, StageResult, engine_console, is_done

logger = logging.getLogger(__name__)

LAUNCH = "launch.json"
ABORT = "ABORT.json"
NODE_FAILED = "FAILED.node{rank}.json"
HEARTBEAT = "LEADER.json"
BEAT_EVERY_S = 10.0
DEAD_AFTER_S = 90.0
"""A follower takes node 0 for dead when its heartbeat has not changed for this long (by the follower's own clock,
so the nodes' clocks need not agree)."""
FIRST_BEAT_S = 600.0
"""How long a follower waits for node 0's first heartbeat (node 0 writes it as it starts, before its preflight)."""


def run_token() -> str:
    """Identifies one launch of a multi-node run on every node (launch/ scripts set it; SLURM gives a job id)."""
    explicit = os.environ.get("SPINEGPT_RUN_TOKEN")
    if explicit:
        return explicit
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm-{job}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return "unset"


def marker(path: Path, token: str, since: float) -> dict[str, Any] | None:
    """A cross-node marker file, if it belongs to this launch and was written after ``since`` (a few seconds of
    clock skew between nodes allowed); stale markers of earlier attempts are ignored."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("token") != token or found.get("written_at", 0) < since - 5:
        return None
    return found


class Heartbeat:
    """Node 0's pulse: ``LEADER.json`` in the run folder rewritten every few seconds from a thread, for as long as
    node 0 runs. A follower whose engine is not running has no other way to learn that node 0 died: node 0's
    markers are written by node 0 itself, and a dead process writes nothing."""

    def __init__(self, folder: Path):
        self.path = folder / HEARTBEAT
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="spinegpt-heartbeat", daemon=True)

    def _beat(self) -> None:
        beat = 0
        while True:
            beat += 1
            with contextlib.suppress(OSError):  # a shared folder that blips: the next beat tries again
                write_json_atomic(self.path, {"token": run_token(), "beat": beat, "written_at": time.time()})
            if self._stop.wait(BEAT_EVERY_S):
                return

    def __enter__(self) -> Heartbeat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
        self.dead_after_s = DEAD_AFTER_S
        self.first_beat_s = FIRST_BEAT_S
        self._beat: Any = None
        self._beat_changed = time.monotonic()

    def _leader_gone(self) -> str | None:
        """Why node 0 must be taken for dead, if it must: its heartbeat stopped changing, or never came."""
        try:
            beat = json.loads((self.plan.output_dir / HEARTBEAT).read_text())
        except (OSError, ValueError):
            beat = None
        if isinstance(beat, dict) and beat.get("token") == self.token and beat != self._beat:
            self._beat, self._beat_changed = beat, time.monotonic()
        silent = time.monotonic() - self._beat_changed
        if self._beat is None and silent > self.first_beat_s:
            return f"node 0 gave no sign of life ({HEARTBEAT}) in {silent:.0f}s"
        if self._beat is not None and silent > self.dead_after_s:
            return f"node 0's heartbeat ({HEARTBEAT}) stopped {silent:.0f}s ago: it died or lost the shared folder"
        return None

    def _fresh(self, marker: dict[str, Any]) -> bool:
        if marker.get("token") != self.token:
            return False
        return self.token != "unset" or marker.get("written_at", 0) >= self.started - 120

    def run(self) -> list[StageResult]:
        rank = self.plan.launch.node_rank
        logger.info(
            f"node {rank}: following node 0 ({self.plan.launch.master_addr}) for {len(self.plan.stages)} stage(s)"
        )
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
        label = f"{stage.label} node {rank}:"
        ran: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        waiting_said = False
        while not is_done(stage.dir):
            abort = marker(self.plan.output_dir / ABORT, self.token, self.started)
            if abort is not None:
                raise RunError(f"{label} node 0 stopped the run: {abort.get('error')}")
            gone = self._leader_gone()
            if gone is not None:
                raise RunError(f"{label} {gone}; stopping")
            marker_path = stage.dir / LAUNCH
            launch = json.loads(marker_path.read_text()) if marker_path.is_file() else None
            if launch and self._fresh(launch) and launch["attempt"] not in ran:
                ran.add(launch["attempt"])
                command = swift_adapter.command(launch["engine_args"], self.plan.launch, stage.command[0])
                logger.info(f"{label} starting its ranks")
                log = stage.dir / f"engine.node{rank}.log"
                # The same environment node 0's ranks get (hub, allocator, threads for an offloaded optimizer).
                env = environment.process_env(self.plan.curriculum, self.plan.launch, stage.deepspeed_config)
                code = self.engine(command, env, log, engine_console(label), stage.dir, None)
                if code != 0:
                    raise StageFailed(f"{label} the engine exited with code {code}; log {log}")
                continue
            if time.monotonic() > deadline:
                raise RunError(f"{label} node 0 did not start or finish the stage within {self.timeout_s:.0f}s")
            if not waiting_said:
                logger.info(f"{label} waiting for node 0")
                waiting_said = True
            time.sleep(self.POLL_S)
        logger.info(f"{label} node 0 marked the stage done")
        return StageResult(stage.stage.name, "done", stage.final)
