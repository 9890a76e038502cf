"""DICOM Part 10 files (PS3.10 section 7): the preamble and the group 0002 meta.

A receiver writes one file per image, so :func:`encode_file_meta` builds the
whole header with ``struct`` and cached constant pieces instead of pydicom:
it runs once per received data set, on the hot path. A sender needs the
opposite, once per file: :func:`read_file_meta` finds what to propose (SOP
class, transfer syntax) and where the data set bytes start, reading only the
head of the file, so the data set itself can be streamed untouched.
:func:`transcode` is the slow path for when the peer accepted another
uncompressed transfer syntax than the file has; it is the only user of
pydicom here and imports it lazily.
"""

from __future__ import annotations

import array
import functools
import io
import os
import struct
import zlib
from collections.abc import Collection
from typing import TYPE_CHECKING, BinaryIO, Final

from aiodicom._record import FrozenRecord
from aiodicom.codec.ae import ae_title_problem
from aiodicom.codec.scan import dataset_end, odd_length_elements, scan_elements, text
from aiodicom.codec.uids import (
    DEFLATED_DATA_SET_SYNTAXES,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    KNOWN_TRANSFER_SYNTAXES,
    LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES,
    transfer_syntax_name,
)
from aiodicom.codec.vr import LONG_VRS, WORD_VRS
from aiodicom.errors import DicomFileError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["PREAMBLE", "FileMeta", "encode_file_meta", "pad_odd_lengths", "read_file_meta", "transcode"]

#: 128 zero bytes and the magic; every Part 10 file starts with these.
PREAMBLE: Final = b"\0" * 128 + b"DICM"

_pack_short = struct.Struct("<HH2sH").pack  # tag, VR, 2-byte length
_pack_ul = struct.Struct("<HH2sHI").pack


def _short(elem: int, vr: bytes, raw: bytes) -> bytes:
    return _pack_short(2, elem, vr, len(raw)) + raw


