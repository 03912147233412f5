"""The bundled smoke data: the engine-format smoke sets (``data_mixes/smoke/*.jsonl``, a stage's ``smoke:`` entry)
and a tiny data root in the *upstream* schemas, written offline by code (``data_root: builtin:smoke``), which the
smoke curriculum's mixes read.

It holds every source the shipped mixes name (medical-o1 en/zh, Medical-R1-Distill, MedThoughts-8K, PubMedVision,
SpineMed-450k with hospital images, a metadata pointer to a file and one to a 3-D volume of an open dataset), a
SpineBench file one of whose questions also sits in the SpineMed training items, so decontamination has work, and
the package's tiny VQA-RAD and MedQA copies (``eval_hooks/tiny``) where ``sources.yaml`` looks for those benchmarks.
The conversations come from the bundled engine-format smoke sets (``data_mixes/smoke/*.jsonl``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
from pathlib import Path
from typing import Any

from spinegpt.data_mixes.rows import DataError, read_jsonl
from spinegpt.eval_hooks import benchmark
from spinegpt.offline import smoke_images
from spinegpt.paths import cache_root

VERSION = "4"  # 2: SpineBench image MCQs (Table 7 reports text and image accuracy); 3: non-spine stage-3 items;
# 4: the tiny general medical benchmarks the mixes are decontaminated against
NON_SPINE = ["Hand and Upper Extremity Surgery", "Orthopedic Trauma", "Foot and Ankle Surgery", "Joint Reconstruction"]
SUBSPECIALTIES = ["The Thoracic and Lumbar Degenerative Spine", "Trauma", "Spondylolisthesis", "Idiopathic Scoliosis"]
LEAKED_QUESTION = "Which sign suggests cauda equina syndrome?"
OPTIONS = {"A": "Radiograph", "B": "MRI", "C": "CT", "D": "Ultrasound"}
VERSE_FILE = {"dataset": "VerSe", "case": "sub-verse004", "file": "ct-sagittal-L3.png"}


def smoke_file(name: str) -> Path:
    """A bundled smoke set's engine JSONL (its synthetic image paths are drawn by :func:`materialise_set`)."""
    path = Path(str(importlib.resources.files("spinegpt.data_mixes") / "smoke" / f"{name}.jsonl"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.jsonl"))
        raise DataError(f"no bundled smoke set {name!r}; available: {', '.join(known)}")
    return path


def materialise_set(name: str, images_dir: Path) -> Path:
    """Draw the images a bundled smoke set references into ``images_dir``; return the set's JSONL."""
    path = smoke_file(name)
    for _, row, _error, _line in read_jsonl(path):
        for image in (row or {}).get("images", []):
            if smoke_images.is_synthetic(image):
                smoke_images.write_image(image, images_dir)
    return path


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in smoke_file(name).read_text().splitlines() if line.strip()]


def _turns(row: dict[str, Any]) -> tuple[str, str]:
    user, answer = (m["content"] for m in row["messages"] if m["role"] in ("user", "assistant"))
    return user, answer


def _image(root: Path, relative: str) -> str:
    smoke_images.write_image(Path(relative).name, (root / relative).parent)
    return relative


def _complete(root: Path) -> bool:
    stamp = root / ".complete"
    return stamp.is_file() and stamp.read_text() == VERSION


def write(root: Path) -> Path:
    """Write the data root into ``root`` (idempotent) and return it. Written into a private folder and renamed into
    place, so processes that first use it at the same moment never read a half-written file."""
    if _complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    _write_files(partial)
    (partial / ".complete").write_text(VERSION)
    try:
        os.rename(partial, root)  # atomic; replaces an empty folder (a fresh temporary directory)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not _complete(root):
            raise RuntimeError(f"{root} exists and is not a complete smoke data root; remove it") from None
    return root


def _write_files(root: Path) -> None:
    root.mkdir(parents=True)
    stage1, stage2, stage3 = _rows("stage1"), _rows("stage2"), _rows("stage3")
    text1 = [r for r in stage1 if not r.get("images")]
    images1 = [r for r in stage1 if r.get("images")]

    def cot(question: str) -> str:
        return f"The question asks: {question.strip()} Recall the relevant anatomy and the usual first step."

    o1 = [{"Question": q, "Complex_CoT": cot(q), "Response": a} for q, a in map(_turns, text1[:3])]
    _dump(root / "medical-o1-reasoning-SFT" / "medical_o1_sft.json", o1)
    zh = [
        {
            "Question": "腰椎间盘突出症最常见于哪个节段？",
            "Complex_CoT": "腰椎活动度最大的节段负荷最大。",
            "Response": "L4/L5 和 L5/S1。",
        }
    ]
    _dump(root / "medical-o1-reasoning-SFT" / "medical_o1_sft_Chinese.json", zh)
    r1 = [
        {"question": q, "reasoning (reasoning_content)": cot(q), "response (content)": a}
        for q, a in map(_turns, text1[3:5])
    ]
    _dump(root / "Medical-R1-Distill-Data" / "medical_r1_distill_sft.json", r1)
    thoughts = [
        {
            "question_id": f"mt-{i}",
            "question": q,
            "options": OPTIONS,
            "answer_idx": "A",
            "ds_answer": f"A. {a}",
            "ds_think": cot(q),
            "source": "smoke",
        }
        for i, (q, a) in enumerate(map(_turns, text1[5:7]))
    ]
    (root / "MedThoughts-8K").mkdir(exist_ok=True)
    (root / "MedThoughts-8K" / "MedThoughts-8K.jsonl").write_text("".join(json.dumps(t) + "\n" for t in thoughts))
    pmv = []
    for i, row in enumerate(images1):
        q, a = _turns(row)
        images = [_image(root / "PubMedVision", f"images/{Path(p).name}") for p in row["images"]]
        if i % 2:  # half without placeholders: the reader adds them
            q = q.replace("<image>", "")
        pmv.append(
            {
                "id": f"pmv-{i}",
                "image": images,
                "modality": "X-ray",
                "body_part": "spine",
                "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
            }
        )
    _dump(root / "PubMedVision" / "PubMedVision_Alignment_VQA.json", pmv)

    spinemed: list[dict[str, Any]] = []
    for i, row in enumerate(text1[7:]):
        q, a = _turns(row)
        spinemed.append(_item(f"sm-ns-{i}", NON_SPINE[i % len(NON_SPINE)], None, "open_qa", q, a, []))
    for i, row in enumerate(stage2):
        q, a = _turns(row)
        pictures: list[Any] = [_image(root / "SpineMed-450k", f"images/{Path(p).name}") for p in row.get("images", [])]
        task = "mcq" if "\nA." in q else "open_qa"
        spinemed.append(_item(f"sm-s-{i}", "Spine Surgery", SUBSPECIALTIES[i % 4], task, q, a, pictures))
    # An open-dataset case by pointer (one file) and a 3-D volume sampled to slices.
    for level in ("L1", "L2", "L3", "L4", "L5", "none"):
        _image(root / "open_datasets" / "VerSe" / "sub-verse010" / "ct", f"ct-sagittal-{level}.png")
    _image(root / "open_datasets" / "VerSe" / "sub-verse004", "ct-sagittal-L3.png")
    spinemed.append(
        _item(
            "sm-verse-file", "Spine Surgery", "Trauma", "vqa", "<image>Which level is highlighted?", "L3.", [VERSE_FILE]
        )
    )
    spinemed.append(
        _item(
            "sm-verse-volume",
            "Spine Surgery",
            "Trauma",
            "open_qa",
            "<image>Scroll through this CT. Is any vertebra highlighted?",
            "Yes: the series highlights each lumbar level in turn.",
            [{"dataset": "VerSe", "case": "sub-verse010", "volume": "ct"}],
        )
    )
    reasoning = spinemed[-4]
    reasoning["task"], reasoning["reasoning"] = "reasoning", "Weigh red flags first, then the level of the lesion."
    for i, row in enumerate(stage3):
        messages = [m for m in row["messages"]]
        images = [_image(root / "SpineMed-450k", f"images/{Path(p).name}") for p in row.get("images", [])]
        user_turns = sum(m["role"] == "user" for m in messages)
        task = (
            "report"
            if "report" in messages[0]["content"].lower()
            else "consultation"
            if user_turns > 1
            else "reasoning"
        )
        # Every third is an orthopedic-trauma case: stage 3 spans all seven categories, so a non-spine ablation
        # (Table 7 rows 3 and 5) still has consultations and reports to train on.
        spine = i % 3 != 2
        item = {
            "id": f"sm-r-{i}",
            "language": "en",
            "category": "Spine Surgery" if spine else "Orthopedic Trauma",
            "subspecialty": "Trauma" if spine else None,
            "task": task,
            "messages": messages,
            "images": images,
            "provenance": {"source_type": "hospital", "case_id": f"case-{i}"},
        }
        if task == "report" and i == 1:  # one report given by sections: the reader writes the assistant turn
            item["messages"] = messages[:-1]
            item["report"] = {
                "imaging_findings": "Sagittal CT: L2 stands out.",
                "diagnosis": "Finding at L2.",
                "rationale_disclaimer": "Synthetic smoke data; not medical advice.",
            }
        if task == "reasoning":
            item["reasoning"] = "List the findings, weigh them, then decide."
        spinemed.append(item)
    (root / "SpineMed-450k").mkdir(exist_ok=True)
    (root / "SpineMed-450k" / "train.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spinemed))
    bench = [
        {
            "id": "sb-1",
            "type": "mcq",
            "question": LEAKED_QUESTION,
            "options": {"A": "Saddle anaesthesia", "B": "Fever"},
            "answer": "A",
        },
        {
            "id": "sb-2",
            "type": "mcq",
            "question": "Which level lies just above the sacrum?",
            "options": {"A": "L4", "B": "L5"},
            "answer": "B",
        },
        {"id": "sb-r-1", "type": "report", "prompt": "Write a report for a normal lumbar radiograph."},
    ]
    levels = {"A": "L1", "B": "L2", "C": "L3", "D": "L4", "E": "L5"}
    for i, level in enumerate(("L4", "L2", "L5")):
        image = _image(root / "SpineBench", f"images/mri-sagittal-{level}.png")
        answer = next(k for k, v in levels.items() if v == level)
        bench.append(
            {
                "id": f"sb-i-{i}",
                "type": "mcq",
                "question": "On this MRI, which lumbar vertebra is marked?",
                "options": levels,
                "answer": answer,
                "images": [image],
            }
        )
    (root / "SpineBench").mkdir(exist_ok=True)
    (root / "SpineBench" / "spinebench.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bench))
    shutil.copytree(benchmark.builtin("vqa_rad"), root / "vqa-rad")
    shutil.copytree(benchmark.builtin("medqa"), root / "MedQA-USMLE-4-options")


def _item(
    item_id: str, category: str, subspecialty: str | None, task: str, question: str, answer: str, images: list[Any]
) -> dict[str, Any]:
    return {
        "id": item_id,
        "language": "en",
        "category": category,
        "subspecialty": subspecialty,
        "task": task,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "images": images,
        "provenance": {"source_type": "textbook", "book": "Smoke Orthopaedics", "case_id": item_id},
    }


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))


def default_root() -> Path:
    """Where ``data_root: builtin:smoke`` lives: the spinegpt cache, keyed by this module's content."""
    cache = cache_root()
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return cache / "smoke-data" / f"upstream-{digest}"
