"""The smoke run trained on the stage mixes these loaders built: provenance from the run manifest to each build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spinegpt.data_mixes import build
from spinegpt.train import manifest


def test_the_smoke_run_trained_on_mixes_built_by_these_loaders(smoke_run: tuple[Path, dict[str, Any], str]) -> None:
    out, data, _console = smoke_run
    assert data == json.loads((out / manifest.FILE).read_text())
    for stage, mix in zip(data["stages"], ["stage1_foundation", "stage2_spine", "stage3_reports"], strict=True):
        built = stage["data"]["mixes"]
        assert [m["source"] for m in built] == [f"mix:{mix}"] and len(built[0]["key"]) == 64
        mix_manifest = json.loads((Path(built[0]["dir"]) / build.MANIFEST).read_text())
        assert mix_manifest["output"]["sha256"] == built[0]["sha256"]
        assert stage["data"]["rows"] == mix_manifest["output"]["rows"] - stage["data"]["lengths"]["dropped"]
        assert stage["data"]["lengths"]["policy"] == "drop" and stage["data"]["lengths"]["percentiles"]["max"] > 0
