"""The general medical benchmarks (VQA-RAD, PathVQA, SLAKE, PMC-VQA, MMMU, MedQA): read from fixtures written in
exactly the published shapes (``tests/bench_fixtures.py``), scored through the evaluator against hand-computed
results, malformed rows refused by file, row and field; the answer-reading rules they rest on; the shipped tiny
copies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from spinegpt.eval_hooks import (
    benchmark,
    compare,
    evaluator,
    mmmu,
    open_answers,
    protocol,
    registry,
    rescore,
    scorecard,
    stats,
)
from spinegpt.eval_hooks.answers import parse_choices
from spinegpt.eval_hooks.benchmark import BenchmarkError, prompt_for
from spinegpt.eval_hooks.config import BenchmarkConfig, StatisticsConfig
from spinegpt.eval_hooks.mcq import clean_choice

from .. import bench_fixtures as bf


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))  # embedded images are written here


def _scripted(replies: dict[str, str]) -> evaluator.Generator:
    """The model replaced by replies chosen by a keyword of the prompt."""

    def generate(requests, max_new_tokens):  # type: ignore[no-untyped-def]
        return [next((r for k, r in replies.items() if k in prompt), "I do not know.") for prompt, _ in requests]

    return generate


def _evaluate(tmp_path: Path, kind: str, path: Path, replies: dict[str, str], **config: Any) -> dict[str, Any]:
    bench = BenchmarkConfig(kind=kind, path=str(path), **config)
    summary = evaluator.evaluate("scripted", [bench], tmp_path / "eval", _scripted(replies))
    result = json.loads((tmp_path / "eval" / f"{bench.label}.json").read_text())
    assert result["scores"] == summary["benchmarks"][bench.label]["scores"]
    return result


# -- VQA ----------------------------------------------------------------------------------------------------------


def test_vqa_rad_as_published_scored_by_hand(tmp_path: Path) -> None:
    folder = bf.write_vqa_rad(tmp_path / "vqa-rad")
    result = _evaluate(tmp_path, "vqa_rad", folder, bf.VQA_RAD_REPLIES)
    scores = result["scores"]
    assert scores["closed"] == {"n": 3, "correct": 1, "accuracy": pytest.approx(100 / 3), "unparsed": 1}
    assert scores["open"] == {
        "n": 2,
        "correct": 1,
        "accuracy": 50.0,
        "unparsed": 0,
        "recall": pytest.approx((100 + 100 / 3) / 2),
    }
    assert scores["overall"] == {"n": 5, "correct": 2, "accuracy": 40.0, "unparsed": 1}
    records = {r["prompt"].split("\n")[0]: r for r in result["records"]}
    lesion = records["<image>where is the lesion located?"]
    assert lesion["part"] == "open" and lesion["correct"] is False and lesion["recall"] == pytest.approx(1 / 3)
    assert lesion["parsed"] == "The lesion is in the left lung"  # the answer span: the first sentence
    heart = records["<image>is the heart enlarged?"]
    assert heart["parsed"] == "no" and heart["answer"] == "yes" and heart["correct"] is False
    assert result["unparsed"] == 1 and result["answers"]["unparsed"] == 1
    assert "Answer with yes or no." in heart["prompt"]
    registry_kind = registry.get("vqa_rad")
    assert registry_kind.headline(scores) == {
        "closed %": pytest.approx(100 / 3),
        "open exact %": 50.0,
        "open recall %": pytest.approx(200 / 3),
        "overall %": 40.0,
    }


def test_embedded_images_are_written_once_by_content(tmp_path: Path) -> None:
    folder = bf.write_vqa_rad(tmp_path / "vqa-rad")
    first = registry.get("vqa_rad").read(folder)
    paths = [Path(i.images[0]) for i in first]
    assert all(p.is_file() and p.is_relative_to(tmp_path / "cache" / "benchmark-images") for p in paths)
    stamps = [p.stat().st_mtime_ns for p in paths]
    again = registry.get("vqa_rad").read(folder)
    assert [Path(i.images[0]) for i in again] == paths and [p.stat().st_mtime_ns for p in paths] == stamps
    # A cached image is checked against its name (its content hash): one cut short or changed is written again.
    original = paths[0].read_bytes()
    for damaged in (original[: len(original) // 2], original[:-1] + bytes([original[-1] ^ 1]), b""):
        paths[0].write_bytes(damaged)
        registry.get("vqa_rad").read(folder)
        assert paths[0].read_bytes() == original


def test_path_vqa_reads_every_shard_and_refuses_one_alone(tmp_path: Path) -> None:
    folder = bf.write_path_vqa(tmp_path / "path-vqa")
    items = registry.get("path_vqa").read(folder)
    assert [i.answer_texts[0] for i in items] == ["yes", "hematoxylin and eosin", "no"]
    assert [i.task for i in items] == ["closed", "open", "closed"]
    with Image.open(items[0].images[0]) as cmyk:  # the CMYK JPEG is kept as published; the engine converts it
        assert cmyk.mode == "CMYK" and cmyk.convert("RGB").mode == "RGB"
    shard = folder / "data" / "test-00000-of-00002.parquet"
    with pytest.raises(
        BenchmarkError, match=r"split into 2 shards and test-00001-of-00002 is missing \(give the folder"
    ):
        registry.get("path_vqa").read(shard)
    (folder / "data" / "test-00001-of-00002.parquet").unlink()
    with pytest.raises(BenchmarkError, match="test-00001-of-00002 is missing"):
        registry.get("path_vqa").read(folder)


def test_slake_by_answer_type_and_language_with_chinese_synonyms(tmp_path: Path) -> None:
    path = bf.write_slake(tmp_path / "SLAKE")
    raw = path.read_bytes()
    assert raw.count(b"\n") == 0 and "肝脏".encode() in raw and b"\\u" not in raw  # one line, raw UTF-8
    replies = {question: reply for _, _, question, _, _, _, reply in bf.SLAKE_ROWS}
    result = _evaluate(tmp_path, "slake", path, replies)
    scores = result["scores"]
    assert scores["closed"] == {"n": 4, "correct": 3, "accuracy": 75.0, "unparsed": 0}
    assert scores["open"]["correct"] == 1 and scores["open"]["recall"] == 50.0
    assert scores["overall"]["correct"] == 4 and scores["overall"]["n"] == 6
    en, zh = scores["by_language"]["en"], scores["by_language"]["zh"]
    assert (en["closed"]["correct"], en["closed"]["n"], en["open"]["correct"], en["open"]["recall"]) == (2, 2, 0, 0.0)
    assert (zh["closed"]["correct"], zh["closed"]["n"], zh["open"]["correct"], zh["open"]["recall"]) == (1, 2, 1, 100.0)
    records = {r["id"]: r for r in result["records"]}
    assert records["5011"]["parsed"] == "yes" and records["5011"]["correct"]  # 有 answers 是
    assert records["5012"]["parsed"] == "yes" and not records["5012"]["correct"]  # 是的，包含 against 不包含
    assert records["12"]["correct"] and records["12"]["part"] == "closed"  # "The heart." matches "Heart"
    assert "请回答是或否。" in records["5011"]["prompt"]
    items = {i.id: i for i in registry.get("slake").read(path)}
    assert Path(items["11"].images[0]) == (path.parent / "imgs" / "xmlab1" / "source.jpg").resolve()
    assert items["11"].meta["modality"] == "MRI"


def test_a_users_own_vqa_file_through_a_column_map(tmp_path: Path) -> None:
    bf.image_bytes("ct-sagittal-L1.png")
    (tmp_path / "bilder").mkdir()
    (tmp_path / "bilder" / "a.png").write_bytes(bf.image_bytes("ct-sagittal-L1.png"))
    rows = [
        {"nr": "q1", "frage": "Is there a fracture?", "antwort": "no", "bild": "a.png", "art": "CLOSED"},
        {"nr": "q2", "frage": "Which level?", "antwort": "L1", "bild": "a.png", "art": "OPEN"},
    ]
    path = tmp_path / "eigene.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"id": "nr", "question": "frage", "answer": "antwort", "image": "bild", "answer_type": "art"}
    result = _evaluate(
        tmp_path,
        "vqa_rad",
        path,
        {"fracture": "No.", "Which level": "L1"},
        columns=columns,
        image_root=str(tmp_path / "bilder"),
    )
    assert [r["id"] for r in result["records"]] == ["q1", "q2"] and result["scores"]["overall"]["correct"] == 2
    with pytest.raises(ValueError, match=r"columns: vqa_rad has no field.*frage.*it reads id, question"):
        BenchmarkConfig(kind="vqa_rad", path="x", columns={"frage": "question"})
    with pytest.raises(ValueError, match=r"columns: spinebench has no field.*its format is fixed"):
        BenchmarkConfig(kind="spinebench", path="x", columns={"question": "q"})


# -- multiple choice ------------------------------------------------------------------------------------------------


def test_pmc_vqa_messy_choice_cells_both_versions(tmp_path: Path) -> None:
    v1 = bf.write_pmc_vqa(tmp_path / "v1")
    items = registry.get("pmc_vqa").read(v1)
    assert items[0].options == {
        "A": "Diffuse uptake pattern",
        "B": "Focal uptake pattern",
        "C": "No uptake pattern",
        "D": "Cannot determine from the information given",
    }
    assert (
        items[2].options["C"] == "Normal tissue" and items[2].question == "What does the arrow show, in the left panel?"
    )
    assert [i.answer for i in items] == [["B"], ["A"], ["A"]]
    assert Path(items[0].images[0]).parent == (v1.parent / "images").resolve()
    result = _evaluate(tmp_path, "pmc_vqa", v1, bf.PMC_REPLIES)
    assert result["scores"]["overall"] == {"n": 3, "correct": 1, "accuracy": pytest.approx(100 / 3), "unparsed": 1}
    v2 = registry.get("pmc_vqa").read(bf.write_pmc_vqa(tmp_path / "v2", version=2))
    assert [i.answer for i in v2] == [["B"], ["A"]] and "figures" in v2[0].images[0]


@pytest.mark.parametrize(
    ("cell", "letter", "text"),
    [
        (" B:Focal uptake pattern", "B", "Focal uptake pattern"),
        ('"A:Diffuse\u00a0uptake  pattern"', "A", "Diffuse uptake pattern"),
        ("C: No uptake ", "C", "No uptake"),
        ("(D) Cannot", "D", "Cannot"),
        ("B12 deficiency", "B", "B12 deficiency"),
    ],
)
def test_choice_cells_are_cleaned(cell: str, letter: str, text: str) -> None:
    assert clean_choice(cell, letter) == text


def test_medqa_scored_by_hand_and_its_answer_text_checked(tmp_path: Path) -> None:
    path = bf.write_medqa(tmp_path / "medqa")
    result = _evaluate(tmp_path, "medqa", path, bf.MEDQA_REPLIES)
    assert result["scores"]["overall"] == {"n": 4, "correct": 2, "accuracy": 50.0, "unparsed": 1}
    assert [r["decided_by"] for r in result["records"]] == ["rule", "rule", "rule", "unparsed"]
    rows = path.read_text().splitlines()
    broken = json.loads(rows[2])
    broken["answer"] = "Vitamin D"
    rows[2] = json.dumps(broken)
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(BenchmarkError, match=rf"{path}:3: answer text 'Vitamin D' \(answer\) is not option C"):
        registry.get("medqa").read(path)


# -- MMMU -----------------------------------------------------------------------------------------------------------


def test_mmmu_health_subjects_scored_by_its_rules(tmp_path: Path) -> None:
    folder = bf.write_mmmu(tmp_path / "MMMU")
    items = {i.id: i for i in registry.get("mmmu").read(folder)}
    assert len(items) == 5
    clinical = items["validation_Clinical_Medicine_1"]
    assert (
        clinical.answer == ["I"]
        and clinical.options["I"] == "Beta blocker"
        and "I. Beta blocker" in prompt_for(clinical)
    )
    two = items["validation_Diagnostics_and_Laboratory_Medicine_1"]
    assert len(two.images) == 2 and prompt_for(two).startswith("<image><image>Compare <image 1> and <image 2>")
    assert items["validation_Pharmacy_1"].answer_texts == ["3.5", "3.50"]  # a list answer written as a string
    result = _evaluate(tmp_path, "mmmu", folder, bf.MMMU_REPLIES)
    scores = result["scores"]
    assert scores["multiple_choice"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(200 / 3)}
    assert scores["open"] == {"n": 2, "correct": 1, "accuracy": 50.0}
    assert scores["overall"] == {"n": 5, "correct": 3, "accuracy": 60.0}
    assert [s["correct"] for s in scores["by_subject"].values()] == [1, 1, 1, 0, 0]
    assert result["unparsed"] == 1  # "I am not sure." is not guessed (MMMU's parser would pick a random letter)


def test_mmmu_withheld_answers_are_counted_not_dropped(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = bf.write_mmmu(tmp_path / "MMMU")
    test_file = bf.write_mmmu(tmp_path / "test", split="test") / "Pharmacy" / "test-00000-of-00001.parquet"
    with pytest.raises(BenchmarkError, match=r"no item can be scored.*1 x answer withheld"):
        _evaluate(tmp_path, "mmmu", test_file, {})
    # Validation and withheld rows in one file: the withheld one is counted apart, the others scored.
    mixed = tmp_path / "mixed.parquet"
    rows = pq.read_table(folder / "Pharmacy" / "validation-00000-of-00001.parquet").to_pylist()
    rows += pq.read_table(test_file).to_pylist()
    pq.write_table(pa.Table.from_pylist(rows), mixed)
    result = _evaluate(tmp_path, "mmmu", mixed, bf.MMMU_REPLIES)
    assert result["items"] == 1 and result["unusable"] == {"answer withheld ('?': the test split)": 1}
    assert "rows not scorable" in (tmp_path / "eval" / "mmmu.md").read_text()


def test_mmmu_folder_needs_all_five_subjects(tmp_path: Path) -> None:
    folder = bf.write_mmmu(tmp_path / "MMMU")
    (folder / "Pharmacy" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(BenchmarkError, match=r"no Pharmacy/validation-\*\.parquet"):
        registry.get("mmmu").read(folder)


@pytest.mark.parametrize(
    ("response", "answers", "right"),
    [
        ("Counting both images, the total is 12 lesions.", ["12"], True),
        ("The half-life is about 4 hours.", ["3.5", "3.50"], False),
        ("Therefore the answer is 3.50 h", ["3.5"], True),
        ("It is 1,200 mg", ["1200"], True),
        ("So the answer is pneumonia.", ["Pneumonia"], True),
        ("The answer is b", ["a"], False),  # one character is padded: "a" does not match inside words
    ],
)
def test_mmmu_open_answers_follow_mmmus_rules(response: str, answers: list[str], right: bool) -> None:
    assert mmmu.eval_open(answers, mmmu.parse_open_response(response)) is right


# -- malformed rows -------------------------------------------------------------------------------------------------


DROP = object()
"""A column the malformed row's file does not have."""


