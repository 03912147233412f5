"""Small benchmark files in the SpineBench formats and in the general medical benchmarks' published shapes, with
synthetic images, written by the tests.

The general medical writers (``write_vqa_rad`` ... ``write_medqa``) write exactly what the uploaders publish: parquet
through the ``datasets`` Image feature (``{bytes, path}`` structs, the ``huggingface`` schema metadata), SLAKE's
one-line JSON array with raw UTF-8 Chinese and keys in varying order, PMC-VQA's CSV with messy choice cells, MMMU's
option strings and null image columns. Each docstring gives the content the unit tests score by hand.
"""

from __future__ import annotations

import io
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


# -- general medical benchmarks, as published ---------------------------------------------------------------------


def image_bytes(name: str, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A synthetic smoke image (``mri-sagittal-L4.png`` ...) encoded as ``fmt`` (``JPEG`` with ``mode="CMYK"``:
    PathVQA ships some CMYK JPEGs)."""
    buffer = io.BytesIO()
    smoke_data.render(name).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _hub_parquet(path: Path, rows: Sequence[dict[str, Any]], features: dict[str, Any]) -> Path:
    """``rows`` written by ``datasets`` as the hub's parquet (image columns as the Image feature)."""
    from datasets import Dataset, Features

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in rows] for name in features}
    Dataset.from_dict(columns, features=Features(features)).to_parquet(str(path))
    return path


def _vqa_features() -> dict[str, Any]:
    from datasets import Image, Value

    return {"image": Image(), "question": Value("string"), "answer": Value("string")}


VQA_RAD_ROWS = [
    ("is there evidence of a pneumothorax?", "no", "xray-ap-none.png"),
    ("is the heart enlarged?", "yes", "xray-ap-L1.png"),
    ("what organ is shown?", "liver", "ct-sagittal-L2.png"),
    ("where is the lesion located?", "left lower lobe", "ct-sagittal-L3.png"),
    ("is this a ct scan?", "yes", "ct-sagittal-L4.png"),
]
VQA_RAD_REPLIES = {
    "pneumothorax": "No, there is no pneumothorax.",  # closed, right
    "heart enlarged": "The heart appears normal in size. Answer: no",  # closed, wrong
    "what organ": "Liver.",  # open, exact; recall 1
    "where is the lesion": "The lesion is in the left lung.",  # open, not exact; recall 1/3
    "ct scan": "I cannot tell.",  # closed, no verdict: unparsed
}
"""Replies to VQA_RAD_ROWS by question keyword. By hand: closed 1/3 right (1 unparsed), open 1/2 exact with recall
(1 + 1/3) / 2, overall 2/5."""


def write_vqa_rad(folder: Path) -> Path:
    """``flaviagiammarino/vqa-rad`` as downloaded: ``data/test-00000-of-00001-<hash>.parquet`` with ``image``
    (Image feature), ``question``, ``answer``, lower-cased. Returns the download folder."""
    rows = [
        {"image": {"bytes": image_bytes(img), "path": None}, "question": q, "answer": a} for q, a, img in VQA_RAD_ROWS
    ]
    _hub_parquet(folder / "data" / "test-00000-of-00001-e5bc3d208bb4deeb.parquet", rows, _vqa_features())
    return folder


