"""Part 10 file meta: what we write must be read by pydicom and DCMTK alike."""

from __future__ import annotations

import copy
import io
import os
import struct
import subprocess
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from aiodicom.codec import uids
from aiodicom.codec.part10 import PREAMBLE, FileMeta, encode_file_meta, read_file_meta, transcode
from aiodicom.errors import DicomFileError

CT = "1.2.840.10008.5.1.4.1.1.2"
ALL_UNCOMPRESSED = [
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
    uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
]

def dcmtk(test: Any) -> Any:
    """Mark a test that runs dcmdump and dcmconv (see the ``dcmtk`` marker in conftest.py)."""
    return pytest.mark.dcmtk("dcmdump", "dcmconv")(test)


def run_dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(args, capture_output=True, text=True, check=False, env=env)


def sample_dataset(sop_instance_uid: str = "1.2.826.0.1.3680043.8.498.1") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-0001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    ds.PixelData = struct.pack("<4H", 1, 2, 3, 4)
    return ds


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    """Data set bytes in ``transfer_syntax``, written by pydicom (no meta).

    pydicom writes OW/OF bytes as they are, so for big endian the test swaps
    them first (values are given little endian).
    """
    if transfer_syntax == uids.EXPLICIT_VR_BIG_ENDIAN:
        ds = copy.deepcopy(ds)
        for elem in ds.iterall():
            size = {"OW": 2, "OF": 4}.get(elem.VR)
            if size:
                value = elem.value
                elem.value = b"".join(value[i : i + size][::-1] for i in range(0, len(value), size))
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != uids.EXPLICIT_VR_BIG_ENDIAN
    fp.is_implicit_VR = transfer_syntax == uids.IMPLICIT_VR_LITTLE_ENDIAN
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        raw = deflater.compress(raw) + deflater.flush()
    return raw


def meta_elements(meta: bytes) -> list[tuple[int, bytes, bytes]]:
    """(element, VR, value) of the group 0002 bytes after preamble and magic."""
    out, pos = [], 132
    while pos < len(meta):
        group, elem, vr = struct.unpack_from("<HH2s", meta, pos)
        assert group == 2
        if vr == b"OB":
            (length,) = struct.unpack_from("<I", meta, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", meta, pos + 6)
            pos += 8
        out.append((elem, vr, meta[pos : pos + length]))
        pos += length
    return out


# --- encode_file_meta ---------------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", ALL_UNCOMPRESSED)
@pytest.mark.parametrize("source_ae", [None, "STORESCU", "AE1"])
def test_pydicom_reads_our_files(transfer_syntax: str, source_ae: str | None) -> None:
    ds = sample_dataset()
    meta = encode_file_meta(CT, ds.SOPInstanceUID, transfer_syntax, source_ae=source_ae)
    assert meta.startswith(b"\0" * 128 + b"DICM") and meta[:132] == PREAMBLE
    read = dcmread(io.BytesIO(meta + encode_dataset(ds, transfer_syntax)))
    fm = read.file_meta
    assert fm.FileMetaInformationGroupLength == len(meta) - 132 - 12
    assert fm.FileMetaInformationVersion == b"\x00\x01"
    assert fm.MediaStorageSOPClassUID == CT
    assert fm.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert fm.TransferSyntaxUID == transfer_syntax
    assert fm.ImplementationClassUID == uids.IMPLEMENTATION_CLASS_UID
    assert fm.ImplementationVersionName == uids.IMPLEMENTATION_VERSION_NAME
    assert fm.get("SourceApplicationEntityTitle") == source_ae
    assert read.PatientID == "PID-0001" and read.PixelData == ds.PixelData


@pytest.mark.parametrize("source_ae", [None, "ABC", "ABCD"])
@pytest.mark.parametrize("instance", ["1.2.3", "1.2.34", "2.25.1234567890123456789"])
def test_identical_to_pydicoms_meta_writer(source_ae: str | None, instance: str) -> None:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CT
    fm.MediaStorageSOPInstanceUID = instance
    fm.TransferSyntaxUID = uids.EXPLICIT_VR_LITTLE_ENDIAN
    fm.ImplementationClassUID = uids.IMPLEMENTATION_CLASS_UID
    fm.ImplementationVersionName = uids.IMPLEMENTATION_VERSION_NAME
    if source_ae is not None:
        fm.SourceApplicationEntityTitle = source_ae
    fp = DicomBytesIO()
    write_file_meta_info(fp, fm, enforce_standard=True)
    ours = encode_file_meta(CT, instance, uids.EXPLICIT_VR_LITTLE_ENDIAN, source_ae=source_ae)
    assert ours[132:] == fp.getvalue()


@settings(deadline=None)
@given(
    st.from_regex(r"[1-9][0-9]{0,20}(\.(0|[1-9][0-9]{0,10})){1,5}", fullmatch=True).filter(
        lambda uid: len(uid) <= 64
    ),
    st.none() | st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True),
)
def test_padding_and_group_length(instance: str, source_ae: str | None) -> None:
    meta = encode_file_meta(CT, instance, uids.IMPLICIT_VR_LITTLE_ENDIAN, source_ae=source_ae)
    elems = meta_elements(meta)
    assert [e for e, _, _ in elems] == [0x0000, 0x0001, 0x0002, 0x0003, 0x0010, 0x0012, 0x0013] + (
        [0x0016] if source_ae else []
    )
    assert struct.unpack("<I", elems[0][2])[0] == len(meta) - 132 - 12
    values = {e: (vr, v) for e, vr, v in elems}
    assert all(len(v) % 2 == 0 for _, _, v in elems)
    assert values[0x0003] == (b"UI", instance.encode() + (b"\0" if len(instance) % 2 else b""))
    assert values[0x0013][1].rstrip(b" ") == uids.IMPLEMENTATION_VERSION_NAME.encode()
    if source_ae:
        assert values[0x0016] == (b"AE", source_ae.encode() + (b" " if len(source_ae) % 2 else b""))


