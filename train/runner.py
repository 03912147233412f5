"""Run a curriculum: its stages in order, one engine process group per stage, each from the previous stage's weights.

A stage is *done* only when its ``DONE.json`` exists. That file is written last, atomically, after the engine
exited cleanly at its final step, the final weights were checked against the model the stage started from, and
their hash was recorded. Anything short of that (a crash, a kill, a failed check) leaves the stage not done, and
``--resume`` continues it from its last complete engine checkpoint.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from spinegpt.data_mixes import audit as data_audit
from spinegpt.data_mixes import prepare as data_prepare
from spinegpt.eval_hooks.hooks import SUMMARY
from spinegpt.train import manifest, models, swift_adapter, tracking, weights
from spinegpt.train.plan import FINAL, Plan, StagePlan

DONE = "DONE.json"
LAUNCH = "launch.json"
ABORT = "ABORT.json"
NODE_FAILED = "FAILED.node{rank}.json"
ENGINE_LOG = "engine.log"
EVAL_LOG = "eval.log"
_LOG_RECORD = re.compile(r"\{'loss': .*\}")


class RunError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


class StageFailed(RunError):
    """A stage's engine failed or its output did not verify."""


@dataclass(frozen=True)
class StageResult:
    name: str
    status: str  # "done" | "skipped"
    final: Path


def is_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE).is_file() and (stage_dir / FINAL).exists()


def _say(message: str) -> None:
    print(f"[spinegpt] {message}", flush=True)


def _split_lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines of a byte stream, splitting on '\\r' too: tqdm redraws with carriage returns."""
    buffer = b""
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        buffer += chunk
        *lines, buffer = re.split(rb"\r\n|\r|\n", buffer)
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")


def _log_record(line: str) -> dict[str, Any] | None:
    """The engine's per-step log record printed on this console line, if any."""
    match = _LOG_RECORD.search(line)
    if not match:
        return None
    try:
        record = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return None
    return record if isinstance(record, dict) else None


def _summary(record: dict[str, Any], label: str) -> str:
    """A one-line console summary of an engine log record."""
    step = record.get("global_step/max_steps", "?")
    parts = [f"{label} step {step}", f"loss {record.get('loss')}"]
    if "learning_rate" in record:
        parts.append(f"lr {record['learning_rate']}")
    if "elapsed_time" in record:
        parts.append(f"elapsed {record['elapsed_time']}, left {record.get('remaining_time', '?')}")
    return "  ".join(parts)


def run_engine(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    label: str,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    cwd: Path | None = None,
    stop: Callable[[], str | None] | None = None,
) -> int:
    """Run one engine process group; full output to ``log_path``, a progress line per logged step to the console.

    The engine stays in our process group: Ctrl-C, SLURM's scancel and a kill of the group reach every rank.
    A SIGTERM sent to this process alone is forwarded, so ranks are never orphaned. ``stop`` is polled while the
    engine runs; when it returns a reason the engine is terminated (another node failed: without this, torchrun
    would wait out its rendezvous timeout for ranks that will never come).
    """
    tail: deque[str] = deque(maxlen=60)
    with log_path.open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def forward(signum: int, _frame: Any) -> None:
            process.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        watcher = _watch(process, stop, log_path) if stop is not None else None
        try:
            assert process.stdout is not None
            for line in _split_lines(process.stdout):
                log.write(line.encode() + b"\n")
                tail.append(line)
                record = _log_record(line)
                if record is not None:
                    _say(_summary(record, label))
                    if on_record is not None:
                        on_record(record)
                elif line.startswith("[spinegpt"):  # progress lines of our own child processes (eval)
                    print(line, flush=True)
            code = process.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
            if process.poll() is None:
                process.kill()
            if watcher is not None:
                watcher.join()
    if code != 0:
        print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
    return code


def _watch(process: subprocess.Popen[bytes], stop: Callable[[], str | None], log_path: Path) -> threading.Thread:
    def loop() -> None:
        while process.poll() is None:
            reason = stop()
            if reason is not None:
                with log_path.open("a", encoding="utf-8") as log:
                    log.write(f"\n[spinegpt] stopping the engine: {reason}\n")
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                return
            time.sleep(2.0)

    thread = threading.Thread(target=loop, name="spinegpt-stop-watch", daemon=True)
    thread.start()
    return thread


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


