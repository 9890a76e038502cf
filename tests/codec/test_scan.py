"""The tag scanner against pydicom's reading of the same bytes, in every syntax."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from aiodicom.codec import uids
from aiodicom.codec.scan import ScanResult, dataset_end, scan_elements, text
from aiodicom.errors import DicomFileError

IMPLICIT = uids.IMPLICIT_VR_LITTLE_ENDIAN
EXPLICIT = uids.EXPLICIT_VR_LITTLE_ENDIAN
BIG = uids.EXPLICIT_VR_BIG_ENDIAN
DEFLATED = uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
JPEG = "1.2.840.10008.1.2.4.50"  # encapsulated: the data set itself is explicit LE
SYNTAXES = [IMPLICIT, EXPLICIT, BIG, DEFLATED]

PATIENT_ID = 0x00100020
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
SOP_CLASS_UID = 0x00080016
ROUTING = (PATIENT_ID, STUDY_UID, SERIES_UID, SOP_INSTANCE_UID)


def item(**values: str) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def rich_dataset(undefined: bool = True, pixels: int = 64) -> Dataset:
    """Sequences (defined and undefined length, nested) and private tags
    before the wanted tags, long-length VRs in between."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.StudyDate = "20240101"
    ds.add_new(0x0008010E, "UR", "http://example.com/scheme")
    ds.add_new(0x00080119, "UC", "a long code value " * 5)
    ds.add_new(0x0008030E, "UT", "private element description " * 20)
    ds.add_new(0x0008040C, "UV", 2**40)
    ds.add_new(0x0008041B, "OB", b"\x01\x02\x03")
    inner = item(ReferencedSOPInstanceUID="1.2.3.4.5", ReferencedSOPClassUID="1.2.3")
    nested = item(ReferencedSOPInstanceUID="9.9.9")
    nested.ReferencedSeriesSequence = Sequence([item(SeriesInstanceUID="7.7.7.7")])
    ds.ReferencedImageSequence = Sequence([inner, nested])  # (0008,1140)
    ds.ReferencedStudySequence = Sequence([item(ReferencedSOPInstanceUID="5.5")])  # (0008,1110)
    if undefined:
        for tag in (0x00081140, 0x00081110):
            ds[tag].is_undefined_length = True
            for it in ds[tag].value:
                it.is_undefined_length_sequence_item = True
        nested[0x00081115].is_undefined_length = True
    block = ds.private_block(0x0009, "AIODICOM TEST", create=True)
    block.add_new(0x01, "LO", "private text")
    block.add_new(0x02, "OW", struct.pack("<4H", 1, 2, 3, 4))
    block.add_new(0x03, "SQ", Sequence([item(PatientID="hidden-in-private-sq")]))
    if undefined:
        ds[0x00091003].is_undefined_length = True
    ds.PatientName = "Müller^Hans"
    ds.PatientID = "PID-42 "
    ds.add_new(0x00100218, "UT", "strain")
    ds.add_new(0x00181638, "OF", struct.pack("<2f", 1.5, 2.5))
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3003"
    ds.InstanceNumber = "7"
    ds.add_new(0x00209165, "AT", [0x00100020, 0x0020000E])
    ds.Rows = max(1, pixels // 256)
    ds.Columns = min(pixels, 256)
    ds.BitsAllocated = 8
    ds.PixelData = bytes(range(256)) * (pixels // 256) + bytes(pixels % 256)
    return ds


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != BIG
    fp.is_implicit_VR = transfer_syntax == IMPLICIT
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if transfer_syntax == DEFLATED:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        raw = deflater.compress(raw) + deflater.flush()
    return raw


def pydicom_raw_values(data: bytes, transfer_syntax: str) -> dict[int, bytes]:
    """Raw top-level values as pydicom reads them (sequences excluded)."""
    if transfer_syntax == DEFLATED:
        data = zlib.decompress(data, -15)
    ds = read_dataset(BytesIO(data), transfer_syntax == IMPLICIT, transfer_syntax != BIG)
    out = {}
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if raw.VR != "SQ":
            out[int(tag)] = raw.value if isinstance(raw.value, bytes) else b""
    return out


# --- agreement with pydicom ---------------------------------------------------------


@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
@pytest.mark.parametrize("transfer_syntax", SYNTAXES)
def test_every_top_level_value_matches_pydicom(transfer_syntax: str, undefined: bool) -> None:
    data = encode(rich_dataset(undefined), transfer_syntax)
    expected = pydicom_raw_values(data, transfer_syntax)
    assert PATIENT_ID in expected and 0x00091002 in expected and 0x7FE00010 in expected
    result = scan_elements(data, transfer_syntax, expected.keys())
    assert result == ScanResult(expected, True)
    # one tag at a time, from bytes, bytearray and memoryview alike
    for tag, value in expected.items():
        for buffer in (data, bytearray(data), memoryview(data)):
            assert scan_elements(buffer, transfer_syntax, [tag]) == ScanResult({tag: value}, True)


@pytest.mark.parametrize("transfer_syntax", SYNTAXES)
def test_routing_tags(transfer_syntax: str) -> None:
    data = encode(rich_dataset(), transfer_syntax)
    result = scan_elements(data, transfer_syntax, ROUTING)
    assert result.complete
    assert {tag: text(v) for tag, v in result.values.items()} == {
        PATIENT_ID: "PID-42",
        STUDY_UID: "1.2.826.0.1.3680043.8.498.2002",
        SERIES_UID: "1.2.826.0.1.3680043.8.498.3003",
        SOP_INSTANCE_UID: "1.2.826.0.1.3680043.8.498.1001",
    }


def test_encapsulated_syntax_is_scanned_as_explicit_little_endian() -> None:
    ds = rich_dataset()
    data = encode(ds, EXPLICIT)
    # Replace native pixel data by encapsulated fragments (undefined length OB).
    native = data.index(struct.pack("<HH", 0x7FE0, 0x0010))
    fragments = (
        struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )  # fmt: skip
    data = data[:native] + fragments
    result = scan_elements(data, JPEG, [SERIES_UID, 0x7FE00010])
    assert result.complete
    assert result.values[0x7FE00010] == fragments[12:-8]


def test_tags_inside_sequences_are_not_reported() -> None:
    for ts in SYNTAXES:
        data = encode(rich_dataset(), ts)
        # (0008,1155) and (0020,000E) occur inside sequences; the nested
        # PatientID is in a private sequence. Only top-level ones count.
        result = scan_elements(data, ts, [0x00081155, 0x00081150])
        assert result == ScanResult({}, True), ts
        assert text(scan_elements(data, ts, [PATIENT_ID]).values[PATIENT_ID]) == "PID-42"


def test_absent_tag_passed_is_complete() -> None:
    for ts in SYNTAXES:
        data = encode(rich_dataset(), ts)
        assert scan_elements(data, ts, [0x00100021, PATIENT_ID]).complete
        assert 0x00100021 not in scan_elements(data, ts, [0x00100021]).values


def test_absent_tag_after_the_end_is_incomplete() -> None:
    for ts in SYNTAXES:
        data = encode(rich_dataset(), ts)
        result = scan_elements(data, ts, [PATIENT_ID, 0x7FE00020])
        assert not result.complete
        assert PATIENT_ID in result.values


def test_no_tags_wanted() -> None:
    assert scan_elements(b"", EXPLICIT, []) == ScanResult({}, True)
    assert scan_elements(b"garbage", IMPLICIT, ()) == ScanResult({}, True)


# --- truncation ---------------------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", [IMPLICIT, EXPLICIT, BIG])
def test_every_truncation(transfer_syntax: str) -> None:
    data = encode(rich_dataset(), transfer_syntax)
    full = scan_elements(data, transfer_syntax, ROUTING).values
    needed = data.index(b"1.2.826.0.1.3680043.8.498.3003") + 30  # end of SeriesInstanceUID
    for cut in range(len(data) + 1):
        result = scan_elements(data[:cut], transfer_syntax, ROUTING)
        # Whatever is found is right, and "complete" is never claimed early.
        assert all(full[tag] == value for tag, value in result.values.items())
        assert result.complete is (cut >= needed), cut
        if result.complete:
            assert result.values == full


def test_deflated_truncations_and_incremental_inflation() -> None:
    big = rich_dataset(pixels=4 * 1024 * 1024)
    data = encode(big, DEFLATED)
    full = scan_elements(data, DEFLATED, ROUTING)
    assert full.complete and len(full.values) == 4
    # The routing tags sit in the first few hundred compressed bytes: a first
    # P-DATA fragment is enough, the rest of the stream is not needed.
    assert scan_elements(data[:2048], DEFLATED, ROUTING) == full
    for cut in range(0, 2048, 7):
        result = scan_elements(data[:cut], DEFLATED, ROUTING)
        assert all(full.values[tag] == value for tag, value in result.values.items())
        if result.complete:
            assert result.values == full.values
    # Skipping over the 4 MiB of pixel data works (in bounded chunks).
    tail = scan_elements(data, DEFLATED, [0x7FE00010, 0x7FE10010])
    assert not tail.complete and len(tail.values[0x7FE00010]) == 4 * 1024 * 1024


def test_huge_length_of_unwanted_element_is_not_trusted() -> None:
    head = encode(item(PatientName="A^B"), EXPLICIT)
    bogus = struct.pack("<HH2sHI", 0x0010, 0x0015, b"OB", 0, 0xFFFFFFF0)
    assert scan_elements(head + bogus, EXPLICIT, [PATIENT_ID]) == ScanResult({}, False)
    implicit = struct.pack("<HHI", 0x0010, 0x0015, 0xFFFFFFF0)
    assert scan_elements(implicit, IMPLICIT, [PATIENT_ID]) == ScanResult({}, False)
    # A wanted element whose value does not fit is not reported.
    wanted = struct.pack("<HHI", 0x0010, 0x0020, 0x7FFFFFF0) + b"PID"
    assert scan_elements(wanted, IMPLICIT, [PATIENT_ID]) == ScanResult({}, False)


# --- UN with undefined length (PS3.5 6.2.2): contents are implicit VR LE ---------


def implicit_item(*elements: bytes) -> bytes:
    return (
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + b"".join(elements)
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    )


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT, BIG])
def test_undefined_length_un_holds_implicit_little_endian(transfer_syntax: str) -> None:
    big = transfer_syntax == BIG
    fmt = ">" if big else "<"
    nested_sq = (
        struct.pack("<HHI", 0x0008, 0x1115, 0xFFFFFFFF)
        + implicit_item(struct.pack("<HHI", 0x0020, 0x000E, 4) + b"1.2\0")
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    un = (
        struct.pack(fmt + "HH2sHI", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF)
        + implicit_item(struct.pack("<HHI", 0x0010, 0x0020, 4) + b"no!\0", nested_sq)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    pid = struct.pack(fmt + "HH2sH", 0x0010, 0x0020, b"LO", 4) + b"P-1 "
    data = un + pid
    assert scan_elements(data, transfer_syntax, [PATIENT_ID]) == ScanResult(
        {PATIENT_ID: b"P-1 "}, True
    )
    # (Read as explicit VR, the item's implicit elements would have the "VR"
    # b"\x04\x00" and raise: passing means the contents were read as implicit.)
    both = scan_elements(
        data + struct.pack(fmt + "HH2sH", 0x0020, 0x000D, b"UI", 0),
        transfer_syntax,
        [0x00091010, PATIENT_ID],
    )
    assert both.complete and both.values[0x00091010] == un[12:-8]


# --- garbage ------------------------------------------------------------------------


def test_unknown_vr_raises() -> None:
    data = struct.pack("<HH2sH", 0x0008, 0x0016, b"ZZ", 2) + b"1\0"
    with pytest.raises(DicomFileError, match="unknown VR"):
        scan_elements(data, EXPLICIT, [PATIENT_ID])


def test_bad_item_tag_in_sequence_raises() -> None:
    data = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF) + struct.pack("<HHI", 0x0010, 0x0010, 0)
    with pytest.raises(DicomFileError, match="item"):
        scan_elements(data, IMPLICIT, [PATIENT_ID])


def test_corrupt_deflate_raises() -> None:
    with pytest.raises(DicomFileError, match="deflate"):
        scan_elements(b"\xff" * 64, DEFLATED, [PATIENT_ID])


def test_deep_nesting_does_not_recurse() -> None:
    open_sq = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    data = open_sq * 20000
    assert scan_elements(data, IMPLICIT, [PATIENT_ID]) == ScanResult({}, False)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    pid = struct.pack("<HHI", 0x0010, 0x0020, 2) + b"ok"
    assert scan_elements(data + close * 20000 + pid, IMPLICIT, [PATIENT_ID]).values == {
        PATIENT_ID: b"ok"
    }


SAMPLE = {ts: encode(rich_dataset(), ts) for ts in SYNTAXES}


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(SYNTAXES + [JPEG]))
def test_random_bytes_only_raise_dicom_file_error(data: bytes, transfer_syntax: str) -> None:
    try:
        result = scan_elements(data, transfer_syntax, ROUTING)
    except DicomFileError:
        return
    assert set(result.values) <= set(ROUTING)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SYNTAXES), st.data())
