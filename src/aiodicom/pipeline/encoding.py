"""Encoding what is exported: data sets, files and bytes as Part 10 :class:`Instance` records.

Kept apart from the exporters because it is the CPU-heavy part, written so that the
event loop stays responsive: a pydicom data set is encoded by pydicom except for its
large binary values (pixel data), which are handed on as they are and written to disk in
:data:`CHUNK` pieces with the loop served between two. Nothing in the caller's data set
is modified, not even pydicom's caches (raw elements stay raw, person names uncached).
"""

from __future__ import annotations

import copy
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from aiodicom._record import FrozenRecord
from aiodicom.codec.part10 import FileMeta, encode_file_meta, read_file_meta, transcode
from aiodicom.codec.scan import scan_elements, text
from aiodicom.codec.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.codec.vr import BULK_VRS
from aiodicom.errors import DicomFileError, MalformedDatasetError

if TYPE_CHECKING:
    import pydicom

#: One data set to export: a pydicom data set, a Part 10 file, or Part 10 bytes.
ExportItem: TypeAlias = "pydicom.Dataset | str | os.PathLike[str] | bytes | bytearray | memoryview"

#: The scanner reads the tags a layout names from this much of a file first.
_HEAD = 64 * 1024
#: Files are written and copied in pieces of this size, the event loop served between two.
CHUNK = 1024 * 1024


