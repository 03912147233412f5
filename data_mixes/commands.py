"""``spinegpt data convert | build``: the data verbs (``data audit`` reads a curriculum: ``train/commands.py``)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from spinegpt.data_mixes import build, mixes, readers, rows, sources
from spinegpt.data_mixes.records import REASONING_STYLES, SPLITS, Bad
from spinegpt.data_mixes.rows import DataError
from spinegpt.data_mixes.stage_data import resolve_data_root
from spinegpt.errors import UsageError
from spinegpt.files import first_of


def register(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds ``data`` and its verbs; returns the verb list, for verbs other packages add (``data audit``)."""
    data = sub.add_parser("data", help="convert upstream datasets, build data mixes, audit token lengths")
    cmds = data.add_subparsers(dest="data_command", required=True)

    conv = cmds.add_parser("convert", help="write engine rows (messages + images) from one upstream file")
    conv.add_argument("--source", required=True, choices=sorted(sources.READERS), help="the file's dataset")
    conv.add_argument("input", type=Path, help="JSON / JSONL / parquet file in the dataset's own schema")
    conv.add_argument("--output", type=Path, required=True, help="JSONL file to write")
    conv.add_argument("--image-root", type=Path, help="folder relative image paths start from (default: INPUT's)")
    conv.add_argument(
        "--data-root",
        type=Path,
        help="the data root a curriculum's data_root names (SpineMed pointers: its open_datasets/)",
    )
    conv.add_argument("--reasoning-style", choices=REASONING_STYLES, default="thinking_sections")
    conv.add_argument("--volume-slices", type=int, default=25, help="slices sampled from a 3-D volume pointer")
    conv.add_argument("--on-error", choices=["error", "skip"], default="error", help="stop on bad items, or skip them")

    bld = cmds.add_parser(
        "build",
        help="build mixes (data_mixes/<name>.yaml or paths) into engine JSONL shards; several mixes read each "
        "source they share once",
    )
    bld.add_argument("mix", nargs="+", help="mix name or YAML path (several: each into OUTPUT_DIR/<mix name>)")
    bld.add_argument(
        "--output-dir",
        "--output",
        dest="output",
        type=Path,
        required=True,
        help="folder to write (shards + manifest.json); with several mixes, the folder holding one per mix",
    )
    bld.add_argument("--data-root", help="root of the upstream datasets (default $SPINEGPT_DATA_ROOT)")
    bld.add_argument("--seed", type=int, default=42, help="sampling seed (a mix's own `seed` wins)")
    bld.add_argument("--splits", help="comma-separated: keep only these splits (general, non_spine, spine)")
    bld.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[MIX:]COMPONENT.KEY=VALUE",
        help="change a mix (with several mixes, MIX: names which)",
    )

    conv.set_defaults(handler=_convert)
    bld.set_defaults(handler=_build)
    return cmds


def _convert(args: argparse.Namespace) -> int:
    data_root = None
    if args.data_root:
        # The same data root a curriculum's data_root names: pointers resolve under its datasets folder
        # (sources.yaml's datasets_root for this reader, open_datasets/), as `data build` resolves them.
        spec = next((s for s in mixes.shipped_sources().values() if s.reader == args.source), None)
        datasets = spec.datasets_root if spec and spec.datasets_root else None
        data_root = (args.data_root / datasets if datasets else args.data_root).resolve()
    options = readers.ReadOptions(
        image_root=args.image_root.resolve() if args.image_root else None,
        data_root=data_root,
        reasoning_style=args.reasoning_style,
        volume_slices=args.volume_slices,
    )
    bad: list[Bad] = []
    skipped: Counter[str] = Counter()
    written = 0
    tmp = args.output.with_name(args.output.name + ".partial")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8") as out:
        for item in sources.read(args.source, args.input, options):
            problem = item if isinstance(item, Bad) else None
            if problem is None and (why := build.check_record(item)):  # type: ignore[arg-type]
                problem = Bad(f"{item.provenance.get('file')}:{item.provenance.get('line')}", "bad conversation", why)  # type: ignore[union-attr]
            if problem is not None and problem.skip:
                skipped[problem.reason] += 1
                continue
            if problem is not None:
                bad.append(problem)
                continue
            out.write(rows.dumps(item.to_row()))  # type: ignore[union-attr]
            written += 1
    if bad and args.on_error == "error":
        tmp.unlink()
        raise DataError(f"{len(bad)} bad item(s) in {args.input} (nothing written):\n{first_of([str(b) for b in bad])}")
    tmp.replace(args.output)
    reasons = Counter(b.reason for b in bad) + skipped
    note = f"; skipped {sum(reasons.values())} ({dict(reasons)})" if reasons else ""
    print(f"{args.output}: {written} rows from {args.input}{note}")
    return 0


def _build(args: argparse.Namespace) -> int:
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r} must read component.key=value")
        if len(args.mix) > 1 and ":" not in key:
            raise UsageError(f"--set {item!r}: with several mixes, name the mix (MIX:component.key=value)")
        settings[key] = yaml.safe_load(value)
    splits = [s.strip() for s in args.splits.split(",")] if args.splits else None
    unknown = [s for s in splits or [] if s not in SPLITS]
    if unknown:
        raise UsageError(f"--splits: unknown {unknown}; use {', '.join(SPLITS)}")
    root = resolve_data_root(args.data_root, Path.cwd())
    jobs = []
    for name in args.mix:
        loaded = mixes.load(name, _settings_for(name, settings, several=len(args.mix) > 1))
        output = args.output / loaded.mix.name if len(args.mix) > 1 else args.output
        seed = args.seed if loaded.mix.seed is None else loaded.mix.seed
        jobs.append(build.BuildJob(loaded, output, seed, splits))
    if len({job.output for job in jobs}) < len(jobs):
        raise UsageError(f"two of the mixes {args.mix} have the same name: they would share an output")
    results = build.build_many(jobs, root)
    summary = [
        {"output": str(r.dir), "rows": r.rows, "sha256": r.sha256, "components": r.manifest["components"]}
        for r in results
    ]
    print(json.dumps(summary[0] if len(summary) == 1 else summary, indent=2))
    return 0


def _settings_for(mix: str, settings: dict[str, Any], several: bool) -> dict[str, Any]:
    """``--set`` values for one mix: with several mixes each key names its mix (``MIX:component.key``)."""
    if not several:
        return settings
    stem = Path(mix).stem
    return {key.partition(":")[2]: v for key, v in settings.items() if key.partition(":")[0] in (mix, stem)}