def test_mutated_data_sets_only_raise_dicom_file_error(
    transfer_syntax: str, data: st.DataObject
) -> None:
    buffer = bytearray(SAMPLE[transfer_syntax])
    cut = data.draw(st.integers(0, len(buffer)))
    for _ in range(data.draw(st.integers(0, 6))):
        buffer[data.draw(st.integers(0, len(buffer) - 1))] = data.draw(st.integers(0, 255))
    wanted = data.draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=5))
    try:
        scan_elements(bytes(buffer[:cut]), transfer_syntax, wanted)
    except DicomFileError:
        pass


# --- text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1.2.3\0", "1.2.3"),
        (b"PID-1 ", "PID-1"),
        (b"  lead kept  \0 ", "  lead kept"),
        (b"", ""),
        ("Müller".encode(), "Müller"),
        ("Müller ".encode("latin-1"), "Müller"),
    ],
)
def test_text(raw: bytes, expected: str) -> None:
    assert text(raw) == expected


# --- dataset_end ----------------------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", [IMPLICIT, EXPLICIT, BIG])
def test_dataset_end_only_at_element_boundaries(transfer_syntax: str) -> None:
    data = encode(rich_dataset(undefined=False), transfer_syntax)
    ds = read_dataset(BytesIO(data), transfer_syntax == IMPLICIT, transfer_syntax != BIG)
    boundaries = {0} | {ds.get_item(tag).value_tell + ds.get_item(tag).length for tag in ds.keys()}
    assert max(boundaries) == len(data)
    for cut in range(len(data) + 1):
        assert (dataset_end(data[:cut], transfer_syntax) == cut) is (cut in boundaries), cut


