"""Data preparation at the paper's scale on a small machine: generates full-size synthetic inputs in the upstream
schemas, builds the paper's three stage mixes with ``spinegpt data build``, then audits the paper curriculum with
``spinegpt data audit`` (exact token counts of every stage), and prints seconds, rows/s and peak RSS of each against
its target.

    python bench/data_build.py [--workdir DIR] [--scale 1.0] [--separately] [--no-audit] [--keep]

Inputs (written once into WORKDIR/inputs and reused while their parameters stay the same):
  SpineMed-450k   456,174 train items with the paper's source mix (textbook 377k, case report 61k, hospital 9.9k,
                  literature 6.5k, question bank 1.1k, open datasets 304 as metadata pointers, some to 3-D
                  volumes sampled to 25 slices) and task mix (MCQ 249k, open-ended 197k, consultation 1.1k, report
                  821, the rest long reasoning chains); 47% Spine Surgery over 14 subspecialties; 30% Chinese;
                  0.3% exact duplicates; images from a pool of small PNGs.
  PubMedVision    160,000 items (the stage samples 150,000) with 1-2 small images each.
  general text    medical-o1 en 19,704 / zh 24,772, Medical-R1-Distill 22,000, MedThoughts-8K 7,716.
  SpineBench      487 MCQ + 87 report prompts; 60 MCQ questions also sit in the training items (leaks to remove).

Build: the three mixes in one ``spinegpt data build`` process (SpineMed-450k read once for the three; source parts
read by SPINEGPT_DATA_WORKERS processes, default the CPUs); ``--separately`` also builds each mix alone, as a
curriculum's stages did before they were built together. Target: <= 60 s and <= 2 GB peak RSS on 2 cores.

Audit: ``spinegpt data audit curricula/spinegpt.yaml`` (the tiny offline model carries the real Qwen tokenizer) three
times against one cache: from scratch (builds the mixes, prepares each stage, counts), with the mixes built but no
counts cached (prepare + count: what a new tokenizer or MAX_PIXELS costs), and warm (everything cached: what
``plan --audit`` and ``run --resume`` pay again). Target for the warm re-audit: <= 30 s (most of it is preparing
the stages' files again and importing transformers; the counts themselves come back in about a second).

Peak RSS is the command's process and its worker processes together, sampled every 0.2 s from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIXES = ("stage1_foundation", "stage2_spine", "stage3_reports")
TARGET_S, TARGET_RSS_MB, TARGET_WARM_AUDIT_S = 60.0, 2048.0, 30.0
GENERATOR_VERSION = 1

SPINEMED_TRAIN = 456_174
SOURCE_TYPES = {
    "literature": 6_467,
    "textbook": 377_415,
    "case_report": 61_554,
    "question_bank": 1_090,
    "open_dataset": 304,
    "hospital": 9_918,
}  # SPEC §2, train + test
TASKS = {"mcq": 249_276, "open_qa": 197_413, "consultation": 1_138, "report": 821}  # the rest: reasoning
PUBMEDVISION, SPINEBENCH_MCQ, SPINEBENCH_REPORTS, LEAKS = 160_000, 487, 87, 60
GENERAL = {"o1_en": 19_704, "o1_zh": 24_772, "r1": 22_000, "medthoughts": 7_716}
IMAGE_POOL, VOLUME_CASES, VOLUME_SLICES = 3_000, 24, 40

WORDS = str.split(
    "lumbar cervical thoracic disc herniation stenosis fusion laminectomy vertebra pedicle screw fracture "
    "scoliosis kyphosis radiculopathy myelopathy fixation decompression sagittal coronal alignment foramen "
    "facet osteophyte canal cord nerve root compression instability spondylolisthesis osteoporosis implant "
    "patient pain weakness numbness reflex gait imaging MRI CT radiograph signal intensity level segment "
    "surgery conservative therapy outcome risk complication infection tumour biopsy hip knee ankle wrist "
    "shoulder tendon ligament cartilage arthroplasty osteotomy the of with and in a at is shows"
)
ZH = str.split("腰椎 颈椎 椎间盘 突出 狭窄 融合 骨折 侧弯 后凸 神经 压迫 手术 保守 治疗 疼痛 麻木 影像 患者 节段 风险")


def scaled(counts: dict[str, int], total: int) -> dict[str, int]:
    """``counts`` rescaled to sum to ``total`` (largest remainder), so shares are the paper's."""
    whole = sum(counts.values())
    exact = {k: v * total / whole for k, v in counts.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: total - sum(out.values())]:
        out[k] += 1
    return out


