from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinegpt.data_mixes import lengths as length_policy
from spinegpt.data_mixes import rows, smoke_root
from spinegpt.data_mixes.rows import DataError
from spinegpt.data_mixes.stage_data import prepare_sources
from spinegpt.train.curriculum import DataSource


def src(**kw: str) -> DataSource:
    return DataSource(**kw)


def test_smoke_sets_cover_every_shape(tmp_path: Path) -> None:
    shapes = set()
    for name in ("stage1", "stage2", "stage3"):
        out = prepare_sources([src(smoke=name)], tmp_path, tmp_path / name)
        rows = [json.loads(line) for line in out.path.read_text().splitlines()]
        assert len(rows) == out.rows >= 8
        for row in rows:
            images = row.get("images", [])
            assert all(Path(p).is_file() and Path(p).is_absolute() for p in images)
            turns = [m for m in row["messages"] if m["role"] == "user"]
            shapes.add("text" if not images else "single-image" if len(images) == 1 else "multi-image")
            if len(turns) > 1:
                shapes.add("multi-turn")
    assert shapes == {"text", "single-image", "multi-image", "multi-turn"}
    total = sum(len(smoke_root.smoke_file(n).read_text().splitlines()) for n in ("stage1", "stage2", "stage3"))
    assert total >= 36  # a few dozen records


def test_prepare_is_deterministic_and_hashes_inputs(tmp_path: Path) -> None:
    a = prepare_sources([src(smoke="stage2")], tmp_path, tmp_path / "a")
    b = prepare_sources([src(smoke="stage2")], tmp_path, tmp_path / "b")
    assert a.rows == b.rows and a.inputs[0].sha256 == b.inputs[0].sha256
    assert a.path.read_text().replace(str(tmp_path / "a"), "") == b.path.read_text().replace(str(tmp_path / "b"), "")
    source_rows = [json.loads(line) for line in smoke_root.smoke_file("stage2").read_text().splitlines()]
    assert a.image_rows == sum(bool(r.get("images")) for r in source_rows) > 0


def test_jsonl_relative_images(tmp_path: Path) -> None:
    from spinegpt.offline import smoke_images as smoke_data

    (tmp_path / "d").mkdir()
    smoke_data.write_image("ct-ap-L2.png", tmp_path / "d" / "img")
    rows = [
        {
            "messages": [{"role": "user", "content": "<image>Level?"}, {"role": "assistant", "content": "L2"}],
            "images": ["img/ct-ap-L2.png"],
        }
    ]
    (tmp_path / "d" / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = prepare_sources([src(jsonl="d/x.jsonl")], tmp_path, tmp_path / "out")
    row = json.loads(out.path.read_text())
    assert row["images"] == [str(tmp_path / "d" / "img" / "ct-ap-L2.png")]


BAD_LINES = [
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}', "invalid JSON"),
    ('{"conversation": []}', "'messages' must be a non-empty list"),
    (
        '{"messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}]}',
        "1 <image> tag(s) but 0 image(s)",
    ),
    (
        '{"messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}], '
        '"images": ["missing.png"]}',
        "image not found",
    ),
    (
        '{"messages": [{"role": "doctor", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        "role 'doctor' is not one of",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}',
        "empty assistant turn",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, '
        '{"role": "assistant", "content": "z"}]}',
        "must alternate",
    ),
]


def test_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    lines = [good] + [line for line, _ in BAD_LINES]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        prepare_sources([src(jsonl="bad.jsonl")], tmp_path, tmp_path / "out")
    text = str(info.value)
    for number, (_, message) in enumerate(BAD_LINES, start=2):
        assert f"{data}:{number}: " in text and message in text, (number, message, text)
    assert not (tmp_path / "out" / "train.jsonl").exists()  # nothing half-written is left as the stage's data


def test_a_mix_without_a_data_root_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPINEGPT_DATA_ROOT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here: the missing file is reported without a download try
    with pytest.raises(DataError, match="set `data_root` in the curriculum"):
        prepare_sources([src(mix="stage1_foundation")], tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match=r"source 'medical_o1_en': .* not found under the data root"):
        prepare_sources([src(mix="stage1_foundation")], tmp_path, tmp_path / "out", data_root=str(tmp_path))


def _one_image_row(image: str) -> str:
    return json.dumps(
        {
            "messages": [{"role": "user", "content": "<image>Level?"}, {"role": "assistant", "content": "L2"}],
            "images": [image],
        }
    )


