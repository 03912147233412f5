"""Volumes behind SpineMed pointers as the datasets ship them: VerSe-style NIfTI CT and Spark-style DICOM MRI
series, written here with nibabel and pydicom, read through a pointer into readable slices."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spinegpt.data_mixes import readers, spinemed, volumes


def write_nifti_ct(path: Path, slices: int = 40) -> Path:
    import nibabel as nib

    # x (left-right) is the first axis in RAS: sagittal planes are stacked along it.
    data = np.full((slices, 48, 64), -1000.0, dtype=np.float32)  # air
    data[:, 20:28, 8:56] = 1200.0  # a column of cortical bone
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine=np.eye(4)), str(path))
    return path


def write_dicom_series(folder: Path, slices: int = 30) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{i:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = (
            MRImageStorage,
            meta.MediaStorageSOPInstanceUID,
            series,
        )
        ds.Modality, ds.InstanceNumber = "MR", slices - i  # files in reverse order: the reader sorts
        ds.ImagePositionPatient = [float(slices - i), 0.0, 0.0]
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 40, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.full((32, 40), 100 + 10 * (slices - i), dtype=np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"IM{i:04d}.dcm", enforce_file_format=True)
    return folder


def _item(pointer: dict[str, object]) -> dict[str, object]:
    return {
        "id": "v1",
        "language": "en",
        "category": "Spine Surgery",
        "subspecialty": "Trauma",
        "task": "vqa",
        "messages": [
            {"role": "user", "content": "<image>Which level is fractured?"},
            {"role": "assistant", "content": "L1."},
        ],
        "images": [pointer],
        "provenance": {"source_type": "open_dataset", "dataset": "VerSe"},
    }


def _read(root: Path, item: dict[str, object]) -> list[object]:
    path = root / "train.jsonl"
    path.write_text(json.dumps(item) + "\n")
    return list(spinemed.read_spinemed(path, readers.ReadOptions(data_root=root / "open_datasets")))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))


def test_a_nifti_ct_through_a_pointer_becomes_25_windowed_slices(tmp_path: Path) -> None:
    write_nifti_ct(tmp_path / "open_datasets" / "VerSe" / "sub-verse004" / "sub-verse004_ct.nii.gz")
    (record,) = _read(tmp_path, _item({"dataset": "VerSe", "case": "sub-verse004", "volume": "ct"}))
    assert isinstance(record, spinemed.Record), record
    assert len(record.images) == 25 and record.messages[0]["content"].count("<image>") == 25
    first = Image.open(record.images[0])
    first.load()
    assert first.mode == "L" and first.size == (48, 64)  # a sagittal plane, head up: rows along the spine
    pixels = np.asarray(first)
    assert pixels.max() > 200 and pixels.min() == 0  # bone bright, air black: a bone window
    # Cached by content: a second read writes nothing new.
    before = sorted(p.stat().st_mtime_ns for p in Path(record.images[0]).parent.iterdir())
    (again,) = _read(tmp_path, _item({"dataset": "VerSe", "case": "sub-verse004", "volume": "ct"}))
    assert again.images == record.images
    assert sorted(p.stat().st_mtime_ns for p in Path(record.images[0]).parent.iterdir()) == before


def test_a_dicom_mri_series_is_read_in_order_with_a_percentile_window(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "open_datasets" / "Spark" / "case-17" / "t2_sag")
    item = _item({"dataset": "Spark", "case": "case-17", "volume": "t2_sag"})
    (record,) = _read(tmp_path, item)
    assert isinstance(record, spinemed.Record), record
    assert len(record.images) == 25 and record.messages[0]["content"].count("<image>") == 25
    one = _read(tmp_path, _item({"dataset": "Spark", "case": "case-17", "volume": "t2_sag", "slice": 0}))[0]
    assert isinstance(one, spinemed.Record) and len(one.images) == 1


def test_how_a_volume_name_resolves_and_an_ambiguous_one_is_refused(tmp_path: Path) -> None:
    case = tmp_path / "case"
    write_nifti_ct(case / "ct.nii.gz", slices=5)
    assert volumes.locate(case, "ct", "w") == case / "ct.nii.gz"  # <volume> with a known extension
    write_nifti_ct(case / "sub-verse004_seg.nii.gz", slices=5)
    assert volumes.locate(case, "seg", "w") == case / "sub-verse004_seg.nii.gz"  # *_<volume>
    (case / "t1").mkdir()
    assert volumes.locate(case, "t1", "w") == case / "t1"  # a folder
    write_nifti_ct(case / "sub-a_t2.nii.gz", slices=5)
    write_nifti_ct(case / "sub-b_t2.nii.gz", slices=5)
    with pytest.raises(volumes.VolumeError, match=r"volume 't2' is ambiguous .*sub-a_t2.nii.gz, sub-b_t2.nii.gz"):
        volumes.locate(case, "t2", "w")
    with pytest.raises(volumes.VolumeError, match="volume 'flair' not found"):
        volumes.locate(case, "flair", "w")


def test_a_damaged_volume_is_a_bad_item_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "open_datasets" / "VerSe" / "sub-verse009" / "sub-verse009_ct.nii.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a nifti at all")
    (bad,) = _read(tmp_path, _item({"dataset": "VerSe", "case": "sub-verse009", "volume": "ct"}))
    assert isinstance(bad, spinemed.Bad) and "train.jsonl:1" in str(bad)
    assert "not a readable NIfTI volume" in str(bad)


# -- what a pointer may reach (issue 23): an annotation file is data, not a licence to read the disk ----------------


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 128).save(path)
    return path


def test_pointers_never_leave_their_dataset_folder(tmp_path: Path) -> None:
    datasets = tmp_path / "open_datasets"
    _png(datasets / "VerSe" / "sub-verse004" / "ct-sagittal-L3.png")
    secret = _png(tmp_path / "secret" / "case" / "x.png")
    _png(tmp_path / "secret" / "case" / "vol" / "001.png")
    (datasets / "VerSe" / "sub-verse004" / "link.png").symlink_to(secret)  # a link shipped inside a case
    (datasets / "VerSe" / "sub-evil").symlink_to(secret.parent)  # a case folder that is a link elsewhere
    slices = datasets / "VerSe" / "sub-verse005" / "ct"
    _png(slices / "001.png")
    (slices / "002.png").symlink_to(secret)  # one slice of a folder volume links out
    escapes = {
        "case climbs out": {"dataset": "VerSe", "case": "../../secret/case", "file": "x.png"},
        "absolute case": {"dataset": "VerSe", "case": str(secret.parent), "file": "x.png"},
        "file climbs out": {"dataset": "VerSe", "case": "sub-verse004", "file": "../../../secret/case/x.png"},
        "absolute file": {"dataset": "VerSe", "case": "sub-verse004", "file": str(secret)},
        "dataset climbs out": {"dataset": "../secret", "case": "case", "file": "x.png"},
        "linked file": {"dataset": "VerSe", "case": "sub-verse004", "file": "link.png"},
        "linked case": {"dataset": "VerSe", "case": "sub-evil", "file": "x.png"},
        "volume climbs out": {"dataset": "VerSe", "case": "sub-verse004", "volume": "../../../secret/case/vol"},
        "linked slice": {"dataset": "VerSe", "case": "sub-verse005", "volume": "ct"},
    }
    for what, pointer in escapes.items():
        (bad,) = _read(tmp_path, _item(pointer))
        assert isinstance(bad, spinemed.Bad), f"{what}: followed to {bad}"
        assert "outside" in bad.detail and str(datasets) in bad.detail, f"{what}: {bad.detail}"
    (good,) = _read(tmp_path, _item({"dataset": "VerSe", "case": "sub-verse004", "file": "ct-sagittal-L3.png"}))
    assert isinstance(good, spinemed.Record)
    # A dataset folder that is itself a link is the user's own setup (a download kept on another disk): followed,
    # and what lies inside it is held to the same rule.
    elsewhere = tmp_path / "big-disk" / "Spark"
    _png(elsewhere / "case-1" / "t2.png")
    (datasets / "Spark").symlink_to(elsewhere)
    (linked,) = _read(tmp_path, _item({"dataset": "Spark", "case": "case-1", "file": "t2.png"}))
    assert isinstance(linked, spinemed.Record), linked


def test_a_link_loop_or_a_null_byte_in_a_pointer_is_one_bad_item(tmp_path: Path) -> None:
    """``Path.resolve`` raises RuntimeError on a loop and ValueError on a NUL: neither may end the whole read."""
    case = tmp_path / "open_datasets" / "VerSe" / "sub-verse004"
    _png(case / "ct-sagittal-L3.png")
    (case / "loop.png").symlink_to(case / "loop.png")
    pointers = {
        "link loop": {"dataset": "VerSe", "case": "sub-verse004", "file": "loop.png"},
        "null byte": {"dataset": "VerSe", "case": "sub\u0000verse004", "file": "ct-sagittal-L3.png"},
    }
    for what, pointer in pointers.items():
        (bad,) = _read(tmp_path, _item(pointer))
        assert isinstance(bad, spinemed.Bad), f"{what}: {bad}"
    (good,) = _read(tmp_path, _item({"dataset": "VerSe", "case": "sub-verse004", "file": "ct-sagittal-L3.png"}))
    assert isinstance(good, spinemed.Record)


def test_an_unreadable_file_in_a_dicom_series_is_one_bad_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series = write_dicom_series(tmp_path / "open_datasets" / "Spark" / "case-1" / "t2", slices=2)
    unreadable = series / "IM0000.dcm"
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads a file whatever its mode: make the refusal root would not get
        real_open = Path.open

        def refusing_open(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == unreadable:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refusing_open)
    (bad,) = _read(tmp_path, _item({"dataset": "Spark", "case": "case-1", "volume": "t2"}))
    assert isinstance(bad, spinemed.Bad) and "IM0000.dcm" in bad.detail, bad


def test_a_damaged_slice_cache_is_rebuilt_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_nifti_ct(tmp_path / "open_datasets" / "VerSe" / "sub-verse004" / "sub-verse004_ct.nii.gz", slices=10)
    pointer = {"dataset": "VerSe", "case": "sub-verse004", "volume": "ct"}
    (record,) = _read(tmp_path, _item(pointer))
    assert isinstance(record, spinemed.Record)
    folder = Path(record.images[0]).parent
    secret = _png(tmp_path / "secret.png")
    (folder / "slices.json").write_text(json.dumps([f"../../../../{secret.relative_to(tmp_path)}"]))
    (again,) = _read(tmp_path, _item(pointer))
    assert isinstance(again, spinemed.Record) and again.images == record.images, again
    assert "rebuilt" in caplog.text
    Path(record.images[3]).write_bytes(b"")  # a slice cut short on disk
    (third,) = _read(tmp_path, _item(pointer))
    assert isinstance(third, spinemed.Record) and Image.open(third.images[3]).size == (48, 64)


def _nifti_header_only(path: Path, shape: tuple[int, ...]) -> Path:
    """A .nii.gz of a few hundred bytes whose header claims ``shape`` (the data is missing)."""
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as out:
        out.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


def test_a_tiny_file_claiming_a_huge_volume_is_refused_before_reading(tmp_path: Path) -> None:
    _nifti_header_only(tmp_path / "open_datasets" / "VerSe" / "sub-bomb" / "ct.nii.gz", (4096, 4096, 4096))
    (bad,) = _read(tmp_path, _item({"dataset": "VerSe", "case": "sub-bomb", "volume": "ct"}))
    assert isinstance(bad, spinemed.Bad) and "4096x4096x4096" in bad.detail and "GiB" in bad.detail, bad
    write_dicom_series(tmp_path / "open_datasets" / "Spark" / "case-9" / "t2", slices=2)
    import pydicom

    first = tmp_path / "open_datasets" / "Spark" / "case-9" / "t2" / "IM0000.dcm"
    ds = pydicom.dcmread(first)
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 65535
    ds.save_as(first, enforce_file_format=True)
    (bad,) = _read(tmp_path, _item({"dataset": "Spark", "case": "case-9", "volume": "t2"}))
    assert isinstance(bad, spinemed.Bad) and "65535x65535" in bad.detail and "GiB" in bad.detail, bad
