"""DICOM Part 10 files (PS3.10 section 7): the preamble and the group 0002 meta.

A receiver writes one file per image, so :func:`encode_file_meta` builds the
whole header with ``struct`` and cached constant pieces instead of pydicom:
it runs once per received data set, on the hot path.
"""

from __future__ import annotations

import struct
from typing import Final

from aiodicom.codec.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from aiodicom.errors import DicomFileError

__all__ = ["PREAMBLE", "encode_file_meta"]

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
    try:
        raw = value.strip().encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise DicomFileError(f"source AE title must be ASCII, got {value!r}") from None
    if not raw or len(raw) > 16 or b"\\" in raw:
        raise DicomFileError(f"source AE title must be 1 to 16 characters, got {value!r}")
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
            _VERSION,
            _short(0x02, b"UI", _uid("SOP Class UID", sop_class_uid)),
            _short(0x03, b"UI", _uid("SOP Instance UID", sop_instance_uid)),
            _short(0x10, b"UI", _uid("Transfer Syntax UID", transfer_syntax)),
            _IMPLEMENTATION,
            b"" if source_ae is None else _short(0x16, b"AE", _ae(source_ae)),
        )
    )
    return PREAMBLE + _pack_ul(2, 0, b"UL", 4, len(body)) + body
