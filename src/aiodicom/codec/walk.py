"""Check a data set's element structure as its bytes arrive, without decoding values.

A receiver must not acknowledge a data set that was cut short or is garbage:
the sender deletes its copy on success. :class:`DatasetWalker` takes the
bytes in any number of fragments (P-DATA values, file chunks) and walks the
top-level element headers, stepping over each value by its length, so a large
pixel data value costs one addition however many fragments it spans.
Undefined-length sequences and encapsulated pixel data are stepped through by
their item structure (items, item and sequence delimiters), iteratively, never
by recursion. Nothing is re-read: a header split across two fragments is the
only thing ever copied (at most 11 bytes).

It also keeps the raw values of a few wanted top-level tags (the routing
tags and the SOP UIDs), so one pass serves both the check and the receiver's
routing. Whatever the input, the only error it raises is
:class:`~aiodicom.errors.MalformedDatasetError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Collection
from typing import BinaryIO, Final

from aiodicom.codec.scan import (
    _BE_EXPLICIT,
    _BE_UL,
    _ITEM,
    _ITEM_END,
    _LE_EXPLICIT,
    _LE_IMPLICIT,
    _LE_UL,
    _SEQ_END,
    _UNDEFINED,
    _syntax,
)
from aiodicom.codec.uids import DEFLATED_DATA_SET_SYNTAXES
from aiodicom.codec.vr import LONG_VRS, SHORT_VRS, UNDEFINED_LENGTH_VRS
from aiodicom.errors import MalformedDatasetError

__all__ = ["DatasetWalker", "walk_dataset", "walk_file"]

#: Values kept for a wanted tag are cut here: a routing tag or UID is never this long.
_MAX_KEPT: Final = 64 * 1024
#: Nesting deeper than this is garbage (and would let a small input build a large stack).
_MAX_DEPTH: Final = 64
#: Inflated bytes produced per step, so a small deflated bomb never sits whole in memory.
_INFLATE_STEP: Final = 256 * 1024

_BE_IMPLICIT = struct.Struct(">HHI").unpack_from  # tag and 32-bit length, big endian (items)

# A frame of the nesting stack: (in a sequence (else in an item), implicit, big endian,
# tag of the sequence it belongs to, absolute offset where it started).
_Frame = tuple[bool, bool, bool, int, int]


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _not_an_element(tag: int, offset: int) -> MalformedDatasetError:
    what = "a command element" if tag >> 16 == 0 else "an item or delimiter"
    return MalformedDatasetError(
        f"{_name(tag)}, {what}, at offset {offset} is not a data set element", offset
    )


class DatasetWalker:
    """Walks one data set fed in fragments; see the module docstring.

    Call :meth:`feed` with each fragment in order and :meth:`finish` after the
    last one; either raises :class:`~aiodicom.errors.MalformedDatasetError`
    naming what is wrong and where. After :meth:`finish`, :attr:`values`
    holds the raw bytes (padding included, cut at 64 KiB) of the wanted tags
    that are present at the top level.
    """

    __slots__ = (
        "_implicit",
        "_big",
        "_inflater",
        "_frames",
        "_carry",
        "_skip",
        "_offset",
        "_tag",
        "_wanted",
        "_pending",
        "values",
        "size",
        "_trailing",
    )

    def __init__(self, transfer_syntax: str, wanted: Collection[int] = ()) -> None:
        self._implicit, self._big = _syntax(transfer_syntax)
        self._inflater = (
            zlib.decompressobj(-15) if transfer_syntax in DEFLATED_DATA_SET_SYNTAXES else None
        )
        self._frames: list[_Frame] = []
        self._carry = b""  # the start of an element header cut by a fragment boundary
        self._skip = 0  # bytes of the current value still to come
        self._offset = 0  # absolute offset of the next byte fed (after inflation)
        self._tag = -1  # the element whose value is being skipped (for messages)
        self._wanted = frozenset(wanted)
        self._pending: list[tuple[int, int, int]] = []  # wanted values: (tag, start, end)
        self.values: dict[int, bytes] = {}
        #: Bytes fed so far (as given, before any inflation).
        self.size = 0
        self._trailing = 0  # bytes after the end of a deflated stream

    # --- feeding -------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Walk the next fragment."""
        n = len(data)
        self.size += n
        if self._inflater is None:
            if self._skip >= n and not self._pending:
                # The whole fragment lies inside a value being stepped over (pixel data):
                # the common case, kept to a few operations.
                self._skip -= n
                self._offset += n
                return
            self._feed(data)
            return
        inflater = self._inflater
        if inflater.eof:
            self._after_deflate_end(len(data))
            return
        try:
            out = inflater.decompress(data, _INFLATE_STEP)
            while True:
                if out:
                    self._feed(out)
                if not inflater.unconsumed_tail:
                    break
                out = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
        except zlib.error as exc:
            raise MalformedDatasetError(
                f"deflated data set is corrupt near offset {self._offset}: {exc}", self._offset
            ) from None
        if inflater.eof:
            self._after_deflate_end(len(inflater.unused_data))

    def _after_deflate_end(self, count: int) -> None:
        self._trailing += count
        if self._trailing > 1:  # one byte of padding to an even length is tolerated
            raise MalformedDatasetError(
                f"{self._trailing} bytes follow the end of the deflated data set", self._offset
            )

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        base = self._offset
        pos = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
        if pos < n and self._carry:
            pos = self._join(data, pos, base)
        if pos < n:
            pos = self._walk(data, pos, base)
        if pos > n:
            self._skip = pos - n
        elif pos < n:
            self._carry = bytes(data[pos:])
        self._offset = base + n
        if self._pending:
            self._keep(data, base)

    def _join(self, data: bytes | bytearray | memoryview, pos: int, base: int) -> int:
        """Finish the element whose header was cut; return where to go on in ``data``.

        The result may lie past the end of ``data`` (the value goes on).
        """
        carry = self._carry
        extra = bytes(data[pos : pos + 12])
        head = carry + extra
        self._carry = b""
        end = self._walk(head, 0, base + pos - len(carry), one=True)
        if end < len(carry):  # still not a whole header: this fragment had too few bytes
            self._carry = head[end:]
            return len(data)
        return pos + end - len(carry)

    def _keep(self, data: bytes | bytearray | memoryview, base: int) -> None:
        """Copy the parts of wanted values that lie in ``data`` (absolute ``base``)."""
        limit = base + len(data)
        still: list[tuple[int, int, int]] = []
        for tag, start, end in self._pending:
            if start < limit and end > base:
                piece = bytes(data[max(start, base) - base : min(end, limit) - base])
                self.values[tag] = self.values.get(tag, b"") + piece
            if end > limit:
                still.append((tag, start, end))
        self._pending = still

    # --- the walk ------------------------------------------------------------------------

    def _walk(
        self, buf: bytes | bytearray | memoryview, pos: int, base: int, one: bool = False
    ) -> int:
        """Walk elements of ``buf`` from ``pos``; return where the walk stopped.

        A result past ``len(buf)`` means a value runs into the next fragment by
        that much; one before it means the header there is incomplete. With
        ``one``, stop after one element (used for a header split by a boundary).
        """
        n = len(buf)
        frames = self._frames
        wanted = self._wanted
        implicit = self._implicit
        big = self._big
        # One lookup per call, not per element: this loop is what every data set costs.
        unpack = (
            (_BE_IMPLICIT if big else _LE_IMPLICIT)
            if implicit
            else (_BE_EXPLICIT if big else _LE_EXPLICIT)
        )
        unpack_ul = _BE_UL if big else _LE_UL
        short_vrs = SHORT_VRS
        long_vrs = LONG_VRS
        tag = -1
        while pos + 8 <= n:
            if frames:
                pos = self._nested(buf, pos, base)
                if pos < 0:
                    return -pos - 1
            else:
                if implicit:
                    group, elem, length = unpack(buf, pos)
                    header = 8
                    vr = b"SQ"  # an undefined length in implicit VR is a sequence
                else:
                    group, elem, vr, length = unpack(buf, pos)
                    if vr in short_vrs:
                        header = 8
                    elif vr in long_vrs:
                        if pos + 12 > n:
                            return pos
                        (length,) = unpack_ul(buf, pos + 8)
                        header = 12
                    else:
                        raise self._bad_vr(vr, (group << 16) | elem, base + pos)
                tag = (group << 16) | elem
                if not group or group == 0xFFFE:
                    raise _not_an_element(tag, base + pos)
                if length == _UNDEFINED and (implicit or header == 12):
                    self._open_sequence(vr, tag, base + pos)
                    pos += header
                else:
                    pos += header + length
                    if tag in wanted:
                        if pos <= n:  # the usual case: the whole value is in this buffer
                            if self._pending:
                                self._forget(tag)
                            self.values[tag] = bytes(buf[pos - length : pos][:_MAX_KEPT])
                        else:
                            self._want(tag, base + pos - length, base + pos)
            if pos >= n or one:
                if pos > n:
                    self._tag = frames[-1][3] if frames else tag
                return pos
        return pos

    def _open_sequence(self, vr: bytes, tag: int, offset: int) -> None:
        """A top-level element of undefined length: a sequence, or encapsulated pixel data."""
        if vr not in UNDEFINED_LENGTH_VRS:
            raise MalformedDatasetError(
                f"{_name(tag)} {vr.decode('latin-1')} has an undefined length at offset {offset}",
                offset,
            )
        un = vr == b"UN"  # holds implicit VR little endian (PS3.5 6.2.2)
        self._push(True, self._implicit or un, self._big and not un, tag, offset)

    def _push(self, in_sequence: bool, implicit: bool, big: bool, tag: int, offset: int) -> None:
        if len(self._frames) >= _MAX_DEPTH:
            raise MalformedDatasetError(
                f"sequences nested deeper than {_MAX_DEPTH} at offset {offset}", offset
            )
        self._frames.append((in_sequence, implicit, big, tag, offset))

    def _want(self, tag: int, start: int, end: int) -> None:
        """Keep this value of a wanted tag as its fragments come (a repeated tag: the last counts)."""
        self.values.pop(tag, None)
        self._forget(tag)
        self._pending.append((tag, start, min(end, start + _MAX_KEPT)))

    def _forget(self, tag: int) -> None:
        """Stop gathering an earlier occurrence of ``tag``: a later one replaces it."""
        self._pending = [p for p in self._pending if p[0] != tag]

    def _nested(self, buf: bytes | bytearray | memoryview, pos: int, base: int) -> int:
        """One step inside an undefined-length sequence; ``-(pos + 1)`` when the header is cut."""
        frames = self._frames
        in_sequence, implicit, big, owner, _start = frames[-1]
        group: int
        elem: int
        length: int
        group, elem, length = (_BE_IMPLICIT if big else _LE_IMPLICIT)(buf, pos)
        tag = (group << 16) | elem
        if in_sequence:
            if tag == _ITEM:
                if length == _UNDEFINED:
                    self._push(False, implicit, big, owner, base + pos)
                    return pos + 8
                return pos + 8 + length
            if tag == _SEQ_END:
                frames.pop()
                return pos + 8
            raise MalformedDatasetError(
                f"expected an item of {_name(owner)} at offset {base + pos}, found {_name(tag)}",
                base + pos,
            )
        if tag == _ITEM_END:
            frames.pop()
            return pos + 8
        if group == 0xFFFE:
            raise MalformedDatasetError(
                f"{_name(tag)} inside an item of {_name(owner)} at offset {base + pos}", base + pos
            )
        if implicit:
            header = 8
            vr = b""
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in SHORT_VRS:
                header = 8
                length = length & 0xFFFF if big else length >> 16
            elif vr in LONG_VRS:
                if pos + 12 > len(buf):
                    return -pos - 1
                (length,) = (_BE_UL if big else _LE_UL)(buf, pos + 8)
                header = 12
            else:
                raise self._bad_vr(vr, tag, base + pos)
        if length == _UNDEFINED:
            un = vr == b"UN"
            self._push(True, implicit or un, big and not un, tag, base + pos)
            return pos + header
        return pos + header + length

    @staticmethod
    def _bad_vr(vr: bytes, tag: int, offset: int) -> MalformedDatasetError:
        return MalformedDatasetError(
            f"unknown VR {vr!r} for {_name(tag)} at offset {offset}", offset
        )

    # --- the end ------------------------------------------------------------------------

    def finish(self) -> None:
        """The data set ended: it must end on an element boundary, outside any sequence."""
        if self._inflater is not None and not self._inflater.eof:
            raise MalformedDatasetError(
                f"deflated data set is cut short after {self._offset} inflated bytes", self._offset
            )
        if self._carry:
            offset = self._offset - len(self._carry)
            raise MalformedDatasetError(
                f"data set ends inside an element header at offset {offset}", offset
            )
        if self._skip:
            raise MalformedDatasetError(
                f"data set ends inside {_name(self._tag)}: {self._skip} bytes missing", self._offset
            )
        if self._frames:
            _, _, _, tag, offset = self._frames[-1]
            raise MalformedDatasetError(
                f"data set ends inside sequence {_name(tag)} begun at offset {offset}", self._offset
            )
        if self._offset == 0:
            raise MalformedDatasetError("the data set is empty", 0)