def test_dataset_end_with_undefined_length_sequences() -> None:
    for ts in (IMPLICIT, EXPLICIT, BIG):
        data = encode(rich_dataset(undefined=True), ts)
        assert dataset_end(data, ts) == len(data)
        assert dataset_end(data + b"\x10\x00", ts) == len(data)
        inside = data.index(b"5.5")  # inside the undefined-length (0008,1110)
        assert dataset_end(data[:inside], ts) < inside


# --- random data sets against pydicom ---------------------------------------------

_SIMPLE_VALUES = {
    "CS": st.from_regex(r"[A-Z0-9_]{0,16}", fullmatch=True),
    "LO": st.from_regex(r"[A-Za-z0-9 .^-]{0,64}", fullmatch=True),
    "SH": st.from_regex(r"[A-Za-z0-9 ]{0,16}", fullmatch=True),
    "UI": st.from_regex(r"[1-9][0-9]{0,3}(\.(0|[1-9][0-9]{0,4})){0,6}", fullmatch=True),
    "UT": st.from_regex(r"[a-z ]{0,300}", fullmatch=True),
    "US": st.integers(0, 0xFFFF),
    "UL": st.integers(0, 0xFFFFFFFF),
    "FD": st.floats(allow_nan=False),
    "OB": st.binary(max_size=40),
}
_SIMPLE_TAGS = [
    (0x00080064, "CS"),
    (0x00080016, "UI"),
    (0x00080018, "UI"),
    (0x00080060, "CS"),
    (0x00080070, "LO"),
    (0x0008041B, "OB"),
    (0x00081010, "SH"),
    (0x00100020, "LO"),
    (0x00100218, "UT"),
    (0x00181020, "LO"),
    (0x0020000D, "UI"),
    (0x0020000E, "UI"),
    (0x00280010, "US"),
    (0x00280011, "US"),
    (0x00282000, "OB"),
    (0x00540081, "US"),
    (0x00660016, "FD"),
    (0x00720002, "SH"),
    (0x7FE00010, "OB"),
]
_SEQUENCE_TAGS = [0x00081110, 0x00081140, 0x00400275, 0x00540016]