@dcmtk
@pytest.mark.parametrize("transfer_syntax", ALL_UNCOMPRESSED)
def test_dcmdump_reads_our_files_without_warnings(tmp_path: Path, transfer_syntax: str) -> None:
    ds = sample_dataset("1.2.826.0.1.3680043.8.498.77")
    path = tmp_path / "x.dcm"
    path.write_bytes(
        encode_file_meta(CT, ds.SOPInstanceUID, transfer_syntax, source_ae="MYAE")
        + encode_dataset(ds, transfer_syntax)
    )
    done = run_dcmtk("dcmdump", "-dc", "+E", "+L", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "W:" not in done.stdout and "E:" not in done.stdout
    assert "[1.2.826.0.1.3680043.8.498.77]" in done.stdout
    assert "(0002,0016) AE [MYAE]" in done.stdout
    assert "[PID-0001]" in done.stdout


@dcmtk
def test_dcmdump_check_can_fail(tmp_path: Path) -> None:
    """The DCMTK check above is meaningful: a wrong group length is reported."""
    meta = bytearray(encode_file_meta(CT, "1.2.3", uids.EXPLICIT_VR_LITTLE_ENDIAN))
    struct.pack_into("<I", meta, 132 + 8, 10)
    path = tmp_path / "bad.dcm"
    path.write_bytes(
        bytes(meta) + encode_dataset(sample_dataset("1.2.3"), uids.EXPLICIT_VR_LITTLE_ENDIAN)
    )
    done = run_dcmtk("dcmdump", "-dc", "+E", str(path))
    assert done.returncode != 0 or done.stderr != "" or "W:" in done.stdout


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sop_class_uid": "1.2.é"}, "SOP Class UID"),
        ({"sop_instance_uid": ""}, "SOP Instance UID"),
        ({"sop_instance_uid": "1." * 33}, "SOP Instance UID"),
        ({"transfer_syntax": "1.2\u00a0"}, "Transfer Syntax UID"),
        ({"source_ae": "A" * 17}, "AE title"),
        ({"source_ae": "  "}, "AE title"),
        ({"source_ae": "A\\B"}, "AE title"),
        ({"source_ae": "Ä"}, "AE title"),
    ],
)
def test_encode_file_meta_rejects_bad_values(kwargs: dict[str, str], pattern: str) -> None:
    args = {
        "sop_class_uid": CT,
        "sop_instance_uid": "1.2.3",
        "transfer_syntax": uids.IMPLICIT_VR_LITTLE_ENDIAN,
    }
    source_ae = kwargs.pop("source_ae", None)
    args.update(kwargs)
    with pytest.raises(DicomFileError, match=pattern):
        encode_file_meta(
            args["sop_class_uid"],
            args["sop_instance_uid"],
            args["transfer_syntax"],
            source_ae=source_ae,
        )


