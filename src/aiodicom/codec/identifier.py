"""Query/Retrieve identifiers as flat tables of top-level elements, decoded and encoded by hand.

A C-FIND SCP answers one identifier per match, thousands a second: building a pydicom
data set for each would cost more than the query. An identifier here is an ordered
``{tag: (VR, raw value)}``; the request's is decoded once (its VRs looked up in the data
dictionary for implicit VR), each answer is encoded from text values straight into bytes.
Sequences are kept as their VR with no value (an SCP returns them empty). Nothing raises
but :class:`~aiodicom.errors.MalformedDatasetError`.

Both roles use this module: the SCP decodes requests and encodes answers here, the SCU
encodes its queries here (a mapping of the models' keys, so a retrieve from the command
line never imports pydicom) and reads answers with :func:`read_identifier`, the one
place a pydicom data set is built (sequences and all, for the caller).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from aiodicom.codec.scan import (
    _BE_EXPLICIT,
    _BE_UL,
    _LE_EXPLICIT,
    _LE_IMPLICIT,
    _LE_UL,
    _UNDEFINED,
    _Need,
    _skip_sequence,
    _syntax,
)
from aiodicom.codec.uids import DEFLATED_DATA_SET_SYNTAXES
from aiodicom.codec.vr import LONG_VRS, VR_TABLE
from aiodicom.codec.walk import walk_dataset
from aiodicom.errors import AiodicomError, DicomFileError, MalformedDatasetError

if TYPE_CHECKING:
    import pydicom

__all__ = [
    "Identifier",
    "IdentifierEncodingError",
    "decode_identifier",
    "encode_identifier",
    "keyword_tag",
    "read_identifier",
    "tag_vr",
]

#: tag -> (VR, raw value bytes, padding included).
Identifier = dict[int, tuple[str, bytes]]

#: An identifier larger than this is refused: a query is a few hundred bytes.
MAX_IDENTIFIER: Final = 1024 * 1024
#: More top-level elements than this is not a query.
MAX_ELEMENTS: Final = 4096


def tag_vr(tag: int) -> str:
    """The data dictionary's VR for ``tag`` ("UN" when unknown or ambiguous)."""
    from pydicom.datadict import dictionary_VR

    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    return vr if vr in VR_TABLE else "UN"


def keyword_tag(keyword: str) -> int:
    """The tag of a data dictionary keyword (``KeyError`` for an unknown one)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag)


def decode_identifier(data: bytes | bytearray | memoryview, transfer_syntax: str) -> Identifier:
    """The top-level elements of an identifier, in order; sequences kept as ``(SQ, b"")``."""
    if len(data) > MAX_IDENTIFIER:
        raise MalformedDatasetError(f"identifier of {len(data)} bytes (at most {MAX_IDENTIFIER})", 0)
    if transfer_syntax in DEFLATED_DATA_SET_SYNTAXES:
        raise MalformedDatasetError("deflated identifiers are not supported", 0)
    buf = bytes(data)
    implicit, big = _syntax(transfer_syntax)
    out: Identifier = {}
    pos, end, count = 0, len(buf), 0
    try:
        while pos < end:
            count += 1
            if count > MAX_ELEMENTS:
                raise MalformedDatasetError(f"identifier has more than {MAX_ELEMENTS} elements", pos)
            pos = _element(buf, pos, implicit, big, out)
    except (_Need, struct.error):
        raise MalformedDatasetError(f"identifier ends inside an element at offset {pos}", pos) from None
    except DicomFileError as exc:
        raise MalformedDatasetError(f"malformed identifier: {exc}", pos) from None
    return out


def _element(buf: bytes, pos: int, implicit: bool, big: bool, out: Identifier) -> int:
    if implicit:
        group, elem, length = _LE_IMPLICIT(buf, pos)
        tag = (group << 16) | elem
        vr = tag_vr(tag)
        start = pos + 8
    else:
        group, elem, raw_vr, short = (_BE_EXPLICIT if big else _LE_EXPLICIT)(buf, pos)
        tag = (group << 16) | elem
        vr = raw_vr.decode("latin-1")
        if raw_vr in LONG_VRS:
            length = (_BE_UL if big else _LE_UL)(buf, pos + 8)[0]
            start = pos + 12
        else:
            length, start = short, pos + 8
        if vr not in VR_TABLE:
            raise MalformedDatasetError(f"unknown VR {vr!r} at offset {pos}", pos)
    if vr == "SQ" or length == _UNDEFINED:
        if length == _UNDEFINED:
            next_pos, _ = _skip_sequence(buf, start, implicit, big)
        else:
            next_pos = start + length
        if next_pos > len(buf):
            raise _Need
        out[tag] = ("SQ", b"")
        return next_pos
    if start + length > len(buf):
        raise _Need
    if tag >> 16 != 0x0002 and tag & 0xFFFF != 0:  # group lengths and file meta are not keys
        out[tag] = (vr, buf[start : start + length])
    return int(start + length)


class IdentifierEncodingError(AiodicomError, ValueError):
    """An element that cannot be encoded: a value too long for its VR's 16-bit length."""