def write_path_vqa(folder: Path) -> Path:
    """``flaviagiammarino/path-vqa`` as downloaded: the test split in two shards ``data/test-0000{0,1}-of-00002``,
    one image a CMYK JPEG. Three rows: "is this tissue malignant?" yes; "what stain is used?" "hematoxylin and
    eosin"; "are mitoses present?" no (the last in the second shard)."""
    shard0 = [
        {
            "image": {"bytes": image_bytes("mri-sagittal-L1.png", "JPEG", "CMYK"), "path": "a.jpg"},
            "question": "is this tissue malignant?",
            "answer": "yes",
        },
        {
            "image": {"bytes": image_bytes("mri-sagittal-L2.png", "JPEG"), "path": "b.jpg"},
            "question": "what stain is used?",
            "answer": "hematoxylin and eosin",
        },
    ]
    shard1 = [
        {
            "image": {"bytes": image_bytes("mri-sagittal-L5.png", "JPEG"), "path": "c.jpg"},
            "question": "are mitoses present?",
            "answer": "no",
        },
    ]
    _hub_parquet(folder / "data" / "test-00000-of-00002.parquet", shard0, _vqa_features())
    _hub_parquet(folder / "data" / "test-00001-of-00002.parquet", shard1, _vqa_features())
    return folder


SLAKE_ROWS = [
    # (qid, img, question, answer, q_lang, answer_type, reply); by hand: en closed 2/2, en open 0/1 recall 0,
    # zh closed 1/2, zh open 1/1 recall 1; all: closed 3/4, open 1/2 recall 1/2, overall 4/6.
    (11, "xmlab1", "Does the picture contain liver?", "Yes", "en", "CLOSED", "Yes"),
    (12, "xmlab1", "Which is bigger in this image, the heart or the lung?", "Heart", "en", "CLOSED", "The heart."),
    (13, "xmlab2", "What modality is used to take this image?", "MRI", "en", "OPEN", "It is a CT scan."),
    (5011, "xmlab1", "图中有肝脏吗？", "是", "zh", "CLOSED", "有"),
    (5012, "xmlab2", "这张图片包含肺吗？", "不包含", "zh", "CLOSED", "是的，包含。"),
    (5013, "xmlab2", "图中最大的器官是什么？", "肝脏", "zh", "OPEN", "肝脏"),
]


def write_slake(folder: Path) -> Path:
    """``BoKelvin/SLAKE`` as downloaded and unzipped: ``test.json`` (one JSON array on one line, keys in varying
    order, Chinese as raw UTF-8) and ``imgs/xmlabN/source.jpg``. Returns ``test.json``."""
    keys = [
        "img_id",
        "img_name",
        "question",
        "answer",
        "q_lang",
        "location",
        "modality",
        "answer_type",
        "base_type",
        "triple",
        "qid",
        "content_type",
    ]
    rows = []
    for n, (qid, img, question, answer, lang, answer_type, _) in enumerate(SLAKE_ROWS):
        values = {
            "img_id": int(img.removeprefix("xmlab")),
            "img_name": f"{img}/source.jpg",
            "question": question,
            "answer": answer,
            "q_lang": lang,
            "location": "Abdomen",
            "modality": "MRI",
            "answer_type": answer_type,
            "base_type": "vqa",
            "triple": ["vhead", "_", "_"],
            "qid": qid,
            "content_type": "Organ",
        }
        order = keys[n % len(keys) :] + keys[: n % len(keys)]  # the published file's key order varies by row
        rows.append({k: values[k] for k in order})
    for img, name in (("xmlab1", "ct-sagittal-L1.png"), ("xmlab2", "mri-sagittal-L2.png")):
        target = folder / "imgs" / img / "source.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image_bytes(name, "JPEG"))
    path = folder / "test.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


PMC_REPLIES = {
    "uptake pattern": "The answer is B.",  # right
    "imaging modality": "Answer: Ultrasound",  # option text of C; gold A: wrong
    "arrow": "Probably D, or maybe A.",  # hedged: unparsed
}
"""By hand: 1 of 3 right, 1 unparsed."""