def test_corrupt_empty_and_non_images_are_bad_rows_with_their_lines(tmp_path: Path) -> None:
    """A valid header over a broken body passes a header read (and the engine then silently trains on another
    row): every image is decoded once, and each bad one is reported like any bad row, never as a traceback."""
    from spinegpt.offline import smoke_images

    d = tmp_path / "d"
    good = smoke_images.write_image("ct-ap-L2.png", d)
    data = good.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    names = ["ct-ap-L2.png", "truncated.png", "empty.png", "text.png"]
    (d / "x.jsonl").write_text("\n".join(_one_image_row(n) for n in names) + "\n")
    with pytest.raises(DataError) as info:
        prepare_sources([src(jsonl="d/x.jsonl")], tmp_path, tmp_path / "out")
    message = str(info.value)
    assert "3 problem(s)" in message and "Traceback" not in message
    for line, name in ((2, "truncated.png"), (3, "empty.png"), (4, "text.png")):
        assert f"x.jsonl:{line}: image {d / name} cannot be decoded" in message
    assert "empty file" in message and not (tmp_path / "out" / "train.jsonl.tmp").exists()
    # The verdicts are cached by content: the good image is not decoded again, a fixed one is.
    (d / "x.jsonl").write_text(_one_image_row("ct-ap-L2.png") + "\n")
    assert prepare_sources([src(jsonl="d/x.jsonl")], tmp_path, tmp_path / "out").rows == 1


def test_non_utf8_and_oversized_rows_are_bad_rows(tmp_path: Path) -> None:
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    huge = '{"messages": [{"role": "user", "content": "' + "x" * (rows.MAX_ROW_BYTES + 10) + '"}]}'
    path = tmp_path / "x.jsonl"
    path.write_bytes(good.encode() + b"\n" + b'{"messages": "caf\xe9"}\n' + huge.encode() + b"\n" + good.encode())
    with pytest.raises(DataError) as info:
        prepare_sources([src(jsonl="x.jsonl")], tmp_path, tmp_path / "out")
    message = str(info.value)
    assert f"{path}:2: not UTF-8 text" in message and f"{path}:3: row longer than 16 MB" in message
    assert "2 problem(s)" in message and not list((tmp_path / "out").glob("*.tmp"))


def test_over_length_errors_name_the_source_file_and_line(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from spinegpt.data_mixes import audit

    rows = [
        {"messages": [{"role": "user", "content": "q " * n}, {"role": "assistant", "content": "a"}]} for n in (5, 6)
    ]
    rows.append({"messages": [{"role": "user", "content": "q " * 500}, {"role": "assistant", "content": "a"}]})
    source = tmp_path / "src.jsonl"
    source.write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))  # a blank first line: lines are lines
    prepared = prepare_sources([src(jsonl="src.jsonl")], tmp_path, tmp_path / "out")
    counter = audit.TokenCounter(AutoTokenizer.from_pretrained(tiny_model), 3136, 50176)
    with pytest.raises(DataError, match=rf"{source}:4: \d+ tokens"):
        length_policy.apply_length_policy(prepared, counter, 100, "error")
    audited = audit.audit_rows("s", prepared.path, counter, 100, 1, 1.0, None)
    assert [row.split(" (")[0] for row in audited.over_length_rows] == [f"{source}:4"]  # the audit names it too
    dropped, lengths = length_policy.apply_length_policy(prepared, counter, 100, "drop")
    assert lengths["dropped"] == 1 and dropped.rows == 2
    assert audit.origins_of(dropped.path).read_text().splitlines() == [f"{source}:2", f"{source}:3"]


def test_a_damaged_image_check_cache_is_started_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged SQLite file (a kill mid-write on a network disk, a bad copy) blocked every run: it is moved aside
    with a warning and the checks are made again; an entry of the wrong type is a miss, not a verdict."""
    import sqlite3

    from PIL import Image

    from spinegpt.data_mixes import image_check

    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (8, 8)).save(good)
    bad.write_bytes(good.read_bytes()[:40])
    uses = {str(good): "x.jsonl:1", str(bad): "x.jsonl:2"}
    first = image_check.check_images(uses, workers=1)
    assert len(first) == 1 and "bad.png" in first[0]
    database = tmp_path / "cache" / "image-checks.sqlite"
    for damage in (b"this is not a database" * 100, database.read_bytes()[:100] + b"\0" * 4000):
        database.write_bytes(damage)
        caplog.clear()
        assert image_check.check_images(uses, workers=1) == first
        assert "damaged" in caplog.text and "started afresh" in caplog.text
    with sqlite3.connect(database) as db:  # a tampered verdict: the bad image said to be fine, as a number
        db.execute("""UPDATE verdicts SET value = '{"problem": 0}' WHERE value != '{"problem": null}'""")
    assert image_check.check_images(uses, workers=1) == first