# --- read_file_meta -----------------------------------------------------------------


def part10(ds: Dataset, transfer_syntax: str, **kwargs: str) -> tuple[bytes, int]:
    meta = encode_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, transfer_syntax, **kwargs)
    return meta + encode_dataset(ds, transfer_syntax), len(meta)


@pytest.mark.parametrize("transfer_syntax", ALL_UNCOMPRESSED + ["1.2.840.10008.1.2.4.50"])
def test_read_our_files_from_every_kind_of_source(tmp_path: Path, transfer_syntax: str) -> None:
    ds = sample_dataset()
    meta = encode_file_meta(CT, ds.SOPInstanceUID, transfer_syntax)
    data, offset = meta + encode_dataset(ds, uids.EXPLICIT_VR_LITTLE_ENDIAN), len(meta)
    expected = FileMeta(CT, ds.SOPInstanceUID, transfer_syntax, offset)
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    assert read_file_meta(data) == expected
    assert read_file_meta(memoryview(data)) == expected
    assert read_file_meta(bytearray(data)) == expected
    assert read_file_meta(io.BytesIO(data)) == expected
    assert read_file_meta(path) == expected
    assert read_file_meta(str(path)) == expected
    with path.open("rb") as handle:
        assert read_file_meta(handle) == expected


def test_read_pydicom_written_file(tmp_path: Path) -> None:
    ds = sample_dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uids.IMPLICIT_VR_LITTLE_ENDIAN
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    ds.file_meta.PrivateInformation = b"\x00" * 1000
    path = tmp_path / "p.dcm"
    ds.save_as(path, enforce_file_format=True, implicit_vr=True, little_endian=True)
    meta = read_file_meta(path)
    assert (meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax) == (
        CT,
        ds.SOPInstanceUID,
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
    )
    rest = path.read_bytes()[meta.dataset_offset :]
    from pydicom.filereader import read_dataset

    assert read_dataset(io.BytesIO(rest), True, True) == ds


@dcmtk
def test_read_dcmtk_written_file(tmp_path: Path) -> None:
    """dcmconv rewrites the meta its own way (its own UIDs, group length)."""
    ds = sample_dataset("1.2.826.0.1.3680043.8.498.4242")
    source = tmp_path / "in.dcm"
    source.write_bytes(part10(ds, uids.EXPLICIT_VR_LITTLE_ENDIAN)[0])
    for option, ts in [
        ("+ti", uids.IMPLICIT_VR_LITTLE_ENDIAN),
        ("+tb", uids.EXPLICIT_VR_BIG_ENDIAN),
    ]:
        out = tmp_path / f"out{option}.dcm"
        assert run_dcmtk("dcmconv", option, str(source), str(out)).returncode == 0
        meta = read_file_meta(out)
        assert meta.sop_class_uid == CT and meta.transfer_syntax == ts
        assert meta.sop_instance_uid == "1.2.826.0.1.3680043.8.498.4242"
        assert read_file_meta(out.read_bytes()[meta.dataset_offset :]).transfer_syntax == ts


