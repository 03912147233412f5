"""Data mixes: every reader on fixture files written here in the upstream schemas, mix validation, seeded and
reproducible builds with provenance, dedupe and decontamination, bad-input policy, and exact token counts checked
against the real processor."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from spinegpt.data_mixes import audit, build, lengths, mixes, readers, sources, volumes
from spinegpt.data_mixes import smoke_root as smoke_upstream
from spinegpt.data_mixes.records import Bad, Record
from spinegpt.offline import smoke_images as smoke_data

from ..conftest import REPO, build_mix


def _read(kind: str, path: Path, **options: Any) -> list[Record | Bad]:
    return list(sources.read(kind, path, readers.ReadOptions(**options)))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- readers --------------------------------------------------------------------------------------------------------


def test_medical_o1_keeps_the_chain_of_thought_and_names_lines_of_bad_items(tmp_path: Path) -> None:
    items = [
        {"Question": "Q1?", "Complex_CoT": "think 1", "Response": "A1"},
        {"Question": "Q2?", "Response": "A2"},  # no chain of thought
        {"Question": "问题？", "Complex_CoT": "想", "Response": "答"},
    ]
    path = _write(tmp_path / "o1.json", json.dumps(items, ensure_ascii=False, indent=2))
    got = _read("medical_o1", path)
    assert isinstance(got[0], Record) and got[0].messages[1]["content"] == (
        "## Thinking\n\nthink 1\n\n## Final Response\n\nA1"
    )
    assert got[0].provenance["line"] == 2 and got[0].split == "general" and got[0].task == "reasoning"
    assert isinstance(got[1], Bad) and got[1].where == f"{path}:7" and "'Complex_CoT'" in got[1].detail
    assert isinstance(got[2], Record) and got[2].language == "zh"
    tags = _read("medical_o1", path, reasoning_style="think_tags")[0]
    assert isinstance(tags, Record) and tags.messages[1]["content"].startswith("<think>\nthink 1\n</think>")


def test_a_broken_json_array_is_reported_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "o1.json", '[\n{"Question": "a", "Complex_CoT": "b", "Response": "c"},\n{"Question": \n]')
    got = _read("medical_o1", path)
    assert isinstance(got[0], Record)
    assert isinstance(got[1], Bad) and got[1].reason == "invalid JSON" and got[1].where.endswith(":4")


def test_r1_distill_keys_and_medthoughts_options(tmp_path: Path) -> None:
    r1 = [{"question": "Q?", "reasoning (reasoning_content)": "R", "response (content)": "A"}, {"question": "Q?"}]
    got = _read("medical_r1_distill", _write(tmp_path / "r1.json", json.dumps(r1)))
    assert isinstance(got[0], Record) and "## Thinking\n\nR" in got[0].messages[1]["content"]
    assert isinstance(got[1], Bad) and "'reasoning (reasoning_content)'" in got[1].detail
    rows = [
        {
            "question_id": 1,
            "question": "Which?",
            "options": {"A": "x", "B": "y"},
            "answer_idx": "B",
            "ds_answer": "B. y",
            "ds_think": "hmm",
            "source": "MedQA",
        },
        {
            "question_id": 2,
            "question": "Which?",
            "options": {"A": "x", "B": "y"},
            "answer_idx": "E",
            "ds_answer": "E",
            "ds_think": "hmm",
            "source": "MedQA",
        },
    ]
    got = _read("medthoughts", _write(tmp_path / "mt.jsonl", "\n".join(json.dumps(r) for r in rows)))
    assert isinstance(got[0], Record) and got[0].task == "mcq"
    assert "Options:\nA. x\nB. y" in got[0].messages[0]["content"] and got[0].provenance["answer"] == "B"
    assert isinstance(got[1], Bad) and got[1].reason == "bad answer" and got[1].where.endswith(":2")


def test_pubmedvision_placeholders_image_root_and_errors(tmp_path: Path) -> None:
    smoke_data.write_image("xray-ap-none.png", tmp_path / "imgs" / "a")
    rows = [
        {
            "id": "p1",
            "image": ["a/xray-ap-none.png"],
            "conversations": [{"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "An X-ray."}],
        },
        {
            "id": "p2",
            "image": ["a/missing.png"],
            "conversations": [{"from": "human", "value": "<image>x"}, {"from": "gpt", "value": "y"}],
        },
        {"id": "p3", "image": [], "conversations": [{"from": "doctor", "value": "x"}]},
    ]
    path = _write(tmp_path / "pmv.json", json.dumps(rows, indent=1))
    got = _read("pubmedvision", path, image_root=tmp_path / "imgs")
    assert isinstance(got[0], Record)
    assert got[0].messages[0]["content"] == "<image>\nWhat is shown?"
    assert got[0].images == [str((tmp_path / "imgs" / "a" / "xray-ap-none.png").resolve())]
    assert isinstance(got[1], Bad) and got[1].reason == "image not found" and "missing.png" in got[1].detail
    assert isinstance(got[2], Bad) and got[2].reason == "unknown role" and "'doctor'" in got[2].detail


def test_spinemed_pointers_volumes_reports_and_missing_datasets(root: Path) -> None:
    options = dict(image_root=root / "SpineMed-450k", data_root=root / "open_datasets")
    got = {
        r.id: r for r in _read("spinemed", root / "SpineMed-450k" / "train.jsonl", **options) if isinstance(r, Record)
    }
    volume = got["sm-verse-volume"]
    assert len(volume.images) == 6 and volume.messages[0]["content"].count("<image>") == 6  # all 6 slices (< 25)
    assert [Path(p).name for p in volume.images][:2] == ["ct-sagittal-L1.png", "ct-sagittal-L2.png"]
    assert got["sm-verse-file"].images[0].endswith("VerSe/sub-verse004/ct-sagittal-L3.png")
    report = next(
        r for r in got.values() if r.task == "report" and "## Structured imaging findings" in r.messages[-1]["content"]
    )
    assert "## Diagnostic rationale and disclaimer" in report.messages[-1]["content"]
    assert {r.split for r in got.values()} == {"spine", "non_spine"}
    three = list(
        sources.read(
            "spinemed", root / "SpineMed-450k" / "train.jsonl", readers.ReadOptions(**options, volume_slices=3)
        )
    )
    assert [len(r.images) for r in three if isinstance(r, Record) and r.id == "sm-verse-volume"] == [3]
    evenly = volumes.sample_evenly(100, 25)
    assert evenly[:3] == [0, 4, 8] and evenly[-1] == 99
    elsewhere = _read(
        "spinemed",
        root / "SpineMed-450k" / "train.jsonl",
        image_root=root / "SpineMed-450k",
        data_root=root / "elsewhere",
    )
    missing = [r for r in elsewhere if isinstance(r, Bad)]
    assert any("dataset VerSe, case sub-verse004" in b.detail and "VerSe" in b.detail for b in missing)


def test_spinemed_schema_errors_name_the_line(tmp_path: Path) -> None:
    good = {
        "id": "x",
        "language": "en",
        "category": "Spine Surgery",
        "task": "mcq",
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "provenance": {"source_type": "textbook", "book": "B"},
    }
    lines = [
        good,
        {**good, "category": "Spine"},
        {**good, "task": "essay"},
        {**good, "category": "Orthopedic Trauma", "subspecialty": "Trauma"},
        {**good, "images": ["nope.png"]},
    ]
    lines = [{**item, "id": f"x{i}"} for i, item in enumerate(lines)]  # ids are unique (a repeat is an error)
    path = _write(tmp_path / "sm.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    got = _read("spinemed", path)
    assert isinstance(got[0], Record)
    reasons = [(b.where.rsplit(":", 1)[1], b.reason) for b in got[1:] if isinstance(b, Bad)]
    assert reasons == [
        ("2", "unknown category"),
        ("3", "unknown task"),
        ("4", "bad subspecialty"),
        ("5", "image not found"),
        ("6", "invalid JSON"),
    ]


def test_mix_validation_reports_every_error_with_its_path(tmp_path: Path) -> None:
    _write(
        tmp_path / "bad.yaml",
        """name: bad
