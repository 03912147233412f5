"""Sweeps: the rows of an ablation table, each a curriculum trained and evaluated, as one resumable job.

    spinegpt sweep curricula/ablations/sweep.yaml --output-dir outputs/table7 [--only t7_2_general,4]
    spinegpt sweep curricula/ablations/smoke                       # the same six rows on the tiny model (CPU)
    spinegpt sweep curricula/ablations/sweep.yaml --launcher slurm # one SLURM job per row
    spinegpt sweep curricula/ablations/sweep.yaml --dry-run        # what each row trains, what is done already

Per row, under ``OUT/rows/<name>/``: ``run/`` (the run folder of ``spinegpt run``, resumed if it exists), ``eval/``
(SpineBench on the row's final model: the last stage it trained, or the base model when it trains none) and
``row.json``, written last: a row with a ``row.json`` of the same configuration is done and skipped. After each
row the table is rebuilt from every finished row (``OUT/<table>.md``, ``.csv``, ``.png``); ``OUT/progress.json``
says which rows are done, running, submitted or failed. A failing row is recorded and the others still run.

Under ``--launcher slurm`` each unfinished row becomes one job running this command restricted to that row
(``launch/slurm.sbatch`` with ``SPINEGPT_COMMAND=sweep``), on as many nodes as the job has; run the sweep again
(or let the last job finish) to see the table with every row.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spinegpt import model_ref
from spinegpt.config_io import ConfigError, ConfigIssue, line_of, read_yaml, validation_issues
from spinegpt.data_mixes.rows import DataError
from spinegpt.data_mixes.stage_data import resolve_data_root
from spinegpt.errors import UserError
from spinegpt.eval_hooks import launch as eval_launch
from spinegpt.eval_hooks.benchmark import BUILTIN
from spinegpt.eval_hooks.config import BenchmarkConfig, EvalConfig
from spinegpt.files import stable_hash, write_json_atomic
from spinegpt.train import ablation_table, baseline, curriculum, environment, manifest, plan, runner
from spinegpt.train.errors import RunError
from spinegpt.train.topology import Launch

logger = logging.getLogger(__name__)

SWEEP_FILE = "sweep.yaml"
ROW_FILE = "row.json"
PROGRESS = "progress.json"


class SweepError(UserError, ValueError):
    """A sweep that cannot start; the message lists every problem."""

    exit_code = 2


class SweepFileError(ConfigError, SweepError):
    kind = "sweep"


class SweepSpec(BaseModel):
    """A sweep file: which curricula are the rows, what they are evaluated on, where the table goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """The sweep's name: default output folder ``outputs/sweeps/<name>`` and SLURM job names."""
    rows: list[str] = Field(min_length=1)
    """Curriculum files, one per table row in order; relative paths are taken from the sweep file's folder."""
    base: str | None = None
    """Run every row on this curriculum instead of the one it extends: its own keys (``splits``, ``name``) on top
    of another scale, e.g. the smoke curriculum. Relative to the sweep file's folder."""
    overrides: list[str] = Field(default_factory=list)
    """``key=value`` overrides applied to every row (after ``base``; the command line's come after these)."""
    benchmark: BenchmarkConfig
    """What each row's final model is scored on; a relative ``path`` (and ``image_root``) is taken from the rows'
    data root, where ``data_mixes/sources.yaml`` also finds SpineBench for decontamination."""
    benchmarks: list[BenchmarkConfig] = Field(default_factory=list)
    """More benchmarks each row's final model is scored on, beside Table 7's (the general medical ones: does spine
    training cost general medicine?), paths as ``benchmark``'s. The table shows their headline figures, and a row
    whose figure fell more than the benchmark's ``max_drop`` points below the base-model row's (the row that trains
    nothing) is flagged; flagged, not failed."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """Inference backend of the evaluation."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts generated together in the evaluation."""
    table: str = "table7"
    """File stem of the rebuilt table: ``<table>.md``, ``.csv``, ``.png`` in the sweep's output folder."""
    title: str = "Table 7: which data makes SpineGPT (close-ended SpineBench accuracy)"
    """Title of the table and the chart."""