def write_pmc_vqa(folder: Path, version: int = 1) -> Path:
    """``xmcmic/PMC-VQA`` as downloaded: version 1 ``test_clean.csv`` (``Figure_path, Question, Answer, Choice A-D,
    Answer_label``, images in ``images/``) or version 2 ``test_2.csv`` (``index, Figure_path, Caption, Question,
    Choice A-D, Answer, split``, images in ``figures/``), choice cells ``A:text`` with stray spaces, quotes and
    non-breaking spaces. Returns the CSV. Answers: B, A, A."""
    images = folder / ("images" if version == 1 else "figures")
    images.mkdir(parents=True, exist_ok=True)
    for name, img in (("PMC1064097_F1.jpg", "ct-sagittal-L1.png"), ("PMC3015_F2.jpg", "xray-ap-L2.png")):
        (images / name).write_bytes(image_bytes(img, "JPEG"))
    nbsp = "\u00a0"
    if version == 1:
        text = (
            "Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label\n"
            "PMC1064097_F1.jpg,What is the uptake pattern in the breast?,Focal uptake pattern,"
            f'A:Diffuse uptake pattern, B:Focal uptake pattern," C:No uptake{nbsp}pattern ",'
            "D:Cannot determine from the information given,B\n"
            "PMC3015_F2.jpg,Which imaging modality was used?, MRI ,A: MRI ,B:CT ,C:Ultrasound,D:PET,A\n"
            'PMC3015_F2.jpg,"What does the arrow show, in the left panel?",A cyst,A:A cyst,B:A tumour,'
            f'"C:""Normal{nbsp}tissue""",D:An artefact,A\n'
        )
        path = folder / "test_clean.csv"
    else:
        text = (
            "index,Figure_path,Caption,Question,Choice A,Choice B,Choice C,Choice D,Answer,split\n"
            "0,PMC1064097_F1.jpg,A PET image.,What is the uptake pattern in the breast?,A:Diffuse uptake pattern,"
            " B:Focal uptake pattern,C:No uptake pattern,D:Cannot determine,B,test\n"
            '1,PMC3015_F2.jpg,"Axial MRI, T2.",Which imaging modality was used?,A:MRI,B:CT,C:Ultrasound,D:PET,A,'
            "test\n"
        )
        path = folder / "test_2.csv"
    path.write_text(text, encoding="utf-8")
    return path


MMMU_ROWS: list[dict[str, Any]] = [
    # subject, id number, question, options, answer, question_type, images; replies by hand below.
    {
        "subject": "Basic_Medical_Science",
        "n": 1,
        "question": "<image 1> Which structure is labelled X?",
        "options": ["Aorta", "Vena cava", "Trachea", "Oesophagus"],
        "answer": "C",
        "type": "multiple-choice",
        "images": ["ct-sagittal-L1.png"],
    },
    {
        "subject": "Clinical_Medicine",
        "n": 1,
        "question": "Which drug class is first line?",
        "options": ["A1", "B1", "C1", "D1", "E1", "F1", "G1", "H1", "Beta blocker"],
        "answer": "I",
        "type": "multiple-choice",
        "images": ["xray-ap-L2.png"],
    },
    {
        "subject": "Diagnostics_and_Laboratory_Medicine",
        "n": 1,
        "question": "Compare <image 1> and <image 2>: how many lesions are there in total?",
        "options": [],
        "answer": "12",
        "type": "open",
        "images": ["mri-sagittal-L3.png", "mri-sagittal-L4.png"],
    },
    {
        "subject": "Pharmacy",
        "n": 1,
        "question": "What is the half-life in hours?",
        "options": [],
        "answer": "['3.5', '3.50']",
        "type": "open",
        "images": ["ct-sagittal-L5.png"],
    },
    {
        "subject": "Public_Health",
        "n": 1,
        "question": "Which option is shown in the <image 1> chart?",
        "options": ["<image 2>", "<image 3>"],
        "answer": "A",
        "type": "multiple-choice",
        "images": ["xray-ap-L1.png", "xray-ap-L2.png", "xray-ap-L3.png"],
    },
]
MMMU_REPLIES = {
    "labelled X": "The structure is the trachea, so the answer is (C).",  # right
    "first line": "Answer: I",  # right (letter I)
    "how many lesions": "Counting both images, the total is 12 lesions.",  # right: number 12
    "half-life": "The half-life is about 4 hours.",  # wrong
    "chart": "I am not sure.",  # unparsed: wrong
}
"""By hand: multiple choice 2/3, open 1/2, overall 3/5; per subject 1, 1, 1, 0, 0 of 1."""


