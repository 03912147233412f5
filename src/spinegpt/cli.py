"""The ``spinegpt`` command.

    spinegpt validate CURRICULUM.yaml [key=value ...]        check a curriculum, report every error at once
    spinegpt plan     CURRICULUM.yaml [key=value ...] [--json] [--nproc N] [--output-dir DIR]
    spinegpt run      CURRICULUM.yaml [key=value ...] [--nproc N] [--output-dir DIR] [--resume] [--until STAGE]
    spinegpt tiny-model [--output DIR]                       build the offline tiny Qwen2.5-VL, print its path

``key=value`` overrides any curriculum key (YAML values; stages by name or index):
``stages.specialise.max_steps=4``, ``stages[0].learning_rate=2e-5``, ``seed=7``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _curriculum_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("curriculum", type=Path, help="curriculum YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override curriculum keys")


def _launch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", type=Path, help="run directory (default: the curriculum's output_dir)")
    parser.add_argument("--nproc", type=int, help="processes per node (default: $NPROC_PER_NODE or 1)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinegpt", description="SpineGPT curriculum training")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check a curriculum and report every error")
    _curriculum_args(validate)

    plan = sub.add_parser("plan", help="show what a curriculum will run, stage by stage (no side effects)")
    _curriculum_args(plan)
    _launch_args(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")

    run = sub.add_parser("run", help="train the curriculum's stages in order")
    _curriculum_args(run)
    _launch_args(run)
    run.add_argument("--resume", action="store_true", help="skip finished stages, continue an interrupted one")
    run.add_argument("--until", metavar="STAGE", help="stop after this stage (continue later with --resume)")

    tiny = sub.add_parser("tiny-model", help="build (or reuse) the offline tiny Qwen2.5-VL and print its path")
    tiny.add_argument("--output", type=Path, help="folder to build into (default: the cache)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Imports stay inside the commands: `spinegpt --help` must not pay for torch.
    from spinegpt.data_mixes.prepare import DataError
    from spinegpt.train import curriculum, runner
    from spinegpt.train.plan import build, launch_from_env

    try:
        if args.command == "tiny-model":
            from spinegpt.testing import tiny_model

            print(tiny_model.ensure(args.output))
            return 0
        loaded = curriculum.load(args.curriculum, args.overrides)
        if args.command == "validate":
            print(f"{args.curriculum}: ok ({len(loaded.curriculum.stages)} stage(s))")
            return 0
        built = build(loaded, args.output_dir, launch_from_env(args.nproc))
        if args.command == "plan":
            print(json.dumps(built.to_json(), indent=2) if args.json else built.render())
            return 0
        runner.Runner(built, resume=args.resume, overrides=tuple(args.overrides), until=args.until).run()
        return 0
    except curriculum.CurriculumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (runner.RunError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
