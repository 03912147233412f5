"""SpineMed-450k reader: our schema (``data_mixes/SPINEMED_SCHEMA.md``), with metadata pointers resolved against the
user's own downloads of the public imaging datasets.

An image entry is a path (relative to the image root) or a pointer ``{dataset, case, file}`` /
``{dataset, case, volume, slice}`` / ``{dataset, case, volume}`` resolved under ``<data_root>/<dataset>/<case>/``.
A volume is a folder of 2-D slices; without ``slice`` it is sampled to ``volume_slices`` slices evenly through it,
and its one ``<image>`` tag becomes one tag per sampled slice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spinegpt.data_mixes import volumes
from spinegpt.data_mixes.readers import FileCheck, ReaderInfo, ReadOptions, _file_and_line, objects
from spinegpt.data_mixes.records import (
    CATEGORIES,
    SPINE_CATEGORY,
    SUBSPECIALTIES,
    TASKS,
    Bad,
    Record,
    render_reasoning,
    split_for,
)
from spinegpt.data_mixes.rows import IMAGE_TAG

REPORT_SECTIONS = {
    "imaging_findings": "Structured imaging findings",
    "diagnosis": "AI-assisted diagnosis",
    "treatment_patient": "Treatment recommendations: for the patient",
    "treatment_physician": "Treatment recommendations: for the physician",
    "risk_prognosis": "Risk and prognosis",
    "postoperative": "Post-operative issue management",
    "rationale_disclaimer": "Diagnostic rationale and disclaimer",
}
"""The paper's six report sections, the treatment recommendations in their patient- and physician-facing parts
(SPEC §2). ``treatment`` is accepted as one undivided treatment section."""
REPORT_ALIASES = {"treatment": "Treatment recommendations"}
SOURCE_TYPES = ("literature", "textbook", "case_report", "question_bank", "open_dataset", "hospital")
_ROLES = ("system", "user", "assistant")


class PointerError(ValueError):
    """An image pointer that does not resolve in the user's download."""


def resolve_pointer(pointer: dict[str, Any], options: ReadOptions) -> list[str]:
    """The image file(s) a metadata pointer names in the user's download.

    Everything a pointer reaches must resolve inside its dataset's folder ``<data_root>/<dataset>``: an annotation
    file is data, and a ``case`` or ``file`` that is absolute, climbs out with ``..`` or crosses a link leading
    elsewhere would let it pull any readable image on the machine into training data. The dataset folder itself may
    be a link (a download kept on another disk is the user's own setup); nothing inside it may lead out."""
    dataset, case = pointer.get("dataset"), pointer.get("case")
    if not isinstance(dataset, str) or not isinstance(case, str):
        raise PointerError(f"a pointer needs 'dataset' and 'case' strings, got {pointer}")
    if options.data_root is None:
        raise PointerError(f"{dataset} case {case}: pointers need a data root (--data-root) holding {dataset}/")
    where = f"dataset {dataset}, case {case}"
    top = options.data_root / dataset
    if Path(dataset).name != dataset or dataset in ("", ".", ".."):
        raise PointerError(f"{where}: {top} is outside {options.data_root}: 'dataset' names one folder in it")
    inside = _Confined(top, where)
    case_dir = inside(top / case)
    if not case_dir.is_dir():
        hint = "" if (options.data_root / dataset).is_dir() else f" (is {dataset} downloaded into {options.data_root}?)"
        raise PointerError(f"{where}: {case_dir} not found{hint}")
    if ("file" in pointer) == ("volume" in pointer):
        raise PointerError(f"{where}: a pointer names exactly one of 'file' or 'volume' (with an optional 'slice')")
    if "file" in pointer:
        path = inside(case_dir / str(pointer["file"]))
        if not path.is_file():
            raise PointerError(f"{where}: file {pointer['file']!r} not found under {case_dir}")
        return [str(path)]
    axis = str(pointer.get("axis", "sagittal"))
    if axis not in volumes.AXES:
        raise PointerError(f"{where}: axis {axis!r}; one of {', '.join(volumes.AXES)}")
    modality = pointer.get("modality")
    try:
        inside(case_dir / str(pointer["volume"]))  # a name that climbs out is refused before the folder is listed
        volume = inside(volumes.locate(case_dir, str(pointer["volume"]), where))
        if "slice" in pointer:
            every = volumes.slices(volume, 1 << 20, where, axis, modality, inside)
            index = pointer["slice"]
            if not isinstance(index, int) or not 0 <= index < len(every):
                raise PointerError(f"{where}: slice {index!r} out of range (the volume has {len(every)} slices)")
            return [str(every[index])]
        return [str(p) for p in volumes.slices(volume, options.volume_slices, where, axis, modality, inside)]
    except volumes.VolumeError as exc:
        raise PointerError(str(exc)) from None