def run_token() -> str:
    """Identifies one launch of a multi-node run on every node (launch/ scripts set it; SLURM gives a job id)."""
    explicit = os.environ.get("SPINEGPT_RUN_TOKEN")
    if explicit:
        return explicit
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm-{job}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return "unset"


class Follower:
    """A torchrun node other than 0: runs each stage's engine when node 0 says so, until node 0 marks it done.

    Node 0 writes ``<stage>/launch.json`` (its engine arguments) right before starting its own ranks, and
    ``DONE.json`` once the stage is verified; everything else (data, manifest, verification, eval) is node 0's.
    A marker counts only if it carries this launch's token; without an explicit token (SPINEGPT_RUN_TOKEN or a
    SLURM job) only markers written after this node started count, so a stale marker of an earlier attempt is
    never replayed.
    """

    POLL_S = 1.0

    def __init__(self, runner: Runner):
        self.runner = runner
        self.plan = runner.plan
        self.started = time.time()
        self.token = run_token()
        self.timeout_s = float(os.environ.get("SPINEGPT_FOLLOWER_TIMEOUT", str(7 * 24 * 3600)))

    def _fresh(self, marker: dict[str, Any]) -> bool:
        if marker.get("token") != self.token:
            return False
        return self.token != "unset" or marker.get("written_at", 0) >= self.started - 120

    def run(self) -> list[StageResult]:
        rank = self.plan.launch.node_rank
        _say(f"node {rank}: following node 0 ({self.plan.launch.master_addr}) for {len(self.plan.stages)} stage(s)")
        results = []
        for plan in self.plan.stages:
            try:
                results.append(self._stage(plan, rank))
            except Exception as exc:
                # Node 0 may be waiting in the rendezvous for this node's ranks: tell it, so it stops now
                # instead of after torchrun's rendezvous timeout.
                plan.dir.mkdir(parents=True, exist_ok=True)
                manifest.write_json_atomic(
                    plan.dir / NODE_FAILED.format(rank=rank),
                    {"token": self.token, "written_at": time.time(), "node": rank, "error": str(exc)},
                )
                raise
            if plan.stage.name == self.runner.until:
                break
        return results

    def _stage(self, plan: StagePlan, rank: int) -> StageResult:
        label = f"[{plan.index + 1}/{len(self.plan.stages)} {plan.stage.name}] node {rank}:"
        ran: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        waiting_said = False
        while not is_done(plan.dir):
            abort = _marker(self.plan.output_dir / ABORT, self.token, self.started)
            if abort is not None:
                raise RunError(f"{label} node 0 stopped the run: {abort.get('error')}")
            marker_path = plan.dir / LAUNCH
            marker = json.loads(marker_path.read_text()) if marker_path.is_file() else None
            if marker and self._fresh(marker) and marker["attempt"] not in ran:
                ran.add(marker["attempt"])
                command = swift_adapter.command(marker["engine_args"], self.plan.launch, plan.command[0])
                _say(f"{label} starting its ranks")
                env = engine_env(plan)
                code = self.runner.engine(command, env, plan.dir / f"engine.node{rank}.log", label, None, plan.dir)
                if code != 0:
                    raise StageFailed(
                        f"{label} the engine exited with code {code}; log {plan.dir}/engine.node{rank}.log"
                    )
                continue
            if time.monotonic() > deadline:
                raise RunError(f"{label} node 0 did not start or finish the stage within {self.timeout_s:.0f}s")
            if not waiting_said:
                _say(f"{label} waiting for node 0")
                waiting_said = True
            time.sleep(self.POLL_S)
        _say(f"{label} node 0 marked the stage done")
        return StageResult(plan.stage.name, "done", plan.final)