@dataclass(frozen=True)
class Row:
    number: int
    file: Path
    loaded: curriculum.LoadedCurriculum
    dir: Path

    @property
    def name(self) -> str:
        return self.loaded.curriculum.name

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def eval_dir(self) -> Path:
        return self.dir / "eval"

    def plan(self, launch: Launch) -> plan.Plan:
        return plan.build(self.loaded, self.run_dir, launch)


@dataclass(frozen=True)
class LoadedSweep:
    spec: SweepSpec
    source: Path
    rows: list[Row]
    output_dir: Path

    def benchmark(self, row: Row) -> BenchmarkConfig:
        """The row's benchmark with absolute paths: a relative one is taken from the row's data root."""
        b = self.spec.benchmark
        relative = [p for p in (b.path, b.image_root) if p and not Path(p).is_absolute()]
        # Only a relative path needs the data root (which may be unset where every path is absolute).
        root = _data_root(row.loaded.curriculum.data_root, row.loaded.base_dir) if relative else Path("/")
        # Table 7 is close-ended accuracy: no report is generated.
        resolved = b.resolved(root).model_copy(update={"mcq_only": True})
        if not Path(resolved.path).is_file():
            raise SweepError(
                f"benchmark {b.kind}: {resolved.path} not found (a relative path is taken from the data root)"
            )
        return resolved

    def general(self, row: Row) -> list[BenchmarkConfig]:
        """The further benchmarks (``benchmarks``) with absolute paths, relative ones taken from the data root."""
        resolved = []
        for b in self.spec.benchmarks:
            given = (b.path, b.image_root)
            relative = [p for p in given if p and not Path(p).is_absolute() and not p.startswith(BUILTIN)]
            root = _data_root(row.loaded.curriculum.data_root, row.loaded.base_dir) if relative else Path("/")
            one = b.resolved(root)
            if not Path(one.path).exists():
                raise SweepError(
                    f"benchmark {b.label}: {one.path} not found (a relative path is taken from the data root)"
                )
            resolved.append(one)
        return resolved

    def row_key(self, row: Row) -> str:
        """What decides a row's figures: its resolved curriculum and how it is evaluated."""
        cur = row.loaded.curriculum.model_dump(mode="json", exclude={"output_dir", "report_to", "wandb_project"})
        key: dict[str, Any] = {
            "curriculum": cur,
            "benchmark": self.spec.benchmark.model_dump(mode="json", exclude={"mcq_only"}),
        }
        if self.spec.benchmarks:  # only then: the rows of sweeps without them keep their keys
            key["benchmarks"] = [b.model_dump(mode="json") for b in self.spec.benchmarks]
        return stable_hash(key)


def _data_root(value: str | None, base_dir: Path) -> Path:
    try:
        return resolve_data_root(value, base_dir)
    except DataError as exc:
        raise SweepError(str(exc)) from None


def sweep_file(path: Path) -> Path:
    return path / SWEEP_FILE if path.is_dir() else path


def load(path: Path, overrides: list[str], output_dir: Path | None = None) -> LoadedSweep:
    """Read and validate a sweep and every row curriculum; one error lists every problem found."""
    source = sweep_file(path).resolve()
    doc, node = read_yaml(source, SweepFileError)
    try:
        spec = SweepSpec.model_validate(doc)
    except ValidationError as exc:
        issues: list[ConfigIssue] = validation_issues(exc, lambda loc: (source, line_of(node, loc)[0]))
        raise SweepFileError(source, issues) from None
    out = (output_dir or Path("outputs") / "sweeps" / spec.name).resolve()
    base = (source.parent / spec.base) if spec.base else None
    rows, problems, names = [], [], set()
    for number, entry in enumerate(spec.rows, 1):
        file = (source.parent / entry).resolve()
        try:
            loaded = plan.load(file, [*spec.overrides, *overrides], base=base)
        except curriculum.CurriculumError as exc:
            problems.append(f"rows[{number - 1}] ({entry}): {exc}")
            continue
        name = loaded.curriculum.name
        if name in names:
            problems.append(f"rows[{number - 1}] ({entry}): row name {name!r} repeats; give each row its own name")
        names.add(name)
        rows.append(Row(number, file, loaded, out / "rows" / name))
    if problems:
        raise SweepError(f"{source}: {len(problems)} row(s) do not load\n" + "\n".join(problems))
    return LoadedSweep(spec, source, rows, out)


