"""The ``spinegpt`` command.

    spinegpt validate CURRICULUM.yaml [key=value ...]        check a curriculum, report every error at once
    spinegpt plan     CURRICULUM.yaml [key=value ...] [--json] [--nproc N] [--memory] [--audit]
    spinegpt run      CURRICULUM.yaml [key=value ...] [--nproc N] [--output-dir DIR] [--resume] [--until STAGE]
    spinegpt eval     MODEL --benchmark KIND --data FILE [--judge-url URL --judge-model M] [--output DIR]
    spinegpt eval     MODEL --config EVAL.json [--output DIR]   (what `spinegpt run` calls after each stage)
    spinegpt export   RUN|STAGE|CHECKPOINT --output DIR [--push-to-hub REPO_ID] [--private] [--dry-run]
    spinegpt report   RUN_DIR [--output DIR]                 markdown + plots of a run, finished or not
    spinegpt sweep    SWEEP.yaml|DIR [key=value ...] [--only ROWS] [--launcher local|slurm] [--dry-run]
                                                             ablation rows trained, evaluated, tabulated
    spinegpt data convert --source SRC INPUT --output OUT.jsonl [--image-root DIR]   engine rows from one file
    spinegpt data build   MIX --output DIR [--data-root DIR] [--seed N] [--splits ...]  shards + manifest.json
    spinegpt data audit   CURRICULUM.yaml [key=value ...] [--stage S] [--json]   token counts vs max_length
    spinegpt tiny-model [--output DIR]                       build the offline tiny Qwen2.5-VL, print its path

``key=value`` overrides any curriculum key (YAML values; stages by name or index):
``stages.specialise.max_steps=4``, ``stages[0].learning_rate=2e-5``, ``seed=7``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _curriculum_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("curriculum", type=Path, help="curriculum YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override curriculum keys")


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinegpt", description="SpineGPT curriculum training")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check a curriculum and report every error")
    _curriculum_args(validate)

    sweep = sub.add_parser("sweep", help="train and evaluate the rows of an ablation sweep, rebuild its table")
    sweep.add_argument("sweep", type=Path, help="sweep YAML, or a folder holding sweep.yaml")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="override keys of every row's curriculum")
    sweep.add_argument("--output-dir", type=Path, help="sweep folder (default outputs/sweeps/<name>)")
    sweep.add_argument("--only", help="comma-separated row names or numbers (1-based)")
    sweep.add_argument("--launcher", choices=["local", "slurm"], default="local",
                       help="local: rows one after another here; slurm: one sbatch job per unfinished row")  # fmt: skip
    sweep.add_argument("--dry-run", action="store_true", help="show each row's stages and splits, run nothing")
    sweep.add_argument("--compare-paper", action="store_true", help="put the paper's Table 7 beside our figures")
    sweep.add_argument("--nproc", type=int, help="processes per node for each row (default: $NPROC_PER_NODE or 1)")
    sweep.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                       help="extra sbatch argument per row job (repeatable): --sbatch-arg=--nodes=2")  # fmt: skip

    plan = sub.add_parser("plan", help="show what a curriculum will run, stage by stage (no side effects but --audit)")
    _curriculum_args(plan)
    _launch_args(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--commands", action="store_true", help="only this node's engine command per stage")
    plan.add_argument("--memory", action="store_true", help="predict each stage's peak GPU memory, term by term")
    plan.add_argument(
        "--audit",
        action="store_true",
        help="build (or reuse) each stage's data and count its tokens exactly: totals, percentiles, records over "
        "max_length, optimizer steps for the stage's global batch",
    )
    plan.add_argument("--gpus", type=int, help="GPUs per node for --memory (default: --nproc, else 8)")
    plan.add_argument("--gpu-mem-gb", type=float, default=80.0, help="memory per GPU for --memory (default 80)")
    plan.add_argument("--nodes", type=int, help="nodes for --memory (default: $NNODES or 1)")

    run = sub.add_parser("run", help="train the curriculum's stages in order")
    _curriculum_args(run)
    _launch_args(run)
    run.add_argument("--resume", action="store_true", help="skip finished stages, continue an interrupted one")
    run.add_argument("--until", metavar="STAGE", help="stop after this stage (continue later with --resume)")

    ev = sub.add_parser("eval", help="evaluate a model folder on a benchmark (SpineBench, MM'25 SpineBench)")
    ev.add_argument("model", help="model folder or hub id")
    ev.add_argument("--config", type=Path, help="resolved eval settings (JSON), as written by `spinegpt run`")
    ev.add_argument("--benchmark", choices=["spinebench", "spinebench_mm25"], help="benchmark kind")
    ev.add_argument("--data", type=Path, help="benchmark file")
    ev.add_argument("--name", help="result name (default: the kind)")
    ev.add_argument("--image-root", type=Path, help="folder the benchmark's image paths start from")
    ev.add_argument("--limit", type=int, help="first N items only")
    ev.add_argument("--max-new-tokens", type=int, default=1024)
    ev.add_argument("--report-max-new-tokens", type=int, default=2048)
    ev.add_argument("--judge-url", help="OpenAI-compatible API root for report grading")
    ev.add_argument("--judge-model", help="judge model name on that server")
    ev.add_argument("--judge-key-env", default="SPINEGPT_JUDGE_API_KEY", help="env var holding the judge API key")
    ev.add_argument("--backend", choices=["auto", "transformers", "vllm"], default="auto")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--torch-dtype", choices=["bfloat16", "float16", "float32"], help="default: bf16 on GPU, else fp32")
    ev.add_argument("--attn-impl", choices=["flash_attn", "sdpa", "eager"], default="sdpa")
    ev.add_argument("--output", type=Path, default=Path("eval"), help="results folder (default ./eval)")

    ex = sub.add_parser("export", help="export a run/stage/checkpoint as a verified transformers model folder")
    ex.add_argument("source", type=Path, help="run folder, stage folder or engine checkpoint")
    ex.add_argument("--output", type=Path, required=True, help="folder to write (must not exist, see --overwrite)")
    ex.add_argument("--push-to-hub", metavar="REPO_ID", help="upload to this hub repo (token: $HF_TOKEN)")
    ex.add_argument("--private", action="store_true", help="create the hub repo private")
    ex.add_argument("--dry-run", action="store_true", help="export and verify in a temporary folder; list the files")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --output")
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

    rep = sub.add_parser("report", help="summarise a run (finished, running or crashed): markdown and plots")
    rep.add_argument("run_dir", type=Path, help="the run's output folder")
    rep.add_argument("--output", type=Path, help="where to write (default RUN_DIR/report)")

    from spinegpt.data_mixes import commands as data_commands

    data_commands.add_parser(sub)

    tiny = sub.add_parser("tiny-model", help="build (or reuse) the offline tiny Qwen2.5-VL and print its path")
    tiny.add_argument("--output", type=Path, help="folder to build into (default: the cache)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come anywhere after the curriculum, also after options (as launchers pass them):
    # argparse stops collecting positionals at the first option, so the rest arrive as unknown arguments.
    args, rest = parser.parse_known_args(argv)
    if rest:
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in rest):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides = [*args.overrides, *rest]
    # Imports stay inside the commands: `spinegpt --help` must not pay for torch.
    from spinegpt.data_mixes.prepare import DataError
    from spinegpt.eval_hooks.benchmarks import BenchmarkError
    from spinegpt.train import curriculum, runner
    from spinegpt.train.export import ExportError
    from spinegpt.train.plan import build, launch_from_env

    try:
        if args.command == "tiny-model":
            from spinegpt.testing import tiny_model

            print(tiny_model.ensure(args.output))
            return 0
        if args.command == "eval":
            return _eval(args)
        if args.command == "data":
            from spinegpt.data_mixes import commands as data_commands

            return data_commands.run(args)
        if args.command == "sweep":
            from spinegpt.train import sweep

            try:
                return sweep.command(args)
            except sweep.SweepError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        if args.command == "report":
            from spinegpt.train import report

            print(report.build(args.run_dir, args.output))
            return 0
        if args.command == "export":
            from spinegpt.train import export

            export.export(
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
            return 0
        loaded = curriculum.load(args.curriculum, args.overrides)
        if args.command == "validate":
            print(f"{args.curriculum}: ok ({len(loaded.curriculum.stages)} stage(s))")
            return 0
        try:
            launch = launch_from_env(args.nproc, args.launcher, args.hostfile, args.bind_cores)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        built = build(loaded, args.output_dir, launch)
        if args.command == "plan":
            return _plan(args, loaded, built, launch)
        runner.Runner(built, resume=args.resume, overrides=tuple(args.overrides), until=args.until).run()
        return 0
    except curriculum.CurriculumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (runner.RunError, DataError, FileNotFoundError, BenchmarkError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


def _plan(args: argparse.Namespace, loaded: Any, built: Any, launch: Any) -> int:
    if args.commands:
        print("\n".join(f"{s.stage.name}: {shlex.join(s.command)}" for s in built.stages))
        return 0
    as_json, text = built.to_json(), [built.render()]
    if args.memory:
        from spinegpt.train import memory

        gpus = args.gpus or args.nproc or 8
        nodes = args.nodes or launch.nnodes
        reports = [
            memory.stage_report(loaded.curriculum, s.stage, loaded.base_dir, gpus, nodes, args.gpu_mem_gb)
            for s in built.stages
        ]
        as_json["memory"] = reports
        text.append(memory.render(reports, gpus, nodes))
    if args.audit:
        from spinegpt.data_mixes import audit

        audits = audit.audit_curriculum(loaded, launch.world_size)
        as_json["audit"] = [a.to_json() for a in audits]
        text.append(f"Data audit (exact tokens; {launch.world_size} rank(s)):\n" + audit.render(audits))
    print(json.dumps(as_json, indent=2) if args.json else "\n\n".join(text))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from spinegpt.eval_hooks import hooks
    from spinegpt.eval_hooks.judge import JudgeConfig
    from spinegpt.train import swift_adapter

    cache = hooks.judge_cache_path()
    if args.config:
        settings = hooks.EvalSettings.from_json(json.loads(args.config.read_text()), cache_path=cache)
    else:
        if not args.benchmark or not args.data:
            print("error: give --config, or --benchmark and --data", file=sys.stderr)
            return 2
        if bool(args.judge_url) != bool(args.judge_model):
            print("error: --judge-url and --judge-model go together", file=sys.stderr)
            return 2
        import torch

        run = hooks.BenchmarkRun(
            name=args.name or args.benchmark,
            kind=args.benchmark,
            path=args.data.resolve(),
            image_root=args.image_root.resolve() if args.image_root else None,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            report_max_new_tokens=args.report_max_new_tokens,
        )
        judge = (
            JudgeConfig(
                base_url=args.judge_url, model=args.judge_model, api_key_env=args.judge_key_env, cache_path=cache
            )
            if args.judge_url
            else None
        )
        dtype = args.torch_dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
        settings = hooks.EvalSettings(
            runs=[run],
            judge=judge,
            torch_dtype=dtype,
            attn_impl=args.attn_impl,
            backend=args.backend,
            batch_size=args.batch_size,
        )

    generate = swift_adapter.Generator(
        args.model,
        model_type=settings.model_type,
        template=settings.template,
        torch_dtype=settings.torch_dtype,
        attn_impl=settings.attn_impl,
        batch_size=settings.batch_size,
        backend=settings.backend,
    )
    hooks.evaluate(args.model, settings.runs, args.output, generate, settings.judge)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
