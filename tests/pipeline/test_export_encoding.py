"""Data sets handed to an exporter are encoded as pydicom would write them, without a copy
of their large values and without touching them."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate

from aiodicom.codec.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.errors import MalformedDatasetError
from aiodicom.pipeline.encoding import LARGE_VALUE, encode_dataset, encode_item
from aiodicom.synthetic import make_dataset
from peers import dataset_bytes

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _pydicom_bytes(ds: pydicom.Dataset, tmp_path: Path) -> bytes:
    """What pydicom itself writes for the data set (after the file meta)."""
    path = tmp_path / "pydicom.dcm"
    pydicom.dcmwrite(path, copy.deepcopy(ds), enforce_file_format=True)
    return dataset_bytes(path)


def _ours(ds: pydicom.Dataset, tmp_path: Path) -> bytes:
    path = tmp_path / "ours.dcm"
    path.write_bytes(encode_item(ds).read())
    return dataset_bytes(path)


def _large(transfer_syntax: str, *, odd: bool = False) -> pydicom.Dataset:
    ds = make_dataset(rows=16, columns=16,
                      transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN if transfer_syntax == JPEG_BASELINE else transfer_syntax)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Åsa^Ünïcode"
    ds.add_new(0x00091010, "LO", "AIODICOM TEST")
    ds.add_new(0x00091011, "OB", bytes(range(256)) * (LARGE_VALUE // 256) + (b"x" if odd else b""))
    if transfer_syntax == JPEG_BASELINE:
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(LARGE_VALUE) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.NumberOfFrames = LARGE_VALUE // (16 * 16 * 2) + 1
        ds.PixelData = bytes(16 * 16 * 2 * ds.NumberOfFrames)
    return ds


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
                                             EXPLICIT_VR_BIG_ENDIAN, JPEG_BASELINE])
@pytest.mark.parametrize("odd", [False, True], ids=["even", "odd"])
def test_large_values_are_written_as_pydicom_writes_them(tmp_path: Path, transfer_syntax: str, odd: bool) -> None:
    ds = _large(transfer_syntax, odd=odd)
    before = pickle.dumps(ds)
    assert _ours(ds, tmp_path) == _pydicom_bytes(ds, tmp_path)
    assert pickle.dumps(ds) == before
    _uid, _instance, ts, parts = encode_dataset(ds)
    assert ts == transfer_syntax
    if transfer_syntax != EXPLICIT_VR_BIG_ENDIAN:  # little endian: the pixels are handed on, not copied
        pixels = ds["PixelData"].value
        assert any(isinstance(p, memoryview) and p.obj is pixels for p in parts)


@pytest.mark.parametrize(("charset", "name"), [("ISO_IR 192", "Åsa^Ünïcode"), ("ISO_IR 100", "Åsa^Öl"),
                                               (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎")])
def test_a_data_set_read_from_a_file_is_not_converted_by_encoding_it(
    tmp_path: Path, charset: str | list[str], name: str
) -> None:
    source = tmp_path / "source.dcm"
    written = _large(EXPLICIT_VR_LITTLE_ENDIAN)
    written.SpecificCharacterSet = charset
    written.PatientName = name
    written.add_new(0x7FE10010, "LO", "AIODICOM TEST")
    written.add_new(0x7FE11010, "LO", name.split("=")[0])  # a small element after the pixels
    written.save_as(source, enforce_file_format=True)
    ds = pydicom.dcmread(source)
    before = pickle.dumps(ds)  # every element still raw, as read
    assert _ours(ds, tmp_path) == dataset_bytes(source)
    assert pickle.dumps(ds) == before


def test_a_data_set_without_identity_is_refused_with_a_clear_error() -> None:
    ds = make_dataset(rows=16, columns=16)
    del ds.SOPInstanceUID
    with pytest.raises(MalformedDatasetError, match="SOP Instance UID"):
        encode_item(ds)
    with pytest.raises(MalformedDatasetError, match="not a DICOM Part 10 file"):
        encode_item(b"hello")