def _mmmu_features() -> dict[str, Any]:
    from datasets import Image, Value

    features: dict[str, Any] = {
        "id": Value("string"),
        "question": Value("string"),
        "options": Value("string"),
        "explanation": Value("string"),
    }
    features.update({f"image_{n}": Image() for n in range(1, 8)})
    features.update(
        {k: Value("string") for k in ("img_type", "answer", "topic_difficulty", "question_type", "subfield")}
    )
    return features


def mmmu_row(row: dict[str, Any], split: str = "validation", answer: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"{split}_{row['subject']}_{row['n']}",
        "question": row["question"],
        "options": repr(row["options"]),  # a Python list written as a string, as MMMU publishes it
        "explanation": "",
        "img_type": "['Body Scans: MRI, CT scans, and X-rays']",
        "answer": row["answer"] if answer is None else answer,
        "topic_difficulty": "Medium",
        "question_type": row["type"],
        "subfield": "Radiology",
    }
    for n in range(1, 8):
        names = row["images"]
        out[f"image_{n}"] = {"bytes": image_bytes(names[n - 1]), "path": None} if n <= len(names) else None
    return out


def write_mmmu(folder: Path, split: str = "validation") -> Path:
    """``MMMU/MMMU`` as downloaded: ``<Subject>/<split>-00000-of-00001.parquet`` for the five Health & Medicine
    subjects, ``options`` as a Python-list string, ``image_1..image_7`` null when unused, ``<image N>``
    placeholders; ``split="test"`` withholds every answer as ``?``. Returns the folder."""
    for row in MMMU_ROWS:
        path = folder / row["subject"] / f"{split}-00000-of-00001.parquet"
        _hub_parquet(path, [mmmu_row(row, split, "?" if split == "test" else None)], _mmmu_features())
    return folder


MEDQA_ROWS = [
    (
        "A 45-year-old man has crushing chest pain. What is the first test?",
        {"A": "Chest x-ray", "B": "Electrocardiogram", "C": "Troponin", "D": "Echocardiogram"},
        "B",
    ),
    (
        "A 6-year-old girl has a honey-coloured crusted rash. What is the cause?",
        {"A": "Staphylococcus aureus", "B": "Herpes simplex", "C": "Candida", "D": "Measles"},
        "A",
    ),
    (
        "Which vitamin deficiency causes scurvy?",
        {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"},
        "C",
    ),
    (
        "Which nerve is injured in wrist drop?",
        {"A": "Median", "B": "Ulnar", "C": "Musculocutaneous", "D": "Radial"},
        "D",
    ),
]
MEDQA_REPLIES = {
    "chest pain": "An ECG comes first. The answer is B.",  # right
    "honey-coloured": "Answer: Staphylococcus aureus",  # right (option text)
    "scurvy": "\\boxed{D}",  # wrong
    "wrist drop": "It could be A or D.",  # hedged: unparsed
}
"""By hand: 2 of 4 right, 1 unparsed."""


def write_medqa(folder: Path) -> Path:
    """``GBaker/MedQA-USMLE-4-options`` as downloaded: ``phrases_no_exclude_test.jsonl`` of ``{question, answer,
    options {A..D}, meta_info, answer_idx, metamap_phrases}``. Returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "phrases_no_exclude_test.jsonl"
    lines = []
    for question, options, idx in MEDQA_ROWS:
        row = {
            "question": question,
            "answer": options[idx],
            "options": options,
            "meta_info": "step1",
            "answer_idx": idx,
            "metamap_phrases": question.lower().split()[:4],
        }
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path