class _Confined:
    """Resolves a path (links and ``..`` included) and refuses it unless it lies inside one folder."""

    def __init__(self, folder: Path, where: str):
        self.folder, self.where = folder, where
        self.real = folder.resolve()

    def __call__(self, path: Path) -> Path:
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a link loop (RuntimeError), a NUL in a name (ValueError)
            raise PointerError(f"{self.where}: {path!r} cannot be resolved: {exc}") from None
        if not real.is_relative_to(self.real):
            raise PointerError(f"{self.where}: {path} leads outside {self.folder} (to {real}); refused")
        return real


class _Images:
    """Resolves an item's image entries; pointers are cached by what they name (a case recurs across items)."""

    def __init__(self, options: ReadOptions, root: Path):
        self.options = options
        self.files = FileCheck(root, options.check_images)
        self._pointers: dict[str, list[str]] = {}

    def __call__(self, entries: Any) -> tuple[list[str], list[int]]:
        """Resolved images, and how many files each entry became (a volume becomes many)."""
        if not isinstance(entries, list):
            raise PointerError("'images' must be a list of paths and pointers")
        images: list[str] = []
        sizes: list[int] = []
        for entry in entries:
            if isinstance(entry, str):
                path = self.files.path(entry)
                if self.files.missing(path):
                    raise PointerError(f"image not found: {path}")
                files = [path]
            elif isinstance(entry, dict):
                key = json.dumps(entry, sort_keys=True, default=str)
                if key not in self._pointers:
                    self._pointers[key] = resolve_pointer(entry, self.options)
                files = self._pointers[key]
            else:
                raise PointerError(f"an image entry must be a path or a pointer object, got {entry!r}")
            images += files
            sizes.append(len(files))
        return images, sizes


def _expand_tags(messages: list[dict[str, str]], sizes: list[int]) -> list[dict[str, str]]:
    """One ``<image>`` tag per resolved file: the tag of a volume entry is repeated once per sampled slice."""
    tags = sum(m["content"].count(IMAGE_TAG) for m in messages)
    if tags == len(sizes) == sum(sizes):
        return messages  # one file per tag (or no images at all): nothing to expand
    if tags == 0 and sizes:
        first = next(m for m in messages if m["role"] == "user")
        first["content"] = IMAGE_TAG * sum(sizes) + "\n" + first["content"]
        return messages
    if tags != len(sizes):
        raise PointerError(f"{tags} {IMAGE_TAG} tag(s) but {len(sizes)} image entries")
    remaining = iter(sizes)
    for message in messages:
        parts = message["content"].split(IMAGE_TAG)
        message["content"] = parts[0] + "".join(IMAGE_TAG * next(remaining) + p for p in parts[1:])
    return messages


