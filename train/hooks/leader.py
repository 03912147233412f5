"""Node 0 of several torchrun nodes: tells the followers what to start (``launch.json``), notices when one of them
gave up (``FAILED.node<N>.json``: its engine is stopped at once rather than after torchrun's rendezvous timeout) and
tells them when the run stops (``ABORT.json``). The markers and the followers' side are in ``train/multinode.py``.
"""

from __future__ import annotations

import time

from spinegpt.files import write_json_atomic
from spinegpt.train import swift_adapter
from spinegpt.train.hooks import StageHooks
from spinegpt.train.manifest import RunManifest
from spinegpt.train.multinode import ABORT, LAUNCH, NODE_FAILED, marker, run_token
from spinegpt.train.plan import Plan, StagePlan


class LeaderHook(StageHooks):
    def __init__(self, plan: Plan, opened_at: float):
        self.plan = plan
        self.opened_at = opened_at
        """Start of this attempt; markers of other nodes count only from here."""
        self.attempt = 0

    def run_started(self, run: RunManifest) -> None:
        self.attempt = len(run.attempts)

    def engine_starting(self, stage: StagePlan, command: list[str]) -> None:
        """The other nodes start the same stage with the same arguments (resume checkpoint included)."""
        args = command[command.index(swift_adapter.ENGINE_MODULE) + 1 :]
        write_json_atomic(
            stage.dir / LAUNCH,
            {
                "token": run_token(),
                "written_at": time.time(),
                "attempt": self.attempt,
                "engine_args": args,
                "env": stage.env,
            },
        )

    def stop_reason(self, stage: StagePlan) -> str | None:
        """Why another node gave up on this stage, if one did during this attempt."""
        for rank in range(1, self.plan.launch.nnodes):
            found = marker(stage.dir / NODE_FAILED.format(rank=rank), run_token(), self.opened_at)
            if found is not None:
                return f"node {rank} failed: {found.get('error')}"
        return None

    def run_ended(self, status: str, error: BaseException | None) -> None:
        if error is not None:
            self.abort(error)

    def abort(self, error: BaseException) -> None:
        """Followers wait for node 0's markers: tell them the run stopped instead of leaving them waiting."""
        self.plan.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.plan.output_dir / ABORT, {"token": run_token(), "written_at": time.time(), "error": str(error)}
        )