def shuffled_labels(counts: dict[str, int], rng: random.Random) -> list[str]:
    labels = [k for k, n in counts.items() for _ in range(n)]
    rng.shuffle(labels)
    return labels


class Text:
    """Cheap varied text: sentences drawn from a fixed pool (generation must not dominate the benchmark)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.en = [" ".join(rng.choices(WORDS, k=rng.randint(8, 20))).capitalize() + "." for _ in range(4000)]
        self.zh = ["".join(rng.choices(ZH, k=rng.randint(6, 14))) + "。" for _ in range(2000)]

    def __call__(self, sentences: int, zh: bool = False) -> str:
        pool = self.zh if zh else self.en
        return ("" if zh else " ").join(self.rng.choices(pool, k=sentences))


def _progress(what: str, done: int, total: int) -> None:
    if done % 50_000 == 0 or done == total:
        print(f"  {what}: {done:,}/{total:,}", flush=True)


def write_images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        side = 28 * (2 + i % 7)  # 56..224 px: small files, a spread of visual-token counts
        Image.new("RGB", (side, side + 28 * (i % 3)), (i % 251, 40, 90)).save(folder / name, format="PNG")


def generate(inputs: Path, scale: float, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    text = Text(rng)
    n_spinemed = round(SPINEMED_TRAIN * scale)
    print(f"generating inputs in {inputs} (scale {scale})", flush=True)

    # Image pools, and open-dataset cases with one file each and a 40-slice CT volume.
    hospital_images = [f"img-{i:05d}.png" for i in range(IMAGE_POOL)]
    write_images(inputs / "SpineMed-450k" / "images", hospital_images)
    for c in range(VOLUME_CASES):
        case = inputs / "open_datasets" / ("VerSe" if c % 2 else "Spark") / f"case-{c:03d}"
        write_images(case / "ct", [f"slice-{s:03d}.png" for s in range(VOLUME_SLICES)])
        write_images(case, ["sagittal.png"])
    pmv_images = [f"pmc-{i:05d}.png" for i in range(IMAGE_POOL)]
    write_images(inputs / "PubMedVision" / "images", pmv_images)

    sources = shuffled_labels(scaled(SOURCE_TYPES, n_spinemed), rng)
    task_counts = scaled(TASKS, round(sum(TASKS.values()) * n_spinemed / sum(SOURCE_TYPES.values())))
    task_counts["reasoning"] = n_spinemed - sum(task_counts.values())
    tasks = shuffled_labels(task_counts, rng)
    from spinegpt.data_mixes.records import CATEGORIES, SPINE_CATEGORY, SUBSPECIALTIES

    others = [c for c in CATEGORIES if c != SPINE_CATEGORY]
    bench_questions: list[str] = []
    earlier: list[dict[str, Any]] = []
    path = inputs / "SpineMed-450k" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n_spinemed):
            source, task = sources[i], tasks[i]
            zh = rng.random() < 0.3
            spine = rng.random() < 0.47
            question = f"[{i}] " + text(rng.randint(2, 5), zh)
            if task == "mcq":
                question += "".join(f"\n{o}. {text(1, zh)}" for o in "ABCD")
            answer = text(rng.randint(2, 8), zh)
            images: list[Any] = []
            if source == "hospital" or (source == "case_report" and rng.random() < 0.5) or rng.random() < 0.08:
                images = [f"images/{rng.choice(hospital_images)}" for _ in range(rng.choice((1, 1, 1, 2, 3)))]
            elif source == "open_dataset":
                c = rng.randrange(VOLUME_CASES)
                dataset, case = ("VerSe" if c % 2 else "Spark"), f"case-{c:03d}"
                images = [
                    {"dataset": dataset, "case": case, "volume": "ct"}
                    if rng.random() < 0.5
                    else {"dataset": dataset, "case": case, "file": "sagittal.png"}
                ]
            messages = [{"role": "user", "content": "<image>" * len(images) + question}]
            item: dict[str, Any] = {
                "id": f"sm-{i:06d}",
                "language": "zh" if zh else "en",
                "category": SPINE_CATEGORY if spine else rng.choice(others),
                "subspecialty": rng.choice(SUBSPECIALTIES) if spine else None,
                "task": task,
                "images": images,
                "provenance": {"source_type": source, "case_id": f"c{i}", "book": "Synthetic"},
            }
            if task == "consultation":
                for _ in range(2):
                    messages += [
                        {"role": "assistant", "content": text(3, zh)},
                        {"role": "user", "content": text(2, zh)},
                    ]
            if task == "report":
                item["report"] = {
                    k: text(3, zh)
                    for k in (
                        "imaging_findings",
                        "diagnosis",
                        "treatment",
                        "risk_prognosis",
                        "postoperative",
                        "rationale_disclaimer",
                    )
                }
            else:
                messages.append({"role": "assistant", "content": answer})
            if task == "reasoning":
                item["reasoning"] = text(rng.randint(10, 30), zh)
            item["messages"] = messages
            if source == "textbook" and earlier and rng.random() < 0.003:  # an exact duplicate of an earlier item
                item = {**rng.choice(earlier), "id": item["id"], "provenance": item["provenance"]}
            elif task == "mcq" and not images and len(bench_questions) < LEAKS and rng.random() < 0.001:
                bench_questions.append(question.split("\n")[0])
            if len(earlier) < 5000:
                earlier.append(item)
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
            _progress("SpineMed-450k", i + 1, n_spinemed)

    bench = [
        {"id": f"sb-{k}", "type": "mcq", "question": q, "options": {"A": "yes", "B": "no"}, "answer": "A"}
        for k, q in enumerate(bench_questions)
    ]
    bench += [
        {
            "id": f"sb-{k}",
            "type": "mcq",
            "question": f"[bench {k}] {text(3)}",
            "options": {"A": "a", "B": "b"},
            "answer": "B",
        }
        for k in range(len(bench), SPINEBENCH_MCQ)
    ]
    bench += [
        {"id": f"sb-r-{k}", "type": "report", "prompt": f"[report {k}] {text(2)}"} for k in range(SPINEBENCH_REPORTS)
    ]
    _jsonl(inputs / "SpineBench" / "spinebench.jsonl", bench)

    n_pmv = round(PUBMEDVISION * scale)
    with (inputs / "PubMedVision" / "PubMedVision_Alignment_VQA.json").open("w", encoding="utf-8") as out:
        out.write("[\n")  # a JSON array, as published: the reader must stream it
        for i in range(n_pmv):
            pictures = [f"images/{rng.choice(pmv_images)}" for _ in range(rng.choice((1, 1, 2)))]
            q = f"[pmv {i}] " + text(2)
            q = "<image>\n" * len(pictures) + q if i % 2 else q  # half without placeholders
            item = {
                "id": f"pmv-{i}",
                "image": pictures,
                "modality": "CT",
                "body_part": "Spine",
                "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": text(4)}],
            }
            out.write(("," if i else "") + json.dumps(item) + "\n")
            _progress("PubMedVision", i + 1, n_pmv)
        out.write("]\n")

    def general(n: int, make: Any) -> list[dict[str, Any]]:
        return [make(i) for i in range(round(n * scale))]

    _json(
        inputs / "medical-o1-reasoning-SFT" / "medical_o1_sft.json",
        general(
            GENERAL["o1_en"],
            lambda i: {"Question": f"[o1 {i}] {text(3)}", "Complex_CoT": text(12), "Response": text(4)},
        ),
    )
    _json(
        inputs / "medical-o1-reasoning-SFT" / "medical_o1_sft_Chinese.json",
        general(
            GENERAL["o1_zh"],
            lambda i: {
                "Question": f"[o1zh {i}] {text(3, True)}",
                "Complex_CoT": text(12, True),
                "Response": text(4, True),
            },
        ),
    )
    _json(
        inputs / "Medical-R1-Distill-Data" / "medical_r1_distill_sft.json",
        general(
            GENERAL["r1"],
            lambda i: {
                "question": f"[r1 {i}] {text(3)}",
                "reasoning (reasoning_content)": text(12),
                "response (content)": text(4),
            },
        ),
    )
    _jsonl(
        inputs / "MedThoughts-8K" / "MedThoughts-8K.jsonl",
        general(
            GENERAL["medthoughts"],
            lambda i: {
                "question_id": f"mt-{i}",
                "question": f"[mt {i}] {text(3)}",
                "options": {o: text(1) for o in "ABCDE"},
                "answer_idx": "C",
                "ds_answer": "C",
                "ds_think": text(10),
                "source": "synthetic",
            },
        ),
    )
    return {"spinemed": n_spinemed, "pubmedvision": n_pmv, "benchmark_leaks": len(bench_questions)}


ENGLISH_FILES = {
    "spinemed": "SpineMed-450k/train.jsonl",
    "medical_o1": "medical-o1-reasoning-SFT/medical_o1_sft.json",
    "medthoughts": "MedThoughts-8K/MedThoughts-8K.jsonl",
    "pubmedvision": "PubMedVision/PubMedVision_Alignment_VQA.json",
}
"""One generated file per reader (medical-o1's English file); tests swap in another, e.g. its Chinese one."""


def engine_rows(inputs: Path, files: dict[str, str] = ENGLISH_FILES) -> dict[str, list[dict[str, Any]]]:
    """Engine rows (messages + images) of generated ``files`` as the real readers make them, per reader."""
    from spinegpt.data_mixes import readers, sources

    rows = {}
    for name, relative in files.items():
        options = readers.ReadOptions(data_root=inputs / "open_datasets", image_root=(inputs / relative).parent)
        found = sources.read(name, inputs / relative, options)
        rows[name] = [r.to_row() for r in found if isinstance(r, readers.Record)]
    return rows


def ensure_inputs(workdir: Path, scale: float) -> tuple[Path, dict[str, int]]:
    """WORKDIR/inputs at this scale: generated once, reused while the generator and the scale stay the same."""
    inputs = workdir / "inputs"
    stamp = inputs / ".generated.json"
    params = {"version": GENERATOR_VERSION, "scale": scale}
    if not stamp.is_file() or json.loads(stamp.read_text()).get("params") != params:
        shutil.rmtree(inputs, ignore_errors=True)
        started = time.perf_counter()
        counts = generate(inputs, scale)
        stamp.write_text(json.dumps({"params": params, "counts": counts}))
        print(f"generated in {time.perf_counter() - started:.0f} s (not part of the target)\n", flush=True)
    return inputs, json.loads(stamp.read_text())["counts"]


def _json(path: Path, items: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")


def _jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (the build's reader processes), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid]
        tree.update(kids)
        frontier += kids
    total = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def timed(command: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run one command: wall seconds, peak RSS in MB of it and its descendants together, its stdout."""
    start = time.perf_counter()
    peak = 0.0
    with log.open("w") as err, tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, env=env)
        while process.poll() is None:
            peak = max(peak, _tree_rss_mb(process.pid))
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        out.seek(0)
        stdout = out.read()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command[:4])}: failed ({process.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return elapsed, peak, stdout


def spinegpt() -> str:
    return str(Path(sys.executable).with_name("spinegpt"))


def build(mixes: list[str], inputs: Path, output: Path, log: Path, scale: float) -> tuple[float, float]:
    """One ``spinegpt data build`` of ``mixes`` (several: each into OUTPUT/<mix>): seconds, peak RSS MB."""
    command = [spinegpt(), "data", "build", *mixes, "--data-root", str(inputs), "--output-dir", str(output)]
    command += ["--seed", "42"]
    if "stage1_foundation" in mixes and scale != 1.0:  # the paper's 150k PubMedVision sample, scaled with the inputs
        prefix = "stage1_foundation:" if len(mixes) > 1 else ""
        command += ["--set", f"{prefix}pubmedvision.count={round(150_000 * scale)}"]
    seconds, peak, _ = timed(command, log)
    return seconds, peak


def audit(inputs: Path, cache: Path, log: Path, scale: float) -> tuple[float, float, int]:
    """``spinegpt data audit`` of the paper curriculum: seconds, peak RSS MB, rows audited."""
    command = [spinegpt(), "data", "audit", str(REPO / "curricula" / "spinegpt.yaml"), "--json"]
    command += ["model=builtin:tiny-qwen2_5_vl", f"data_root={inputs}"]
    if scale != 1.0:
        command += [f"stages.foundation.data.0.set={{pubmedvision.count: {round(150_000 * scale)}}}"]
    seconds, peak, stdout = timed(command, log, {**os.environ, "SPINEGPT_CACHE": str(cache)})
    return seconds, peak, sum(a["records"] for a in json.loads(stdout))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spinegpt-bench-data"))
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (1.0 = the paper's)")
    parser.add_argument("--separately", action="store_true", help="also build each mix alone, for comparison")
    parser.add_argument("--no-audit", action="store_true", help="build only")
    parser.add_argument("--keep", action="store_true", help="keep the built mixes (the inputs are always kept)")
    args = parser.parse_args()

    inputs, counts = ensure_inputs(args.workdir, args.scale)
    size = sum(f.stat().st_size for f in inputs.rglob("*.json*"))
    print(
        f"inputs: {counts['spinemed']:,} SpineMed items, {counts['pubmedvision']:,} PubMedVision, "
        f"{counts['benchmark_leaks']} SpineBench leaks planted; {size / 2**20:,.0f} MiB of JSON; "
        f"{len(os.sched_getaffinity(0))} CPU(s)",
        flush=True,
    )

    out = args.workdir / "mixes"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    report: dict[str, Any] = {"scale": args.scale, "counts": counts}
    print("building the three stage mixes together ...", flush=True)
    seconds, rss = build(list(MIXES), inputs, out / "together", args.workdir / "build.log", args.scale)
    rows = []
    for mix in MIXES:
        manifest = json.loads((out / "together" / mix / "manifest.json").read_text())
        read = sum(s["valid"] + sum(s["bad"].values()) for s in manifest["sources"].values())
        dropped: dict[str, int] = {}
        for component in manifest["components"]:
            for reason, n in component["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
        rows.append(
            {"mix": mix, "items_read": read, "rows": manifest["output"]["rows"], "sha256": manifest["output"]["sha256"]}
        )
        rows[-1]["dropped"] = dropped
    total_rows = sum(r["rows"] for r in rows)
    print(f"\n{'mix':<20}{'items read':>12}{'rows out':>11}  dropped")
    for r in rows:
        print(f"{r['mix']:<20}{r['items_read']:>12,}{r['rows']:>11,}  {r['dropped']}")
    met = seconds <= TARGET_S and rss <= TARGET_RSS_MB
    print(
        f"build, the three together: {seconds:.1f} s ({total_rows / seconds:,.0f} rows out/s), peak RSS {rss:,.0f} MB"
        f" -> time {seconds / TARGET_S:.2f} of the {TARGET_S:.0f} s target, memory {rss / TARGET_RSS_MB:.2f} of "
        f"{TARGET_RSS_MB:,.0f} MB ({verdict(met)})",
        flush=True,
    )
    report["build"] = {"seconds": seconds, "peak_rss_mb": rss, "mixes": rows, "target_met": met}

    if args.separately:
        alone = []
        for mix in MIXES:
            s_, r_ = build([mix], inputs, out / mix, args.workdir / f"{mix}.log", args.scale)
            same = json.loads((out / mix / "manifest.json").read_text())["output"]["sha256"]
            alone.append(
                {"mix": mix, "seconds": s_, "peak_rss_mb": r_, "same_bytes": same == rows[MIXES.index(mix)]["sha256"]}
            )
        total = sum(a["seconds"] for a in alone)
        parts = " + ".join(f"{a['seconds']:.1f}" for a in alone)
        print(
            f"build, each mix alone: {parts} = {total:.1f} s; "
            f"same bytes as built together: {all(a['same_bytes'] for a in alone)}",
            flush=True,
        )
        report["build_separately"] = alone

    if not args.no_audit:
        cache = args.workdir / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        runs = {}
        for run, forget in (
            ("from scratch", None),
            ("mixes built, counts not cached", "token-counts"),
            ("warm", ""),
        ):
            if forget:
                shutil.rmtree(cache / forget, ignore_errors=True)
            print(f"auditing the paper curriculum ({run}) ...", flush=True)
            a_s, a_rss, audited = audit(inputs, cache, args.workdir / f"audit-{len(runs)}.log", args.scale)
            runs[run] = {"seconds": a_s, "peak_rss_mb": a_rss, "rows": audited}
            print(f"  {a_s:.1f} s, {audited / a_s:,.0f} rows/s, peak RSS {a_rss:,.0f} MB", flush=True)
        warm = runs["warm"]["seconds"]
        print(
            f"warm re-audit: {warm:.1f} s -> {warm / TARGET_WARM_AUDIT_S:.2f} of the {TARGET_WARM_AUDIT_S:.0f} s "
            f"target ({verdict(warm <= TARGET_WARM_AUDIT_S)})"
        )
        report["audit"] = runs
    print(json.dumps(report))
    if not args.keep:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