@pytest.mark.parametrize("transfer_syntax", [t for t in ALL_UNCOMPRESSED if "99" not in t])
def test_raw_data_set_without_meta(transfer_syntax: str) -> None:
    ds = sample_dataset("1.2.826.0.1.3680043.8.498.5")
    for extra in (False, True):
        if extra:  # something before (0008,0016): the first element is not the SOP class
            ds.SpecificCharacterSet = "ISO_IR 100"
        raw = encode_dataset(ds, transfer_syntax)
        assert read_file_meta(raw) == FileMeta(
            CT, "1.2.826.0.1.3680043.8.498.5", transfer_syntax, 0
        )


def test_meta_without_preamble_and_without_sop_uids() -> None:
    ds = sample_dataset("1.2.3.9")
    fm = FileMetaDataset()
    fm.TransferSyntaxUID = uids.IMPLICIT_VR_LITTLE_ENDIAN
    fp = DicomBytesIO()
    write_file_meta_info(fp, fm, enforce_standard=False)
    meta_bytes = fp.getvalue()
    data = meta_bytes + encode_dataset(ds, uids.IMPLICIT_VR_LITTLE_ENDIAN)
    assert read_file_meta(data) == FileMeta(
        CT, "1.2.3.9", uids.IMPLICIT_VR_LITTLE_ENDIAN, len(meta_bytes)
    )
    assert read_file_meta(PREAMBLE + data) == FileMeta(
        CT, "1.2.3.9", uids.IMPLICIT_VR_LITTLE_ENDIAN, 132 + len(meta_bytes)
    )


def test_sop_uids_far_into_a_large_file_without_meta(tmp_path: Path) -> None:
    ds = Dataset()
    ds.add_new(0x00080012, "DA", "20240101")
    ds.add_new(0x00080014, "UI", "1.2.3")  # instance creator UID
    ds.add_new(0x00080015, "UT", "x" * 300_000)  # pushes the SOP UIDs past the first read
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    path = tmp_path / "raw.dcm"
    path.write_bytes(encode_dataset(ds, uids.EXPLICIT_VR_LITTLE_ENDIAN))
    assert read_file_meta(path) == FileMeta(CT, "1.2.3.4.5.6", uids.EXPLICIT_VR_LITTLE_ENDIAN, 0)


def test_deflated_file_identity_comes_from_the_meta_or_the_inflated_data_set() -> None:
    ds = sample_dataset("1.2.3.77")
    data, offset = part10(ds, uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    fm = FileMetaDataset()
    fm.TransferSyntaxUID = uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    fp = DicomBytesIO()
    write_file_meta_info(fp, fm, enforce_standard=False)
    bare = PREAMBLE + fp.getvalue() + data[offset:]
    assert read_file_meta(bare) == FileMeta(
        CT, "1.2.3.77", uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, 132 + len(fp.getvalue())
    )


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", "too short"),
        (b"\x08\x00\x16\x00", "too short"),
        (PREAMBLE + b"\x02\x00\x10\x00UI\x14\x00", "ends inside"),
        (PREAMBLE + b"\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\xff", "claims"),
        (struct.pack("<HHI", 0x0010, 0x0010, 4) + b"A^B ", "SOP Class UID"),
        (struct.pack("<HHI", 0x0008, 0x0016, 4) + b"1.2\0", "SOP Instance UID"),
    ],
)
def test_unreadable_files(data: bytes, pattern: str) -> None:
    with pytest.raises(DicomFileError, match=pattern):
        read_file_meta(data)


def test_missing_file_is_a_dicom_file_error(tmp_path: Path) -> None:
    with pytest.raises(DicomFileError, match="cannot open"):
        read_file_meta(tmp_path / "nope.dcm")
    with pytest.raises(DicomFileError, match="cannot open"):
        read_file_meta(tmp_path)  # a directory


def test_non_contiguous_buffer_is_a_dicom_file_error() -> None:
    with pytest.raises(DicomFileError, match="non-contiguous"):
        read_file_meta(memoryview(SAMPLE_FILE + SAMPLE_FILE)[::2])