def select(rows: list[Row], only: str | None) -> list[Row]:
    """``--only``: comma-separated row names or 1-based numbers."""
    if not only:
        return rows
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [r for r in rows if r.name in wanted or str(r.number) in wanted]
    unknown = [w for w in wanted if not any(w in (r.name, str(r.number)) for r in rows)]
    if unknown:
        known = ", ".join(f"{r.number}={r.name}" for r in rows)
        raise SweepError(f"--only: no row {', '.join(map(repr, unknown))}; rows: {known}")
    return chosen


# -- progress -----------------------------------------------------------------------------------------------------


class SweepProgress:
    """``progress.json`` in the sweep folder and a console line at every change of a row's status."""

    def __init__(self, sweep: LoadedSweep):
        self.sweep = sweep
        self.path = sweep.output_dir / PROGRESS
        self.rows: dict[str, dict[str, Any]] = {}
        self._refresh(keep=None)

    def _refresh(self, keep: str | None) -> None:
        """Re-read the other rows' entries: under SLURM several jobs (one per row) update this one file."""
        try:
            old = json.loads(self.path.read_text()).get("rows", {}) if self.path.is_file() else {}
        except ValueError:
            old = {}
        for row in self.sweep.rows:
            if row.name == keep:
                continue
            previous = old.get(row.name, self.rows.get(row.name, {}))
            status = previous.get("status", "pending")
            if finished(self.sweep, row) is not None:
                status = "done"
            elif status not in ("submitted", "failed", "running", "interrupted") or (
                keep is None and status == "running"
            ):
                status = "pending"  # a row left "running" by a crashed sweep is pending again
            self.rows[row.name] = {**previous, "status": status}

    def set(self, row: Row, status: str, **extra: Any) -> None:
        self._refresh(keep=row.name)
        entry = self.rows[row.name]
        if status != "failed":
            entry.pop("error", None)
        entry.update(status=status, updated_at=manifest.now(), **extra)
        self.write()
        counts = {s: sum(r["status"] == s for r in self.rows.values()) for s in ("done", "running", "failed")}
        logger.info(
            f"{self.sweep.spec.name}: row {row.number} {row.name} {status}  "
            f"({counts['done']}/{len(self.rows)} done, {counts['running']} running, {counts['failed']} failed)"
        )

    def write(self) -> None:
        self.sweep.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"sweep": self.sweep.spec.name, "file": str(self.sweep.source), "rows": self.rows})


def finished(sweep: LoadedSweep, row: Row) -> dict[str, Any] | None:
    """The row's ``row.json`` when it was written for the row's current configuration."""
    path = row.dir / ROW_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data if data.get("key") == sweep.row_key(row) else None


def rebuild_table(sweep: LoadedSweep, compare_paper: bool) -> list[Path]:
    rows = []
    for row in sweep.rows:
        if (data := finished(sweep, row)) is not None:
            # Rows written before result files were named in row.json: their evaluation folder holds the file.
            data.setdefault("result_file", str(row.eval_dir / f"{sweep.spec.benchmark.label}.json"))
            rows.append(data)
    if not rows:
        return []
    return ablation_table.write(rows, sweep.output_dir, sweep.spec.table, compare_paper, sweep.spec.title)


# -- local ----------------------------------------------------------------------------------------------------------