@st.composite
def random_datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    for tag, vr in draw(st.lists(st.sampled_from(_SIMPLE_TAGS), max_size=10, unique=True)):
        ds.add_new(tag, vr, draw(_SIMPLE_VALUES[vr]))
    if draw(st.booleans()):
        creator = draw(st.sampled_from(["ACME 1.0", "AIODICOM"]))
        block = ds.private_block(0x0009, creator, create=True)
        block.add_new(0x10, "LO", draw(_SIMPLE_VALUES["LO"]))
    if depth < 2:
        for tag in draw(st.lists(st.sampled_from(_SEQUENCE_TAGS), max_size=2, unique=True)):
            items = draw(st.lists(random_datasets(depth + 1), max_size=3))
            ds.add_new(tag, "SQ", Sequence(items))
            ds[tag].is_undefined_length = draw(st.booleans())
            for it in items:
                it.is_undefined_length_sequence_item = draw(st.booleans())
    return ds


@settings(max_examples=150, deadline=None)
@given(random_datasets(), st.sampled_from(SYNTAXES), st.data())
def test_random_data_sets_agree_with_pydicom(
    ds: Dataset, transfer_syntax: str, data: st.DataObject
) -> None:
    encoded = encode(ds, transfer_syntax)
    expected = pydicom_raw_values(encoded, transfer_syntax)
    top_level = [int(tag) for tag in ds.keys()]
    # Sequences are skipped, not compared: pydicom keeps no raw bytes for them.
    candidates = [t for t, _ in _SIMPLE_TAGS] + [0x00090010, 0x00091010, 0x00091011]
    wanted = data.draw(st.lists(st.sampled_from(candidates), max_size=6))
    result = scan_elements(encoded, transfer_syntax, wanted)
    assert result.values == {tag: expected[tag] for tag in wanted if tag in expected}
    assert set(result.values) <= set(wanted)
    # Complete unless a wanted tag is absent and beyond every element present.
    absent_beyond = [t for t in wanted if t not in ds and all(t > k for k in top_level)]
    assert result.complete is (not absent_beyond)
    if transfer_syntax != DEFLATED:
        assert dataset_end(encoded, transfer_syntax) == len(encoded)


