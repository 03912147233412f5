"""3-D volumes behind SpineMed metadata pointers, as the public datasets ship them: VerSe's CT as NIfTI
(``<case>_ct.nii.gz``, read with nibabel), Spark's MRI as DICOM series (a folder of ``.dcm`` files, read with
pydicom), or a folder of 2-D slices exported by hand.

A volume is sampled to ``volume_slices`` slices (25, as the paper) evenly along one anatomical axis (sagittal by
default: the spine's own view), each windowed for its modality (a bone window for CT, the 1st-99th percentiles for
MRI) and written once as PNG into a cache keyed by the volume's content hash; the slices are then ordinary images
(token counts, image checks). Writing a PNG from an array is the only hand-written part: no library turns a
windowed slice into a file without more code than this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spinegpt.files import sha256_file
from spinegpt.paths import cache_root

SLICE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", "")
CT_WINDOW = (400.0, 1800.0)
"""Bone window (level, width) in Hounsfield units: vertebrae stay readable, soft tissue goes dark."""
AXES = {"sagittal": "LR", "coronal": "AP", "axial": "SI"}
"""An anatomical view is a stack of planes along this pair of directions (sagittal planes are stacked left-right)."""
CACHE_VERSION = "2"
MAX_VOXELS = 1 << 29
"""The largest volume read (512 x 512 x 2048 voxels, 2 GiB as float32; the public spine CTs stay under half of
it): a header is checked against it before any data is read, so a small file claiming absurd dimensions is an
error, not gigabytes of memory."""
MAX_PLANE = 1 << 26
"""The largest DICOM plane (8192 x 8192 pixels) times its frames and samples."""

log = logging.getLogger(__name__)
Confine = Callable[[Path], Path]
"""Resolves a path a volume reads and refuses it when it leads outside the dataset (see spinemed.resolve_pointer)."""


class VolumeError(ValueError):
    """A volume that cannot be found or read; the message names the file or folder."""


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def sample_evenly(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread evenly over ``range(count)``, first and last included (all when fewer)."""
    if count <= wanted:
        return list(range(count))
    if wanted == 1:
        return [count // 2]
    return [round(i * (count - 1) / (wanted - 1)) for i in range(wanted)]


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, ".mha", ".nrrd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def locate(case_dir: Path, volume: str, where: str) -> Path:
    """What a pointer's ``volume`` names in a case folder: a folder (slices or a DICOM series), a file
    ``<volume>.nii.gz`` (or another known extension), or the one file whose stem ends in ``_<volume>`` (VerSe's
    ``sub-verse004_ct.nii.gz`` for ``volume: ct``). More than one candidate is an error naming them."""
    direct = case_dir / volume
    if direct.is_dir() or _is_nifti(direct):
        return direct
    candidates = [p for p in sorted(case_dir.iterdir()) if _stem(p) == volume and (p.is_dir() or _is_nifti(p))]
    candidates += [
        p for p in sorted(case_dir.iterdir()) if _stem(p).endswith(f"_{volume}") and (p.is_dir() or _is_nifti(p))
    ]
    unique = list(dict.fromkeys(candidates))
    if len(unique) > 1:
        raise VolumeError(f"{where}: volume {volume!r} is ambiguous in {case_dir}: {', '.join(p.name for p in unique)}")
    if not unique:
        raise VolumeError(
            f"{where}: volume {volume!r} not found in {case_dir} (a folder, {volume}.nii.gz, or *_{volume}.nii.gz)"
        )
    return unique[0]


def slices(
    path: Path,
    wanted: int,
    where: str,
    axis: str = "sagittal",
    modality: str | None = None,
    confine: Confine = Path.resolve,
) -> list[Path]:
    """``wanted`` slice images of the volume at ``path`` (all of them when it has fewer), as PNG files; every file
    read passes through ``confine``."""
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.suffix.lower() in SLICE_SUFFIXES), key=_natural)
        if images:
            return [confine(images[i]) for i in sample_evenly(len(images), wanted)]
        dicoms = [confine(p) for p in sorted(path.iterdir(), key=_natural) if p.is_file() and _looks_dicom(p, where)]
        if not dicoms:
            raise VolumeError(
                f"{where}: {path} holds neither slice images ({', '.join(SLICE_SUFFIXES)}) nor DICOM files"
            )
        return _cached(dicoms, wanted, where, axis, modality, _read_dicom_series)
    if _is_nifti(path):
        return _cached([path], wanted, where, axis, modality, _read_nifti)
    if path.name.lower().endswith((".mha", ".nrrd")):
        raise VolumeError(f"{where}: {path.name}: MHA/NRRD volumes are not read; convert to NIfTI or a slice folder")
    raise VolumeError(f"{where}: volume {path} not found")