total: 10
components:
  - source: medical_o1_en
    weight: 0.5
  - source: nowhere
    weight: 0.2
  - source: spinemed
    filters: {task: essay, category: Spine}
    count: 3
    fraction: 0.5
""",
    )
    with pytest.raises(mixes.MixError) as err:
        mixes.load(str(tmp_path / "bad.yaml"))
    text = str(err.value)
    assert "components[2].filters.task" in text and "bad.yaml:9" in text
    assert "components[2].filters.category" in text and "unknown category" in text
    assert "at most one of count, fraction, weight" in text
    assert "weights sum to 0.7, not 1" in text and "unknown source 'nowhere'" in text


def test_same_seed_same_bytes_other_seed_other_sample(root: Path, tmp_path: Path) -> None:
    a, b = build_mix(root, tmp_path / "a"), build_mix(root, tmp_path / "b")
    assert a.sha256 == b.sha256 and [s.read_bytes() for s in a.shards] == [s.read_bytes() for s in b.shards]
    picks = {build_mix(root, tmp_path / f"s{seed}", seed=seed).sha256 for seed in range(6)}
    assert len(picks) > 1  # 2 of 4 PubMedVision records: six seeds cannot all draw the same pair
    m = a.manifest
    assert m["seed"] == 42 and {i["source"] for i in m["inputs"]} >= {"pubmedvision", "spinemed", "medthoughts"}
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    pmv = next(c for c in m["components"] if c["name"] == "pubmedvision")
    assert pmv["qualifying"] == 4 and pmv["kept"] == 2 and pmv["dropped"] == {"not sampled": 2}
    non_spine = next(c for c in m["components"] if c["name"] == "spinemed_non_spine")
    assert non_spine["kept_by_split"] == {"non_spine": non_spine["kept"]} and non_spine["dropped"]["filtered out"] > 0
    assert m["output"]["rows"] == sum(c["kept"] for c in m["components"])


def test_count_above_the_source_is_an_error_unless_replacing(root: Path, tmp_path: Path) -> None:
    with pytest.raises(
        build.BuildError, match=r"components\[4\] \(pubmedvision\)\.count: 9 records requested but only 4"
    ):
        build_mix(root, tmp_path / "x", settings={"pubmedvision.count": 9})
    assert not (tmp_path / "x").exists()
    with_replacement = build_mix(root, tmp_path / "y", settings={"pubmedvision.count": 9, "pubmedvision.replace": True})
    pmv = next(c for c in with_replacement.manifest["components"] if c["name"] == "pubmedvision")
    assert pmv["selected"] == 9 and pmv["kept"] == 9


def test_benchmark_leakage_and_duplicates_are_removed_and_counted(root: Path, tmp_path: Path) -> None:
    spine = build_mix(root, tmp_path / "spine", "stage2_spine", settings={})
    component = spine.manifest["components"][0]
    assert component["dropped"]["benchmark leak"] == 1
    rows = "".join(s.read_text() for s in spine.shards)
    assert smoke_upstream.LEAKED_QUESTION not in rows
    # The same source twice: the second copy of every record is an exact duplicate.
    _write(
        tmp_path / "twice.yaml",
        "name: twice\ninclude: [spine]\ncomponents:\n  - {name: again, source: spinemed, filters: {split: spine}}\n",
    )
    twice = build.build(mixes.load(str(tmp_path / "twice.yaml")), root, tmp_path / "twice", seed=1)
    again = twice.manifest["components"][1]
    assert again["kept"] == 0 and again["dropped"]["duplicate"] == component["kept"]


def test_bad_items_stop_the_build_or_are_skipped_and_counted(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "root"
    shutil.copytree(root, data)
    train = data / "SpineMed-450k" / "train.jsonl"
    train.write_text(
        train.read_text() + '{"id": "bad", "category": "Spine Surgery", "task": "mcq", "language": "en", '
        '"provenance": {"source_type": "textbook", "book": "B"}, '
        '"messages": [{"role": "user", "content": "only a question"}]}\n'
    )
    lines = len(train.read_text().splitlines())
    with pytest.raises(build.BuildError, match=rf"train.jsonl:{lines}: bad conversation"):
        build_mix(data, tmp_path / "a", "spine", settings={})
    _write(tmp_path / "skip.yaml", "name: skip\ninclude: [spine]\non_error: skip\n")
    result = build.build(mixes.load(str(tmp_path / "skip.yaml")), data, tmp_path / "b", seed=1)
    assert result.manifest["sources"]["spinemed"]["bad"] == {"bad conversation": 1}


def test_split_restriction_for_ablations(root: Path, tmp_path: Path) -> None:
    general_only = build_mix(root, tmp_path / "g", splits=["general"])
    assert {k for c in general_only.manifest["components"] for k in c.get("kept_by_split", {})} == {"general"}
    loaded = mixes.load("stage1_foundation")
    assert mixes.splits_of(loaded) == ["general", "non_spine"] and mixes.splits_of(loaded, ["spine"]) == []
    # Components that cannot yield a kept split are not read at all: PubMedVision's count of 2 is no error here,
    # and the general sources need not even exist for a non-spine build.
    data = tmp_path / "root"
    shutil.copytree(root, data)
    shutil.rmtree(data / "PubMedVision")
    non_spine = build_mix(data, tmp_path / "n", splits=["non_spine"])
    assert non_spine.rows == sum(c.get("kept", 0) for c in non_spine.manifest["components"]) > 0
    excluded = [c["name"] for c in non_spine.manifest["components"] if "excluded" in c]
    assert excluded == ["medical_o1_en", "medical_o1_zh", "medical_r1_distill", "medthoughts", "pubmedvision"]
    assert {i["source"] for i in non_spine.manifest["inputs"]} == {"spinemed"}


def test_parallel_read_gives_the_same_bytes(root: Path, tmp_path: Path) -> None:
    # A big JSONL source is read in parts by worker processes; the output must not depend on how many.
    data = tmp_path / "root"
    shutil.copytree(root, data)
    train = data / "SpineMed-450k" / "train.jsonl"
    train.write_text(train.read_text().replace("\n", "\n\n", 3))  # blank lines: indices, line numbers kept
    one = build_mix(data, tmp_path / "one", "stage2_spine", settings={}, workers=1)
    three = build_mix(data, tmp_path / "three", "stage2_spine", settings={}, workers=3, min_parallel_bytes=1)
    assert one.sha256 == three.sha256 and one.manifest["components"] == three.manifest["components"]
    assert one.manifest["sources"] == three.manifest["sources"]
    ranges = readers.byte_ranges(train, 3)
    assert ranges[0][0] == 0 and ranges[-1][1] == train.stat().st_size and len(ranges) == 3
    whole = [(i, w) for i, w, _ in readers.iter_items(train)]
    assert [(i, w) for r in ranges for i, w, _ in readers.iter_items(train, r)] == whole


def test_the_general_medical_benchmarks_join_the_decontamination(root: Path, tmp_path: Path) -> None:
    """A MedQA test question planted in MedThoughts-8K is removed like a SpineBench one; benchmarks whose files are
    not under the data root are recorded as not checked rather than stopping the build."""
    from spinegpt.eval_hooks import benchmark

    data = tmp_path / "root"
    shutil.copytree(root, data)
    thoughts = data / "MedThoughts-8K" / "MedThoughts-8K.jsonl"
    planted = json.loads(thoughts.read_text().splitlines()[0])
    medqa = benchmark.builtin("medqa") / "phrases_no_exclude_test.jsonl"
    planted["question"] = json.loads(medqa.read_text().splitlines()[2])["question"].upper()  # case is no disguise
    thoughts.write_text(thoughts.read_text() + json.dumps(planted) + "\n")
    built = build_mix(data, tmp_path / "general", "general")
    medthoughts = next(c for c in built.manifest["components"] if c["name"] == "medthoughts")
    assert medthoughts["dropped"]["benchmark leak"] == 1
    checked = {b["name"]: b for b in built.manifest["benchmarks"]}
    assert set(checked) == set(mixes.DECONTAMINATE)
    assert checked["medqa"]["items"] == 4 and len(checked["medqa"]["sha256"]) == 64
    assert checked["vqa_rad"]["items"] == 5 and len(checked["vqa_rad"]["sha256"]) == 64  # a folder, hashed by its files
    assert checked["mmmu"]["status"] == build.NOT_CHECKED and "sha256" not in checked["mmmu"]
    # SpineBench stays required; a general benchmark can be made required too.
    _write(
        tmp_path / "strict.yaml",
        "name: strict\ninclude: [general]\nbenchmarks:\n  mmmu: {kind: mmmu, path: MMMU, required: true}\n",
    )
    with pytest.raises(build.BuildError, match=r"benchmark 'mmmu' for decontamination: .*MMMU not found"):
        build.build(mixes.load(str(tmp_path / "strict.yaml"), {"pubmedvision.count": 1}), data, tmp_path / "s", seed=1)
    with pytest.raises(mixes.MixError, match="columns: medqa has no field"):
        _write(
            tmp_path / "bad.yaml",
            "name: bad\ninclude: [general]\nbenchmarks:\n  medqa: {kind: medqa, path: x, columns: {frage: q}}\n",
        )
        mixes.load(str(tmp_path / "bad.yaml"))


PINNED_SMOKE_BUILDS = {
    "stage1_foundation": "419d025218b320c7aa0a9aa3056e02437e41c9c4ce280a4c47fa4ab78524ae4b",
    "stage2_spine": "9dd15445dc8f5e8aa6b4a48c4807bb92b46c0257f432f1d428acf7ac2462fd13",
    "stage3_reports": "ed90c1c66c5930f51ef8546f6252024f15c38e784524cdd562d0bfe22c1477e6",
}


def test_build_bytes_for_a_seed_do_not_change(root: Path, tmp_path: Path) -> None:
    settings = {"stage1_foundation": {"pubmedvision.count": 2}}  # the smoke root has 4
    jobs = [build.BuildJob(mixes.load(n, settings.get(n)), tmp_path / n, 42) for n in PINNED_SMOKE_BUILDS]
    found = {}
    for result in build.build_many(jobs, root, workers=1):
        data = b"".join(shard.read_bytes() for shard in result.shards)
        found[result.manifest["mix"]] = hashlib.sha256(data.replace(str(root).encode(), b"<root>")).hexdigest()
    assert found == PINNED_SMOKE_BUILDS


def test_a_bad_item_fails_every_mix_built_together_and_writes_none(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "root"
    shutil.copytree(root, data)
    train = data / "SpineMed-450k" / "train.jsonl"
    train.write_text(train.read_text() + "{not json\n")
    lines = len(train.read_text().splitlines())
    jobs = [build.BuildJob(mixes.load(n), tmp_path / n, 1) for n in ("stage2_spine", "stage3_reports")]
    with pytest.raises(build.BuildError) as err:
        build.build_many(jobs, data, workers=1)
    assert "'stage2_spine': bad input" in str(err.value) and "'stage3_reports': bad input" in str(err.value)
    assert f"train.jsonl:{lines}: invalid JSON" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # no output, no partial folder left


# -- length audit -----------------------------------------------------------------------------------------------------


def test_token_counts_match_the_real_processor(root: Path, tmp_path: Path, tiny_model: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    # An odd-sized image exercises the resize rule (rounding and the pixel limits), not just 112x112 squares.
    Image.new("RGB", (250, 131), (90, 90, 90)).save(tmp_path / "odd.png")
    built = build_mix(root, tmp_path / "m", "stage2_spine", settings={})
    every = [json.loads(x) for s in built.shards for x in s.read_text().splitlines()]
    rows = [r for r in every if r.get("images")][:8] + [r for r in every if not r.get("images")][:4]
    rows.append(
        {
            "messages": [{"role": "user", "content": "<image>odd"}, {"role": "assistant", "content": "ok"}],
            "images": [str(tmp_path / "odd.png")],
        }
    )
    assert any(r.get("images") for r in rows) and any(not r.get("images") for r in rows)
    for low, high in ((3136, 50176), (3136, 12845056)):
        counter = audit.TokenCounter(processor.tokenizer, low, high)
        processor.image_processor.min_pixels, processor.image_processor.max_pixels = low, high
        processor.image_processor.size = {"shortest_edge": low, "longest_edge": high}
        for row in rows:
            text = processor.tokenizer.apply_chat_template(
                [
                    {"role": m["role"], "content": m["content"].replace("<image>", audit.VISION_PLACEHOLDER)}
                    for m in row["messages"]
                ],
                tokenize=False,
            )
            images = [Image.open(p).convert("RGB") for p in row.get("images", [])] or None
            real = processor(text=[text], images=images, return_tensors="pt")["input_ids"].shape[1]
            assert counter.count(row) == real, row


def test_over_length_policies(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    counter = audit.TokenCounter(AutoTokenizer.from_pretrained(tiny_model), 3136, 50176)
    rows = [
        {"messages": [{"role": "user", "content": "q " * n}, {"role": "assistant", "content": "a"}]} for n in (5, 500)
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path = _write(tmp_path / "train.jsonl", text)
    with pytest.raises(Exception, match=r"train.jsonl:2: \d+ tokens"):
        lengths.enforce_lengths(path, counter, 100, "error")
    assert path.read_text() == text  # nothing lost
    kept = lengths.enforce_lengths(path, counter, 100, "truncate")
    assert kept["truncated"] == 1 and path.read_text() == text
    dropped = lengths.enforce_lengths(path, counter, 100, "drop")
    assert dropped["dropped"] == 1 and dropped["rows"] == 1 and len(path.read_text().splitlines()) == 1


def test_a_curriculum_audit_builds_its_stage_mixes_together(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three stage mixes share SpineMed: built together before the first stage, it is read once, and each
    stage's preparation then reuses its mix from the cache."""
    from spinegpt.train import audit as curriculum_audit
    from spinegpt.train import curriculum, plan

    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPINEGPT_DATA_WORKERS", "1")  # read in this process, where the spy below sees it
    reads: list[str] = []
    original = build._read_part
    monkeypatch.setattr(build, "_read_part", lambda *a: reads.append(a[0]) or original(*a))
    loaded = curriculum.load(REPO / "curricula" / "smoke.yaml", [f"model={tiny_model}"])
    audits = curriculum_audit.audit_curriculum(plan.build(loaded), 1)
    assert len(audits) == 3 and all(a.records > 0 for a in audits)
    assert reads.count("spinemed") == 1 and len(reads) == len(set(reads))
    assert len(list((tmp_path / "cache" / "mixes").iterdir())) == 3