def trained_splits(built: plan.Plan) -> list[str]:
    found = {s for stage in built.stages for s in (stage.splits or [])}
    return [s for s, _ in ablation_table.SPLIT_COLUMNS if s in found]


def run_row(sweep: LoadedSweep, row: Row, launch: Launch) -> dict[str, Any] | None:
    """Train (or resume) the row's curriculum, evaluate its final model, write ``row.json``. Followers (node > 0
    of a multi-node job) only train; node 0 evaluates."""
    built = row.plan(launch)
    if built.stages:
        resume = (built.output_dir / manifest.FILE).is_file()
        runner.Runner(built, resume=resume, overrides=tuple(sweep.spec.overrides)).run()
        model = str(built.stages[-1].final)
    else:
        model = str(model_ref.materialise(row.loaded.curriculum.model))
    if not launch.leads:
        return None
    benchmarks = evaluate(sweep, row, model, base=not built.stages)
    entry = benchmarks[sweep.spec.benchmark.label]
    data = {
        "name": row.name,
        "number": row.number,
        "file": str(row.file),
        "key": sweep.row_key(row),
        "splits": trained_splits(built),
        "stages": [{"name": s.stage.name, "splits": s.splits, "starts_from": s.starts_from} for s in built.stages],
        "skipped_stages": [vars(s) for s in built.skipped],
        "model": model,
        "benchmark": sweep.spec.benchmark.label,
        "scores": entry["scores"],
        "statistics": entry.get("statistics"),
        "protocol_sha256": entry.get("protocol_sha256"),
        "result_file": str(row.eval_dir / f"{sweep.spec.benchmark.label}.json"),
        "benchmarks": benchmarks,
        "finished_at": manifest.now(),
    }
    write_json_atomic(row.dir / ROW_FILE, data)
    return data


def evaluate(sweep: LoadedSweep, row: Row, model: str, base: bool = False) -> dict[str, Any]:
    """``spinegpt eval`` on ``model`` in its own process (the same launch the runner uses after a stage): Table 7's
    benchmark and the further ones (``benchmarks``); the summary's entries by benchmark name (scores, statistics,
    protocol hash). ``base``: the row trains nothing, so its model is the curriculum's starting model, whose
    evaluation is shared through the baseline cache (``baseline.py``)."""
    cur = row.loaded.curriculum
    bench = sweep.benchmark(row)
    config = EvalConfig(
        benchmarks=[bench, *sweep.general(row)], backend=sweep.spec.backend, batch_size=sweep.spec.batch_size
    )
    job = plan.eval_job(config, cur, Path("/"))
    env = environment.process_env(cur)  # the hub and offline switches every process of the row's run got
    try:
        if base:
            summary = baseline.evaluate(cur, job, row.eval_dir, row.dir / "eval.log").summary
        else:
            summary = eval_launch.run(model, job, row.eval_dir, env, row.dir / "eval.log")
    except eval_launch.EvalFailed as exc:
        raise RunError(str(exc)) from None
    benchmarks: dict[str, Any] = summary["benchmarks"]
    scores = benchmarks[bench.label]["scores"]
    if "text" not in scores and "image" not in scores:
        raise RunError(f"{bench.path}: no multiple-choice items were scored; Table 7 needs text or image MCQs")
    return benchmarks


def run_local(sweep: LoadedSweep, rows: list[Row], launch: Launch, compare_paper: bool) -> list[str]:
    """Train and evaluate the rows one after another (a failing row is recorded and the next one runs); the table
    is rebuilt after every finished row. Returns the names of the rows that failed."""
    leads = launch.leads  # node 0 keeps the books; others only train
    progress = SweepProgress(sweep)
    if leads:
        progress.write()
    failed = []
    for row in rows:
        if finished(sweep, row) is not None:
            logger.info(f"row {row.number} {row.name}: done already, skipping")
            continue
        if leads:
            progress.set(row, "running", started_at=manifest.now())
        try:
            run_row(sweep, row, launch)
        except (UserError, FileNotFoundError, OSError) as exc:
            failed.append(row.name)
            if leads:
                progress.set(row, "failed", error=str(exc))
            logger.error(f"row {row.name} FAILED: {exc}")
            continue
        except BaseException as exc:  # Ctrl-C or SIGTERM stops the sweep, not just this row
            if leads:
                progress.set(row, "interrupted", error=str(exc) or type(exc).__name__)
            raise
        if leads:
            progress.set(row, "done", ended_at=manifest.now())
            rebuild_table(sweep, compare_paper)
    if failed:
        logger.error(f"{len(failed)} row(s) failed: {', '.join(failed)} (see {sweep.output_dir / PROGRESS})")
    return failed