class Instance(FrozenRecord):
    """One encoded instance ready to export: Part 10 ``data`` in memory, or a ``path``.

    The outbox writes every instance of a batch as a file of its own before the
    batch counts as submitted, so exporters it runs get instances with a ``path``.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes | None = None
    path: Path | None = None

    def source(self) -> bytes | Path:
        """What :meth:`ClientAssociation.store <aiodicom.ClientAssociation.store>` takes."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path

    def read(self) -> bytes:
        """The Part 10 bytes (read from the file when there is one)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The Part 10 bytes in pieces of at most :data:`CHUNK` (the file is read piece by piece)."""
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), CHUNK):
                yield view[start : start + CHUNK]
            return
        assert self.path is not None
        with open(self.path, "rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk

    def texts(self, tags: Iterable[int]) -> dict[int, str]:
        """Top-level text values (UIDs, IDs), scanned without decoding the data set."""
        wanted = tuple(tags)
        head = self.data if self.data is not None else _read_head(self.path)
        meta = read_file_meta(head)
        result = scan_elements(memoryview(head)[meta.dataset_offset :], self.transfer_syntax, wanted)
        if not result.complete and self.data is None:
            result = scan_elements(memoryview(self.read())[meta.dataset_offset :], self.transfer_syntax, wanted)
        return {tag: text(raw) for tag, raw in result.values.items()}


def _read_head(path: Path | None) -> bytes:
    assert path is not None
    with open(path, "rb") as handle:
        return handle.read(_HEAD)


def encode_item(item: ExportItem) -> Instance:
    """Encode one data set into an :class:`Instance` (Part 10 bytes; a file stays a file).

    A pydicom data set is encoded in its own transfer syntax (``file_meta``), explicit
    VR little endian when it has none, without modifying it. Something that is not
    DICOM raises :class:`~aiodicom.errors.MalformedDatasetError` naming it.
    """
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
        meta = _checked_meta(data, "Part 10 bytes")
        return Instance(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax, data=data)
    if isinstance(item, str | os.PathLike):
        path = Path(os.fspath(item))
        meta = _checked_meta(path, str(path))
        return Instance(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax, path=path)
    return _encode_dataset(item)


def _checked_meta(source: bytes | Path, what: str) -> FileMeta:
    try:
        return read_file_meta(source)
    except MalformedDatasetError as exc:
        raise MalformedDatasetError(f"{what}: {exc}") from None
    except DicomFileError as exc:
        raise MalformedDatasetError(f"{what} is not a DICOM Part 10 file: {exc}") from None
    except OSError as exc:
        raise DicomFileError(f"cannot read {what}: {exc.strerror or exc}") from None


#: How each transfer syntax's data set is written: (little endian, implicit VR); the
#: rest (compressed syntaxes) are explicit VR little endian with encapsulated pixels.
_LAYOUTS = {
    IMPLICIT_VR_LITTLE_ENDIAN: (True, True),
    EXPLICIT_VR_BIG_ENDIAN: (False, False),
}
#: Top-level binary values at least this long are not copied while encoding: they are
#: handed on as they are, and written to disk in chunks with the event loop served between.
LARGE_VALUE = 1 << 20
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_EXPLICIT_HEADER = struct.Struct("<HH2s2xI")
_IMPLICIT_HEADER = struct.Struct("<HHI")

#: A data set encoded as Part 10: its identity and the buffers that make the file, in order.
Encoded: TypeAlias = "tuple[str, str, str, list[bytes | memoryview]]"


def encode_dataset(dataset: pydicom.Dataset) -> Encoded:
    """Encode a pydicom data set as Part 10 buffers, without modifying it.

    In its own transfer syntax (``file_meta``), explicit VR little endian when it has
    none. Large binary values (pixel data) are not copied: each is one buffer of its
    own, so encoding a 1 GB instance costs the header's time, not a gigabyte of copies
    on the event loop. Something that cannot be encoded raises
    :class:`~aiodicom.errors.MalformedDatasetError`.
    """
    sop_class, sop_instance = _uid(dataset, 0x00080016), _uid(dataset, 0x00080018)
    if not (sop_class and sop_instance):
        raise MalformedDatasetError("a data set to export has no SOP Class UID or no SOP Instance UID")
    meta = getattr(dataset, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else EXPLICIT_VR_LITTLE_ENDIAN
    try:
        parts: list[bytes | memoryview] = [encode_file_meta(sop_class, sop_instance, ts)]
        if ts in (EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN):
            body = _write(dataset, ts)
            parts.append(transcode(body, EXPLICIT_VR_LITTLE_ENDIAN, ts) if ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
                         else body)
        else:
            parts += _split(dataset, ts)
    except DicomFileError as exc:
        raise MalformedDatasetError(f"cannot export data set {sop_instance!r}: {exc}") from None
    except Exception as exc:  # pydicom raises many types for values it cannot encode
        raise MalformedDatasetError(f"cannot encode data set {sop_instance}: {exc}") from exc
    return sop_class, sop_instance, ts, parts


def _write(dataset: pydicom.Dataset, ts: str, encoding: str | list[str] | None = None) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    little, implicit = _LAYOUTS.get(ts, (True, False))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = little, implicit
    # A copy: pydicom caches encoded values in the elements it writes (person names).
    if encoding is None:
        write_dataset(buffer, copy.deepcopy(dataset))
    else:
        write_dataset(buffer, copy.deepcopy(dataset), encoding)
    return buffer.getvalue()


def _split(dataset: pydicom.Dataset, ts: str) -> list[bytes | memoryview]:
    """Little endian data sets: runs of small elements encoded by pydicom, large values as they are."""
    from pydicom.dataset import Dataset

    implicit = _LAYOUTS.get(ts, (True, False))[1]
    encoding = _character_sets(dataset)
    parts: list[bytes | memoryview] = []

    def new_run() -> Dataset:
        run = Dataset()
        # Raw elements in a later run decode with the data set's character set, not the default.
        run._parent_encoding = encoding
        return run

    run = new_run()
    for tag in sorted(dataset.keys()):  # insertion order is not tag order; the file's is
        element = dataset.get_item(tag)  # raw elements stay raw: reading converts nothing
        value = _large_value(element)
        if value is None:
            run[tag] = element
            continue
        if len(run):
            parts.append(_write(run, ts, encoding))
            run = new_run()
        parts += _large_element(int(tag), element, value, implicit)
    if len(run):
        parts.append(_write(run, ts, encoding))
    return parts


def _uid(dataset: pydicom.Dataset, tag: int) -> str:
    """A top-level UID, read without converting the element (attribute access would)."""
    value = getattr(dataset.get_item(tag), "value", None)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return "" if value is None else str(value).strip(" \0")


def _character_sets(dataset: pydicom.Dataset) -> list[str]:
    """Specific Character Set (0008,0005), read without converting anything in ``dataset``."""
    element = dataset.get_item(0x00080005)
    value = getattr(element, "value", None)
    if value is None:
        return ["iso8859"]  # pydicom's default
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").split("\\")
    from pydicom.charset import convert_encodings

    terms = [str(term).strip() for term in ([value] if isinstance(value, str) else value)]
    return convert_encodings(terms)  # Python's codec names, as pydicom keeps them


def _large_value(element: Any) -> memoryview | None:
    vr, value = getattr(element, "VR", None), getattr(element, "value", None)
    if vr in BULK_VRS and isinstance(value, bytes | bytearray | memoryview) and len(value) >= LARGE_VALUE:
        return memoryview(value).cast("B")
    return None


def _large_element(tag: int, element: Any, value: memoryview, implicit: bool) -> list[bytes | memoryview]:
    undefined = bool(getattr(element, "is_undefined_length", False))
    length = 0xFFFFFFFF if undefined else len(value) + len(value) % 2
    if implicit:
        header = _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length)
    else:
        header = _EXPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, str(element.VR).encode(), length)
    tail = _SEQUENCE_DELIMITER if undefined else b"\0" * (len(value) % 2)
    return [header, value, tail] if tail else [header, value]


def _encode_dataset(dataset: pydicom.Dataset) -> Instance:
    sop_class, sop_instance, ts, parts = encode_dataset(dataset)
    return Instance(sop_class, sop_instance, ts, data=b"".join(parts))



async def write_file(path: Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Create ``path`` (never an existing file) from ``chunks``, serving the event loop between two."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), CHUNK):
                part = view[start : start + CHUNK]
                while part:
                    part = part[os.write(fd, part) :]
                await anyio.sleep(0)
    finally:
        os.close(fd)


__all__ = ["CHUNK", "LARGE_VALUE", "Encoded", "ExportItem", "Instance", "encode_dataset", "encode_item", "write_file"]