#: (implicit, big endian) -> header writer for short-length VRs, long-length VRs.
_HEADERS: Final = {
    (True, False): (struct.Struct("<HHI").pack, struct.Struct("<HHI").pack),
    (False, False): (struct.Struct("<HH2sH").pack, struct.Struct("<HH2s2xI").pack),
    (False, True): (struct.Struct(">HH2sH").pack, struct.Struct(">HH2s2xI").pack),
}


def encode_identifier(
    elements: Iterable[tuple[int, str, bytes]] | Mapping[int, tuple[str, bytes]], transfer_syntax: str
) -> bytes:
    """Encode ``(tag, VR, value)`` elements (sorted here) in an uncompressed transfer syntax.

    Values are padded to even length with their VR's padding; a sequence goes out empty.
    A value longer than a short VR's 16-bit length raises :class:`IdentifierEncodingError`.
    """
    items = (
        [(tag, vr, value) for tag, (vr, value) in elements.items()]
        if isinstance(elements, Mapping)
        else list(elements)
    )
    implicit, big = _syntax(transfer_syntax)
    short_header, long_header = _HEADERS[(implicit, big)]
    parts: list[bytes] = []
    for tag, vr, value in sorted(items, key=lambda item: item[0]):
        if vr == "SQ":
            value = b""
        elif len(value) & 1:
            value += VR_TABLE[vr].pad if vr in VR_TABLE else b"\0"
        group, elem = tag >> 16, tag & 0xFFFF
        if implicit:
            parts.append(short_header(group, elem, len(value)))
        else:
            raw_vr = vr.encode()
            if raw_vr in LONG_VRS:
                parts.append(long_header(group, elem, raw_vr, len(value)))
            elif len(value) > 0xFFFF:
                raise IdentifierEncodingError(f"({group:04X},{elem:04X}) {vr}: {len(value)} bytes is too long")
            else:
                parts.append(short_header(group, elem, raw_vr, len(value)))
        parts.append(value)
    return b"".join(parts)


def read_identifier(data: bytes, transfer_syntax: str) -> pydicom.Dataset:
    """An identifier as a pydicom data set, sequences included: what an SCU gives its caller.

    The structure is walked first (aiodicom's own walker, as for a received C-STORE):
    pydicom would read a value cut short as a shorter value rather than fail.
    """
    import io

    from pydicom.filereader import read_dataset

    try:
        walk_dataset(data, transfer_syntax)
    except MalformedDatasetError as exc:
        raise MalformedDatasetError(f"the peer's identifier is malformed: {exc}") from None
    implicit, big = _syntax(transfer_syntax)
    try:
        dataset = read_dataset(io.BytesIO(data), is_implicit_VR=implicit, is_little_endian=not big)
        for _element in dataset:  # pydicom reads lazily: malformed values surface here
            pass
    except Exception as exc:  # pydicom raises many types for bad data
        raise MalformedDatasetError(f"cannot decode the peer's identifier: {exc}") from None
    return dataset
