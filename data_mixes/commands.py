"""``spinegpt data convert | build | distill``: the data verbs (``data audit`` reads a curriculum:
``train/commands.py``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spinegpt.data_mixes import build, distill, mixes, readers, rows, sources
from spinegpt.data_mixes.chains import check_template
from spinegpt.data_mixes.mixes import Filters
from spinegpt.data_mixes.records import REASONING_STYLES, SPLITS, Bad
from spinegpt.data_mixes.rows import DataError
from spinegpt.data_mixes.stage_data import resolve_data_root
from spinegpt.errors import UsageError
from spinegpt.eval_hooks.config import JudgeConfig
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
    _register_distill(cmds)
    return cmds


def _register_distill(cmds: argparse._SubParsersAction) -> None:
    dis = cmds.add_parser(
        "distill",
        help="long reasoning chains for stage 2: a teacher model answers selected multiple-choice and open-ended "
        "SpineMed items step by step; a chain is kept only if its answer is verified",
        description="Resumable: rerun the same command after any stop. Output: DIR/chains.jsonl (SpineMed items, "
        "task reasoning), DIR/rejected.jsonl (with reasons), DIR/manifest.json.",
    )
    dis.add_argument("source", help="a SpineMed source of sources.yaml (e.g. spinemed, under --data-root) or a file")
    dis.add_argument("--teacher-url", required=True, help="the teacher's OpenAI-compatible API root (.../v1)")
    dis.add_argument("--teacher-model", required=True, help="the teacher's model name on that server")
    dis.add_argument(
        "--teacher-api-key-env",
        default=distill.TEACHER_KEY_ENV,
        metavar="VAR",
        help=f"variable holding the teacher's key (default {distill.TEACHER_KEY_ENV}; OPENAI_API_KEY is never read "
        "unless named here)",
    )
    dis.add_argument("--output-dir", type=Path, required=True, help="folder of chains.jsonl, rejected.jsonl, manifest")
    dis.add_argument(
        "--data-root", help="root of the datasets (default $SPINEGPT_DATA_ROOT); pointers resolve under it"
    )
    dis.add_argument("--image-root", type=Path, help="folder relative image paths start from (default: the source's)")
    for name, what in (
        ("split", "non_spine, spine"),
        ("category", "orthopedic class"),
        ("subspecialty", "spine subspecialty"),
        ("task", "mcq, open_qa, vqa (default mcq,open_qa)"),
        ("language", "en, zh"),
    ):
        dis.add_argument(f"--{name}", action="append", default=[], help=f"keep only these ({what}); repeat or commas")
    amount = dis.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, help="distil this many of the qualifying items (seeded draw)")
    amount.add_argument("--fraction", type=float, help="distil this fraction of the qualifying items")
    dis.add_argument("--seed", type=int, default=42, help="seed of the draw")
    dis.add_argument("--text-only", action="store_true", help="leave out items with images (a text-only teacher)")
    teacher = distill.Teacher.model_fields
    dis.add_argument("--samples", type=int, default=teacher["samples"].default, help="chains asked per item")
    dis.add_argument("--temperature", type=float, default=teacher["temperature"].default)
    dis.add_argument("--max-tokens", type=int, default=teacher["max_tokens"].default, help="token limit of a reply")
    dis.add_argument(
        "--prompt-template",
        type=Path,
        help="a text file with {question} where the item's question goes (default: asks for ## Thinking and "
        "## Final Response); its sha256 is recorded",
    )
    judge = dis.add_mutually_exclusive_group()
    judge.add_argument("--judge-url", help="OpenAI-compatible API root of the model judging open-ended answers")
    judge.add_argument(
        "--teacher-judges", action="store_true", help="the teacher decides whether open-ended answers agree"
    )
    dis.add_argument("--judge-model", help="the judge's model name (with --judge-url)")
    dis.add_argument("--judge-api-key-env", default="SPINEGPT_JUDGE_API_KEY", metavar="VAR")
    dis.add_argument("--concurrency", type=int, default=teacher["concurrency"].default, help="requests in flight")
    dis.add_argument(
        "--timeout", type=float, default=teacher["timeout_s"].default, help="total seconds one request may take"
    )
    dis.add_argument("--max-attempts", type=int, default=teacher["max_attempts"].default, help="tries per request")
    dis.add_argument("--backoff", type=float, default=teacher["backoff_s"].default, help="first retry delay (s)")
    dis.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=teacher["max_consecutive_failures"].default,
        help="requests failing in a row (after retries) that stop the run",
    )
    dis.add_argument(
        "--min-reasoning-chars",
        type=int,
        default=distill.DistillSettings.model_fields["min_reasoning_chars"].default,
        help="a shorter chain counts as no separable reasoning",
    )
    dis.add_argument("--on-error", choices=["error", "skip"], default="error", help="bad source items: stop, or skip")
    dis.add_argument("--no-cache", action="store_true", help="neither read nor write the reply cache")
    dis.set_defaults(handler=_distill)


def _values(given: list[str]) -> list[str] | None:
    found = [v.strip() for item in given for v in item.split(",") if v.strip()]
    return found or None


def _distill(args: argparse.Namespace) -> int:
    if args.judge_url and not args.judge_model:
        raise UsageError("--judge-url needs --judge-model")
    if args.judge_model and not args.judge_url:
        raise UsageError("--judge-model needs --judge-url")
    template = distill.DEFAULT_TEMPLATE
    if args.prompt_template is not None:
        try:
            template = check_template(args.prompt_template.read_text(encoding="utf-8"), str(args.prompt_template))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--prompt-template: {exc}") from None
    try:
        settings = distill.DistillSettings(
            teacher=distill.Teacher(
                base_url=args.teacher_url,
                model=args.teacher_model,
                api_key_env=args.teacher_api_key_env,
                samples=args.samples,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                concurrency=args.concurrency,
                timeout_s=args.timeout,
                max_attempts=args.max_attempts,
                backoff_s=args.backoff,
                max_consecutive_failures=args.max_consecutive_failures,
            ),
            judge=JudgeConfig(base_url=args.judge_url, model=args.judge_model, api_key_env=args.judge_api_key_env)
            if args.judge_url
            else None,
            teacher_judges=args.teacher_judges,
            selection=distill.Selection(
                filters=Filters.model_validate(
                    {k: _values(getattr(args, k)) for k in ("split", "category", "subspecialty", "task", "language")}
                ),
                count=args.count,
                fraction=args.fraction,
                seed=args.seed,
                text_only=args.text_only,
            ),
            template=template,
            template_file=str(args.prompt_template.resolve()) if args.prompt_template else None,
            min_reasoning_chars=args.min_reasoning_chars,
            on_error=args.on_error,
            cache=not args.no_cache,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'filters') or 'options'}: "
            + str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise UsageError(f"distill: {problems}") from None
    data_root = resolve_data_root(args.data_root, Path.cwd()) if args.data_root or _data_root_set() else None
    source = distill.source_input(args.source, data_root, args.image_root)
    try:
        result = distill.distill(settings, source, args.output_dir)
    except KeyboardInterrupt:
        print(
            f"interrupted; everything done is kept in {args.output_dir}: run the same command to continue",
            file=sys.stderr,
        )
        return 130
    counts = result.manifest["counts"]
    print(json.dumps({"output": str(result.output), **counts}, indent=2))
    return 0


def _data_root_set() -> bool:
    return bool(os.environ.get("SPINEGPT_DATA_ROOT"))


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
    results = build.build_many(jobs, root, lock=True)
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
