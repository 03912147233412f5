"""Small benchmark files in both SpineBench formats, with synthetic images, written by the tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks.evaluator import Generator
from spinegpt.eval_hooks.protocol import GenerationSpec
from spinegpt.offline import smoke_images as smoke_data

LEVEL_OPTIONS = {"A": "L1", "B": "L2", "C": "L3", "D": "L4", "E": "L5"}


def write_spinebench(folder: Path) -> Path:
    """4 text MCQ, 3 image MCQ (one multi-image), 2 reports."""
    images = folder / "images"
    for name in ("mri-sagittal-L4.png", "ct-sagittal-L2.png", "xray-sagittal-L5.png", "mri-sagittal-L5.png"):
        smoke_data.write_image(name, images)
    text = [
        ("Which level is most often herniated in the lumbar spine?", {"A": "L1/L2", "B": "L4/L5", "C": "T12/L1"}, "B"),
        ("What Cobb angle defines scoliosis?", {"A": "5 degrees", "B": "10 degrees", "C": "20 degrees"}, "B"),
        ("Which sign suggests cauda equina syndrome?", {"A": "Saddle anaesthesia", "B": "Neck pain"}, "A"),
        (
            "Which are red flags for low back pain?",
            {"A": "Fever", "B": "Weight loss", "C": "Morning stiffness < 30 min"},
            ["A", "B"],
        ),
    ]
    rows: list[dict[str, object]] = [
        {
            "id": f"t{i}",
            "type": "mcq",
            "question": q,
            "options": o,
            "answer": a,
            "subspecialty": "General Considerations",
            "source": "textbook",
            "language": "en",
        }
        for i, (q, o, a) in enumerate(text)
    ]
    rows += [
        {
            "id": "i0",
            "type": "mcq",
            "question": "Which level is highlighted?",
            "options": LEVEL_OPTIONS,
            "answer": "D",
            "images": ["images/mri-sagittal-L4.png"],
        },
        {
            "id": "i1",
            "type": "mcq",
            "question": "Which level is highlighted?",
            "options": LEVEL_OPTIONS,
            "answer": "B",
            "images": ["images/ct-sagittal-L2.png"],
        },
        {
            "id": "i2",
            "type": "mcq",
            "question": "Both images highlight the same level. Which?",
            "options": LEVEL_OPTIONS,
            "answer": "E",
            "images": ["images/xray-sagittal-L5.png", "images/mri-sagittal-L5.png"],
        },
        {
            "id": "r0",
            "type": "report",
            "prompt": "Write a structured report for this lumbar MRI. [[good]]",
            "images": ["images/mri-sagittal-L4.png"],
            "reference": "Lesion at L4.",
        },
        {
            "id": "r1",
            "type": "report",
            "prompt": "Write a structured report for this CT. [[good]]",
            "images": ["images/ct-sagittal-L2.png"],
        },
    ]
    path = folder / "spinebench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_mm25(folder: Path) -> Path:
    """2 diagnosis items (options in the question text) and 2 localisation items (answers as option texts)."""
    images = folder / "images"
    for name in ("mri-sagittal-L3.png", "xray-lateral-none.png"):
        smoke_data.write_image(name, images)
    rows = [
        {
            "image": "images/mri-sagittal-L3.png",
            "task": "spine_disease_classification",
            "answer": "B",
            "question": "What is the diagnosis?\nA. Healthy\nB. Disc herniation\nC. Spondylolisthesis\nD. Scoliosis\n"
            "E. Fracture",
        },
        {
            "image": "images/xray-lateral-none.png",
            "task": "spine_disease_classification",
            "answer": "Healthy",
            "question": "What is the diagnosis?\nA. Scoliosis\nB. Fracture\nC. Healthy\nD. Tumor\nE. Spondylolisthesis",
        },
        {
            "image": "images/mri-sagittal-L3.png",
            "task": "spine_lesion_localization",
            "answers": ["L3/L4"],
            "question": "Where are the lesions?\nA. L5/S1\nB. L3/L4\nC. L1/L2\nD. L4/L5\nE. L2/L3",
        },
        {
            "image": "images/mri-sagittal-L3.png",
            "task": "spine_lesion_localization",
            "answers": ["L4/L5", "L5/S1"],
            "question": "Where are the lesions?\nA. L1/L2\nB. L2/L3\nC. L3/L4\nD. L4/L5\nE. L5/S1",
        },
    ]
    path = folder / "spinebench_mm25.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_mm25_parquet(folder: Path) -> Path:
    """The MM'25 SpineBench as the hub's parquet conversion ships it: images embedded as the datasets Image feature
    (``{bytes, path}`` structs), options as a list field or lettered lines, answers as letters or option texts,
    as a list or joined by commas."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(name: str) -> dict[str, object]:
        buffer = io.BytesIO()
        smoke_data.render(name).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": name}

    levels = ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
    rows = [
        {
            "image": png("mri-sagittal-L3.png"),
            "task": "spine_disease_classification",
            "question": "What is the diagnosis?",
            "options": ["Healthy", "Disc herniation", "Spondylolisthesis", "Scoliosis", "Fracture"],
            "answer": "B",
        },
        {
            "image": png("xray-lateral-none.png"),
            "task": "spine_disease_classification",
            "question": "What is the diagnosis?\nA. Scoliosis\nB. Fracture\nC. Healthy\nD. Tumor\nE. Spondylolisthesis",
            "options": None,
            "answer": "Healthy",
        },
        {
            "image": png("mri-sagittal-L4.png"),
            "task": "spine_lesion_localization",
            "question": "Where are the lesions?",
            "options": levels,
            "answer": "L4/L5, L5/S1",
        },
        {
            "image": png("mri-sagittal-L4.png"),
            "task": "spine_lesion_localization",
            "question": "Where are the lesions?",
            "options": levels,
            "answer": "D,E",
        },
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# -- result files with known outcomes (no model: a scripted stand-in answers) ----------------------------------------

STAND_IN = GenerationSpec(
    engine="scripted stand-in",
    backend="none",
    model_type="qwen2_5_vl",
    template="qwen2_5_vl",
    torch_dtype="float32",
    attn_impl="sdpa",
    batch_size=8,
)
"""The generation settings a result made by :func:`scripted` records."""


def scripted(answers: dict[str, str]) -> Generator:
    """A stand-in for the model: answers by a keyword of the prompt ("I do not know." without one)."""

    def generate(requests: Sequence[tuple[str, Sequence[str]]], max_new_tokens: int) -> list[str]:
        return [next((a for key, a in answers.items() if key in prompt), "I do not know.") for prompt, _ in requests]

    return generate


def write_mcq_bench(folder: Path, n: int, groups: dict[str, int] | None = None) -> Path:
    """``n`` text MCQs ("Question <i>?", options A/B, answer A); ``groups``: subspecialty -> how many items carry it
    (in order; the rest carry none)."""
    labels = [name for name, count in (groups or {}).items() for _ in range(count)]
    rows = []
    for i in range(n):
        row: dict[str, object] = {
            "id": f"q{i:03d}",
            "type": "mcq",
            "question": f"Question {i}?",
            "options": {"A": "right", "B": "wrong"},
            "answer": "A",
        }
        if i < len(labels):
            row["subspecialty"] = labels[i]
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mcq.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def evaluate_mcq(bench: Path, out: Path, right: set[int], n: int, model: str = "m", **config: Any) -> Path:
    """Evaluate ``bench`` (from :func:`write_mcq_bench`) with a stand-in that answers exactly the items ``right``
    correctly; returns the result file."""
    from spinegpt.eval_hooks import evaluator
    from spinegpt.eval_hooks.config import BenchmarkConfig

    answers = {f"Question {i}?": "Answer: A" if i in right else "Answer: B" for i in range(n)}
    config = {"name": "mcq", "kind": "spinebench", "path": str(bench), **config}
    evaluator.evaluate(model, [BenchmarkConfig(**config)], out, scripted(answers), engine=STAND_IN)
    return out / "mcq.json"