def test_memoryviews_of_other_shapes() -> None:
    data = encode(rich_dataset(), EXPLICIT)
    expected = scan_elements(data, EXPLICIT, ROUTING)
    padded = data + bytes(len(data) % 2)
    as_words = memoryview(padded).cast("H")  # len() counts words, not bytes
    assert scan_elements(as_words, EXPLICIT, ROUTING) == expected
    assert dataset_end(memoryview(data).cast("B", (1, len(data))), EXPLICIT) == len(data)
    with pytest.raises(DicomFileError, match="non-contiguous"):
        scan_elements(memoryview(data + data)[::2], EXPLICIT, ROUTING)


# --- odd-length values (sender-side repair) -------------------------------------------------


@pytest.mark.parametrize(
    "transfer_syntax",
    ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"],
    ids=["implicit", "explicit", "big-endian"],
)
def test_odd_length_values_are_found_and_padded(transfer_syntax: str) -> None:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.sequence import Sequence

    from aiodicom.codec.part10 import pad_odd_lengths
    from aiodicom.codec.scan import odd_length_elements

    item = Dataset()
    item.CodeValue = "12"
    ds = Dataset()
    ds.PatientID = "PIDX"
    ds.ReferencedStudySequence = Sequence([item])
    ds.StudyDescription = "EVEN"
    buffer = DicomBytesIO()
    buffer.is_little_endian = transfer_syntax != "1.2.840.10008.1.2.2"
    buffer.is_implicit_VR = transfer_syntax == "1.2.840.10008.1.2"
    write_dataset(buffer, ds)
    clean = buffer.getvalue()
    assert odd_length_elements(clean, transfer_syntax) == []
    assert pad_odd_lengths(clean, transfer_syntax) == (clean, [])
    # Make PatientID "ODD" (3 bytes): its length patched in place.
    big = transfer_syntax == "1.2.840.10008.1.2.2"
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    bad = bytearray(clean)
    at = bad.index(b"PIDX")
    length_at = at - 4 if implicit else at - 2
    width = 4 if implicit else 2
    bad[length_at : length_at + width] = (3).to_bytes(width, "big" if big else "little")
    bad[at : at + 4] = b"ODD"
    found = odd_length_elements(bytes(bad), transfer_syntax)
    assert found == [0x00100020]
    fixed, padded = pad_odd_lengths(bytes(bad), transfer_syntax)
    assert padded == [0x00100020]
    assert odd_length_elements(fixed, transfer_syntax) == []
    assert b"ODD " in fixed and b"EVEN" in fixed and b"12" in fixed