def test_the_smoke_root_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    target = smoke_upstream.write(tmp_path / "root")
    assert (target / ".complete").is_file() and (target / "SpineMed-450k" / "train.jsonl").is_file()
    assert smoke_upstream.write(target) == target and not list(tmp_path.glob("*.partial-*"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="not a complete smoke data root"):
        smoke_upstream.write(foreign)
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"] and not list(tmp_path.glob("*.partial-*"))


def test_spinemed_rules_of_the_paper_schema(tmp_path: Path) -> None:
    """Provenance with a source type on every item; unique ids (a repeat names both lines); a report only as the
    answer to a final user turn; treatment in its patient- and physician-facing parts (or one 'treatment')."""
    base = {
        "language": "en",
        "category": "Spine Surgery",
        "subspecialty": "Trauma",
        "task": "report",
        "messages": [{"role": "user", "content": "Write the report."}],
        "provenance": {"source_type": "hospital", "case_id": "c1"},
        "report": {
            "imaging_findings": "F",
            "diagnosis": "D",
            "treatment_patient": "Rest.",
            "treatment_physician": "ACDF.",
            "risk_prognosis": "R",
            "postoperative": "P",
            "rationale_disclaimer": "X",
        },
    }
    answered = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "already answered"}]
    lines = [
        {**base, "id": "a"},
        {**base, "id": "a"},
        {**base, "id": "b", "provenance": None},
        {**base, "id": "c", "provenance": {"book": "no source type"}},
        {**base, "id": "d", "messages": answered},
        {**base, "id": "e", "report": {"diagnosis": "D", "treatment": "T"}},
        {**base, "id": "f", "report": {"treatment": "T", "treatment_patient": "P"}},
    ]
    got = _read("spinemed", _write(tmp_path / "sm.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n"))
    first = got[0]
    assert isinstance(first, Record)
    body = first.messages[-1]["content"]
    assert body.index("for the patient") < body.index("for the physician") < body.index("Risk and prognosis")
    bad = {b.where.rsplit(":", 1)[1]: b for b in got if isinstance(b, Bad)}
    assert bad["2"].reason == "duplicate id" and f"{tmp_path / 'sm.jsonl'}:1" in bad["2"].detail
    assert bad["3"].reason == "bad provenance" and "required" in bad["3"].detail
    assert bad["4"].reason == "bad provenance" and "source_type None" in bad["4"].detail
    assert bad["5"].reason == "bad messages" and "already end with the assistant" in bad["5"].detail
    assert isinstance(got[5], Record) and "## Treatment recommendations\n\nT" in got[5].messages[-1]["content"]
    assert bad["7"].reason == "bad messages" and "give one or the other" in bad["7"].detail


