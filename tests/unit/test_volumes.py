"""Volumes behind SpineMed pointers as the datasets ship them: VerSe-style NIfTI CT and Spark-style DICOM MRI
series, written here with nibabel and pydicom, read through a pointer into readable slices."""

from __future__ import annotations

import json
from pathlib import Path

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