# -- SLURM ----------------------------------------------------------------------------------------------------------


def slurm_command(sweep: LoadedSweep, row: Row, args: argparse.Namespace) -> list[str]:
    """One job for one row: this sweep, restricted to the row, under launch/slurm.sbatch on every node."""
    sbatch = ["sbatch", "--parsable", f"--job-name={sweep.spec.name}-{row.name}", f"--output={row.dir}/slurm-%j.out"]
    sweep_args = [str(sweep.source), "--only", row.name, "--output-dir", str(sweep.output_dir)]
    if args.compare_paper:
        sweep_args.append("--compare-paper")
    return [*sbatch, *args.sbatch_arg, str(launch_scripts() / "slurm.sbatch"), *sweep_args, *args.overrides]


def launch_scripts() -> Path:
    """``launch/``: in a checkout beside the code, in an installed wheel its package data (``spinegpt/launch``)."""
    return Path(str(importlib.resources.files("spinegpt.launch")))


def run_slurm(sweep: LoadedSweep, rows: list[Row], args: argparse.Namespace) -> list[list[str]]:
    """Submit one job per unfinished row (``--dry-run``: submit nothing); returns the commands."""
    if not args.dry_run and shutil.which("sbatch") is None:
        raise SweepError("--launcher slurm: sbatch not found; run the sweep from a SLURM login node")
    progress = SweepProgress(sweep)
    env = {**os.environ, "SPINEGPT_COMMAND": "sweep"}
    commands = []
    for row in rows:
        if finished(sweep, row) is not None:
            logger.info(f"row {row.number} {row.name}: done already, no job")
            continue
        command = slurm_command(sweep, row, args)
        commands.append(command)
        if args.dry_run:
            continue
        row.dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            progress.set(row, "failed", error=f"sbatch: {result.stderr.strip() or result.returncode}")
            continue
        progress.set(row, "submitted", job_id=result.stdout.strip().split(";")[0], submitted_at=manifest.now())
    return commands


# -- dry run --------------------------------------------------------------------------------------------------------


def describe(sweep: LoadedSweep, rows: list[Row], launch: Launch) -> str:
    lines = [f"sweep {sweep.spec.name}  ({sweep.source})", f"  output : {sweep.output_dir}"]
    for row in rows:
        built = row.plan(launch)
        status = "done" if finished(sweep, row) is not None else "to run"
        splits = ", ".join(trained_splits(built)) or "none: the base model is only evaluated"
        lines += ["", f"row {row.number}: {row.name}  [{status}]  ({row.file})", f"  splits : {splits}"]
        for stage in built.stages:
            lines.append(f"  stage  : {stage.stage.name} on {', '.join(stage.splits or ['?'])}  [{stage.starts_from}]")
        for skipped in built.skipped:
            lines.append(f"  skip   : {skipped.name} ({skipped.reason})")
        try:
            bench: Any = sweep.benchmark(row).path
        except SweepError as exc:
            bench = f"MISSING: {exc}"
        lines.append(f"  eval   : {sweep.spec.benchmark.kind} {bench}")
        try:
            more: list[Any] = [f"{b.kind} {b.path}" for b in sweep.general(row)]
        except SweepError as exc:
            more = [f"MISSING: {exc}"]
        lines += [f"  also   : {m}" for m in more]
    return "\n".join(lines)