def _messages(item: dict[str, Any], options: ReadOptions) -> list[dict[str, str]]:
    raw = item.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError("'messages' must be a non-empty list")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] needs role (system, user, assistant) and string content, got {m!r}")
        messages.append({"role": m["role"], "content": m["content"]})
    reasoning = item.get("reasoning")
    report = item.get("report")
    if report is not None:
        if not isinstance(report, dict):
            raise ValueError("'report' must be an object of sections")
        if messages[-1]["role"] != "user":
            # The report is the answer to the last user turn; beside an answer already given it would be dropped.
            raise ValueError("'report' is given but the messages already end with the assistant's answer")
        titles = {**REPORT_SECTIONS, **REPORT_ALIASES}
        unknown = set(report) - set(titles)
        if unknown:
            raise ValueError(f"unknown report section(s) {sorted(unknown)}; known: {', '.join(titles)}")
        if "treatment" in report and {"treatment_patient", "treatment_physician"} & set(report):
            raise ValueError("'treatment' and treatment_patient/treatment_physician: give one or the other")
        order = ["imaging_findings", "diagnosis", "treatment", *REPORT_SECTIONS]
        body = "\n\n".join(f"## {titles[k]}\n\n{str(report[k]).strip()}" for k in dict.fromkeys(order) if k in report)
        messages.append({"role": "assistant", "content": body})
    if isinstance(reasoning, str) and reasoning.strip() and messages[-1]["role"] == "assistant":
        last = messages[-1]
        last["content"] = render_reasoning(reasoning, last["content"], options.reasoning_style)
    return messages


def read_spinemed(path: Path, options: ReadOptions) -> Iterator[Record | Bad]:
    """SpineMed-450k-format JSONL (or JSON array / parquet); see ``data_mixes/SPINEMED_SCHEMA.md``."""
    resolve_images = _Images(options, options.image_root or path.parent)
    first_seen: dict[str, str] = {}
    for index, where, item in objects(path, options):
        if isinstance(item, Bad):
            yield item
            continue
        item_id, category, task = item.get("id"), item.get("category"), item.get("task")
        if not isinstance(item_id, str) or not item_id:
            yield Bad(where, "missing field", "'id'")
            continue
        if item_id in first_seen:
            yield Bad(where, "duplicate id", f"{item_id!r} is also the id of the item at {first_seen[item_id]}")
            continue
        first_seen[item_id] = where
        if category not in CATEGORIES:
            yield Bad(where, "unknown category", f"{category!r}; one of: {', '.join(CATEGORIES)}")
            continue
        if task not in TASKS:
            yield Bad(where, "unknown task", f"{task!r}; one of: {', '.join(TASKS)}")
            continue
        subspecialty = item.get("subspecialty")
        if subspecialty is not None and (category != SPINE_CATEGORY or subspecialty not in SUBSPECIALTIES):
            detail = "only Spine Surgery items have one" if category != SPINE_CATEGORY else "not one of the 14"
            yield Bad(where, "bad subspecialty", f"{subspecialty!r}: {detail}")
            continue
        try:
            messages = _messages(item, options)
        except ValueError as exc:
            yield Bad(where, "bad messages", str(exc))
            continue
        try:
            images, sizes = resolve_images(item.get("images", []))
            messages = _expand_tags(messages, sizes)
        except PointerError as exc:
            yield Bad(where, "image not found" if "not found" in str(exc) else "bad image", f"item {item_id}: {exc}")
            continue
        provenance = item.get("provenance")
        if not isinstance(provenance, dict):
            why = "required: every item says where it comes from" if provenance is None else "must be an object"
            yield Bad(where, "bad provenance", f"'provenance' {why} (source_type and book, doi, dataset or case_id)")
            continue
        if provenance.get("source_type") not in SOURCE_TYPES:
            yield Bad(where, "bad provenance", f"source_type {provenance.get('source_type')!r}; one of {SOURCE_TYPES}")
            continue
        language = item.get("language") or options.language
        if language not in ("en", "zh"):
            yield Bad(where, "bad language", f"{language!r}; en or zh")
            continue
        yield Record(
            index=index,
            id=item_id,
            source="spinemed",
            split=split_for(category),
            task=task,
            language=language,
            messages=messages,
            images=images,
            category=category,
            subspecialty=subspecialty,
            provenance={**provenance, **_file_and_line(where)},
        )


READERS = {"spinemed": ReaderInfo(read_spinemed, ("non_spine", "spine"))}
