"""Find a few top-level elements in raw data set bytes without decoding them.

A C-STORE receiver needs PatientID, the study/series/instance UIDs and little
else to decide where an image goes, and it has them in the first P-DATA
fragment long before the pixel data arrive. :func:`scan_elements` walks the
element headers of that fragment (skipping values and whole sequences) and
returns the raw bytes of the wanted elements. It never builds a pydicom
object, never trusts a length to allocate memory, and stops at the first tag
past the largest wanted one, since data set elements are sorted by tag.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from typing import Final

from aiodicom._record import FrozenRecord
from aiodicom.codec.uids import (
    DEFLATED_DATA_SET_SYNTAXES,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.codec.vr import LONG_VRS, SHORT_VRS
from aiodicom.errors import DicomFileError

__all__ = ["ScanResult", "dataset_end", "odd_length_elements", "scan_elements", "text"]


class ScanResult(FrozenRecord):
    """What :func:`scan_elements` found.

    ``values`` maps each wanted tag that was found to its raw value bytes
    (in the transfer syntax's byte order, padding included). ``complete`` is
    False when the bytes ran out before every wanted tag was either found or
    known to be absent, so the caller may retry with more bytes; a caller that
    passed the whole data set knows the missing tags are simply not there.
    """

    values: dict[int, bytes]
    complete: bool


def text(value: bytes) -> str:
    """Decode a string value, dropping the trailing space/NUL padding.

    UTF-8 covers ASCII (all UIDs, codes and most IDs); a value in another
    8-bit character set falls back to Latin-1 rather than failing, since the
    caller wants a usable name, not a lecture on (0008,0005).
    """
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError:
        decoded = value.decode("latin-1")
    return decoded.rstrip(" \0")


_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQ_END: Final = 0xFFFEE0DD

_LE_TAG = struct.Struct("<HH").unpack_from
_BE_TAG = struct.Struct(">HH").unpack_from
_LE_UL = struct.Struct("<I").unpack_from
_BE_UL = struct.Struct(">I").unpack_from
_LE_US = struct.Struct("<H").unpack_from
_LE_IMPLICIT = struct.Struct("<HHI").unpack_from
_LE_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_BE_EXPLICIT = struct.Struct(">HH2sH").unpack_from
_BE_US = struct.Struct(">H").unpack_from

_Buffer = bytes | bytearray | memoryview


def _bytes_view(data: _Buffer) -> _Buffer:
    """``data`` itself, or a view of a memoryview as bytes (so len() counts bytes)."""
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        try:
            return data.cast("B")
        except TypeError as exc:
            raise DicomFileError(f"cannot scan a non-contiguous buffer: {exc}") from exc
    if isinstance(data, memoryview) and not data.c_contiguous:
        raise DicomFileError("cannot scan a non-contiguous buffer")
    return data


class _Need(Exception):
    """Internal: the buffer ends before the element being walked does."""


def _skip_sequence(buf: _Buffer, pos: int, implicit: bool, big: bool) -> tuple[int, int]:
    """Walk an undefined-length sequence whose items start at ``pos``.

    Returns (start of the sequence delimiter, position after it). Iterative
    with an explicit stack so deep nesting in garbage cannot exhaust Python's
    recursion limit; every step consumes at least 8 bytes, so it terminates.
    """
    n = len(buf)
    # Frames: (in_item, implicit, big). An undefined-length UN holds implicit
    # VR little endian data (PS3.5 6.2.2), whatever the outer syntax is.
    stack: list[tuple[bool, bool, bool]] = [(False, implicit, big)]
    while True:
        in_item, imp, be = stack[-1]
        if pos + 8 > n:
            raise _Need
        group, elem = (_BE_TAG if be else _LE_TAG)(buf, pos)
        tag = (group << 16) | elem
        if not in_item:
            (length,) = (_BE_UL if be else _LE_UL)(buf, pos + 4)
            if tag == _ITEM:
                pos += 8
                if length == _UNDEFINED:
                    stack.append((True, imp, be))
                else:
                    pos += length
            elif tag == _SEQ_END:
                start = pos
                pos += 8
                stack.pop()
                if not stack:
                    return start, pos
            else:
                raise DicomFileError(
                    f"expected an item or sequence delimiter at offset {pos}, "
                    f"found ({group:04X},{elem:04X})"
                )
            continue
        if tag == _ITEM_END:
            pos += 8
            stack.pop()
            continue
        if imp:
            (length,) = _LE_UL(buf, pos + 4)
            pos += 8
            vr = b""
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in LONG_VRS:
                if pos + 12 > n:
                    raise _Need
                (length,) = (_BE_UL if be else _LE_UL)(buf, pos + 8)
                pos += 12
            elif vr in SHORT_VRS:
                (length,) = (_BE_US if be else _LE_US)(buf, pos + 6)
                pos += 8
            else:
                raise DicomFileError(
                    f"unknown VR {vr!r} for ({group:04X},{elem:04X}) at offset {pos} inside a sequence"
                )
        if length == _UNDEFINED:
            if vr == b"UN":
                stack.append((False, True, False))
            else:
                stack.append((False, imp, be))
        else:
            pos += length


def _passed(wanted: Collection[int], found: dict[int, bytes], tag: int) -> bool:
    """True when every wanted tag was found or lies below ``tag``."""
    return all(t in found or t < tag for t in wanted)


def _walk(
    buf: _Buffer,
    pos: int,
    implicit: bool,
    big: bool,
    wanted: Collection[int],
    max_tag: int,
    found: dict[int, bytes],
) -> tuple[int, bool]:
    """Walk top-level elements from ``pos``; return (resume position, done).

    ``done`` means every wanted tag was found or passed (tags are sorted, so
    a missing tag below one already seen is absent); otherwise the element
    starting at the returned position did not fit in ``buf`` (or, when the
    position is past the end, the last value did not). One ``struct`` call
    per element header: this loop is what the receiver pays per image.
    """
    n = len(buf)
    count = len(wanted)
    tag = -1  # the last tag whose header was read
    if implicit:
        while len(found) < count:
            if pos + 8 > n:
                return pos, _passed(wanted, found, tag)
            group, elem, length = _LE_IMPLICIT(buf, pos)
            tag = (group << 16) | elem
            if tag > max_tag:
                return pos, True
            value_pos = pos + 8
            if length == _UNDEFINED:
                try:
                    value_end, end = _skip_sequence(buf, value_pos, True, False)
                except _Need:
                    return pos, _passed(wanted, found, tag)
            else:
                value_end = end = value_pos + length
            if tag in wanted:
                if value_end > n:
                    return pos, _passed(wanted, found, tag)
                found[tag] = bytes(buf[value_pos:value_end])
            pos = end
        return pos, True
    unpack_explicit = _BE_EXPLICIT if big else _LE_EXPLICIT
    unpack_ul = _BE_UL if big else _LE_UL
    while len(found) < count:
        if pos + 8 > n:
            return pos, _passed(wanted, found, tag)
        group, elem, vr, length = unpack_explicit(buf, pos)
        tag = (group << 16) | elem
        if tag > max_tag:
            return pos, True
        if vr in SHORT_VRS:
            value_pos = pos + 8
        elif vr in LONG_VRS:
            if pos + 12 > n:
                return pos, _passed(wanted, found, tag)
            (length,) = unpack_ul(buf, pos + 8)
            value_pos = pos + 12
            if length == _UNDEFINED:
                try:
                    if vr == b"UN":
                        value_end, end = _skip_sequence(buf, value_pos, True, False)
                    else:
                        value_end, end = _skip_sequence(buf, value_pos, False, big)
                except _Need:
                    return pos, _passed(wanted, found, tag)
                if tag in wanted:
                    found[tag] = bytes(buf[value_pos:value_end])
                pos = end
                continue
        else:
            raise DicomFileError(f"unknown VR {vr!r} for ({group:04X},{elem:04X}) at offset {pos}")
        end = value_pos + length
        if tag in wanted:
            if end > n:
                return pos, _passed(wanted, found, tag)
            found[tag] = bytes(buf[value_pos:end])
        pos = end
    return pos, True


_PAPYRUS_3_IMPLICIT: Final = "1.2.840.10008.1.20"  # retired, implicit VR little endian


def _syntax(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit, big endian) for an uncompressed or encapsulated syntax."""
    if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN or transfer_syntax == _PAPYRUS_3_IMPLICIT:
        return True, False
    if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
        return False, True
    # Explicit VR little endian, and every encapsulated syntax: their data set
    # is explicit VR little endian, only the pixel data are compressed.
    return False, False


_CHUNK: Final = 64 * 1024


def _scan_deflated(data: _Buffer, wanted: Collection[int], max_tag: int) -> ScanResult:
    """Inflate only as much as the walk needs, discarding what it has passed."""
    inflater = zlib.decompressobj(-15)
    # Compressed input is fed in slices of a view: never a copy of all of it,
    # and zlib's unconsumed tail stays small.
    source = memoryview(data)
    fed = 0
    tail: bytes | memoryview = b""
    buf = bytearray()
    pos = 0
    found: dict[int, bytes] = {}
    grow = _CHUNK

    def inflate(limit: int) -> bytes:
        """Up to ``limit`` more inflated bytes; empty only at the end of input."""
        nonlocal tail, fed
        while True:
            if not tail and fed < len(source):
                tail = source[fed : fed + _CHUNK]
                fed += len(tail)
            before = len(tail)
            try:
                out = inflater.decompress(tail, limit)
            except zlib.error as exc:
                raise DicomFileError(f"deflated data set is corrupt: {exc}") from None
            tail = inflater.unconsumed_tail
            if out or inflater.eof or fed >= len(source) and not tail:
                return out
            if tail and len(tail) == before:
                return out  # no progress: cannot happen with zlib, but never spin

    while True:
        pos, done = _walk(buf, pos, False, False, wanted, max_tag, found)
        if done:
            return ScanResult(found, True)
        # Drop what was walked past, then get more: either up to the resume
        # point (a large value being skipped) or another, growing, chunk.
        if pos >= len(buf):
            skip = pos - len(buf)
            buf.clear()
            pos = 0
            while skip:
                out = inflate(min(skip, _CHUNK))
                if not out:
                    return ScanResult(found, False)
                skip -= len(out)
            grow = _CHUNK
        else:
            del buf[:pos]
            pos = 0
            grow = max(grow, len(buf))
        out = inflate(grow)
        if not out:
            return ScanResult(found, False)
        buf += out


def scan_elements(
    data: bytes | bytearray | memoryview,
    transfer_syntax: str,
    tags: Collection[int],
) -> ScanResult:
    """Return the raw values of the wanted top-level ``tags`` in ``data``.

    ``data`` is (the start of) a data set without file meta, encoded in
    ``transfer_syntax``; tags are ints such as ``0x0020000D``. Sequences are
    skipped, including undefined-length ones and nested ones; a tag inside a
    sequence is never reported. Garbage raises
    :class:`~aiodicom.errors.DicomFileError` and nothing else; a truncated
    buffer gives ``complete=False``.
    """
    wanted = frozenset(tags)
    if not wanted:
        return ScanResult({}, True)
    data = _bytes_view(data)
    max_tag = max(wanted)
    if transfer_syntax in DEFLATED_DATA_SET_SYNTAXES:
        return _scan_deflated(data, wanted, max_tag)
    implicit, big = _syntax(transfer_syntax)
    found: dict[int, bytes] = {}
    _, done = _walk(data, 0, implicit, big, wanted, max_tag, found)
    return ScanResult(found, done)


def dataset_end(data: bytes | bytearray | memoryview, transfer_syntax: str) -> int:
    """Offset just past the last top-level element of ``data`` that was walked.

    Equals ``len(data)`` exactly when ``data`` ends on an element boundary
    (the data set is whole); smaller when it stops inside an element header,
    larger when the last value or sequence overruns the buffer. Used to refuse
    a truncated data set before handing it to a lenient reader. Not for the
    deflated syntax (inflate first); garbage raises
    :class:`~aiodicom.errors.DicomFileError`.
    """
    implicit, big = _syntax(transfer_syntax)
    pos, _ = _walk(_bytes_view(data), 0, implicit, big, _NOTHING, _BEYOND_EVERY_TAG, {})
    return pos


def odd_length_elements(data: bytes | bytearray | memoryview, transfer_syntax: str) -> list[int]:
    """Tags of the top-level elements whose value length is odd (PS3.5 7.1.1 forbids it).

    A sender checks this before sending a file as it is: some receivers refuse
    or misread such a data set, so it is padded first, as DCMTK does when it
    writes. Sequences are skipped whole (an odd length inside one is not
    seen). Not for the deflated syntax; a truncated data set stops the walk
    (the truncation is reported elsewhere); garbage raises
    :class:`~aiodicom.errors.DicomFileError`.
    """
    implicit, big = _syntax(transfer_syntax)
    buf = _bytes_view(data)
    n = len(buf)
    pos = 0
    odd: list[int] = []
    unpack_ul = _BE_UL if big else _LE_UL
    unpack = _LE_IMPLICIT if implicit else _BE_EXPLICIT if big else _LE_EXPLICIT
    short_vrs, long_vrs, undefined = SHORT_VRS, LONG_VRS, _UNDEFINED
    # One unpack per element; this runs on every file a client sends.
    while pos + 8 <= n:
        if implicit:
            group, elem, length = unpack(buf, pos)
            vr = b""
            value_pos = pos + 8
        else:
            group, elem, vr, length = unpack(buf, pos)
            if vr in short_vrs:
                if length & 1:
                    odd.append((group << 16) | elem)
                pos += 8 + length
                continue
            if vr not in long_vrs:
                raise DicomFileError(f"unknown VR {vr!r} for ({group:04X},{elem:04X}) at offset {pos}")
            if pos + 12 > n:
                break
            (length,) = unpack_ul(buf, pos + 8)
            value_pos = pos + 12
        if length == undefined:
            try:
                pos = _skip_sequence(buf, value_pos, implicit or vr == b"UN", big and vr != b"UN")[1]
            except _Need:
                break
            continue
        if length & 1:
            odd.append((group << 16) | elem)
        pos = value_pos + length
    return odd


# A "wanted" tag no element can have, so that _walk visits every element.
_BEYOND_EVERY_TAG: Final = 1 << 32
_NOTHING: Final = frozenset({_BEYOND_EVERY_TAG})