SAMPLE_FILE = part10(sample_dataset(), uids.EXPLICIT_VR_LITTLE_ENDIAN)[0]


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_dicom_file_error(data: bytes) -> None:
    for candidate in (data, PREAMBLE + data):
        try:
            read_file_meta(candidate)
        except DicomFileError:
            pass


@settings(deadline=None)
@given(st.data())
def test_damaged_files_only_raise_dicom_file_error(data: st.DataObject) -> None:
    buffer = bytearray(SAMPLE_FILE)
    cut = data.draw(st.integers(0, len(buffer)))
    for _ in range(data.draw(st.integers(0, 4))):
        buffer[data.draw(st.integers(0, len(buffer) - 1))] = data.draw(st.integers(0, 255))
    try:
        read_file_meta(bytes(buffer[:cut]))
    except DicomFileError:
        pass


# --- transcode ----------------------------------------------------------------------


def word_dataset() -> Dataset:
    """16-bit pixels, an OF and a sequence: what a byte order change must swap."""
    ds = sample_dataset()
    ds.Rows = 2
    ds.Columns = 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelData = struct.pack("<6H", 1, 0x0203, 0x0405, 0xFF00, 7, 0xABCD)
    ds["PixelData"].VR = "OW"
    ds.add_new(0x00181638, "OF", struct.pack("<2f", 1.5, -2.25))
    ds.add_new(0x00280106, "US", 1)  # SmallestImagePixelValue (ambiguous US or SS)
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedImageSequence = [ref]
    return ds


