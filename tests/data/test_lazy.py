"""LazyDataset and read_header: read on first use, header only, pixels located."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from aiodicom import synthetic
from aiodicom.data import LazyDataset, header_of, read_header
from aiodicom.errors import DicomFileError
from tests.data import synth


def _file(tmp_path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> tuple[Path, np.ndarray]:
    stored = synth.ramp((1, 5, 7), np.int16, -500, 500, seed=9)
    (path,) = synth.write(synth.make_series(stored), tmp_path, transfer_syntax=transfer_syntax)
    return path, stored[0]


def test_nothing_is_read_before_first_access(tmp_path: Path) -> None:
    path = tmp_path / "later.dcm"
    lazy = LazyDataset(path)  # the file does not even exist yet
    assert not lazy.is_loaded
    assert "not loaded" in repr(lazy)
    real, _ = _file(tmp_path)
    real.rename(path)
    assert lazy.PatientID == "SYNTH01"
    assert lazy.is_loaded


def test_header_has_no_pixels_but_pixels_are_available(tmp_path: Path) -> None:
    path, pixels = _file(tmp_path)
    lazy = LazyDataset(path)
    assert "PixelData" not in lazy.header
    assert lazy[0x00100020].value == "SYNTH01"
    assert lazy["PatientID"].value == "SYNTH01"
    assert "PatientID" in lazy and 0x7FE00010 in lazy and "PatientWeight" not in lazy
    np.testing.assert_array_equal(lazy.pixel_array, pixels)
    assert len(lazy.PixelData) == pixels.nbytes
    assert lazy[0x7FE00010].value == pixels.tobytes()
    # Not cached by default: the header stays the only thing held.
    assert lazy.dataset is not lazy.dataset
    assert "PixelData" not in lazy.header
    keeper = LazyDataset(path, keep_pixels=True)
    assert keeper.dataset is keeper.dataset


def test_release_forgets_and_rereads(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    lazy = LazyDataset(path)
    assert lazy.Modality == "CT"
    lazy.release()
    assert not lazy.is_loaded
    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    ds.save_as(path)
    assert lazy.Modality == "MR"


def test_unknown_attribute_and_bad_files(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    with pytest.raises(AttributeError):
        _ = LazyDataset(path).NotAKeyword
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(DicomFileError, match="not a DICOM"):
        _ = LazyDataset(junk).PatientID
    with pytest.raises(DicomFileError):
        read_header(junk)


@pytest.mark.parametrize(
    "transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_pixel_location_points_at_the_pixel_bytes(tmp_path: Path, transfer_syntax: str) -> None:
    path, pixels = _file(tmp_path, transfer_syntax)
    header, location = read_header(path)
    assert location is not None and "PixelData" not in header
    assert location.big_endian == (transfer_syntax == ExplicitVRBigEndian)
    raw = path.read_bytes()[location.offset : location.offset + location.length]
    dtype = ">i2" if location.big_endian else "<i2"
    np.testing.assert_array_equal(np.frombuffer(raw, dtype).reshape(pixels.shape), pixels)
    assert LazyDataset(path).pixel_location == location


def test_no_location_for_compressed_or_deflated(tmp_path: Path) -> None:
    stored = synth.ramp((1, 4, 4), np.uint16, 0, 4095)
    ds = synth.make_series(stored)[0]
    ds.compress(RLELossless)
    (rle,) = synth.write([ds], tmp_path / "rle")
    assert read_header(rle)[1] is None
    (deflated,) = synthetic.write_study(
        tmp_path / "deflated",
        images_per_series=1,
        rows=8,
        columns=8,
        transfer_syntax=synthetic.TRANSFER_SYNTAXES["deflated"],
    )
    header, location = read_header(deflated)
    assert location is None and header.Rows == 8


def test_header_of_accepts_every_instance_kind(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    ds = pydicom.dcmread(path)
    for instance in (ds, LazyDataset(path), path, str(path)):
        assert header_of(instance).PatientID == "SYNTH01"
    assert header_of(ds) is ds
    with pytest.raises(TypeError):
        header_of(3.5)  # type: ignore[arg-type]