def test_the_schema_documents_example_reads(tmp_path: Path) -> None:
    """The example item of data_mixes/SPINEMED_SCHEMA.md, read against a data root that holds what it points at."""
    from .test_volumes import write_dicom_series, write_nifti_ct

    doc = (REPO / "data_mixes" / "SPINEMED_SCHEMA.md").read_text()
    example = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])
    smoke_data.write_image("xray-lateral-L4.png", tmp_path / "hospital" / "case-0042")
    (tmp_path / "hospital" / "case-0042" / "xray-lateral-L4.png").rename(
        tmp_path / "hospital" / "case-0042" / "lat.png"
    )
    verse = tmp_path / "open_datasets" / "VerSe"
    smoke_data.write_image("ct-sagittal-L1.png", verse / "sub-verse004")
    (verse / "sub-verse004" / "ct-sagittal-L1.png").rename(verse / "sub-verse004" / "sub-verse004_ct_sag.png")
    write_dicom_series(tmp_path / "open_datasets" / "Spark" / "case-17" / "t2_sag", slices=10)
    write_nifti_ct(verse / "sub-verse010" / "sub-verse010_ct.nii.gz")
    path = _write(tmp_path / "train.jsonl", json.dumps(example) + "\n")
    (record,) = _read("spinemed", path, image_root=tmp_path, data_root=tmp_path / "open_datasets")
    assert isinstance(record, Record), record
    assert len(record.images) == 3 + 25 and sum(m["content"].count("<image>") for m in record.messages) == 28