def _looks_dicom(path: Path, where: str) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError as exc:  # one unreadable file is this item's fault, not the whole build's
        raise VolumeError(f"{where}: {path} cannot be read: {exc.strerror or exc}") from None


def _read_nifti(files: list[Path], axis: str, where: str) -> tuple[np.ndarray, str | None]:
    """The volume as an array whose first axis is the wanted view's stacking direction, and its modality if known."""
    import nibabel as nib

    try:
        image: Any = nib.load(str(files[0]))
        _check_size(image.shape, where, files[0])
        data = np.asanyarray(image.dataobj, dtype=np.float32)
        codes = nib.aff2axcodes(image.affine)
    except VolumeError:
        raise
    except Exception as exc:  # nibabel raises many types for a damaged file; all mean "cannot read"
        raise VolumeError(f"{where}: {files[0]}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(f"{where}: {files[0]}: expected a 3-D volume, got shape {data.shape}")
    stack = next((i for i, code in enumerate(codes) if code in AXES[axis]), None)
    if stack is None:
        raise VolumeError(f"{where}: {files[0]}: no {axis} axis in its orientation {''.join(codes)}")
    return np.moveaxis(data, stack, 0), None


def _read_dicom_series(files: list[Path], axis: str, where: str) -> tuple[np.ndarray, str | None]:
    """A DICOM series as slices in acquisition order (its own view: a sagittal series stays sagittal)."""
    import pydicom

    planes: list[tuple[float, np.ndarray]] = []
    modality = None
    voxels = 0
    for file in files:
        try:
            ds = pydicom.dcmread(str(file))
            # What decoding would allocate, from the header, before decoding: compressed pixel data can claim any size.
            shape = tuple(int(getattr(ds, name, 1) or 1) for name in ("Rows", "Columns", "NumberOfFrames"))
            plane = shape[0] * shape[1] * shape[2] * int(getattr(ds, "SamplesPerPixel", 1) or 1)
            voxels += plane
            if plane > MAX_PLANE or voxels > MAX_VOXELS:
                _check_size((len(files), *shape) if plane <= MAX_PLANE else shape, where, file, plane > MAX_PLANE)
            pixels = ds.pixel_array.astype(np.float32)
        except VolumeError:
            raise
        except Exception as exc:  # pydicom's errors for a damaged file or a missing pixel codec
            raise VolumeError(f"{where}: {file}: not a readable DICOM image ({type(exc).__name__}: {exc})") from None
        slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        position = getattr(ds, "ImagePositionPatient", None)
        order = float(position[0]) if position else float(getattr(ds, "InstanceNumber", len(planes)) or len(planes))
        planes.append((order, pixels * slope + intercept))
        modality = modality or getattr(ds, "Modality", None)
    shapes = {p.shape for _, p in planes}
    if len(shapes) != 1:
        raise VolumeError(f"{where}: {files[0].parent}: the series mixes image sizes {sorted(shapes)}")
    return np.stack([p for _, p in sorted(planes, key=lambda t: t[0])]), modality


def _check_size(shape: tuple[int, ...], where: str, file: Path, force: bool = False) -> None:
    voxels = int(np.prod(shape, dtype=np.float64))
    if force or voxels > MAX_VOXELS:
        dims = "x".join(str(n) for n in shape)
        raise VolumeError(
            f"{where}: {file}: its header claims {dims} voxels ({voxels * 4 / 2**30:.0f} GiB as float32), more than "
            f"the {MAX_VOXELS * 4 / 2**30:.0f} GiB a volume may take (MAX_VOXELS); a damaged or hostile file"
        )


def window(plane: np.ndarray, modality: str) -> np.ndarray:
    """8-bit display of one slice: a bone window for CT, the 1st-99th percentiles for MRI."""
    if modality == "CT":
        level, width = CT_WINDOW
        low, high = level - width / 2, level + width / 2
    else:
        low, high = (float(v) for v in np.percentile(plane, [1, 99]))
    if high <= low:
        return np.zeros(plane.shape, dtype=np.uint8)
    return (np.clip((plane - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def _cached(files: list[Path], wanted: int, where: str, axis: str, modality: str | None, read: Any) -> list[Path]:
    from PIL import Image

    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + sha256_file(file).encode())
    key = hashlib.sha256(json.dumps([CACHE_VERSION, digest.hexdigest(), axis, wanted, modality]).encode()).hexdigest()
    folder = cache_root() / "volumes" / key[:2] / key
    if (folder / "slices.json").is_file():
        cached, problem = _cached_slices(folder)
        if cached is not None:
            return cached
        log.warning("volume slice cache %s: %s; discarded and rebuilt", folder, problem)
        _discard(folder)
    data, found_modality = read(files, axis, where)
    kind = (modality or found_modality or ("CT" if float(data.min()) < -500 else "MR")).upper()
    kind = "CT" if kind == "CT" else "MR"
    partial = folder.with_name(f"{key}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for n, index in enumerate(sample_evenly(data.shape[0], wanted)):
        # Rotate so the patient's head is up: array rows run along the volume's second axis.
        plane = np.rot90(window(data[index], kind))
        name = f"{n:03d}.png"
        Image.fromarray(np.ascontiguousarray(plane)).save(partial / name)
        entries.append({"name": name, "bytes": (partial / name).stat().st_size, "sha256": sha256_file(partial / name)})
    (partial / "slices.json").write_text(json.dumps({"version": CACHE_VERSION, "slices": entries}))
    try:
        os.rename(partial, folder)  # atomic: readers see all the slices or none
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another process wrote the same slices first: identical
    return [folder / e["name"] for e in entries]


def _cached_slices(folder: Path) -> tuple[list[Path] | None, str]:
    """The cached slices when every one is what was written (name, size, hash), else why not: a cache entry is
    checked the way a fresh result would be, never trusted because it exists."""
    try:
        index = json.loads((folder / "slices.json").read_text())
        entries = index["slices"] if isinstance(index, dict) and index.get("version") == CACHE_VERSION else None
        if not isinstance(entries, list) or not entries:
            return None, "its index is not this version's"
        paths = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("name") != f"{n:03d}.png":
                return None, f"entry {n} is not slice {n:03d}.png"
            path = folder / entry["name"]
            same = path.is_file() and path.stat().st_size == entry.get("bytes")
            if not same or sha256_file(path) != entry.get("sha256"):
                return None, f"{entry['name']} differs from what was written"
            paths.append(path)
        return paths, ""
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable index ({type(exc).__name__}: {exc})"


def _discard(folder: Path) -> None:
    # Renamed aside first so a concurrent reader never sees a half-deleted folder under the cache's name.
    aside = folder.with_name(f"{folder.name}.damaged-{os.getpid()}")
    try:
        os.rename(folder, aside)
    except OSError:
        return  # another process already moved it
    shutil.rmtree(aside, ignore_errors=True)
