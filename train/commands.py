"""The training verbs of ``spinegpt``: validate, plan, preflight, run, sweep, eval, compare, export, report,
tiny-model, and ``data audit`` (a data verb that reads a curriculum).

Each verb is a small parser function and a handler; ``spinegpt.cli`` only dispatches. Handlers print what the
command *outputs* (a plan, JSON, a table, a path) to stdout; everything said along the way is logged (stderr).
Nothing here imports torch at module level: ``spinegpt --help`` and ``spinegpt plan`` must start in a moment.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from spinegpt.config_io import validation_issues
from spinegpt.data_mixes import audit as data_audit
from spinegpt.data_mixes.stage_data import resolve_data_root
from spinegpt.errors import UsageError
from spinegpt.eval_hooks import compare, evaluator, registry, rescore
from spinegpt.eval_hooks.benchmark import resolve as benchmark_path
from spinegpt.eval_hooks.config import (
    BenchmarkConfig,
    EvalConfig,
    EvalJob,
    ExtractorConfig,
    JudgeConfig,
    ModelLoading,
    extractor_server,
)
from spinegpt.offline import tiny_model
from spinegpt.train import (
    cost,
    cost_plan,
    export,
    manifest,
    memory,
    multinode,
    plan,
    preflight,
    report,
    runner,
    sweep,
    swift_adapter,
    topology,
)
from spinegpt.train.audit import audit_curriculum
from spinegpt.train.errors import RunError
from spinegpt.train.hooks.leader import LeaderHook
from spinegpt.train.manifest import RunManifest

logger = logging.getLogger(__name__)
SMOKE_BENCHMARK = "builtin:smoke"
Subparsers = argparse._SubParsersAction


def register(sub: Subparsers) -> None:
    for add in (_validate_parser, _plan_parser, _preflight_parser, _run_parser, _sweep_parser, _eval_parser):
        add(sub)
    for add in (_compare_parser, _export_parser, _report_parser, _tiny_model_parser):
        add(sub)


def register_data(cmds: Subparsers) -> None:
    """``spinegpt data audit``: a data verb that reads a curriculum, so it lives with the curriculum."""
    aud = cmds.add_parser("audit", help="exact token counts of a curriculum's stage data against max_length")
    _curriculum_args(aud)
    aud.add_argument("--stage", action="append", help="only these stages (repeatable)")
    aud.add_argument(
        "--nproc", type=int, help="processes per node, for optimizer steps (default: $NPROC_PER_NODE or 1)"
    )
    aud.add_argument("--nodes", type=int, help="nodes, for optimizer steps (default: $NNODES or 1)")
    aud.add_argument("--json", action="store_true", help="machine-readable output")
    aud.set_defaults(handler=_data_audit)


# -- shared arguments -------------------------------------------------------------------------------------------


def _curriculum_args(parser: argparse.ArgumentParser) -> None:
    # key=value overrides are collected by spinegpt.cli from what argparse leaves (before or after the options); a
    # declared `nargs="*"` positional would make argparse call them required when the curriculum is missing.
    parser.usage = "%(prog)s CURRICULUM [key=value ...] [options]"
    parser.add_argument("curriculum", type=Path, help="curriculum YAML file, then any key=value overrides")
    parser.set_defaults(overrides=[])


def _launch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, help="run directory (default: the curriculum's output_dir)")
    parser.add_argument("--nproc", type=int, help="processes per node (default: $NPROC_PER_NODE or 1)")
    parser.add_argument(
        "--launcher",
        choices=["torchrun", "deepspeed"],
        default="torchrun",
        help="torchrun (same command on every node; $NNODES, $NODE_RANK, $MASTER_ADDR, $MASTER_PORT) "
        "or deepspeed (run on the first host only; ranks started over ssh from --hostfile)",
    )
    parser.add_argument("--hostfile", help="DeepSpeed hostfile ('host slots=N' lines) for --launcher deepspeed")
    parser.add_argument(
        "--bind-cores",
        action="store_true",
        help="pin each rank to its own CPU cores (speeds up CPU-offloaded optimizer steps)",
    )


def _launch(args: argparse.Namespace) -> topology.Launch:
    """The launch shape every verb takes the same way: --nproc (else $NPROC_PER_NODE, else 1) processes on each of
    --nodes (else $NNODES, else 1) nodes."""
    try:
        launch = topology.launch_from_env(
            args.nproc,
            getattr(args, "launcher", "torchrun"),
            getattr(args, "hostfile", None),
            getattr(args, "bind_cores", False),
        )
        nodes = getattr(args, "nodes", None)
        return dataclasses.replace(launch, nnodes=nodes) if nodes else launch
    except (ValueError, OSError) as exc:
        raise RunError(str(exc)) from None


def _built(args: argparse.Namespace) -> plan.Plan:
    loaded = plan.load(args.curriculum, args.overrides)
    return plan.build(loaded, getattr(args, "output_dir", None), _launch(args))


# -- validate, plan, preflight, run -----------------------------------------------------------------------------


def _validate_parser(sub: Subparsers) -> None:
    p = sub.add_parser("validate", help="check a curriculum and report every error")
    _curriculum_args(p)
    _launch_args(p)
    p.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    built = _built(args)
    failed = [c for c in preflight.static_checks(built) if not c.ok]
    if failed:
        raise RunError(f"{args.curriculum}: " + "\n".join(c.line() for c in failed))
    print(f"{args.curriculum}: ok ({len(built.curriculum.stages)} stage(s))")
    return 0


def _plan_parser(sub: Subparsers) -> None:
    p = sub.add_parser("plan", help="show what a curriculum will run, stage by stage (no side effects but --audit)")
    _curriculum_args(p)
    _launch_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--commands", action="store_true", help="only this node's engine command per stage")
    p.add_argument("--memory", action="store_true", help="predict each stage's peak GPU memory, term by term")
    p.add_argument(
        "--audit",
        action="store_true",
        help="build (or reuse) each stage's data and count its tokens exactly: totals, percentiles, "
        "records over max_length, optimizer steps for the stage's global batch",
    )
    p.add_argument(
        "--cost",
        action="store_true",
        help="predict each stage's training FLOPs, optimizer steps, packed sequences, GPU-hours and wall time from "
        "the data audit's exact per-row counts (builds and counts the data, as --audit)",
    )
    p.add_argument(
        "--gpu",
        default=cost.DEFAULT_GPU,
        help=f"GPU for --cost: {', '.join(cost.GPUS)} (default {cost.DEFAULT_GPU}, the paper's)",
    )
    p.add_argument(
        "--mfu",
        type=float,
        help="model FLOPs utilisation for --cost, in (0, 1] (default: measured on that GPU by bench/gpu_check.py "
        "where bench/results has it, else assumed)",
    )
    p.add_argument("--gpus", type=int, dest="nproc", help="the same as --nproc: one process per GPU")
    p.add_argument("--gpu-mem-gb", type=float, default=80.0, help="memory per GPU for --memory (default 80)")
    p.add_argument("--nodes", type=int, help="nodes of the run (default: $NNODES or 1)")
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    built = _built(args)
    if args.commands:
        print("\n".join(f"{s.stage.name}: {shlex.join(s.command)}" for s in built.stages))
        return 0
    as_json, text = built.to_json(), [built.render()]
    if args.memory:
        # The memory of the launch the plan above shows: one process per GPU.
        gpus, nodes = built.launch.nproc_per_node, built.launch.nnodes
        cur, base = built.curriculum, built.loaded.base_dir
        reports = [memory.stage_report(cur, s.stage, base, gpus, nodes, args.gpu_mem_gb) for s in built.stages]
        as_json["memory"] = reports
        text.append(memory.render(reports, gpus, nodes))
    if args.audit or args.cost:
        gpu = _gpu(args) if args.cost else None
        # Libraries loaded on the way (DeepSpeed, through transformers) print to stdout; --json must be JSON alone.
        with contextlib.redirect_stdout(sys.stderr):
            audits = audit_curriculum(built, built.launch.world_size)
        if args.audit:
            as_json["audit"] = [a.to_json() for a in audits]
            text.append(f"Data audit (exact tokens; {built.launch.world_size} rank(s)):\n" + data_audit.render(audits))
        if gpu is not None:
            costs = cost_plan.curriculum_cost(built, audits, gpu=gpu, mfu=args.mfu)
            as_json["cost"] = [s.model_dump(mode="json") for s in costs.stages]
            as_json["cost_assumptions"] = costs.assumptions.model_dump(mode="json")
            text.append(cost_plan.render(costs))
    print(json.dumps(as_json, indent=2) if args.json else "\n\n".join(text))
    return 0


def _gpu(args: argparse.Namespace) -> cost.Gpu:
    if args.mfu is not None and not 0 < args.mfu <= 1:
        raise RunError(f"--mfu {args.mfu}: an MFU is a fraction in (0, 1]")
    try:
        return cost.gpu_named(args.gpu)
    except ValueError as exc:
        raise RunError(f"--gpu: {exc}") from None


def _preflight_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "preflight",
        help="check in seconds what would stop the run on this node (GPUs, memory, "
        "kernels, CPU Adam, model, data, disk, RAM, nodes)",
    )
    _curriculum_args(p)
    _launch_args(p)
    p.add_argument("--nodes", type=int, help="nodes of the run (default: $NNODES or 1)")
    p.add_argument("--json", action="store_true", help="a list of {name, ok, status, detail, fix}")
    p.set_defaults(handler=_preflight)


def _preflight(args: argparse.Namespace) -> int:
    built = _built(args)
    # Libraries imported by the checks (DeepSpeed) print to stdout; --json output must be JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        checks = preflight.run(built, args.nodes)
    print(json.dumps([c.to_json() for c in checks], indent=2) if args.json else preflight.render(checks))
    return 0 if all(c.ok for c in checks) else 1


def _run_parser(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="train the curriculum's stages in order")
    _curriculum_args(p)
    _launch_args(p)
    p.add_argument("--skip-preflight", action="store_true", help="start without `spinegpt preflight`'s checks")
    p.add_argument("--resume", action="store_true", help="skip finished stages, continue an interrupted one")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (continue later with --resume)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    built = _built(args)
    if built.launch.multi_node_torchrun and built.launch.leads:
        # The other nodes learn from node 0's heartbeat that it is alive, from before its preflight to its end.
        with multinode.Heartbeat(built.output_dir):
            return _lead(args, built)
    return _lead(args, built)


def _lead(args: argparse.Namespace, built: plan.Plan) -> int:
    if not args.skip_preflight and built.launch.leads:
        with contextlib.redirect_stdout(sys.stderr):
            checks = preflight.run(built)
        failed = [c for c in checks if not c.ok]
        (logger.error if failed else logger.info)(preflight.render(checks))
        if failed:
            error = RunError(
                f"preflight: {len(failed)} check(s) failed ({', '.join(c.name for c in failed)}); fix them, or pass "
                "--skip-preflight to start anyway"
            )
            if built.launch.multi_node_torchrun:
                # The other nodes are waiting for node 0's markers: tell them the run will not start.
                LeaderHook(built, opened_at=time.time()).abort(error)
            raise error
    runner.Runner(built, resume=args.resume, overrides=tuple(args.overrides), until=args.until).run()
    return 0


def _data_audit(args: argparse.Namespace) -> int:
    built = plan.build(plan.load(args.curriculum, args.overrides), launch=_launch(args))
    with contextlib.redirect_stdout(sys.stderr):  # as in _plan: --json output must be JSON alone
        audits = audit_curriculum(built, built.world_size, args.stage)
    print(json.dumps([a.to_json() for a in audits], indent=2) if args.json else data_audit.render(audits))
    return 0


# -- sweep --------------------------------------------------------------------------------------------------------


def _sweep_parser(sub: Subparsers) -> None:
    p = sub.add_parser("sweep", help="train and evaluate the rows of an ablation sweep, rebuild its table")
    p.usage = "%(prog)s SWEEP [key=value ...] [options]"
    p.add_argument("sweep", type=Path, help="sweep YAML, or a folder holding sweep.yaml; then key=value overrides")
    p.set_defaults(overrides=[])
    p.add_argument("--output-dir", type=Path, help="sweep folder (default outputs/sweeps/<name>)")
    p.add_argument("--only", help="comma-separated row names or numbers (1-based)")
    p.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local: rows one after another here; slurm: one sbatch job per unfinished row",
    )
    p.add_argument("--dry-run", action="store_true", help="show each row's stages and splits, run nothing")
    p.add_argument("--compare-paper", action="store_true", help="put the paper's Table 7 beside our figures")
    p.add_argument("--nproc", type=int, help="processes per node for each row (default: $NPROC_PER_NODE or 1)")
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra sbatch argument per row job (repeatable): --sbatch-arg=--nodes=2",
    )
    p.set_defaults(handler=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    loaded = sweep.load(args.sweep, list(args.overrides), args.output_dir)
    rows = sweep.select(loaded.rows, args.only)
    launch = topology.launch_from_env(args.nproc)
    if args.launcher == "slurm":
        for command in sweep.run_slurm(loaded, rows, args):
            if args.dry_run:
                print(f"SPINEGPT_COMMAND=sweep {shlex.join(command)}")
        return 0
    if args.dry_run:
        print(sweep.describe(loaded, rows, launch))
        return 0
    started = time.monotonic()
    failed = sweep.run_local(loaded, rows, launch, args.compare_paper)
    if launch.leads and (paths := sweep.rebuild_table(loaded, args.compare_paper)):
        print(paths[0].read_text())
        print(f"table: {', '.join(map(str, paths))}")
    logger.info(f"{loaded.spec.name}: finished in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


# -- eval ---------------------------------------------------------------------------------------------------------


def _eval_parser(sub: Subparsers) -> None:
    # Evaluation flags default to None: the settings' own defaults (eval_hooks/config.py) apply unless given.
    ev = sub.add_parser(
        "eval",
        help="evaluate a model folder on a benchmark (SpineBench, MM'25 SpineBench, general medicine), or re-score a "
        "result (--rescore)",
    )
    ev.add_argument("model", nargs="?", help="model folder or hub id (not with --rescore)")
    ev.add_argument(
        "--rescore",
        type=Path,
        metavar="RESULT.json",
        help="score a result's recorded outputs again (today's answer rules; judge given here for reports not "
        "judged yet) into --output-dir, without a model; the original is never touched",
    )
    ev.add_argument("--config", type=Path, help="resolved eval settings (JSON), as written by `spinegpt run`")
    ev.add_argument("--benchmark", choices=registry.kinds(), help="benchmark kind")
    ev.add_argument(
        "--data",
        help="benchmark file, or the download's folder (PathVQA, MMMU), or builtin:<name> (a tiny copy the package "
        "ships: vqa_rad, medqa); builtin:smoke is the SpineBench file of the offline smoke data",
    )
    ev.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="your own file: the column holding a field the benchmark reads (repeatable)",
    )
    ev.add_argument("--name", help="result name (default: the kind)")
    ev.add_argument("--image-root", type=Path, help="folder the benchmark's image paths start from")
    ev.add_argument("--limit", type=int, help="first N items only")
    ev.add_argument("--max-new-tokens", type=int, help="generation budget of a multiple-choice answer")
    ev.add_argument("--report-max-new-tokens", type=int, help="generation budget of a report")
    ev.add_argument("--judge-url", help="OpenAI-compatible API root for report grading")
    ev.add_argument("--judge-model", help="judge model name on that server")
    ev.add_argument("--judge-key-env", help="env var holding the judge API key (default SPINEGPT_JUDGE_API_KEY)")
    ev.add_argument("--judge-timeout", type=float, help="total seconds per judge request (default 120)")
    ev.add_argument("--judge-attempts", type=int, help="tries per report before it is a failed judgment (default 4)")
    ev.add_argument("--judge-concurrency", type=int, help="judge requests in flight at once (default 4)")
    ev.add_argument(
        "--extractor",
        action="store_true",
        help="let a model read the answers the rules cannot (the judge's server unless --extractor-url)",
    )
    ev.add_argument("--extractor-url", help="OpenAI-compatible API root of the answer extractor")
    ev.add_argument("--extractor-model", help="the answer extractor's model name on that server")
    ev.add_argument("--extractor-key-env", help="env var holding the extractor's API key")
    ev.add_argument("--backend", choices=["auto", "transformers", "vllm"], help="generation engine (default auto)")
    ev.add_argument("--batch-size", type=int, help="prompts generated together (default 8)")
    ev.add_argument("--torch-dtype", choices=["bfloat16", "float16", "float32"], help="default: bf16 on GPU, else fp32")
    ev.add_argument("--attn-impl", choices=["flash_attn", "sdpa", "eager"], default="sdpa", help="default sdpa")
    ev.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        type=Path,
        help="results folder (default ./eval; required with --rescore)",
    )
    ev.set_defaults(handler=_eval)


def _given(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def _eval_job(args: argparse.Namespace) -> EvalJob:
    try:
        return _eval_job_unchecked(args)
    except ValidationError as exc:
        issues = validation_issues(exc, lambda loc: (None, None))
        raise RunError("invalid evaluation settings:\n" + "\n".join(f"  - {i}" for i in issues)) from None


def _eval_job_unchecked(args: argparse.Namespace) -> EvalJob:
    """The evaluation the flags describe (or the ``--config`` file ``spinegpt run`` wrote)."""
    if args.config:
        return EvalJob.read(args.config)
    if not args.benchmark or not args.data:
        raise RunError("give --config, or --benchmark and --data")
    import torch

    columns = {}
    for pair in args.column:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise RunError(f"--column {pair!r}: write FIELD=COLUMN, e.g. --column question=Frage")
        columns[field.strip()] = column.strip()
    if args.data == SMOKE_BENCHMARK:
        data = str(resolve_data_root(SMOKE_BENCHMARK, Path.cwd()) / "SpineBench" / "spinebench.jsonl")
    else:
        data = str(benchmark_path(args.data, Path.cwd()))  # builtin:<name> becomes the shipped copy's folder
    bench = BenchmarkConfig.model_validate(
        _given(
            kind=args.benchmark,
            path=data,
            columns=columns or None,
            name=args.name,
            image_root=str(args.image_root.resolve()) if args.image_root else None,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            report_max_new_tokens=args.report_max_new_tokens,
        )
    )
    judge, extractor = _judge_args(args), _extractor_args(args)
    config = EvalConfig.model_validate(
        _given(benchmarks=[bench], judge=judge, backend=args.backend, batch_size=args.batch_size, extractor=extractor)
    )
    dtype = args.torch_dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    return EvalJob(
        eval=config, loading=ModelLoading.model_validate({"torch_dtype": dtype, "attn_impl": args.attn_impl})
    )


def _judge_args(args: argparse.Namespace) -> JudgeConfig | None:
    if bool(args.judge_url) != bool(args.judge_model):
        raise RunError("--judge-url and --judge-model go together")
    if not args.judge_url:
        return None
    return JudgeConfig.model_validate(
        _given(
            base_url=args.judge_url,
            model=args.judge_model,
            api_key_env=args.judge_key_env,
            timeout_s=args.judge_timeout,
            max_attempts=args.judge_attempts,
            concurrency=args.judge_concurrency,
        )
    )


def _extractor_args(args: argparse.Namespace) -> ExtractorConfig | None:
    if not (args.extractor or args.extractor_url or args.extractor_model):
        return None
    return ExtractorConfig.model_validate(
        _given(base_url=args.extractor_url, model=args.extractor_model, api_key_env=args.extractor_key_env)
    )


def _rescore(args: argparse.Namespace) -> int:
    generation_flags = {
        "MODEL": args.model,
        "--config": args.config,
        "--benchmark": args.benchmark,
        "--data": args.data,
        "--column": args.column or None,
        "--limit": args.limit,
        "--max-new-tokens": args.max_new_tokens,
        "--report-max-new-tokens": args.report_max_new_tokens,
        "--backend": args.backend,
        "--batch-size": args.batch_size,
        "--torch-dtype": args.torch_dtype,
    }
    given = [flag for flag, value in generation_flags.items() if value is not None]
    if given:
        raise UsageError(f"--rescore generates nothing: {', '.join(given)} do(es) not apply")
    if args.output is None:
        raise UsageError("--rescore needs --output-dir: the re-scored result goes to a folder of its own")
    try:
        judge = _judge_args(args)
        server = extractor_server(_extractor_args(args), judge)
    except ValidationError as exc:
        issues = validation_issues(exc, lambda loc: (None, None))
        raise RunError("invalid re-scoring settings:\n" + "\n".join(f"  - {i}" for i in issues)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary = rescore.rescore(args.rescore, args.output, judge, evaluator.judge_cache_path(), server)
    for name in summary["benchmarks"]:
        print((args.output / f"{name}.md").read_text())
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.rescore is not None:
        return _rescore(args)
    if not args.model:
        raise UsageError("give the model to evaluate (or --rescore RESULT.json to score recorded outputs again)")
    args.output = args.output or Path("eval")
    job = _eval_job(args)
    loading = job.loading
    generate = swift_adapter.Generator(
        args.model,
        model_type=loading.model_type,
        template=loading.template,
        torch_dtype=loading.torch_dtype,
        attn_impl=loading.attn_impl,
        batch_size=job.eval.batch_size,
        backend=job.eval.backend,
    )
    summary = evaluator.evaluate(
        args.model,
        job.benchmarks,
        args.output,
        generate,
        job.eval.judge,
        evaluator.judge_cache_path(),
        extractor_server=job.eval.extractor_server(),
        engine=generate.settings(),
        statistics=job.eval.statistics,
    )
    for name in summary["benchmarks"]:
        print((args.output / f"{name}.md").read_text())
    return 0


# -- compare ------------------------------------------------------------------------------------------------------


def _compare_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "compare",
        help="B against A on the same benchmark: each metric's difference with its paired bootstrap interval, and "
        "McNemar's exact test for multiple choice",
    )
    where = "a result file (<benchmark>.json), an evaluation folder, a stage folder or a run folder (its last stage)"
    p.add_argument("a", type=Path, help=f"A: {where}")
    p.add_argument("b", type=Path, help="B: the same kinds of path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_compare)


def evaluation_target(path: Path) -> Path:
    """A result file or evaluation folder as it is; a stage folder's ``eval/``; a run folder's last evaluated stage."""
    if path.is_dir() and (path / manifest.FILE).is_file():
        run = RunManifest.read(path / manifest.FILE)
        done = [s.eval.dir for s in run.stages if s.eval is not None and s.eval.status == "done"]
        if not done:
            raise RunError(f"{path}: no stage of this run has a finished evaluation")
        return Path(done[-1])
    if path.is_dir() and not (path / evaluator.SUMMARY).is_file() and (path / "eval").is_dir():
        return path / "eval"
    return path


def _compare(args: argparse.Namespace) -> int:
    comparisons = compare.compare_paths(evaluation_target(args.a), evaluation_target(args.b))
    print(json.dumps([c.to_json() for c in comparisons], indent=2) if args.json else compare.render(comparisons))
    return 0


# -- export, report, tiny-model -----------------------------------------------------------------------------------


def _export_parser(sub: Subparsers) -> None:
    ex = sub.add_parser("export", help="export a run/stage/checkpoint as a verified transformers model folder")
    ex.add_argument("source", type=Path, help="run folder, stage folder or engine checkpoint")
    ex.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        type=Path,
        required=True,
        help="folder to write (must not exist, see --overwrite)",
    )
    ex.add_argument("--push-to-hub", metavar="REPO_ID", help="upload to this hub repo (token: $HF_TOKEN)")
    ex.add_argument("--private", action="store_true", help="create the hub repo private")
    ex.add_argument("--dry-run", action="store_true", help="export and verify in a temporary folder; list the files")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    ex.add_argument(
        "--consolidate",
        choices=["auto", "zero"],
        default="auto",
        help="'zero': rebuild fp32 weights from the ZeRO shards even when 16-bit weights were saved",
    )
    ex.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    ex.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| of the reload check")
    ex.add_argument("--license", default="other", help="hub license id for the model card (set it!)")
    ex.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="HUB_ID",
        help="a training dataset's hub id for the model card metadata (repeatable)",
    )
    ex.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    result = export.export(
        args.source,
        args.output,
        max_shard_size=args.max_shard_size,
        consolidate=args.consolidate,
        tolerance=args.tolerance,
        push_to_hub=args.push_to_hub,
        private=args.private,
        dry_run=args.dry_run,
        overwrite=args.overwrite,
        license=args.license,
        datasets=args.dataset,
    )
    if args.dry_run:
        target = f"hub repo {args.push_to_hub}" if args.push_to_hub else str(args.output)
        print(f"dry run: would write {len(result.files)} file(s) to {target}:")
        print("\n".join(f"  {name}  {size / 1e6:.1f} MB" for name, size in result.files))
    return 0


def _report_parser(sub: Subparsers) -> None:
    rep = sub.add_parser("report", help="summarise a run (finished, running or crashed): markdown and plots")
    rep.add_argument("run_dir", type=Path, help="the run's output folder")
    rep.add_argument(
        "--output-dir", "--output", dest="output", type=Path, help="where to write (default RUN_DIR/report)"
    )
    rep.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    print(report.write_report(args.run_dir, args.output))
    return 0


def _tiny_model_parser(sub: Subparsers) -> None:
    tiny = sub.add_parser("tiny-model", help="build (or reuse) the offline tiny Qwen2.5-VL and print its path")
    tiny.add_argument(
        "--output-dir", "--output", dest="output", type=Path, help="folder to build into (default: the cache)"
    )
    tiny.set_defaults(handler=_tiny_model)


def _tiny_model(args: argparse.Namespace) -> int:
    print(tiny_model.ensure(args.output))
    return 0