def _uid(what: str, value: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise DicomFileError(f"{what} must be an ASCII UID, got {value!r}") from None
    if not raw or len(raw) > 64:
        raise DicomFileError(f"{what} must be 1 to 64 characters, got {value!r}")
    return raw + b"\0" if len(raw) & 1 else raw


def _ae(value: str) -> bytes:
    problem = ae_title_problem(value)
    if problem is not None:
        raise DicomFileError(f"source AE title {value!r} {problem}")
    raw = value.strip(" ").encode("ascii")
    return raw + b" " if len(raw) & 1 else raw


def _even(raw: bytes, pad: bytes) -> bytes:
    return raw + pad if len(raw) & 1 else raw


# (0002,0001) File Meta Information Version: OB, 2-byte reserved, 4-byte length.
_VERSION: Final = struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\x00\x01"
# (0002,0012) and (0002,0013): the same for every file we write.
_IMPLEMENTATION: Final = _short(
    0x12, b"UI", _even(IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\0")
) + _short(0x13, b"SH", _even(IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "))


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    *,
    source_ae: str | None = None,
) -> bytes:
    """Return preamble, ``DICM`` and the file meta group for one data set.

    The data set bytes, encoded in ``transfer_syntax``, are meant to follow
    unchanged: a receiver can write this header and then the PDV payloads as
    they arrive. Invalid UIDs or AE titles raise
    :class:`~aiodicom.errors.DicomFileError` rather than writing a file other
    tools would reject.
    """
    body = b"".join(
        (
            _meta_head(sop_class_uid),
            _short(0x03, b"UI", _uid("SOP Instance UID", sop_instance_uid)),
            _meta_tail(transfer_syntax, source_ae),
        )
    )
    return PREAMBLE + _pack_ul(2, 0, b"UL", 4, len(body)) + body


# A receiver writes one meta group per instance, and all but the instance UID repeat
# for a whole association: those parts are encoded (and checked) once.


@functools.lru_cache(maxsize=256)
def _meta_head(sop_class_uid: str) -> bytes:
    return _VERSION + _short(0x02, b"UI", _uid("SOP Class UID", sop_class_uid))


@functools.lru_cache(maxsize=256)
def _meta_tail(transfer_syntax: str, source_ae: str | None) -> bytes:
    return (
        _short(0x10, b"UI", _uid("Transfer Syntax UID", transfer_syntax))
        + _IMPLEMENTATION
        + (b"" if source_ae is None else _short(0x16, b"AE", _ae(source_ae)))
    )


# --- reading ---------------------------------------------------------------------


class FileMeta(FrozenRecord):
    """Identity of a stored data set and where its bytes start.

    ``dataset_offset`` is the byte offset of the data set in the source (after
    preamble and meta; 0 for a raw data set), so a sender can stream the data
    set from there without re-encoding it.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset_offset: int


_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
#: A file meta group larger than this is not a file meta group.
_MAX_META = 1 << 20
_FIRST_READ = 64 * 1024

_unpack_meta_short = struct.Struct("<HH2sH").unpack_from
_unpack_ul = struct.Struct("<I").unpack_from
_unpack_implicit = struct.Struct("<HHI").unpack_from


class _Source:
    """The first bytes of a file, buffer or stream, read only as far as needed."""

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike[str]):
        self._stream: BinaryIO | None = None
        self._owned = False
        self._buf: bytes | memoryview = b""
        self._eof = False
        if isinstance(source, bytes | bytearray | memoryview):
            # A view, not a copy: the caller may hand us a whole 1 GiB file.
            try:
                self._buf = source if isinstance(source, bytes) else memoryview(source).cast("B")
            except TypeError as exc:
                raise DicomFileError(f"cannot read a non-contiguous buffer: {exc}") from exc
            self._eof = True
            self.name = "buffer"
        elif isinstance(source, str | os.PathLike):
            self.name = os.fspath(source)
            try:
                self._stream = open(source, "rb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise DicomFileError(f"cannot open {self.name}: {exc.strerror or exc}") from exc
            self._owned = True
        else:
            self.name = str(getattr(source, "name", "stream"))
            self._stream = source

    def head(self, size: int) -> bytes | memoryview:
        """At least ``size`` bytes from the start, fewer only at end of data."""
        while len(self._buf) < size and not self._eof:
            assert self._stream is not None
            try:
                chunk = self._stream.read(max(size - len(self._buf), _FIRST_READ))
            except OSError as exc:
                raise DicomFileError(f"cannot read {self.name}: {exc}") from exc
            if not chunk:
                self._eof = True
            else:
                self._buf = bytes(self._buf) + chunk
        return self._buf

    @property
    def exhausted(self) -> bool:
        return self._eof

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()


_VR_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _looks_explicit(data: bytes | memoryview, pos: int) -> bool:
    return len(data) >= pos + 6 and data[pos + 4] in _VR_CHARS and data[pos + 5] in _VR_CHARS


def _guess_raw_syntax(data: bytes | memoryview) -> str:
    """Transfer syntax of a data set without meta, from its first element."""
    if len(data) < 8:
        raise DicomFileError("too short to be a DICOM data set")
    if not _looks_explicit(data, 0):
        return IMPLICIT_VR_LITTLE_ENDIAN
    # Groups are small numbers: a big endian group has its zero byte first.
    group_le = data[0] | (data[1] << 8)
    group_be = (data[0] << 8) | data[1]
    return EXPLICIT_VR_BIG_ENDIAN if group_be < group_le else EXPLICIT_VR_LITTLE_ENDIAN


def _parse_meta(src: _Source, start: int) -> tuple[dict[int, bytes], int]:
    """Raw values of the group 0002 elements starting at ``start``, and its end.

    Walks while the group is 0002 instead of trusting (0002,0000), as pydicom
    does: writers get the group length wrong more often than the elements.
    """
    values: dict[int, bytes] = {}
    pos = start
    data = src.head(start + 256)
    explicit = _looks_explicit(data, start)
    while True:
        data = src.head(pos + 12)
        if len(data) < pos + 8:
            if len(data) == pos:
                break  # a file holding only a meta group
            raise DicomFileError(f"{src.name}: ends inside the file meta at offset {pos}")
        if data[pos] != 2 or data[pos + 1] != 0:
            break
        if explicit:
            _, elem, vr, length = _unpack_meta_short(data, pos)
            if vr in LONG_VRS:
                if len(data) < pos + 12:
                    raise DicomFileError(f"{src.name}: ends inside the file meta at offset {pos}")
                (length,) = _unpack_ul(data, pos + 8)
                value_pos = pos + 12
            else:
                value_pos = pos + 8
        else:
            _, elem, length = _unpack_implicit(data, pos)
            value_pos = pos + 8
        end = value_pos + length
        if end - start > _MAX_META:
            raise DicomFileError(
                f"{src.name}: file meta element (0002,{elem:04X}) claims {length} bytes"
            )
        data = src.head(end)
        if len(data) < end:
            raise DicomFileError(f"{src.name}: ends inside file meta element (0002,{elem:04X})")
        values[elem] = bytes(data[value_pos:end])
        pos = end
    return values, pos


def _uid_value(raw: bytes | None) -> str:
    if raw is None:
        return ""
    return raw.decode("ascii", "replace").strip("\0 ")


def read_file_meta(
    source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike[str],
) -> FileMeta:
    """Identify a Part 10 file (or a raw data set) and find its data set.

    Reads only the first bytes of a file or stream. Without preamble and meta
    the transfer syntax is guessed from the first element (implicit vs
    explicit VR, little vs big endian) and the SOP class and instance come
    from the data set itself. A binary stream is read from its current
    position, and offsets are relative to it. Anything unreadable raises
    :class:`~aiodicom.errors.DicomFileError`.
    """
    src = _Source(source)
    try:
        return _read_file_meta(src)
    finally:
        src.close()


def _read_file_meta(src: _Source) -> FileMeta:
    data = src.head(132 + 8)
    if len(data) >= 132 and data[128:132] == b"DICM":
        meta_start: int | None = 132
    elif len(data) >= 8 and data[0] == 2 and data[1] == 0:
        meta_start = 0  # meta group without a preamble, as some old writers do
    else:
        meta_start = None
    if meta_start is not None:
        values, offset = _parse_meta(src, meta_start)
        transfer_syntax = _uid_value(values.get(0x0010))
        sop_class = _uid_value(values.get(0x0002))
        sop_instance = _uid_value(values.get(0x0003))
        if not transfer_syntax:
            transfer_syntax = _guess_raw_syntax(src.head(offset + 8)[offset:])
    else:
        offset = 0
        transfer_syntax = _guess_raw_syntax(data)
        sop_class = sop_instance = ""
    if not sop_class or not sop_instance:
        found = _scan_identity(src, offset, transfer_syntax)
        sop_class = sop_class or found.get(_SOP_CLASS_UID, "")
        sop_instance = sop_instance or found.get(_SOP_INSTANCE_UID, "")
    if not sop_class:
        raise DicomFileError(f"{src.name}: no SOP Class UID in the file meta or the data set")
    if not sop_instance:
        raise DicomFileError(f"{src.name}: no SOP Instance UID in the file meta or the data set")
    return FileMeta(sop_class, sop_instance, transfer_syntax, offset)


def _scan_identity(src: _Source, offset: int, transfer_syntax: str) -> dict[int, str]:
    size = _FIRST_READ
    wanted = (_SOP_CLASS_UID, _SOP_INSTANCE_UID)
    while True:
        data = src.head(offset + size)
        result = scan_elements(memoryview(data)[offset:], transfer_syntax, wanted)
        if result.complete or src.exhausted and len(data) < offset + size:
            return {tag: text(value) for tag, value in result.values.items()}
        size *= 4


# --- transcoding -----------------------------------------------------------------

_TRANSCODABLE: Final = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)
# Word size of the "other" VRs whose bytes pydicom keeps as they are, so a
# change of byte order must swap them by hand.
_WORD_VRS: Final = WORD_VRS


def _swap_words(dataset: Dataset) -> None:
    for elem in dataset.iterall():
        typecode = _WORD_VRS.get(elem.VR)
        if typecode is None or not isinstance(elem.value, bytes) or not elem.value:
            continue
        words = array.array(typecode)
        if len(elem.value) % words.itemsize:
            raise DicomFileError(
                f"{elem.tag} {elem.VR} value of {len(elem.value)} bytes is not whole words"
            )
        words.frombytes(elem.value)
        words.byteswap()
        elem.value = words.tobytes()


def transcode(dataset: bytes, from_ts: str, to_ts: str) -> bytes:
    """Re-encode data set bytes from one uncompressed transfer syntax to another.

    For the case where a peer accepted a different transfer syntax than a file
    has. Not on a hot path: the data set is decoded with pydicom (word-sized
    OW/OF/OL/OD/OV values are byte-swapped when the byte order changes, which
    pydicom does not do). Explicit VR little endian and its deflated form
    differ only by zlib and skip pydicom. A losslessly compressed source is
    decompressed with pydicom's pixel data handlers (the ``codecs`` extra);
    any other encapsulated source, or an encapsulated target, raises
    :class:`~aiodicom.errors.DicomFileError`: lossy data are never decompressed
    (the result would pass for an original) and nothing is compressed.
    """
    if from_ts == to_ts:
        return bytes(dataset)
    if from_ts in LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES and to_ts in _TRANSCODABLE:
        return _decompress(bytes(dataset), from_ts, to_ts)
    for ts in (from_ts, to_ts):
        if ts not in _TRANSCODABLE:
            raise DicomFileError(
                f"cannot convert a data set from {transfer_syntax_name(from_ts)} to "
                f"{transfer_syntax_name(to_ts)}: {transfer_syntax_name(ts)} is "
                + ("compressed" if ts in KNOWN_TRANSFER_SYNTAXES else "not a known transfer syntax")
                + "; only uncompressed and deflated syntaxes can be converted"
            )
    raw = bytes(dataset)
    if from_ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        inflater = zlib.decompressobj(-15)
        try:
            raw = inflater.decompress(raw) + inflater.flush()
        except zlib.error as exc:
            raise DicomFileError(f"deflated data set is corrupt: {exc}") from None
        from_ts = EXPLICIT_VR_LITTLE_ENDIAN
    # pydicom silently reads a truncated data set; refuse to convert one.
    end = dataset_end(raw, from_ts)
    if end != len(raw):
        raise DicomFileError(
            f"cannot convert data set from {transfer_syntax_name(from_ts)}: it is truncated "
            f"(its elements do not end at the {len(raw)} bytes given)"
        )
    target = EXPLICIT_VR_LITTLE_ENDIAN if to_ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else to_ts
    if from_ts != target:
        raw = _reencode(raw, from_ts, target)
    if to_ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        raw = deflater.compress(raw) + deflater.flush()
    return raw


def _reencode(raw: bytes, from_ts: str, to_ts: str, decode: Collection[int] = ()) -> bytes:
    """``decode``: tags to turn into values, not copied raw, so the writer pads them."""
    # pydicom is imported here, not at module level: the receiver's hot path
    # imports this module for encode_file_meta and should not pay for it.
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import correct_ambiguous_vr, write_dataset

    src_implicit = from_ts == IMPLICIT_VR_LITTLE_ENDIAN
    src_little = from_ts != EXPLICIT_VR_BIG_ENDIAN
    dst_little = to_ts != EXPLICIT_VR_BIG_ENDIAN
    try:
        dataset = read_dataset(io.BytesIO(raw), src_implicit, src_little)
        if len(dataset) == 0 and raw:
            raise DicomFileError("no data elements could be read")
        for tag in decode:
            dataset[tag]  # replaces the raw element by a decoded one
        if src_little != dst_little:
            dataset = correct_ambiguous_vr(dataset, src_little)
            _swap_words(dataset)
        out = DicomBytesIO()
        out.is_little_endian = dst_little
        out.is_implicit_VR = to_ts == IMPLICIT_VR_LITTLE_ENDIAN
        write_dataset(out, dataset)
        return out.getvalue()
    except DicomFileError as exc:
        raise DicomFileError(
            f"cannot convert data set from {transfer_syntax_name(from_ts)} to "
            f"{transfer_syntax_name(to_ts)}: {exc}"
        ) from exc
    except Exception as exc:  # pydicom raises many types on malformed input
        raise DicomFileError(
            f"cannot convert data set from {transfer_syntax_name(from_ts)} to "
            f"{transfer_syntax_name(to_ts)}: {type(exc).__name__}: {exc}"
        ) from exc


def _decompress(raw: bytes, from_ts: str, to_ts: str) -> bytes:
    """Decode lossless encapsulated pixel data; the data set then goes out in ``to_ts``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset
    from pydicom.uid import UID

    name = transfer_syntax_name(from_ts)
    try:
        dataset = read_dataset(io.BytesIO(raw), False, True)
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = UID(from_ts)
        dataset.decompress(generate_instance_uid=False)
        out = DicomBytesIO()
        out.is_little_endian = True
        out.is_implicit_VR = False
        write_dataset(out, dataset)
    except Exception as exc:  # pydicom raises many types: no handler, corrupt stream...
        raise DicomFileError(f"cannot decompress {name}: {type(exc).__name__}: {exc}") from exc
    return transcode(out.getvalue(), EXPLICIT_VR_LITTLE_ENDIAN, to_ts)


def pad_odd_lengths(dataset: bytes | memoryview, transfer_syntax: str) -> tuple[bytes | memoryview, list[int]]:
    """Make every top-level value even-length, as DCMTK does when it writes a file.

    Returns the data set (unchanged, no copy, when nothing was odd) and the
    tags that were padded. Strings get their VR's padding (space or NUL),
    binary values a NUL byte: pydicom's writer pads that way. Deflated data
    sets are returned as they are.
    """
    if transfer_syntax in DEFLATED_DATA_SET_SYNTAXES:
        return dataset, []
    odd = odd_length_elements(dataset, transfer_syntax)
    if not odd:
        return dataset, []
    # Encapsulated syntaxes encode their data set as explicit VR little endian.
    as_ts = transfer_syntax if transfer_syntax in _TRANSCODABLE else EXPLICIT_VR_LITTLE_ENDIAN
    fixed = _reencode(bytes(dataset), as_ts, as_ts, decode=odd)
    still = odd_length_elements(fixed, transfer_syntax)
    if still:
        raise DicomFileError(
            "cannot pad odd-length values of " + ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in still)
        )
    return fixed, odd