def test_an_id_repeated_across_parallel_parts_is_an_error_naming_both_lines(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "root"
    shutil.copytree(root, data)
    train = data / "SpineMed-450k" / "train.jsonl"
    lines = train.read_text().splitlines()
    first = json.loads(lines[0])
    lines.append(json.dumps({**json.loads(lines[1]), "id": first["id"]}))  # the last line repeats the first id
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(build.BuildError, match=rf"{train}:{len(lines)}: duplicate id .* at {train}:1"):
        build_mix(data, tmp_path / "three", "stage2_spine", settings={}, workers=3, min_parallel_bytes=1)
    with pytest.raises(build.BuildError, match="duplicate id"):
        build_mix(data, tmp_path / "one", "stage2_spine", settings={}, workers=1)


def test_reader_details_of_the_upstream_sets(tmp_path: Path) -> None:
    # medical-o1: rows with a null or empty chain of thought are skipped and counted, not a failed file.
    o1 = [{"Question": f"Q{i}?", "Complex_CoT": cot, "Response": "R"} for i, cot in enumerate(["think", None, ""])]
    got = _read("medical_o1", _write(tmp_path / "o1.json", json.dumps(o1)))
    assert isinstance(got[0], Record)
    assert [(b.reason, b.skip) for b in got[1:] if isinstance(b, Bad)] == [("no chain of thought", True)] * 2
    # MedThoughts-8K: the answer states the correct option (answer_idx); ds_answer need not name it.
    mt = {
        "question_id": 1,
        "question": "Q?",
        "options": {"A": "x", "B": "y"},
        "answer_idx": "B",
        "ds_answer": "The patient likely has y-syndrome.",
        "ds_think": "...",
        "source": "MedQA",
    }
    (record,) = _read("medthoughts", _write(tmp_path / "mt.jsonl", json.dumps(mt) + "\n"))
    assert isinstance(record, Record) and record.messages[-1]["content"].endswith("B. y")
    # PubMedVision's Chinese file: its own conversation fields, and each row's language detected.
    smoke_data.write_image("ct-ap-L2.png", tmp_path / "images")
    zh = [
        {
            "id": "z1",
            "image": ["images/ct-ap-L2.png"],
            "modality": "CT",
            "body_part": "Spine",
            "Alignment_VQA_conversations": [
                {"from": "human", "value": "这张图像显示了什么？"},
                {"from": "gpt", "value": "腰椎CT图像。"},
            ],
            "Instruction-Tuning_VQA_conversations": [
                {"from": "human", "value": "请描述。"},
                {"from": "gpt", "value": "腰椎。"},
            ],
        }
    ]
    path = _write(tmp_path / "PubMedVision_Chinese.json", json.dumps(zh, ensure_ascii=False))
    (plain,) = _read("pubmedvision", path)
    assert isinstance(plain, Bad) and "set `conversations:` on the source" in plain.detail
    (row,) = _read("pubmedvision", path, conversations="Alignment_VQA_conversations")
    assert isinstance(row, Record) and row.language == "zh" and "这张图像" in row.messages[0]["content"]
    shipped = mixes.shipped_sources()
    assert {"medical_o1_en_mix", "medical_o1_zh_mix", "medical_r1_distill_zh", "pubmedvision_zh"} <= set(shipped)
    r1 = [{"question": "问题？", "reasoning (reasoning_content)": "思考", "response (content)": "回答"}]
    options = build.read_options(shipped["medical_r1_distill_zh"], tmp_path)
    (r1_row,) = list(sources.read("medical_r1_distill", _write(tmp_path / "r1.json", json.dumps(r1)), options))
    assert r1_row.provenance["dataset"] == "FreedomIntelligence/Medical-R1-Distill-Data-Chinese"
