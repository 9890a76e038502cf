#!/usr/bin/env python3
"""Fuzz the data set structure walk (:mod:`aiodicom.codec.walk`) with arbitrary bytes.

Invariants, for every input:

1. the walk raises :class:`~aiodicom.errors.MalformedDatasetError` or nothing: any other
   exception is a defect (on the receive path it would fail a C-STORE the wrong way);
2. fed in fragments, the walk agrees with the walk of the whole buffer: same verdict,
   same error offset, same wanted values. Fragment boundaries are where an incremental
   walker goes wrong (headers and values split between P-DATA fragments).

Byte 0 of an input picks the transfer syntax (implicit, explicit little and big endian,
deflated, encapsulated), byte 1 the fragment size (1 to 256 bytes); the rest is the data
set. Seeds are whole data sets with nested undefined-length sequences and encapsulated
pixel data, in each syntax.

Run: ``python fuzz/fuzz_dataset_walk.py --runs 100000`` (atheris when installed, else a
long hypothesis profile; see fuzz/README.md).
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import Check, main  # noqa: E402

SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.4.70",  # JPEG lossless: explicit VR LE with encapsulated pixel data
)
WANTED = (0x00080016, 0x00080018, 0x00100020, 0x0020000D, 0x0020000E)


def _seeds() -> list[bytes]:
    """Whole data sets in every syntax, encoded by hand (no pydicom in the fuzz loop)."""

    def explicit(big: bool) -> bytes:
        o = ">" if big else "<"

        def short(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
            value += b"\0" * (len(value) % 2)
            return struct.pack(o + "HH2sH", group, elem, vr, len(value)) + value

        def long(group: int, elem: int, vr: bytes, length: int) -> bytes:
            return struct.pack(o + "HH2sHI", group, elem, vr, 0, length)

        def tag(tag_value: int, length: int) -> bytes:
            return struct.pack(o + "HHI", tag_value >> 16, tag_value & 0xFFFF, length)

        item = (
            tag(0xFFFEE000, 0xFFFFFFFF)
            + short(0x0008, 0x1155, b"UI", b"1.2.3")
            + tag(0xFFFEE00D, 0)
        )
        nested = (
            tag(0xFFFEE000, 0xFFFFFFFF)
            + long(0x0008, 0x1115, b"SQ", 0xFFFFFFFF)
            + item
            + tag(0xFFFEE0DD, 0)
            + tag(0xFFFEE00D, 0)
        )
        return b"".join(
            (
                short(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2"),
                short(0x0008, 0x0018, b"UI", b"1.2.826.0.1.3680043.8.498.1"),
                long(0x0008, 0x1140, b"SQ", 0xFFFFFFFF),
                item,
                nested,
                tag(0xFFFEE0DD, 0),
                short(0x0010, 0x0020, b"LO", b"PID"),
                short(0x0020, 0x000D, b"UI", b"1.2.3.4"),
                short(0x0020, 0x000E, b"UI", b"1.2.3.4.5"),
                long(0x7FE0, 0x0010, b"OW", 32),
                bytes(range(32)),
            )
        )

    def implicit() -> bytes:
        def el(group: int, elem: int, value: bytes) -> bytes:
            value += b"\0" * (len(value) % 2)
            return struct.pack("<HHI", group, elem, len(value)) + value

        sq = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF)
        item = (
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + el(0x0008, 0x1155, b"1.2")
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        )
        return b"".join(
            (
                el(0x0008, 0x0016, b"1.2.840.10008.5.1.4.1.1.2"),
                el(0x0008, 0x0018, b"1.2.826.0.1.3680043.8.498.1"),
                sq + item + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
                el(0x0010, 0x0020, b"PID"),
                el(0x7FE0, 0x0010, bytes(16)),
            )
        )

    little = explicit(False)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = deflater.compress(little) + deflater.flush()
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    fragments = (
        struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 6)
        + b"\xff\xd8ab\xff\xd9"
    )
    encapsulated = (
        little[: little.index(struct.pack("<HH", 0x7FE0, 0x0010))]
        + pixel_header
        + fragments
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    bodies = (implicit(), little, explicit(True), deflated, encapsulated)
    return [bytes([index, size]) + body for index, body in enumerate(bodies) for size in (7, 64)]


def load() -> tuple[Check, Sequence[bytes]]:
    from aiodicom.codec.walk import DatasetWalker
    from aiodicom.errors import MalformedDatasetError

    def walk(data: bytes, syntax: str, size: int) -> tuple[str, int, dict[int, bytes]]:
        walker = DatasetWalker(syntax, WANTED)
        try:
            for start in range(0, len(data), size):
                walker.feed(data[start : start + size])
            walker.finish()
        except MalformedDatasetError as exc:
            return "malformed", exc.offset, {}
        return "whole", 0, walker.values

    def check(data: bytes) -> None:
        if len(data) < 2:
            return
        syntax = SYNTAXES[data[0] % len(SYNTAXES)]
        size = data[1] + 1
        body = data[2:]
        whole = walk(body, syntax, max(1, len(body)))
        pieces = walk(body, syntax, size)
        if whole[0] != pieces[0] or whole[2] != pieces[2]:
            raise AssertionError(f"walk in {size}-byte fragments disagrees: {whole} != {pieces}")

    return check, _seeds()


if __name__ == "__main__":
    sys.exit(main(load))