def engine_env(plan: StagePlan, tracking: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in plan.env.items():
        env.setdefault(key, value)  # the caller's environment wins, as with ms-swift's own ENV block
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Tracking identity is the run's, not the shell's: a stale WANDB_JOB_TYPE would merge stages in the UI.
    env.update(tracking or {})
    return env


class Runner:
    """Executes a :class:`Plan`, keeping the run manifest current."""

    def __init__(
        self,
        plan: Plan,
        resume: bool = False,
        overrides: tuple[str, ...] = (),
        until: str | None = None,
        engine: Callable[..., int] = run_engine,
    ):
        names = [s.stage.name for s in plan.stages]
        if until is not None and until not in names:
            raise RunError(f"--until {until!r}: no such stage; stages: {', '.join(names)}")
        self.until = until
        self.plan = plan
        self.resume = resume
        self.overrides = overrides
        self.engine = engine
        self.manifest_path = plan.output_dir / manifest.FILE
        self.data: dict[str, Any] = {}
        self.progress = tracking.Progress(plan.output_dir, len(plan.stages))
        self.opened_at = time.time()  # start of this attempt; markers of other nodes count only from here

    # -- manifest -------------------------------------------------------------------------------------------------

    def _stage_record(self, plan: StagePlan) -> dict[str, Any]:
        return {
            "name": plan.stage.name,
            "index": plan.index,
            "dir": str(plan.dir),
            "status": "pending",
            "config": plan.stage.model_dump(mode="json"),
            # What decides the trained weights; evaluation settings may change between attempts.
            "config_sha256": manifest.stable_hash(plan.stage.model_dump(mode="json", exclude={"eval"})),
            "model": plan.model,
            "starts_from": plan.starts_from,
            "deepspeed": str(plan.deepspeed) if plan.deepspeed else None,
            "zero_stage": plan.zero_stage,
            "engine_args": plan.engine_args,
            "command": plan.command,
        }

    def _fresh_manifest(self) -> dict[str, Any]:
        loaded = self.plan.loaded
        return {
            "format": manifest.FORMAT,
            "name": self.plan.name,
            # One id for every attempt of this run: the experiment-tracking group of all its stages.
            "run_id": f"{self.plan.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            "curriculum_file": str(loaded.source),
            "overrides": list(self.overrides),
            "curriculum": loaded.curriculum.model_dump(mode="json"),
            "output_dir": str(self.plan.output_dir),
            "launch": vars(self.plan.launch),
            "world_size": self.plan.world_size,
            "created_at": manifest.now(),
            "status": "running",
            "attempts": [],
            "stages": [self._stage_record(s) for s in self.plan.stages],
        }

    def _save(self) -> None:
        manifest.write(self.manifest_path, self.data)

    def _stage(self, plan: StagePlan) -> dict[str, Any]:
        record: dict[str, Any] = self.data["stages"][plan.index]
        return record

    def _open(self) -> None:
        self.plan.output_dir.mkdir(parents=True, exist_ok=True)
        exists = self.manifest_path.is_file()
        if exists and not self.resume:
            raise RunError(
                f"{self.plan.output_dir} already holds a run ({manifest.FILE}); pass --resume to continue it, "
                "or choose another --output-dir"
            )
        if not exists:
            self.data = self._fresh_manifest()
        else:
            self.data = manifest.read(self.manifest_path)
            self.data.setdefault("run_id", f"{self.plan.name}-{self.data.get('created_at', 'unknown')}")
            self._check_resumable()
        self.data["status"] = "running"
        self.data["attempts"].append({"started_at": manifest.now(), "resume": self.resume, **manifest.environment()})
        self._save()

    def _check_resumable(self) -> None:
        """A resumed run must be the same run: same stages, and no started stage reconfigured."""
        old = self.data["stages"]
        names_then = [s["name"] for s in old]
        names_now = [s.stage.name for s in self.plan.stages]
        if names_then != names_now:
            raise RunError(f"cannot resume: the run had stages {names_then}, the curriculum now has {names_now}")
        if self.data.get("world_size") != self.plan.world_size:
            raise RunError(
                f"cannot resume: the run used {self.data.get('world_size')} process(es), this launch has "
                f"{self.plan.world_size}; ZeRO checkpoints are partitioned per rank, so resume with the same layout"
            )
        for record, plan in zip(old, self.plan.stages, strict=True):
            fresh = self._stage_record(plan)
            if record["status"] == "pending":
                record.update(fresh)  # not started yet: free to take the current configuration
            elif record["config_sha256"] != fresh["config_sha256"]:
                raise RunError(
                    f"cannot resume: stage {plan.stage.name!r} was started with another configuration; "
                    "start a new run (another --output-dir) to change it"
                )

    # -- stages ---------------------------------------------------------------------------------------------------

    @property
    def leads(self) -> bool:
        """Node 0 owns the run (data, manifest, markers, verification, eval); other torchrun nodes follow it.
        With the deepspeed launcher there is only node 0: it starts every rank itself."""
        return self.plan.launch.launcher == "deepspeed" or self.plan.launch.node_rank == 0

    @property
    def _multi_node(self) -> bool:
        return self.plan.launch.launcher == "torchrun" and self.plan.launch.nnodes > 1

    def _follower_failure(self, plan: StagePlan) -> str | None:
        """Why another node gave up on this stage, if one did during this attempt."""
        for rank in range(1, self.plan.launch.nnodes):
            marker = _marker(plan.dir / NODE_FAILED.format(rank=rank), run_token(), self.opened_at)
            if marker is not None:
                return f"node {rank} failed: {marker.get('error')}"
        return None

    def run(self) -> list[StageResult]:
        if not self.leads:
            return Follower(self).run()
        if not self.plan.stages:
            splits = self.plan.loaded.curriculum.splits
            _say(f"nothing to train: splits {splits} leave every stage without data (the base model as it is; "
                 "`spinegpt sweep` or `spinegpt eval` evaluates it)")  # fmt: skip
        self._open()
        results = []
        try:
            for plan in self.plan.stages:
                results.append(self._run_stage(plan))
                if plan.stage.name == self.until:
                    break
        except BaseException as exc:
            if self._multi_node:
                # Followers wait for node 0's markers; tell them the run stopped instead of leaving them waiting.
                manifest.write_json_atomic(
                    self.plan.output_dir / ABORT, {"token": run_token(), "written_at": time.time(), "error": str(exc)}
                )
            self.data["status"] = "failed" if isinstance(exc, Exception) else "interrupted"
            self.progress.update(status=self.data["status"], error=str(exc))
            self.data["attempts"][-1].update(ended_at=manifest.now(), status=self.data["status"], error=str(exc))
            self._save()
            raise
        # "partial": stopped on purpose by --until; --resume continues with the next stage.
        self.data["status"] = "done" if len(results) == len(self.plan.stages) else "partial"
        self.progress.update(status=self.data["status"], stage=results[-1].name if results else None)
        self.data["attempts"][-1].update(ended_at=manifest.now(), status=self.data["status"])
        self._save()
        _say(f"run {self.plan.name} done: {len(results)} stage(s) in {self.plan.output_dir}")
        return results

    def _run_stage(self, plan: StagePlan) -> StageResult:
        record = self._stage(plan)
        total = len(self.plan.stages)
        label = f"[{plan.index + 1}/{total} {plan.stage.name}]"
        if is_done(plan.dir):
            _say(f"{label} already done, skipping ({plan.final})")
            if plan.eval and not (plan.eval_dir / SUMMARY).is_file():
                self._evaluate(plan, label)  # the stage finished but its evaluation did not
            return StageResult(plan.stage.name, "skipped", plan.final)

        start_model = models.materialise(self.plan.loaded.curriculum.model) if plan.index == 0 else plan.model
        if plan.index > 0 and not is_done(self.plan.stages[plan.index - 1].dir):
            raise RunError(f"{label} the previous stage is not done")
        record.update(status="running", started_at=record.get("started_at") or manifest.now())
        self._save()

        _say(f"{label} preparing data")
        curriculum = self.plan.loaded.curriculum
        prepared = data_prepare.prepare(
            plan.stage.data, self.plan.loaded.base_dir, plan.dataset.parent,
            data_root=curriculum.data_root, seed=curriculum.seed,
        )  # fmt: skip
        prepared, lengths = self._enforce_lengths(plan, prepared, label)
        if record.get("data") and record["data"]["sha256"] != prepared.sha256:
            raise RunError(
                f"{label} cannot resume: the stage's data changed since the run started "
                f"({record['data']['sha256'][:12]} -> {prepared.sha256[:12]})"
            )
        record["data"] = {**prepared.to_json(), "lengths": lengths}
        record["started_from_sha256"] = self._source_hash(plan, start_model)

        command, resumed_from = self._command(plan)
        record.update(command=command, resumed_from=str(resumed_from) if resumed_from else None)
        self._save()
        how = f"resuming from {resumed_from.name}" if resumed_from else f"from {start_model}"
        _say(f"{label} training {how}; {prepared.rows} rows; log {plan.dir / ENGINE_LOG}")
        started = time.monotonic()
        self.progress.update(status="starting", stage=plan.stage.name, stage_index=plan.index)

        def on_record(log_record: dict[str, Any]) -> None:
            self.progress.step(plan.stage.name, plan.index, log_record)

        # The stage folder is the engine's working directory: every path it gets is absolute, and anything it
        # drops in its working directory (wandb's config-defaults.yaml is read from there) stays with the stage.
        stop = None
        if self._multi_node:
            stop = functools.partial(self._follower_failure, plan)
            # Tell the other nodes to start the same stage with the same arguments (resume checkpoint included).
            args = command[command.index(swift_adapter.ENGINE_MODULE) + 1 :]
            manifest.write_json_atomic(plan.dir / LAUNCH, {
                "token": run_token(), "written_at": time.time(), "attempt": len(self.data["attempts"]),
                "engine_args": args, "env": plan.env,
            })  # fmt: skip
        code = self.engine(command, self._env(plan, record), plan.dir / ENGINE_LOG, label, on_record, plan.dir, stop)
        record["engine_seconds"] = round(record.get("engine_seconds", 0) + time.monotonic() - started, 1)
        if code != 0:
            why = (stop() if stop else None) or f"engine exited with code {code}"
            record.update(status="failed", error=why)
            self.progress.update(status="failed", stage=plan.stage.name, stage_index=plan.index, exit_code=code)
            self._save()
            raise StageFailed(f"{label} {why}; full log: {plan.dir / ENGINE_LOG}")

        final = self._finish(plan, record, start_model)
        _say(f"{label} done: final weights {final} (sha256 {record['weights_sha256'][:12]})")
        if plan.eval:
            self._evaluate(plan, label)
        return StageResult(plan.stage.name, "done", plan.final)

    def _enforce_lengths(
        self, plan: StagePlan, prepared: data_prepare.PreparedData, label: str
    ) -> tuple[data_prepare.PreparedData, dict[str, Any]]:
        """Exact token counts of the stage's rows against ``max_length``, and its over-length policy applied."""
        curriculum = self.plan.loaded.curriculum
        counter = data_audit.counter_for(models.materialise(curriculum.model), {**plan.env, **os.environ})
        lengths = data_audit.enforce(prepared.path, counter, plan.stage.max_length, plan.stage.over_length)
        if lengths["over_max_length"]:
            _say(f"{label} {lengths['over_max_length']} record(s) over max_length {plan.stage.max_length}: "
                 f"{'dropped' if lengths['dropped'] else 'truncated by the engine'}")  # fmt: skip
        if lengths["dropped"]:
            prepared = dataclasses.replace(
                prepared, rows=lengths["rows"], image_rows=lengths["image_rows"],
                sha256=data_prepare.sha256_file(prepared.path),
            )  # fmt: skip
        return prepared, lengths

    def _evaluate(self, plan: StagePlan, label: str) -> None:
        """Benchmarks on the stage's final weights. A failure is recorded and reported; the stage stays done."""
        assert plan.eval is not None
        record = self._stage(plan)
        plan.eval_dir.mkdir(parents=True, exist_ok=True)
        (plan.eval_dir / "config.json").write_text(json.dumps(plan.eval.to_json(), indent=2) + "\n")
        _say(f"{label} evaluating on {', '.join(r.name for r in plan.eval.runs)}")
        record["eval"] = {"status": "running", "dir": str(plan.eval_dir), "started_at": manifest.now()}
        self._save()
        code = self.engine(plan.eval_command(), engine_env(plan), plan.dir / EVAL_LOG, f"{label} eval")
        summary_path = plan.eval_dir / SUMMARY
        if code == 0 and summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            record["eval"].update(status="done", ended_at=manifest.now(), benchmarks=summary["benchmarks"])
            _say(f"{label} evaluation written to {plan.eval_dir}")
        else:
            record["eval"].update(
                status="failed",
                ended_at=manifest.now(),
                error=f"evaluation exited with code {code}; log: {plan.dir / EVAL_LOG}",
            )
            _say(f"{label} evaluation FAILED (the trained stage is kept as done); log: {plan.dir / EVAL_LOG}")
        self._save()

    def _env(self, plan: StagePlan, record: dict[str, Any]) -> dict[str, str]:
        curriculum = self.plan.loaded.curriculum
        extra: dict[str, str] = {}
        if "wandb" in curriculum.report_to:
            config = {
                "spinegpt": {
                    "run_id": self.data["run_id"],
                    "stage": plan.stage.name,
                    "stage_index": plan.index,
                    "curriculum": self.data["curriculum"],
                    "data": {k: record.get("data", {}).get(k) for k in ("sha256", "rows", "inputs")},
                    "packages": self.data["attempts"][-1]["packages"],
                    "git": self.data["attempts"][-1]["git"],
                }
            }
            extra = tracking.wandb_env(
                project=curriculum.wandb_project,
                group=self.data["run_id"],
                stage=plan.stage.name,
                stage_dir=plan.dir,
                config=config,
            )
        launch = self.plan.launch
        if launch.bind_cores and launch.launcher == "torchrun" and "OMP_NUM_THREADS" not in {**os.environ, **plan.env}:
            # torchrun has no core binding of its own: give each rank its share of the cores instead of all of them
            # (oversubscribed OpenMP threads make CPU-offloaded Adam steps several times slower).
            extra["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.nproc_per_node))
        return engine_env(plan, extra)

    def _source_hash(self, plan: StagePlan, start_model: str) -> str | None:
        if plan.index > 0:
            previous: str | None = self.data["stages"][plan.index - 1].get("weights_sha256")
            return previous
        return weights.weights_sha256(Path(start_model)) if Path(start_model).is_dir() else None

    def _command(self, plan: StagePlan) -> tuple[list[str], Path | None]:
        checkpoint = swift_adapter.resumable_checkpoint(plan.engine_dir) if self.resume else None
        if checkpoint is None and plan.engine_dir.exists() and any(plan.engine_dir.iterdir()):
            # Leftovers of an attempt that never reached a checkpoint: keep them for inspection, out of the way.
            aside = plan.engine_dir.with_name(f"engine.abandoned-{int(time.time())}")
            plan.engine_dir.rename(aside)
            _say(f"moved the incomplete engine output of an earlier attempt to {aside}")
        if checkpoint is None:
            return plan.command, None
        args = [*plan.engine_args, "--resume_from_checkpoint", str(checkpoint)]
        return swift_adapter.command(args, self.plan.launch, plan.command[0]), checkpoint

    def _finish(self, plan: StagePlan, record: dict[str, Any], start_model: str) -> Path:
        label = f"stage {plan.stage.name!r}"
        checkpoint = swift_adapter.resumable_checkpoint(plan.engine_dir)
        if checkpoint is None:
            raise StageFailed(f"{label}: the engine exited cleanly but left no checkpoint in {plan.engine_dir}")
        state = swift_adapter.trainer_state(checkpoint)
        step, max_steps = state.get("global_step"), state.get("max_steps")
        if step != max_steps:
            raise StageFailed(f"{label}: the last checkpoint {checkpoint.name} is at step {step} of {max_steps}")
        final = checkpoint
        if plan.stage.tuner_type == "lora":
            final = self._merge_lora(plan, checkpoint, start_model)
        try:
            weights.verify(final, start_model)
        except weights.WeightsError as exc:
            record.update(status="failed", error=str(exc))
            self._save()
            raise StageFailed(f"{label}: final weights did not verify: {exc}") from exc

        log = swift_adapter.read_log(plan.engine_dir)
        losses = swift_adapter.losses(log)
        record.update(
            final_checkpoint=str(final),
            final=str(plan.final),
            weights_sha256=weights.weights_sha256(final),
            global_step=step,
            losses=losses,
            final_loss=losses[-1][1] if losses else None,
        )
        # The `final` link, then DONE.json, each replaced atomically: a stage is done exactly when DONE.json exists.
        link_tmp = plan.dir / f".{FINAL}.tmp"
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(final.relative_to(plan.dir))
        os.replace(link_tmp, plan.final)
        record.update(status="done", ended_at=manifest.now())
        manifest.write_json_atomic(
            plan.dir / DONE,
            {
                k: record[k]
                for k in (
                    "name",
                    "final",
                    "final_checkpoint",
                    "weights_sha256",
                    "started_from_sha256",
                    "model",
                    "global_step",
                    "final_loss",
                    "ended_at",
                )
            },
        )
        self._save()
        return final

    def _merge_lora(self, plan: StagePlan, checkpoint: Path, start_model: str) -> Path:
        command, merged = swift_adapter.merge_lora_command(
            curriculum=self.plan.loaded.curriculum,
            model=start_model,
            adapter_checkpoint=checkpoint,
            python=plan.command[0],
        )
        label = f"[{plan.index + 1}/{len(self.plan.stages)} {plan.stage.name}]"
        _say(f"{label} merging LoRA adapters of {checkpoint.name} into full weights")
        code = self.engine(command, engine_env(plan), plan.dir / ENGINE_LOG, label)
        if code != 0:
            raise StageFailed(f"{label} merging the LoRA adapters failed (code {code}); log: {plan.dir / ENGINE_LOG}")
        return merged
