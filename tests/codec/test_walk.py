"""The structure walk: whole data sets pass in any fragmentation; every cut or garbage fails.

A cut exactly between two top-level elements leaves a well-formed (shorter) data set,
which no structure check can tell from a whole one; every other cut offset must fail,
in every transfer syntax the scanner reads, and the only exception is
:class:`MalformedDatasetError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from aiodicom.codec.walk import DatasetWalker, walk_dataset, walk_file
from aiodicom.errors import DicomFileError, MalformedDatasetError

from .test_scan import BIG, DEFLATED, EXPLICIT, IMPLICIT, ROUTING, SYNTAXES, encode, rich_dataset

JPEG = "1.2.840.10008.1.2.4.70"
ALL = [*SYNTAXES, JPEG]


def encapsulated_dataset() -> Dataset:
    ds = rich_dataset(pixels=0)
    del ds.PixelData
    ds.add_new(
        0x7FE00010, "OB", encapsulate([b"\xff\xd8" + bytes(range(200)) + b"\xff\xd9", b"x" * 90])
    )
    ds[0x7FE00010].is_undefined_length = True
    return ds


def sample(transfer_syntax: str) -> Dataset:
    return encapsulated_dataset() if transfer_syntax == JPEG else rich_dataset(pixels=300)


def encoded(transfer_syntax: str, ds: Dataset | None = None) -> bytes:
    ds = ds if ds is not None else sample(transfer_syntax)
    return encode(ds, EXPLICIT if transfer_syntax == JPEG else transfer_syntax)


def boundaries(transfer_syntax: str) -> set[int]:
    """Offsets of the top-level element boundaries (encodings of the first k elements)."""
    ds = sample(transfer_syntax)
    out = {0}
    partial = Dataset()
    for element in ds:
        partial.add(element)
        out.add(len(encoded(transfer_syntax, partial)))
    return out


def walk_in(data: bytes, transfer_syntax: str, size: int) -> dict[int, bytes]:
    walker = DatasetWalker(transfer_syntax, ROUTING)
    view = memoryview(data)
    for start in range(0, len(data), size):
        walker.feed(view[start : start + size])
    walker.finish()
    return walker.values


@pytest.mark.parametrize("transfer_syntax", ALL)
def test_whole_data_sets_pass_in_any_fragmentation(transfer_syntax: str) -> None:
    data = encoded(transfer_syntax)
    expected = walk_dataset(data, transfer_syntax, ROUTING)
    assert set(expected) == set(ROUTING)
    assert expected[0x00100020].rstrip() == b"PID-42"
    for size in (1, 2, 3, 5, 7, 8, 11, 12, 13, 100, 4096):
        assert walk_in(data, transfer_syntax, size) == expected


@pytest.mark.parametrize("transfer_syntax", ALL)
def test_every_cut_inside_an_element_fails(transfer_syntax: str) -> None:
    data = encoded(transfer_syntax)
    whole = boundaries(transfer_syntax) if transfer_syntax != DEFLATED else {len(data)}
    assert len(data) in whole
    checked = 0
    for cut in range(len(data)):
        if cut in whole and cut:
            continue
        for size in (7, 4096):
            with pytest.raises(MalformedDatasetError):
                walk_in(data[:cut], transfer_syntax, size)
        checked += 1
    assert checked > len(data) * 0.8


@pytest.mark.parametrize("transfer_syntax", [IMPLICIT, EXPLICIT, BIG, JPEG])
def test_the_message_says_where(transfer_syntax: str) -> None:
    data = encoded(transfer_syntax)
    with pytest.raises(MalformedDatasetError, match=r"inside (sequence )?\(7FE0,0010\)"):
        walk_dataset(data[:-20], transfer_syntax)
    with pytest.raises(MalformedDatasetError, match="header") as info:
        walk_dataset(data[:3], transfer_syntax)
    assert info.value.offset == 0
    assert issubclass(MalformedDatasetError, DicomFileError)


def garbage(case: str, transfer_syntax: str) -> bytes:
    """Broken data sets, encoded in the byte order of ``transfer_syntax``."""
    o = ">" if transfer_syntax == BIG else "<"
    implicit = transfer_syntax == IMPLICIT

    def el(group: int, elem: int, vr: bytes, length: int, long: bool = False) -> bytes:
        if implicit:
            return struct.pack(o + "HHI", group, elem, length)
        if long:
            return struct.pack(o + "HH2sHI", group, elem, vr, 0, length)
        return struct.pack(o + "HH2sH", group, elem, vr, length)

    item = struct.pack(o + "HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    sq = el(0x0008, 0x1140, b"SQ", 0xFFFFFFFF, long=True)
    cases = {
        "zeros": bytes(4096),
        "one-zero-byte": b"\0",
        "ff": b"\xff" * 64,
        "text": b"this is not a DICOM data set at all, just some text\n" * 4,
        "wrong-vr": b""
        if implicit
        else struct.pack(o + "HH2sH", 0x0008, 0x0016, b"ZZ", 4) + b"1.2\0",
        "length-past-end": el(0x0008, 0x0016, b"UI", 200) + b"1.2.3\0",
        "long-length-past-end": el(0x7FE0, 0x0010, b"OB", 1 << 30, long=True) + bytes(64),
        "undefined-length-text": b""
        if implicit
        else el(0x0008, 0x0119, b"UC", 0xFFFFFFFF, long=True) + bytes(8),
        "item-at-top-level": struct.pack(o + "HHI", 0xFFFE, 0xE000, 0),
        "command-group": el(0x0000, 0x0100, b"US", 2) + b"\x01\x00",
        "sequence-never-closed": sq + struct.pack(o + "HHI", 0xFFFE, 0xE000, 0),
        "not-an-item-in-a-sequence": sq + el(0x0008, 0x0016, b"UI", 4) + b"1.2\0",
        "deep-nesting": sq + (item + sq) * 100,
        "empty": b"",
    }
    return cases[case]


GARBAGE_CASES = [
    "zeros", "one-zero-byte", "ff", "text", "wrong-vr", "length-past-end", "long-length-past-end",
    "undefined-length-text", "item-at-top-level", "command-group", "sequence-never-closed",
    "not-an-item-in-a-sequence", "deep-nesting", "empty",
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "transfer_syntax"),
    [
        (case, ts)
        for case in GARBAGE_CASES
        for ts in (IMPLICIT, EXPLICIT, BIG, DEFLATED)
        if garbage(case, ts) or case == "empty"  # explicit-only cases have no implicit form
    ],
)
def test_garbage_fails_with_one_exception_type(case: str, transfer_syntax: str) -> None:
    data = garbage(case, transfer_syntax)
    with pytest.raises(MalformedDatasetError):
        walk_dataset(data, transfer_syntax)


def test_deflated_garbage_and_trailing_bytes() -> None:
    data = encoded(DEFLATED)
    walk_dataset(data + b"\0", DEFLATED)  # one byte of padding to an even length is fine
    with pytest.raises(MalformedDatasetError, match="follow the end"):
        walk_dataset(data + b"\0\0\0", DEFLATED)
    with pytest.raises(MalformedDatasetError, match="corrupt"):
        walk_dataset(b"\xff" * 100, DEFLATED)


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=600),
    transfer_syntax=st.sampled_from([IMPLICIT, EXPLICIT, BIG, DEFLATED]),
)
def test_random_bytes_only_ever_raise_malformed(data: bytes, transfer_syntax: str) -> None:
    try:
        walk_in(data, transfer_syntax, 13)
    except MalformedDatasetError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_corrupted_real_data_only_ever_raises_malformed(flips: list[tuple[int, int]]) -> None:
    data = bytearray(encoded(EXPLICIT))
    for where, value in flips:
        data[where % len(data)] = value
    try:
        walk_in(bytes(data), EXPLICIT, 64)
    except MalformedDatasetError:
        pass


def test_a_wanted_value_split_across_fragments_is_whole() -> None:
    data = encoded(EXPLICIT)
    for size in range(1, 40):
        assert walk_in(data, EXPLICIT, size)[0x0020000D] == b"1.2.826.0.1.3680043.8.498.2002"


def test_walk_file_seeks_over_large_values(tmp_path: Path) -> None:
    ds = rich_dataset(pixels=3 * 1024 * 1024)
    data = encode(ds, EXPLICIT)
    path = tmp_path / "big.raw"
    path.write_bytes(b"HEAD" + data)
    walk_file(path, 4, EXPLICIT)
    with open(path, "r+b") as handle:
        handle.truncate(4 + len(data) - 1000)
    with pytest.raises(MalformedDatasetError, match=r"\(7FE0,0010\)"):
        walk_file(path, 4, EXPLICIT)
    os.truncate(path, 4 + 10)
    with pytest.raises(MalformedDatasetError):
        walk_file(path, 4, EXPLICIT)


def test_deflate_bomb_is_walked_in_bounded_steps() -> None:
    # 64 MiB of zeros inside one OB value, deflated to ~64 KiB: walked, never held whole.
    header = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 64 << 20)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflater.compress(header)
    zeros = bytes(1 << 20)
    for _ in range(64):
        body += deflater.compress(zeros)
    body += deflater.flush()
    walk_dataset(body, DEFLATED)


def test_a_repeated_wanted_tag_keeps_the_last_value_in_any_fragmentation() -> None:
    """Found by fuzzing: two occurrences in one fragment were joined into one value."""

    def element(value: bytes) -> bytes:
        return struct.pack("<HH2sH", 0x0010, 0x0020, b"LO", len(value)) + value

    data = element(b"PID1") + element(b"PID2")
    for size in (1, 5, 12, len(data)):
        assert walk_in(data, EXPLICIT, size) == {0x00100020: b"PID2"}


def test_bytes_after_a_deflated_stream_count_across_fragments() -> None:
    """Found by fuzzing: trailing bytes fed one at a time each looked like padding."""
    data = encoded(DEFLATED) + b"\0\0\0"
    for size in (1, 2, len(data)):
        with pytest.raises(MalformedDatasetError, match="follow the end"):
            walk_in(data, DEFLATED, size)
