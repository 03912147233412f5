"""The ``spinegpt`` command: each package registers its verbs (``train/commands.py``, ``data_mixes/commands.py``);
this module only builds the parser and dispatches.

    spinegpt validate CURRICULUM.yaml [key=value ...]        check a curriculum, report every error at once
    spinegpt plan     CURRICULUM.yaml [key=value ...] [--json] [--nproc N] [--memory] [--audit]
    spinegpt run      CURRICULUM.yaml [key=value ...] [--nproc N] [--output-dir DIR] [--resume] [--until STAGE]
    spinegpt eval     MODEL --benchmark KIND --data FILE [--judge-url URL --judge-model M] [--output-dir DIR]
    spinegpt eval     MODEL --config EVAL.json [--output-dir DIR]   (what `spinegpt run` calls after each stage)
    spinegpt eval     --rescore RESULT.json --output-dir DIR   score recorded outputs again, without a model
    spinegpt compare  A B [--json]                          B against A on the same items: paired intervals, McNemar
    spinegpt export   RUN|STAGE|CHECKPOINT --output-dir DIR [--push-to-hub REPO_ID] [--private] [--dry-run]
    spinegpt report   RUN_DIR [--output-dir DIR]             markdown + plots of a run, finished or not
    spinegpt sweep    SWEEP.yaml|DIR [key=value ...] [--only ROWS] [--launcher local|slurm] [--dry-run]
                                                             ablation rows trained, evaluated, tabulated
    spinegpt data convert --source SRC INPUT --output OUT.jsonl [--image-root DIR]   engine rows from one file
    spinegpt data build   MIX [MIX ...] --output-dir DIR [--data-root DIR] [--seed N]   shards + manifest.json
    spinegpt data distill SOURCE --teacher-url URL --teacher-model NAME --output-dir DIR   verified reasoning chains
    spinegpt data audit   CURRICULUM.yaml [key=value ...] [--stage S] [--json]   token counts vs max_length
    spinegpt tiny-model [--output-dir DIR]                   build the offline tiny Qwen2.5-VL, print its path

``key=value`` overrides any curriculum key (YAML values; stages by name or index):
``stages.specialise.max_steps=4``, ``stages[0].learning_rate=2e-5``, ``seed=7``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from spinegpt import log, paths, stopping
from spinegpt.data_mixes import commands as data_commands
from spinegpt.errors import Terminated, UserError, os_error_message
from spinegpt.train import commands as train_commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinegpt", description="SpineGPT curriculum training")
    sub = parser.add_subparsers(dest="command", required=True)
    train_commands.register(sub)
    train_commands.register_data(data_commands.register(sub))
    _loudness(parser, top=True)
    return parser


def _loudness(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-q`` / ``-v`` before or after the verb (``spinegpt -q run ...`` and ``spinegpt run ... -q`` alike)."""
    unset = False if top else argparse.SUPPRESS  # a verb's parser must not reset what was given before the verb
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", default=unset, help="only warnings and errors (stderr)")
    group.add_argument("-v", "--verbose", action="store_true", default=unset, help="say more, for debugging")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _loudness(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come anywhere after the curriculum, also after options (as launchers pass them):
    # argparse stops collecting positionals at the first option, so the rest arrive as unknown arguments.
    args, rest = parser.parse_known_args(argv)
    if rest:
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in rest):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides = [*args.overrides, *rest]
    log.setup(-1 if args.quiet else 1 if args.verbose else 0)
    stopping.on_sigterm_raise()
    extensions = paths.torch_extensions()
    if extensions is not None:
        # Set here, for this process (preflight builds CPU Adam) and every child (the engine's ranks) alike.
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions))
    try:
        code: int = args.handler(args)
        return code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the machine refused a read or write (a full disk, a read-only folder): not a bug
        logging.getLogger(__name__).debug("the error's traceback (-v shows it)", exc_info=True)
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    except Terminated:
        print("stopped by SIGTERM; continue with --resume", file=sys.stderr)
        return Terminated.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
