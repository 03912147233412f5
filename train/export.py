"""Export a trained stage (or any checkpoint of one) as a plain-transformers model folder, and publish it.

    spinegpt export outputs/spinegpt --output exports/spinegpt-7b [--push-to-hub org/SpineGPT-7B] [--private]

What a source can be, and what happens to it:

* a run folder (``run_manifest.json``): its last finished stage; a stage folder (``DONE.json``): its final weights;
* an engine checkpoint (``checkpoint-N``): full weights are taken as they are, LoRA adapters are merged into the
  base model, and a checkpoint holding only DeepSpeed ZeRO shards (``global_stepN/``) is consolidated to fp32
  (``--consolidate zero`` does that even when 16-bit weights were gathered on save).

The result is written to a temporary sibling of ``--output``, reloaded, and its logits on a fixed text+image input
compared with the source model's (for LoRA: the unmerged adapter model; for ZeRO: the consolidated weights). Only a
match within tolerance is renamed into place, so an interrupted or failed export never leaves a folder that looks
complete. The model card carries the curriculum lineage and SpineBench results read from the run manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from spinegpt.errors import UserError
from spinegpt.files import folder_problem
from spinegpt.train import manifest, model_card, weights
from spinegpt.train.manifest import RunManifest
from spinegpt.train.model_card import Source

logger = logging.getLogger(__name__)

EXPORT_INFO = "spinegpt_export.json"


class ExportError(UserError, RuntimeError):
    """The source cannot be exported, or the exported model does not reproduce it."""


class HubClient(Protocol):
    """The part of ``huggingface_hub.HfApi`` the export uses."""

    def create_repo(self, repo_id: str, *, private: bool = ..., exist_ok: bool = ..., repo_type: str = ...) -> Any: ...

    def upload_folder(self, *, repo_id: str, folder_path: str, commit_message: str, repo_type: str = ...) -> Any: ...


def _find_run(path: Path) -> tuple[RunManifest | None, Path | None]:
    for folder in [path, *path.parents]:
        if (folder / manifest.FILE).is_file():
            return RunManifest.read(folder / manifest.FILE), folder
    return None, None


def _stage_index(run: RunManifest | None, path: Path) -> int | None:
    if not run:
        return None
    resolved = path.resolve()
    for record in run.stages:
        if resolved == Path(record.dir).resolve() or Path(record.dir).resolve() in resolved.parents:
            return record.index
    return None


def _kind(folder: Path, consolidate: str) -> Literal["full", "lora", "zero"]:
    has_zero = (folder / "latest").is_file() and any(folder.glob("global_step*/*model_states.pt"))
    if consolidate == "zero":
        if not has_zero:
            raise ExportError(f"{folder}: --consolidate zero, but no DeepSpeed ZeRO shards (global_step*/) here")
        return "zero"
    if (folder / "adapter_config.json").is_file():
        return "lora"
    if weights.safetensors_files(folder) and (folder / "config.json").is_file():
        return "full"
    if has_zero and (folder / "config.json").is_file():
        return "zero"
    raise ExportError(f"{folder}: no model weights, LoRA adapters or ZeRO shards found")


def resolve_source(source: Path, consolidate: Literal["auto", "zero"] = "auto") -> Source:
    source = source.resolve()
    if not source.exists():
        raise ExportError(f"{source}: no such file or folder")
    run, run_dir = _find_run(source)
    notes = []
    if run is not None and run_dir == source:
        done = [s for s in run.stages if s.status == "done" and s.final]
        if not done:
            raise ExportError(f"{source}: the run has no finished stage to export")
        stage = done[-1]
        if stage.index != len(run.stages) - 1:
            notes.append(f"the run is unfinished: exporting its last finished stage, {stage.name!r}")
        folder = Path(str(stage.final)).resolve()
    elif (source / "DONE.json").is_file():
        folder = (source / "final").resolve()
    else:
        folder = source
    kind = _kind(folder, consolidate)
    if kind == "full" and (broken := weights.shard_problems(folder)):
        raise ExportError("the source weights are damaged:\n" + "\n".join(f"  {p}" for p in broken))
    base = None
    if kind == "lora":
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ExportError(f"{folder}/adapter_config.json names no base_model_name_or_path to merge into")
    return Source(folder, kind, run, _stage_index(run, folder), base, notes)


# -- models -----------------------------------------------------------------------------------------------------


def probe_inputs(processor: Any) -> dict[str, Any]:
    """A fixed text+image input (a synthetic sagittal spine sketch) for the parity check."""
    from spinegpt.offline import smoke_images

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which level is marked?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs: dict[str, Any] = processor(
        text=[text], images=[smoke_images.render("mri-sagittal-L4.png")], return_tensors="pt"
    )
    return inputs


def logits(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(**{k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()})
    return out.logits.float().cpu()


def _load_processor(folder: Path, fallback: str | None) -> Any:
    from transformers import AutoProcessor

    for candidate in (str(folder), fallback):
        if candidate is None:
            continue
        try:
            return AutoProcessor.from_pretrained(candidate)
        except (OSError, ValueError):
            continue
    raise ExportError(f"{folder}: no processor/tokenizer files here or in the base model")


def load_source(src: Source) -> tuple[Any, Any, Any]:
    """(model ready to save, processor, reference logits on the probe input)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    if src.kind == "full":
        model = AutoModelForImageTextToText.from_pretrained(src.path, dtype="auto")
        processor = _load_processor(src.path, None)
        return model, processor, logits(model, probe_inputs(processor))
    if src.kind == "lora":
        from peft import PeftModel

        assert src.base_model is not None
        base = AutoModelForImageTextToText.from_pretrained(src.base_model, dtype="auto")
        peft_model = PeftModel.from_pretrained(base, str(src.path))
        processor = _load_processor(src.path, src.base_model)
        reference = logits(peft_model, probe_inputs(processor))  # adapters applied, not yet merged
        return peft_model.merge_and_unload(), processor, reference
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    config = AutoConfig.from_pretrained(src.path)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    state = get_fp32_state_dict_from_zero_checkpoint(str(src.path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight") and getattr(config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise ExportError(
            f"{src.path}: the ZeRO shards do not fit the model config: missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    processor = _load_processor(src.path, None)
    return model, processor, logits(model, probe_inputs(processor))


# -- export -----------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    output: Path | None
    files: list[tuple[str, int]]
    max_abs_diff: float
    source: Source
    uploaded_to: str | None = None


def check_output(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output that would destroy what was not exported here: the source itself or a folder holding it, a
    run folder, or (with ``--overwrite``) anything but an earlier export (recognised by its spinegpt_export.json)."""
    where = f"--output-dir {output}"
    if output == source or source.is_relative_to(output):
        raise ExportError(f"{where}: is or holds the source {source}; export elsewhere (nothing was removed)")
    for folder in (output, *output.parents):
        if (folder / manifest.FILE).is_file():
            raise ExportError(f"{where}: lies in the run folder {folder}; export elsewhere (nothing was removed)")
    if problem := folder_problem(output):
        raise ExportError(f"{where}: {problem}; nothing was written")
    if not output.exists():
        return
    if not overwrite:
        raise ExportError(f"{output} already exists; pass --overwrite to replace it, or choose another --output-dir")
    if not output.is_dir() or not (output / EXPORT_INFO).is_file():
        raise ExportError(
            f"{where}: --overwrite replaces an earlier export only, and {output} holds none ({EXPORT_INFO}); "
            "nothing was removed"
        )


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def export(
    source: Path,
    output: Path,
    *,
    max_shard_size: str = "5GB",
    consolidate: Literal["auto", "zero"] = "auto",
    tolerance: float = 1e-4,
    push_to_hub: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    overwrite: bool = False,
    license: str = "other",
    datasets: Sequence[str] = (),
    hub: HubClient | None = None,
) -> ExportResult:
    from transformers import AutoModelForImageTextToText

    output = output.resolve()
    if not dry_run:
        check_output(output, source.resolve(), overwrite)
    src = resolve_source(source, consolidate)
    for note in src.notes:
        logger.warning(f"{note}")
    logger.info(f"source {src.path} ({src.kind})")
    model, processor, reference = load_source(src)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        logger.info(f"saving safetensors (shards of at most {max_shard_size})")
        model.save_pretrained(staging, max_shard_size=max_shard_size, safe_serialization=True)
        processor.save_pretrained(staging)
        del model
        reloaded = AutoModelForImageTextToText.from_pretrained(staging, dtype="auto")
        got = logits(reloaded, probe_inputs(processor))
        del reloaded
        if got.shape != reference.shape:
            raise ExportError(f"reloaded logits have shape {tuple(got.shape)}, the source's {tuple(reference.shape)}")
        diff = float((got - reference).abs().max())
        logger.info(f"reload parity: max |logit difference| = {diff:.3g} (tolerance {tolerance:g})")
        if not diff <= tolerance:
            raise ExportError(
                f"the exported model does not reproduce the source: max |logit diff| {diff:.3g} > "
                f"{tolerance:g}; nothing was written to {output}"
            )
        card = model_card.render(src, name=push_to_hub or output.name, license=license, datasets=datasets)
        (staging / "README.md").write_text(card)
        info = {
            "source": str(src.path),
            "kind": src.kind,
            "base_model": src.base_model,
            "max_abs_logit_diff": diff,
            "tolerance": tolerance,
            "exported_at": manifest.now(),
            "weights_sha256": weights.weights_sha256(staging),
            "environment": manifest.environment(),
        }
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        files = _files(staging)
        if dry_run:
            logger.info(f"dry run: {len(files)} file(s) checked in a temporary folder, nothing written")
            return ExportResult(None, files, diff, src)
        # mkdtemp made the staging folder for this user alone (0700): the model is for everyone the umask allows.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        if output.exists():
            shutil.rmtree(output)  # an earlier export (check_output made sure), replaced as a whole
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"wrote {output}")
    result = ExportResult(output, files, diff, src)
    if push_to_hub:
        result.uploaded_to = upload(output, push_to_hub, private=private, hub=hub)
    return result


def upload(folder: Path, repo_id: str, *, private: bool, hub: HubClient | None = None) -> str:
    """Create (or reuse) the hub repo and upload the folder. The token comes from the environment (HF_TOKEN) through
    huggingface_hub itself: it is never read, printed or written here."""
    if hub is None:
        from huggingface_hub import HfApi

        hub = HfApi()
    try:
        hub.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        hub.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"Upload {folder.name} exported by spinegpt",
        )
    except Exception as exc:
        raise ExportError(
            f"upload to {repo_id} failed: {type(exc).__name__}: {exc}; the export in {folder} is "
            "complete, retry with `spinegpt export ... --push-to-hub` or `huggingface-cli upload`"
        ) from exc
    logger.info(f"uploaded to https://huggingface.co/{repo_id}")
    return repo_id
