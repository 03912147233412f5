"""`spinegpt export`: the smoke run's final stage, an intermediate ZeRO-3 checkpoint, an engine LoRA checkpoint;
reload parity, the model card, dry run, atomicity, and the upload path up to the hub client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spinegpt.train import export, weights

from ..conftest import run_spinegpt


def test_export_final_stage_of_a_run(smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run, data, _ = smoke_run
    out = tmp_path / "exported"
    result = run_spinegpt(
        "export",
        str(run),
        "--output",
        str(out),
        "--max-shard-size",
        "20MB",
        "--dataset",
        "FreedomIntelligence/PubMedVision",
        "--dataset",
        "hw-hwei/MedThoughts-8K",
    )
    assert "reload parity: max |logit difference|" in result.stderr
    assert out.stat().st_mode & 0o055 == 0o055  # others on the cluster can read it (the staging folder was 0700)
    # Sharded safetensors with an index, plus everything from_pretrained and the chat template need.
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja", "README.md"):
        assert (out / name).is_file(), name
    AutoModelForImageTextToText.from_pretrained(out)
    assert AutoProcessor.from_pretrained(out).tokenizer.chat_template
    # Same weights as the stage's final checkpoint, tensor for tensor.
    weights.check_matches(out, Path(data["stages"][-1]["final"]))
    info = json.loads((out / export.EXPORT_INFO).read_text())
    assert info["kind"] == "full" and info["max_abs_logit_diff"] <= 1e-4

    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "image-text-to-text" and meta["license"] == "other"
    assert "medical" in meta["tags"] and "base_model" not in meta  # the tiny model is not a hub id
    assert meta["datasets"] == ["FreedomIntelligence/PubMedVision", "hw-hwei/MedThoughts-8K"]
    index = meta["model-index"][0]
    assert index["name"] == "exported"
    metrics = {m["name"]: m["value"] for r in index["results"] for m in r["metrics"]}
    scores = data["stages"][-1]["eval"]["benchmarks"]["spinebench"]["scores"]
    assert metrics["Text MCQ accuracy"] == round(scores["text"]["accuracy"], 2)
    assert metrics["MCQ average accuracy"] == round(scores["mcq_average"], 2)
    assert card.data.eval_results and card.data.eval_results[0].dataset_name == "spinebench"
    text = card.text
    for stage in data["stages"]:  # the lineage: every stage, its data hash, its weights hash, ZeRO setting
        assert f"| {stage['name']} |" in text
        assert stage["data"]["inputs"][0]["sha256"][:12] in text and stage["weights_sha256"][:12] in text
    assert "ZeRO-3" in text and "ZeRO-2" in text and "Medical disclaimer" in text


def test_export_intermediate_zero3_checkpoint(smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    _, data, _ = smoke_run
    checkpoint = Path(data["stages"][2]["dir"]) / "engine" / "checkpoint-2"
    assert any(checkpoint.glob("global_step2/*model_states.pt"))  # ZeRO-3 shards of an intermediate step
    out = tmp_path / "zero"
    run_spinegpt("export", str(checkpoint), "--output", str(out), "--consolidate", "zero")
    info = json.loads((out / export.EXPORT_INFO).read_text())
    assert info["kind"] == "zero"
    # The fp32 weights rebuilt from the shards equal the 16-bit-gathered copy the engine saved (fp32 training).
    rebuilt = {k: v for p in out.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    gathered = load_file(str(checkpoint / "model.safetensors"))
    assert set(rebuilt) == set(gathered)
    assert all(float((rebuilt[k] - gathered[k]).abs().max()) < 1e-6 for k in gathered)
    assert "consolidated from DeepSpeed ZeRO shards" in (out / "README.md").read_text()
    assert "| reports |" in (out / "README.md").read_text()  # lineage found from inside the run folder


def test_export_merges_engine_lora_adapters(one_process_run: Path, tiny_model: Path, tmp_path: Path) -> None:
    checkpoint = one_process_run / "stages" / "01-foundation" / "engine" / "checkpoint-2"
    out = tmp_path / "lora"
    run_spinegpt("export", str(checkpoint), "--output", str(out))
    info = json.loads((out / export.EXPORT_INFO).read_text())
    assert info["kind"] == "lora" and Path(info["base_model"]) == tiny_model
    assert info["max_abs_logit_diff"] <= 1e-4  # merged model reproduces base + adapters
    weights.check_matches(out, tiny_model)
    assert not list(out.glob("adapter_*"))
    # The engine's own merge (the runner's `final` for the LoRA stage) and ours agree.
    merged_by_engine = one_process_run / "stages" / "01-foundation" / "final"
    from safetensors.torch import load_file

    ours = {k: v for p in out.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    engine = {k: v for p in merged_by_engine.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    assert max(float((ours[k] - engine[k]).abs().max()) for k in engine) < 1e-5


def test_dry_run_writes_nothing(smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    run, _, _ = smoke_run
    out = tmp_path / "dry"
    result = run_spinegpt(
        "export",
        str(run / "stages" / "02-specialise"),
        "--output",
        str(out),
        "--dry-run",
        "--push-to-hub",
        "someone/spinegpt-smoke",
    )
    assert "would write" in result.stdout and "someone/spinegpt-smoke" in result.stdout
    assert "model.safetensors" in result.stdout and "README.md" in result.stdout
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_failed_verification_and_existing_output_leave_nothing_behind(
    smoke_run: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    run, _, _ = smoke_run
    out = tmp_path / "x"
    failed = run_spinegpt("export", str(run), "--output", str(out), "--tolerance", "-1", check=False)
    assert failed.returncode == 1 and "does not reproduce the source" in failed.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no half-written staging folder
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = run_spinegpt("export", str(run), "--output", str(out), check=False)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


class FakeHub:
    """Stands at the hub-client boundary: records what the export asks of huggingface_hub.HfApi."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kw: Any) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw: Any) -> None:
        self.calls.append(("upload_folder", kw))


def test_upload_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("card")
    hub = FakeHub()
    assert export.upload(folder, "org/spinegpt", private=True, hub=hub) == "org/spinegpt"
    assert hub.calls[0] == (
        "create_repo",
        {"repo_id": "org/spinegpt", "private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert hub.calls[1][1]["folder_path"] == str(folder) and hub.calls[1][1]["repo_id"] == "org/spinegpt"
    # The real client, offline here: the failure is reported clearly and the token never appears in it.
    monkeypatch.setenv("HF_TOKEN", "hf_supersecret")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(export.ExportError) as info:
        export.upload(folder, "org/spinegpt", private=False)
    assert "upload to org/spinegpt failed" in str(info.value) and "hf_supersecret" not in str(info.value)
