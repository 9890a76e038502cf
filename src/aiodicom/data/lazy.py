"""Datasets that cost nothing until used, and headers that know where their pixels are.

A pipeline input may hold hundreds of instances; keeping each one fully
decoded costs the pixel data twice over (bytes plus arrays). A
:class:`LazyDataset` reads its file only on first attribute access and then
keeps only the header; the pixels are read again on demand and not cached
unless asked for. The header also records where the PixelData value sits in
the file, so the numpy grinder can read pixel bytes straight into one
preallocated volume without pydicom ever holding them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from aiodicom.codec.vr import LONG_VRS
from aiodicom.errors import DicomFileError

__all__ = ["Instance", "LazyDataset", "PixelLocation", "header_of", "read_header"]

#: Attribute names that need the pixels (everything else is in the header).
_PIXEL_NAMES = frozenset(
    {"PixelData", "FloatPixelData", "DoubleFloatPixelData", "pixel_array", "pixel_array_options"}
)
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_DEFLATED = "1.2.840.10008.1.2.1.99"


@dataclass(frozen=True)
class PixelLocation:
    """Where a native (not encapsulated) PixelData value lies in a file."""

    path: Path
    offset: int
    length: int
    big_endian: bool


def _locate_pixels(fp: Any, path: Path, transfer_syntax: UID | None) -> PixelLocation | None:
    """Parse the element header at ``fp``'s position (where pydicom stopped)."""
    if transfer_syntax is None or str(transfer_syntax) == _DEFLATED:
        return None
    if transfer_syntax.is_compressed:
        return None
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return None
    big = not transfer_syntax.is_little_endian
    order = ">" if big else "<"
    group, element = struct.unpack(order + "HH", head[:4])
    if (group << 16 | element) != 0x7FE00010:
        return None
    if transfer_syntax.is_implicit_VR:
        (length,) = struct.unpack(order + "I", head[4:8])
        offset = start + 8
    elif head[4:6] in LONG_VRS:
        if len(head) < 12:
            return None
        (length,) = struct.unpack(order + "I", head[8:12])
        offset = start + 12
    else:
        (length,) = struct.unpack(order + "H", head[6:8])
        offset = start + 8
    if length == 0xFFFFFFFF:  # encapsulated despite a native transfer syntax
        return None
    return PixelLocation(path=path, offset=offset, length=length, big_endian=big)


def read_header(path: str | os.PathLike[str]) -> tuple[Dataset, PixelLocation | None]:
    """Read a Part 10 file without its pixels; also say where the pixels are.

    The location is ``None`` when there is no PixelData, when it is
    encapsulated (compressed) or when the file is deflated; callers then fall
    back to pydicom's pixel handlers.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            meta = getattr(ds, "file_meta", None)
            ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
            location = _locate_pixels(fp, p, UID(ts) if ts else None)
    except InvalidDicomError as exc:
        raise DicomFileError(f"{p}: not a DICOM Part 10 file ({exc})") from exc
    except (EOFError, ValueError, struct.error) as exc:
        raise DicomFileError(f"{p}: unreadable DICOM file ({exc})") from exc
    return ds, location


class LazyDataset:
    """A DICOM file read on first attribute access, keeping only its header.

    Attribute and item access (``lazy.PatientID``, ``lazy[0x00100020]``,
    ``"PatientID" in lazy``) go to the header. Asking for ``PixelData`` or
    ``pixel_array`` reads the whole file; the full dataset is kept only when
    ``keep_pixels=True``, otherwise it is read again on each such access so a
    long-lived pipeline input stays small.
    """

    __slots__ = ("path", "keep_pixels", "_header", "_location", "_full")

    def __init__(self, path: str | os.PathLike[str], *, keep_pixels: bool = False) -> None:
        self.path = Path(path)
        self.keep_pixels = keep_pixels
        self._header: Dataset | None = None
        self._location: PixelLocation | None = None
        self._full: Dataset | None = None

    def __repr__(self) -> str:
        state = "loaded" if self._header is not None else "not loaded"
        return f"LazyDataset({str(self.path)!r}, {state})"

    @property
    def is_loaded(self) -> bool:
        """True once the header has been read."""
        return self._header is not None

    @property
    def header(self) -> Dataset:
        """The data set without pixel data (read once, then cached)."""
        if self._header is None:
            self._header, self._location = read_header(self.path)
        return self._header

    @property
    def pixel_location(self) -> PixelLocation | None:
        """Where the native pixel bytes are in the file (see :func:`read_header`)."""
        self.header  # noqa: B018 - loads the header and the location
        return self._location

    @property
    def dataset(self) -> Dataset:
        """The full data set, pixels included (cached only with ``keep_pixels``)."""
        if self._full is not None:
            return self._full
        try:
            full = pydicom.dcmread(self.path)
        except InvalidDicomError as exc:
            raise DicomFileError(f"{self.path}: not a DICOM Part 10 file ({exc})") from exc
        if self.keep_pixels:
            self._full = full
        return full

    def release(self) -> None:
        """Forget everything read so far (the next access reads the file again)."""
        self._header = None
        self._location = None
        self._full = None

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found normally (slots, properties, methods).
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _PIXEL_NAMES:
            return getattr(self.dataset, name)
        return getattr(self.header, name)

    def __getitem__(self, key: Any) -> Any:
        try:
            tag = pydicom.tag.Tag(key)
        except (ValueError, TypeError, OverflowError):
            return self.header[key]
        if int(tag) in _PIXEL_TAGS:
            return self.dataset[key]
        return self.header[key]

    def __contains__(self, key: Any) -> bool:
        try:
            tag = pydicom.tag.Tag(key)
        except (ValueError, TypeError, OverflowError):
            return False
        if int(tag) in _PIXEL_TAGS:
            return self.pixel_location is not None or tag in self.dataset
        return tag in self.header

    def __fspath__(self) -> str:
        return str(self.path)


#: What grinders accept as one instance: a data set, a lazy one, or a file path.
Instance = Dataset | LazyDataset | str | os.PathLike[str]


def header_of(instance: Instance) -> Dataset:
    """The header of any accepted instance (paths are read without pixels)."""
    if isinstance(instance, LazyDataset):
        return instance.header
    if isinstance(instance, Dataset):
        return instance
    if isinstance(instance, str | os.PathLike):
        return read_header(instance)[0]
    raise TypeError(f"not a DICOM instance: {type(instance).__name__}")