def decoded(data: bytes, transfer_syntax: str) -> Dataset:
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        data = zlib.decompress(data, -15)
    from pydicom.filereader import read_dataset

    ds = read_dataset(
        io.BytesIO(data),
        transfer_syntax == uids.IMPLICIT_VR_LITTLE_ENDIAN,
        transfer_syntax != uids.EXPLICIT_VR_BIG_ENDIAN,
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def check_same_content(data: bytes, transfer_syntax: str, original: Dataset) -> None:
    ds = decoded(data, transfer_syntax)
    assert ds.PatientID == original.PatientID
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3"
    assert ds.SmallestImagePixelValue == 1
    assert ds.pixel_array.tolist() == [[1, 0x0203, 0x0405], [0xFF00, 7, 0xABCD]]
    fmt = ">2f" if transfer_syntax == uids.EXPLICIT_VR_BIG_ENDIAN else "<2f"
    assert struct.unpack(fmt, ds[0x00181638].value) == (1.5, -2.25)


@pytest.mark.parametrize("to_ts", ALL_UNCOMPRESSED)
@pytest.mark.parametrize("from_ts", ALL_UNCOMPRESSED)
def test_transcode_between_uncompressed_syntaxes(from_ts: str, to_ts: str) -> None:
    original = word_dataset()
    source = encode_dataset(original, from_ts)
    out = transcode(source, from_ts, to_ts)
    check_same_content(out, to_ts, original)
    if from_ts == to_ts:
        assert out == source
    back = transcode(out, to_ts, from_ts)
    check_same_content(back, from_ts, original)


@dcmtk
@pytest.mark.parametrize(
    ("option", "to_ts"),
    [
        ("+tb", uids.EXPLICIT_VR_BIG_ENDIAN),
        ("+ti", uids.IMPLICIT_VR_LITTLE_ENDIAN),
        ("+td", uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
    ],
)
def test_transcode_agrees_with_dcmconv(tmp_path: Path, option: str, to_ts: str) -> None:
    original = word_dataset()
    source = tmp_path / "le.dcm"
    data, offset = part10(original, uids.EXPLICIT_VR_LITTLE_ENDIAN)
    source.write_bytes(data)
    target = tmp_path / "out.dcm"
    assert run_dcmtk("dcmconv", option, str(source), str(target)).returncode == 0
    theirs = target.read_bytes()
    meta = read_file_meta(theirs)
    assert meta.transfer_syntax == to_ts
    theirs_ds = decoded(theirs[meta.dataset_offset :], to_ts)
    ours_ds = decoded(transcode(data[offset:], uids.EXPLICIT_VR_LITTLE_ENDIAN, to_ts), to_ts)
    assert ours_ds[0x7FE00010].value == theirs_ds[0x7FE00010].value
    assert ours_ds[0x00181638].value == theirs_ds[0x00181638].value
    assert ours_ds == theirs_ds
    check_same_content(
        transcode(data[offset:], uids.EXPLICIT_VR_LITTLE_ENDIAN, to_ts), to_ts, original
    )


@pytest.mark.parametrize(
    ("from_ts", "to_ts", "pattern"),
    [
        ("1.2.840.10008.1.2.4.50", uids.EXPLICIT_VR_LITTLE_ENDIAN, "JPEG Baseline.*compressed"),
        (uids.IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.90", "JPEG 2000.*compressed"),
        (uids.IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.1.98", "compressed"),
        (uids.IMPLICIT_VR_LITTLE_ENDIAN, "1.2.3.4", "not a known transfer syntax"),
    ],
)
def test_transcode_refuses_compressed(from_ts: str, to_ts: str, pattern: str) -> None:
    with pytest.raises(DicomFileError, match=pattern):
        transcode(encode_dataset(sample_dataset(), uids.IMPLICIT_VR_LITTLE_ENDIAN), from_ts, to_ts)


@pytest.mark.parametrize(
    ("data", "from_ts"),
    [
        (b"\xff" * 40, uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
        (struct.pack("<HH2sH", 0x0010, 0x0010, b"ZZ", 200) + b"x", uids.EXPLICIT_VR_LITTLE_ENDIAN),
        (struct.pack("<HHI", 0x0010, 0x0010, 0x10000) + b"x", uids.IMPLICIT_VR_LITTLE_ENDIAN),
    ],
)
def test_transcode_garbage(data: bytes, from_ts: str) -> None:
    with pytest.raises(DicomFileError):
        transcode(data, from_ts, uids.EXPLICIT_VR_BIG_ENDIAN)


def test_non_conformant_implicit_vr_meta_is_read() -> None:
    """Some old writers encode group 0002 in implicit VR; pydicom reads those too."""

    def element(elem: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 2, elem, len(value)) + value

    ds = sample_dataset("1.2.3.4.5.6")
    meta = (
        element(0x0002, CT.encode() + b"\0")
        + element(0x0003, b"1.2.3.4.5.6\0")
        + element(0x0010, uids.EXPLICIT_VR_LITTLE_ENDIAN.encode())
    )
    data = PREAMBLE + meta + encode_dataset(ds, uids.EXPLICIT_VR_LITTLE_ENDIAN)
    expected = FileMeta(CT, "1.2.3.4.5.6", uids.EXPLICIT_VR_LITTLE_ENDIAN, 132 + len(meta))
    assert read_file_meta(data) == expected
    with pytest.warns(UserWarning, match="implicit VR"):
        read = dcmread(io.BytesIO(data))
    assert read.file_meta.TransferSyntaxUID == expected.transfer_syntax
    assert read.PatientID == ds.PatientID


TRANSCODE_SAMPLE = encode_dataset(word_dataset(), uids.EXPLICIT_VR_LITTLE_ENDIAN)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(ALL_UNCOMPRESSED), st.sampled_from(ALL_UNCOMPRESSED))
def test_transcode_damaged_input_only_raises_dicom_file_error(
    data: st.DataObject, from_ts: str, to_ts: str
) -> None:
    buffer = bytearray(TRANSCODE_SAMPLE)
    cut = data.draw(st.integers(0, len(buffer)))
    for _ in range(data.draw(st.integers(0, 4))):
        buffer[data.draw(st.integers(0, len(buffer) - 1))] = data.draw(st.integers(0, 255))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the values it tolerates
        try:
            transcode(bytes(buffer[:cut]), from_ts, to_ts)
        except DicomFileError:
            pass
