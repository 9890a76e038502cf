"""Part 10 file meta: what we write must be read by pydicom and DCMTK alike."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from aiodicom.codec import uids
from aiodicom.codec.part10 import PREAMBLE, encode_file_meta
from aiodicom.errors import DicomFileError

CT = "1.2.840.10008.5.1.4.1.1.2"
ALL_UNCOMPRESSED = [
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
    uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
]

dcmtk = pytest.mark.skipif(shutil.which("dcmdump") is None, reason="DCMTK dcmdump not installed")


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
    """Data set bytes in ``transfer_syntax``, written by pydicom (no meta)."""
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


@given(
    st.from_regex(r"[1-9][0-9]{0,20}(\.(0|[1-9][0-9]{0,10})){1,5}", fullmatch=True),
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
    done = subprocess.run(
        ["dcmdump", "-dc", "+E", "+L", str(path)], capture_output=True, text=True, check=False
    )
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
    done = subprocess.run(
        ["dcmdump", "-dc", "+E", str(path)], capture_output=True, text=True, check=False
    )
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