def walk_dataset(
    data: bytes | bytearray | memoryview, transfer_syntax: str, wanted: Collection[int] = ()
) -> dict[int, bytes]:
    """Walk a whole data set held in memory; return the wanted top-level values."""
    walker = DatasetWalker(transfer_syntax, wanted)
    walker.feed(data)
    walker.finish()
    return walker.values


def walk_file(
    source: str | os.PathLike[str] | BinaryIO, offset: int, transfer_syntax: str, *, chunk: int = 64 * 1024
) -> None:
    """Walk the data set of a file from ``offset`` to its end, seeking over large values.

    Reads only element headers (and what shares their chunk): a 1 GiB pixel
    data value is one seek. Used by a sender to refuse a truncated file before
    anything goes on the wire.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as opened:
            walk_file(opened, offset, transfer_syntax, chunk=chunk)
        return
    walker = DatasetWalker(transfer_syntax)
    handle = source
    handle.seek(0, 2)
    end = handle.tell()
    position = offset
    handle.seek(position)
    while position < end:
        if walker._skip > chunk and walker._inflater is None and not walker._pending:
            step = min(walker._skip, end - position)
            walker._skip -= step
            walker._offset += step
            walker.size += step
            position += step
            handle.seek(position)
            continue
        data = handle.read(min(chunk, end - position))
        if not data:
            break
        position += len(data)
        walker.feed(data)
    walker.finish()