def _vqa_parquet(tmp_path: Path, **changes: Any) -> Path:
    from datasets import Image as ImageFeature
    from datasets import Value

    row = {"image": {"bytes": bf.image_bytes("ct-sagittal-L1.png"), "path": None}, "question": "q?", "answer": "yes"}
    features: dict[str, Any] = {"image": ImageFeature(), "question": Value("string"), "answer": Value("string")}
    for key, value in changes.items():
        if value is DROP:
            features.pop(key)
        else:
            row[key] = value
    rows = [
        {"image": {"bytes": bf.image_bytes("ct-sagittal-L2.png"), "path": None}, "question": "ok?", "answer": "no"},
        row,
    ]
    return bf._hub_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows, features)


def _mmmu_file(tmp_path: Path, **changes: Any) -> Path:
    row = bf.mmmu_row(bf.MMMU_ROWS[0])
    row.update(changes)
    return bf._hub_parquet(tmp_path / "Pharmacy" / "validation-00000-of-00001.parquet", [row], bf._mmmu_features())


MALFORMED: list[tuple[str, Callable[[Path], Path], str]] = [
    ("vqa_rad", lambda t: _vqa_parquet(t, question=DROP), r"\[row 0\]: no column 'question' \(question\)"),
    ("vqa_rad", lambda t: _vqa_parquet(t, answer=" "), r"\[row 1\]: 'answer' \(answer\) is empty"),
    ("vqa_rad", lambda t: _vqa_parquet(t, image=None), r"\[row 1\] \(image\): a VQA question has one image, found 0"),
    (
        "vqa_rad",
        lambda t: _vqa_parquet(t, image={"bytes": b"\x89PNG broken", "path": "x.png"}),
        r"\[row 1\] \(image\): the embedded image is not a readable image",
    ),
    (
        "slake",
        lambda t: _slake_with(t, answer_type="MAYBE"),
        r"test.json\[2\]: 'answer_type' must be CLOSED or OPEN, got 'MAYBE'",
    ),
    ("slake", lambda t: _slake_with(t, q_lang=None), r"test.json\[2\]: 'q_lang' \(language\) is empty"),
    ("slake", lambda t: _slake_with(t, img_name="xmlab9/source.jpg"), r"test.json\[2\] \(img_name\): image not found"),
    ("slake", lambda t: _slake_with(t, qid=11), r"test.json\[2\]: repeated id '11' \(qid\)"),
    ("pmc_vqa", lambda t: _pmc_with(t, "x.jpg,Q?,A,A:1,B:2"), r"test_clean.csv:5: 5 cells for 8 columns"),
    (
        "pmc_vqa",
        lambda t: _pmc_with(t, "PMC3015_F2.jpg,Q?,x,A:1,B:2,C:3,D:4,E"),
        r"test_clean.csv:5 \(Answer_label\): answer 'E' is neither an option letter",
    ),
    (
        "pmc_vqa",
        lambda t: _pmc_with(t, "missing.jpg,Q?,x,A:1,B:2,C:3,D:4,A"),
        r"test_clean.csv:5 \(Figure_path\): image not found: tried .*images/missing.jpg, .*figures/missing.jpg",
    ),
    (
        "pmc_vqa",
        lambda t: _pmc_with(t, "PMC3015_F2.jpg,Q?,x,A:1,,C:3,D:4,A"),
        r"test_clean.csv:5: 'Choice C' is filled but an earlier choice is empty",
    ),
    ("medqa", lambda t: _medqa_with(t, "{not json"), r"phrases_no_exclude_test.jsonl:5: invalid JSON"),
    (
        "medqa",
        lambda t: _medqa_with(t, json.dumps({"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "C"})),
        r"jsonl:5 \(answer_idx\): answer 'C' is neither an option letter",
    ),
    ("mmmu", lambda t: _mmmu_file(t, options="[unclosed"), r"\[row 0\] \(options\): not a list of options"),
    (
        "mmmu",
        lambda t: _mmmu_file(t, question_type="essay"),
        r"\[row 0\]: 'question_type' must be multiple-choice or open",
    ),
    (
        "mmmu",
        lambda t: _mmmu_file(t, answer="Z"),
        r"\[row 0\] \(answer\): answer 'Z' is not one of the options' letters",
    ),
    (
        "mmmu",
        lambda t: _mmmu_file(t, question="See <image 2>."),
        r"\[row 0\]: the question refers to <image 2> but 'image_2' is empty",
    ),
    (
        "mmmu",
        lambda t: _mmmu_file(t, options=repr([str(i) for i in range(11)])),
        r"\[row 0\] \(options\): 11 options; at most 10 \(A-J\)",
    ),
]


def _slake_with(tmp_path: Path, **changes: Any) -> Path:
    path = bf.write_slake(tmp_path)
    rows = json.loads(path.read_text())
    rows[2].update(changes)
    path.write_text(json.dumps(rows, ensure_ascii=False))
    return path


def _pmc_with(tmp_path: Path, line: str) -> Path:
    path = bf.write_pmc_vqa(tmp_path)
    path.write_text(path.read_text() + line + "\n")
    return path


def _medqa_with(tmp_path: Path, line: str) -> Path:
    path = bf.write_medqa(tmp_path)
    path.write_text(path.read_text() + line + "\n")
    return path


@pytest.mark.parametrize(("kind", "write", "message"), MALFORMED)
def test_malformed_rows_are_refused_naming_file_row_and_field(
    tmp_path: Path, kind: str, write: Callable[[Path], Path], message: str
) -> None:
    path = write(tmp_path / "bench")
    with pytest.raises(BenchmarkError, match=message) as info:
        registry.get(kind).read(path)
    assert str(path.parent if path.suffix == ".parquet" else path) in str(info.value)


def test_options_beyond_the_letters_are_a_clear_error() -> None:
    assert benchmark.LETTERS == "ABCDEFGHIJ"
    with pytest.raises(BenchmarkError, match=r"x\.json\[0\]: 11 options; at most 10 \(A-J\) are supported"):
        benchmark.options([str(i) for i in range(11)], "", "x.json[0]")
    nine = {letter: f"option {letter}" for letter in "ABCDEFGHI"}
    assert parse_choices("Answer: I", letters="".join(nine), options=nine) == ["I"]
    assert parse_choices("I think the answer is C.", letters="".join(nine), options=nine) == ["C"]


# -- the rules free-text answers are read by ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes.", "yes"),
        ("No, there is no fracture.", "no"),
        ("Yes, there is no effusion.", "yes"),  # the opening verdict, not the later negation
        ("The heart appears normal. Answer: no", "no"),
        ("normal", None),  # MedEvalKit's substring test reads this as "no"
        ("It is not known whether yes or no.", None),
        ("<think>no</think>Yes", "yes"),
        ("\\boxed{yes}", "yes"),
        ("是的，有", "yes"),
        ("不是", "no"),
        ("图中没有肝脏", "no"),
        ("不包含。", "no"),
        ("无", "no"),
        ("无法判断", None),
        ("", None),
    ],
)
def test_yes_no_verdicts(reply: str, verdict: str | None) -> None:
    assert open_answers.verdict(reply) == verdict


def test_normalisation_exact_match_and_recall() -> None:
    assert open_answers.normalise("The T2-weighted MRI, 1,000 and 1.5 cm.") == "t2 weighted mri 1000 and 1.5 cm"
    assert open_answers.normalise("two lesions") == "2 lesions"
    assert open_answers.exact_match("Liver.", ["liver"]) and not open_answers.exact_match("The liver is big", ["liver"])
    assert open_answers.exact_match("The answer is the left lobe. It is enlarged.", ["left lobe"])
    # Clipped counts: "lung" said twice recalls the answer's one "lung" once.
    assert open_answers.token_recall("lung lung", "left lung") == 0.5
    assert open_answers.tokens("肝脏 and the Liver") == ["肝", "脏", "and", "liver"]
    assert open_answers.token_recall("肝", "肝脏") == 0.5
    assert open_answers.polarity("Yes") == "yes" and open_answers.polarity("不包含") == "no"
    assert open_answers.polarity("心脏") is None


# -- files, decontamination, shipped copies -------------------------------------------------------------------------


def test_questions_for_decontamination_need_no_images(tmp_path: Path) -> None:
    slake = bf.write_slake(tmp_path / "SLAKE")
    for image in (tmp_path / "SLAKE" / "imgs").rglob("*.jpg"):
        image.unlink()
    assert registry.get("slake").questions(slake)[3] == "图中有肝脏吗？"
    mmmu_questions = registry.get("mmmu").questions(bf.write_mmmu(tmp_path / "MMMU"))
    assert mmmu_questions[0] == "  Which structure is labelled X?"  # MMMU's <image N> placeholders left out
    assert (
        registry.get("medqa").questions(bf.write_medqa(tmp_path / "medqa"))[2]
        == "Which vitamin deficiency causes scurvy?"
    )
    assert len(registry.get("path_vqa").questions(bf.write_path_vqa(tmp_path / "path-vqa"))) == 3


def test_the_shipped_tiny_copies_read_as_their_writers_output(tmp_path: Path) -> None:
    for name, writer in (("vqa_rad", bf.write_vqa_rad), ("medqa", bf.write_medqa)):
        shipped = registry.get(name).read(benchmark.builtin(name))
        fresh = registry.get(name).read(writer(tmp_path / name))
        assert [(i.question, i.answer, i.answer_texts, i.options) for i in shipped] == [
            (i.question, i.answer, i.answer_texts, i.options) for i in fresh
        ]
        assert [Path(i.images[0]).read_bytes() for i in shipped if i.images] == [
            Path(i.images[0]).read_bytes() for i in fresh if i.images
        ]
    config = BenchmarkConfig(kind="vqa_rad", path="builtin:vqa_rad").resolved(Path("/elsewhere"))
    assert Path(config.path) == benchmark.builtin("vqa_rad") and Path(config.path).is_dir()
    with pytest.raises(ValueError, match="no builtin benchmark 'slake'; shipped: medqa, vqa_rad"):
        BenchmarkConfig(kind="slake", path="builtin:slake")


# -- intervals, protocol, re-scoring and comparison on the general benchmarks ---------------------------------------

SLAKE_REPLIES = {question: reply for _, _, question, _, _, _, reply in bf.SLAKE_ROWS}
GENERAL: list[tuple[str, Callable[[Path], Path], dict[str, str]]] = [
    ("vqa_rad", bf.write_vqa_rad, bf.VQA_RAD_REPLIES),
    ("path_vqa", bf.write_path_vqa, {}),
    ("slake", bf.write_slake, SLAKE_REPLIES),
    ("pmc_vqa", bf.write_pmc_vqa, bf.PMC_REPLIES),
    ("mmmu", bf.write_mmmu, bf.MMMU_REPLIES),
    ("medqa", bf.write_medqa, bf.MEDQA_REPLIES),
]


def _evaluate_with(tmp_path: Path, kind: str, path: Path, replies: dict[str, str], out: str = "eval") -> dict[str, Any]:
    bench = BenchmarkConfig(kind=kind, path=str(path))
    settings = StatisticsConfig(min_group_n=1)  # the fixtures' groups are small: shown, not pooled
    evaluator.evaluate("scripted", [bench], tmp_path / out, _scripted(replies), statistics=settings)
    result: dict[str, Any] = json.loads((tmp_path / out / f"{kind}.json").read_text())
    return result


@pytest.mark.parametrize(("kind", "write", "replies"), GENERAL)
def test_every_headline_figure_has_its_interval_and_the_protocol_its_file(
    tmp_path: Path, kind: str, write: Callable[[Path], Path], replies: dict[str, str]
) -> None:
    path = write(tmp_path / kind)
    result = _evaluate_with(tmp_path, kind, path, replies)
    found = scorecard.read(result["statistics"])
    assert found is not None
    by_label = found.by_label()
    headline = registry.get(kind).headline(result["scores"])
    assert headline and set(headline) <= set(by_label)
    for label, value in headline.items():
        metric = by_label[label]
        assert metric.estimate == pytest.approx(value, abs=1e-9), label  # the figure the benchmark reports
        assert metric.interval.low <= metric.estimate <= metric.interval.high
        if len(metric.parts) == 1 and metric.correct is not None:  # one accuracy: Wilson's interval, exactly
            wilson = stats.wilson(metric.correct, metric.n)
            assert (metric.interval.low, metric.interval.high) == pytest.approx((wilson.low, wilson.high))
    made = protocol.EvalProtocol.model_validate(result["protocol"])
    assert made.benchmark.sha256 == benchmark.content_sha256(registry.get(kind), path)  # a folder: its files
    assert made.benchmark.items == result["items"] and made.benchmark.unusable == 0
    assert made.prompt.template_sha256 == protocol.template_sha256() and made.judge is None  # no reports, no judge


def test_generation_budgets_name_the_kinds_of_item(tmp_path: Path) -> None:
    stand_in = bf.STAND_IN
    bench = BenchmarkConfig(kind="mmmu", path=str(bf.write_mmmu(tmp_path / "MMMU")), max_new_tokens=64)
    evaluator.evaluate("m", [bench], tmp_path / "eval", _scripted(bf.MMMU_REPLIES), engine=stand_in)
    made = protocol.EvalProtocol.model_validate(json.loads((tmp_path / "eval" / "mmmu.json").read_text())["protocol"])
    assert made.generation is not None and made.generation.max_new_tokens == {"mcq": 64, "answer": 64}
    assert made.prompt.template["short"] == "Answer the question using a single word or phrase."
    vqa = BenchmarkConfig(kind="vqa_rad", path="builtin:vqa_rad", max_new_tokens=8)
    evaluator.evaluate("m", [vqa], tmp_path / "vqa", _scripted({}), engine=stand_in)
    result = json.loads((tmp_path / "vqa" / "vqa_rad.json").read_text())
    assert result["protocol"]["generation"]["max_new_tokens"] == {"answer": 8}
    assert result["protocol"]["prompt"]["template"]["yes_no"] == "Answer with yes or no."


def test_slake_and_mmmu_break_down_by_their_labels(tmp_path: Path) -> None:
    slake = _evaluate_with(tmp_path, "slake", bf.write_slake(tmp_path / "SLAKE"), SLAKE_REPLIES)
    breakdowns = {b["name"]: b for b in slake["statistics"]["breakdowns"]}
    assert list(breakdowns) == ["language", "answer_type", "modality", "location", "content_type", "base_type"]
    # By hand (bench_fixtures.SLAKE_ROWS): closed right and open exactly matched, per language and answer type.
    language = {g["name"]: (g["n"], g["correct"]) for g in breakdowns["language"]["groups"]}
    assert language == {"en": (3, 2), "zh": (3, 2)}
    answer_type = {g["name"]: (g["n"], g["correct"]) for g in breakdowns["answer_type"]["groups"]}
    assert answer_type == {"CLOSED": (4, 3), "OPEN": (2, 1)}
    assert breakdowns["language"]["parts"] == ["closed", "open_exact"]
    metrics = {m["key"]: m for m in slake["statistics"]["metrics"]}
    assert (
        metrics["open_recall"]["estimate"] == pytest.approx(50.0)
        and "bootstrap" in metrics["open_recall"]["interval"]["method"]
    )
    assert metrics["overall"]["estimate"] == pytest.approx(100 * 4 / 6) and metrics["overall"]["n"] == 6
    mmmu_result = _evaluate_with(tmp_path, "mmmu", bf.write_mmmu(tmp_path / "MMMU"), bf.MMMU_REPLIES, out="mmmu")
    (subject,) = mmmu_result["statistics"]["breakdowns"]
    assert subject["name"] == "subject" and subject["parts"] == ["multiple_choice", "open"]
    assert [(g["name"], g["correct"]) for g in subject["groups"]] == [
        ("Basic_Medical_Science", 1),
        ("Clinical_Medicine", 1),
        ("Diagnostics_and_Laboratory_Medicine", 1),
        ("Pharmacy", 0),
        ("Public_Health", 0),
    ]
    assert {m["key"] for m in mmmu_result["statistics"]["metrics"]} == {"multiple_choice", "open", "accuracy"}


def test_a_vqa_result_rescores_without_its_files_and_compares_item_by_item(tmp_path: Path) -> None:
    folder = bf.write_vqa_rad(tmp_path / "vqa-rad")
    a = _evaluate_with(tmp_path, "vqa_rad", folder, bf.VQA_RAD_REPLIES, out="a")
    _evaluate_with(tmp_path, "vqa_rad", folder, {"": "Yes."}, out="b")  # every reply "Yes."
    shutil.rmtree(folder)  # the records alone re-score: the benchmark file is gone
    summary = rescore.rescore(tmp_path / "a" / "vqa_rad.json", tmp_path / "rescored")
    again = json.loads((tmp_path / "rescored" / "vqa_rad.json").read_text())
    assert again["scores"] == a["scores"] and summary["benchmarks"]["vqa_rad"]["scores"] == a["scores"]
    assert [m["estimate"] for m in again["statistics"]["metrics"]] == [
        m["estimate"] for m in a["statistics"]["metrics"]
    ]
    assert again["protocol"]["prompt"] == a["protocol"]["prompt"]
    assert again["protocol"]["benchmark"] == a["protocol"]["benchmark"]
    # B ("Yes." to everything) against A, matched by item: closed 2/3 vs 1/3 (B alone right on 2, A alone on 1).
    comparison = compare.compare_files(tmp_path / "a" / "vqa_rad.json", tmp_path / "b" / "vqa_rad.json")
    closed = comparison.metric("closed")
    assert closed is not None and closed.difference.estimate == pytest.approx(100 / 3)
    assert closed.mcnemar is not None and (closed.mcnemar.b_only, closed.mcnemar.a_only) == (2, 1)
    recall = comparison.metric("open_recall")
    assert recall is not None and recall.mcnemar is None and recall.b == 0.0
    assert [m.key for m in comparison.metrics] == ["closed", "open_exact", "open_recall", "overall"]
    assert comparison.metric("overall") is not None
    rescored = compare.compare_files(tmp_path / "a" / "vqa_rad.json", tmp_path / "rescored" / "vqa_rad.json")
    assert all(m.difference.estimate == 0.0 for m in rescored.metrics)


def test_withheld_rows_are_in_the_protocol_and_survive_a_rescore(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = bf.write_mmmu(tmp_path / "MMMU")
    test_file = bf.write_mmmu(tmp_path / "test", split="test") / "Pharmacy" / "test-00000-of-00001.parquet"
    mixed = tmp_path / "mixed.parquet"
    rows = pq.read_table(folder / "Pharmacy" / "validation-00000-of-00001.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist(rows + pq.read_table(test_file).to_pylist()), mixed)
    result = _evaluate_with(tmp_path, "mmmu", mixed, bf.MMMU_REPLIES)
    assert result["protocol"]["benchmark"]["unusable"] == 1 and result["items"] == 1
    assert "1 row(s) the benchmark's rules cannot score left out" in (tmp_path / "eval" / "mmmu.md").read_text()
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["benchmarks"]["mmmu"]
    assert summary["unusable"] == result["unusable"]
    rescore.rescore(tmp_path / "eval" / "mmmu.json", tmp_path / "rescored")
    again = json.loads((tmp_path / "rescored" / "mmmu.json").read_text())
    assert again["unusable"] == result["unusable"] and again["protocol"]["benchmark"]["unusable"] == 1
    assert again["scores"] == result["scores"]
