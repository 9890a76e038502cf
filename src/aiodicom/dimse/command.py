"""DIMSE command set codec (PS3.7 sections 9 and 10, annex E).

A command set is group 0000 encoded in implicit VR little endian, whatever
transfer syntax the presentation context negotiated. One is encoded and one
decoded for every image a C-STORE receiver handles, so this is hand-written
``struct`` code: no pydicom, no generic element machinery, one dict of raw
values per decoded message.

Decoding trusts nothing: a short buffer, an odd or oversized length, a wrong
VR-sized value, an unknown command or a missing required element all raise
:class:`~aiodicom.errors.MalformedCommandError` naming the element, never any
other exception. Unknown extra elements of group 0000 are ignored, in any order.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from aiodicom.codec.ae import AE_TITLE_LENGTH, ae_title_problem
from aiodicom.codec.uids import VERIFICATION_SOP_CLASS
from aiodicom.dimse.status import Status
from aiodicom.errors import MalformedCommandError

__all__ = [
    "CCancelRQ",
    "CEchoRQ",
    "CEchoRSP",
    "CFindRQ",
    "CFindRSP",
    "CGetRQ",
    "CGetRSP",
    "CMoveRQ",
    "CMoveRSP",
    "CStoreRQ",
    "CStoreRSP",
    "CommandField",
    "Message",
    "NO_DATASET",
    "DATASET_PRESENT",
    "RESPONSE_TYPES",
    "Priority",
    "decode_command",
    "encode_command",
    "encode_response",
    "error_comment",
]


class Priority(enum.IntEnum):
    """(0000,0700) Priority values; MEDIUM is 0, so it is the natural default."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


class CommandField(enum.IntEnum):
    """(0000,0100) Command Field values of the composite services we speak."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


#: (0000,0800) Command Data Set Type value meaning "no data set follows".
NO_DATASET: Final = 0x0101
#: The value we send when a data set follows (any value but 0x0101 means that).
DATASET_PRESENT: Final = 0x0001


def _status(value: int) -> Status:
    return value if isinstance(value, Status) else Status(value)


# --- messages -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CEchoRQ:
    """C-ECHO request: is the peer alive and speaking DICOM?"""

    message_id: int
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS


@dataclass(frozen=True, slots=True)
class CEchoRSP:
    """C-ECHO response."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status(self.status))


@dataclass(frozen=True, slots=True)
class CStoreRQ:
    """C-STORE request; the data set to store follows in data PDVs."""

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None


@dataclass(frozen=True, slots=True)
class CStoreRSP:
    """C-STORE response. The UIDs are optional in the standard: "" when absent."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status(self.status))


@dataclass(frozen=True, slots=True)
class CFindRQ:
    """C-FIND request; the identifier (query keys) follows as a data set."""

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM


@dataclass(frozen=True, slots=True)
class CFindRSP:
    """C-FIND response; pending responses carry a matching identifier."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status(self.status))


@dataclass(frozen=True, slots=True)
class CGetRQ:
    """C-GET request; the identifier follows as a data set."""

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM


@dataclass(frozen=True, slots=True)
class CGetRSP:
    """C-GET response with the sub-operation counters (None when absent)."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    remaining_suboperations: int | None = None
    completed_suboperations: int | None = None
    failed_suboperations: int | None = None
    warning_suboperations: int | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status(self.status))


@dataclass(frozen=True, slots=True)
class CMoveRQ:
    """C-MOVE request: send the matches to ``move_destination`` (an AE title)."""

    message_id: int
    affected_sop_class_uid: str
    move_destination: str
    priority: int = Priority.MEDIUM


@dataclass(frozen=True, slots=True)
class CMoveRSP:
    """C-MOVE response with the sub-operation counters (None when absent)."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    remaining_suboperations: int | None = None
    completed_suboperations: int | None = None
    failed_suboperations: int | None = None
    warning_suboperations: int | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _status(self.status))


@dataclass(frozen=True, slots=True)
class CCancelRQ:
    """C-CANCEL request for an outstanding C-FIND/C-MOVE/C-GET."""

    message_id_being_responded_to: int


Message: TypeAlias = (
    CEchoRQ
    | CEchoRSP
    | CStoreRQ
    | CStoreRSP
    | CFindRQ
    | CFindRSP
    | CGetRQ
    | CGetRSP
    | CMoveRQ
    | CMoveRSP
    | CCancelRQ
)

# --- element names (for error messages) -------------------------------------------

_NAMES: Final[dict[int, str]] = {
    0x0000: "Command Group Length",
    0x0002: "Affected SOP Class UID",
    0x0100: "Command Field",
    0x0110: "Message ID",
    0x0120: "Message ID Being Responded To",
    0x0600: "Move Destination",
    0x0700: "Priority",
    0x0800: "Command Data Set Type",
    0x0900: "Status",
    0x0901: "Offending Element",
    0x0902: "Error Comment",
    0x1000: "Affected SOP Instance UID",
    0x1020: "Number of Remaining Sub-operations",
    0x1021: "Number of Completed Sub-operations",
    0x1022: "Number of Failed Sub-operations",
    0x1023: "Number of Warning Sub-operations",
    0x1030: "Move Originator Application Entity Title",
    0x1031: "Move Originator Message ID",
}


def _label(elem: int) -> str:
    return f"(0000,{elem:04X}) {_NAMES.get(elem, 'element')}"


# --- encoding ---------------------------------------------------------------------

_pack_us = struct.Struct("<HHIH").pack  # tag, length 2, value
_pack_hdr = struct.Struct("<HHI").pack  # tag, length
_pack_ul_elem = struct.Struct("<HHII").pack


def _us(elem: int, value: int) -> bytes:
    try:
        return _pack_us(0, elem, 2, value)
    except struct.error:
        raise MalformedCommandError(
            f"{_label(elem)} must be an unsigned 16-bit value, got {value!r}"
        ) from None


def _ui(elem: int, value: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise MalformedCommandError(f"{_label(elem)} must be an ASCII UID, got {value!r}") from None
    if len(raw) > 64:
        raise MalformedCommandError(f"{_label(elem)} is longer than 64 characters: {value!r}")
    if len(raw) & 1:
        raw += b"\0"
    return _pack_hdr(0, elem, len(raw)) + raw


def _text(elem: int, value: str, limit: int) -> bytes:
    try:
        raw = value.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise MalformedCommandError(f"{_label(elem)} must be ASCII text, got {value!r}") from None
    if len(raw) > limit:
        raise MalformedCommandError(f"{_label(elem)} is longer than {limit} characters: {value!r}")
    if len(raw) & 1:
        raw += b" "
    return _pack_hdr(0, elem, len(raw)) + raw


def _ae(elem: int, value: str) -> bytes:
    """An AE title element (Move Originator, Move Destination): the PS3.5 AE rule, as for
    the titles of an association, so a title we could not negotiate is not sent here either."""
    problem = ae_title_problem(value)
    if problem is not None:
        raise MalformedCommandError(f"{_label(elem)} {value!r} {problem}")
    return _text(elem, value.strip(" "), AE_TITLE_LENGTH)


def _at(elem: int, tags: tuple[int, ...]) -> bytes:
    try:
        raw = b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags)
    except (struct.error, TypeError):
        raise MalformedCommandError(f"{_label(elem)} must hold 32-bit tags, got {tags!r}") from None
    return _pack_hdr(0, elem, len(raw)) + raw


def _finish(parts: list[bytes]) -> bytes:
    body = b"".join(parts)
    return _pack_ul_elem(0, 0, 4, len(body)) + body


def _rsp_tail(
    parts: list[bytes],
    status: int,
    offending_element: tuple[int, ...] | None,
    error_comment: str | None,
) -> None:
    parts.append(_us(0x0900, status))
    if offending_element is not None:
        parts.append(_at(0x0901, offending_element))
    if error_comment is not None:
        parts.append(_text(0x0902, error_comment, 64))


def _suboperations(parts: list[bytes], msg: CGetRSP | CMoveRSP) -> None:
    for elem, value in (
        (0x1020, msg.remaining_suboperations),
        (0x1021, msg.completed_suboperations),
        (0x1022, msg.failed_suboperations),
        (0x1023, msg.warning_suboperations),
    ):
        if value is not None:
            parts.append(_us(elem, value))


def encode_command(msg: Message, *, has_dataset: bool) -> bytes:
    """Encode ``msg`` as a command set, (0000,0000) group length first.

    ``has_dataset`` sets (0000,0800) Command Data Set Type: the peer reads a
    data set after the command exactly when it says so, so it is explicit here
    rather than guessed from the message type. Values that cannot be encoded
    (a message ID above 65535, a non-ASCII UID, ...) raise
    :class:`~aiodicom.errors.MalformedCommandError`.
    """
    dst = _DST_PRESENT if has_dataset else _DST_NONE
    # Elements are appended in ascending tag order, as PS3.5 7.1 requires.
    if type(msg) is CStoreRQ:
        parts = [
            _ui(0x0002, msg.affected_sop_class_uid),
            _CF_STORE_RQ,
            _us(0x0110, msg.message_id),
            _us(0x0700, msg.priority),
            dst,
            _ui(0x1000, msg.affected_sop_instance_uid),
        ]
        if msg.move_originator_ae_title is not None:
            parts.append(_ae(0x1030, msg.move_originator_ae_title))
        if msg.move_originator_message_id is not None:
            parts.append(_us(0x1031, msg.move_originator_message_id))
        return _finish(parts)
    if type(msg) is CStoreRSP:
        parts = []
        if msg.affected_sop_class_uid:
            parts.append(_ui(0x0002, msg.affected_sop_class_uid))
        parts += (_CF_STORE_RSP, _us(0x0120, msg.message_id_being_responded_to), dst)
        _rsp_tail(parts, msg.status, msg.offending_element, msg.error_comment)
        if msg.affected_sop_instance_uid:
            parts.append(_ui(0x1000, msg.affected_sop_instance_uid))
        return _finish(parts)
    if type(msg) is CEchoRQ:
        return _finish(
            [_ui(0x0002, msg.affected_sop_class_uid), _CF_ECHO_RQ, _us(0x0110, msg.message_id), dst]
        )
    if type(msg) is CEchoRSP:
        parts = []
        if msg.affected_sop_class_uid:
            parts.append(_ui(0x0002, msg.affected_sop_class_uid))
        parts += (_CF_ECHO_RSP, _us(0x0120, msg.message_id_being_responded_to), dst)
        parts.append(_us(0x0900, msg.status))
        return _finish(parts)
    if type(msg) is CFindRQ or type(msg) is CGetRQ:
        cf = _CF_FIND_RQ if type(msg) is CFindRQ else _CF_GET_RQ
        return _finish(
            [
                _ui(0x0002, msg.affected_sop_class_uid),
                cf,
                _us(0x0110, msg.message_id),
                _us(0x0700, msg.priority),
                dst,
            ]
        )
    if type(msg) is CMoveRQ:
        return _finish(
            [
                _ui(0x0002, msg.affected_sop_class_uid),
                _CF_MOVE_RQ,
                _us(0x0110, msg.message_id),
                _ae(0x0600, msg.move_destination),
                _us(0x0700, msg.priority),
                dst,
            ]
        )
    if type(msg) is CFindRSP:
        parts = []
        if msg.affected_sop_class_uid:
            parts.append(_ui(0x0002, msg.affected_sop_class_uid))
        parts += (_CF_FIND_RSP, _us(0x0120, msg.message_id_being_responded_to), dst)
        _rsp_tail(parts, msg.status, msg.offending_element, msg.error_comment)
        return _finish(parts)
    if type(msg) is CGetRSP or type(msg) is CMoveRSP:
        parts = []
        if msg.affected_sop_class_uid:
            parts.append(_ui(0x0002, msg.affected_sop_class_uid))
        cf = _CF_GET_RSP if type(msg) is CGetRSP else _CF_MOVE_RSP
        parts += (cf, _us(0x0120, msg.message_id_being_responded_to), dst)
        _rsp_tail(parts, msg.status, msg.offending_element, msg.error_comment)
        _suboperations(parts, msg)
        return _finish(parts)
    if type(msg) is CCancelRQ:
        return _finish([_CF_CANCEL_RQ, _us(0x0120, msg.message_id_being_responded_to), dst])
    raise MalformedCommandError(f"cannot encode {type(msg).__name__} as a DIMSE command")


def error_comment(text: str) -> str:
    """``text`` made fit for (0000,0902) Error Comment: printable ASCII, at most 64 characters."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text)
    return cleaned if len(cleaned) <= 64 else cleaned[:61] + "..."


#: The message types that answer a request (they carry a status).
RESPONSE_TYPES: Final = (CEchoRSP, CStoreRSP, CFindRSP, CGetRSP, CMoveRSP)


def encode_response(msg: Message) -> bytes:
    """Encode a response built from a peer's request, whatever that request carried.

    A response echoes the request's SOP Class and Instance UIDs, and those came
    from the network: one longer than 64 characters (or otherwise unencodable)
    is left out, since both are optional in every response (PS3.7 9.3, "U" or
    "="), and an Error Comment is cut to what its VR holds. So a hostile
    request gets its failure answered instead of making the answer raise.
    """
    try:
        return encode_command(msg, has_dataset=False)
    except MalformedCommandError:
        if not isinstance(msg, RESPONSE_TYPES):
            raise
    changes: dict[str, Any] = {}
    for name, elem in (("affected_sop_class_uid", 0x0002), ("affected_sop_instance_uid", 0x1000)):
        value = getattr(msg, name, "")
        try:
            _ui(elem, value)
        except MalformedCommandError:
            changes[name] = ""
    comment = getattr(msg, "error_comment", None)
    if comment is not None:
        changes["error_comment"] = error_comment(comment)
    return encode_command(dataclasses.replace(msg, **changes), has_dataset=False)


_DST_PRESENT: Final = _pack_us(0, 0x0800, 2, DATASET_PRESENT)
_DST_NONE: Final = _pack_us(0, 0x0800, 2, NO_DATASET)
_CF_STORE_RQ: Final = _pack_us(0, 0x0100, 2, CommandField.C_STORE_RQ)
_CF_STORE_RSP: Final = _pack_us(0, 0x0100, 2, CommandField.C_STORE_RSP)
_CF_ECHO_RQ: Final = _pack_us(0, 0x0100, 2, CommandField.C_ECHO_RQ)
_CF_ECHO_RSP: Final = _pack_us(0, 0x0100, 2, CommandField.C_ECHO_RSP)
_CF_FIND_RQ: Final = _pack_us(0, 0x0100, 2, CommandField.C_FIND_RQ)
_CF_FIND_RSP: Final = _pack_us(0, 0x0100, 2, CommandField.C_FIND_RSP)
_CF_GET_RQ: Final = _pack_us(0, 0x0100, 2, CommandField.C_GET_RQ)
_CF_GET_RSP: Final = _pack_us(0, 0x0100, 2, CommandField.C_GET_RSP)
_CF_MOVE_RQ: Final = _pack_us(0, 0x0100, 2, CommandField.C_MOVE_RQ)
_CF_MOVE_RSP: Final = _pack_us(0, 0x0100, 2, CommandField.C_MOVE_RSP)
_CF_CANCEL_RQ: Final = _pack_us(0, 0x0100, 2, CommandField.C_CANCEL_RQ)


# --- decoding ---------------------------------------------------------------------

_unpack_hdr = struct.Struct("<HHI").unpack_from
_unpack_tag = struct.Struct("<HH").unpack_from


class _Fields:
    """Typed access to the raw values of one command set, naming what is wrong."""

    __slots__ = ("raw", "what")

    def __init__(self, raw: dict[int, bytes], what: str) -> None:
        self.raw = raw
        self.what = what

    def _missing(self, elem: int) -> MalformedCommandError:
        return MalformedCommandError(f"{self.what} command set lacks {_label(elem)}")

    def _bad(self, elem: int, why: str) -> MalformedCommandError:
        return MalformedCommandError(
            f"{self.what} command set has an invalid {_label(elem)}: {why}"
        )

    def us(self, elem: int) -> int:
        value = self.raw.get(elem)
        if value is None:
            raise self._missing(elem)
        if len(value) != 2:
            raise self._bad(elem, f"US value of {len(value)} bytes")
        return value[0] | (value[1] << 8)

    def us_opt(self, elem: int) -> int | None:
        return self.us(elem) if elem in self.raw else None

    def ui(self, elem: int) -> str:
        value = self.raw.get(elem)
        if value is None:
            raise self._missing(elem)
        try:
            return value.decode("ascii").rstrip("\0 ")
        except UnicodeDecodeError:
            raise self._bad(elem, "not ASCII") from None

    def ui_opt(self, elem: int) -> str:
        return self.ui(elem) if elem in self.raw else ""

    def text(self, elem: int) -> str:
        value = self.raw.get(elem)
        if value is None:
            raise self._missing(elem)
        # The default character repertoire of a command set is ASCII; be lenient
        # with peers that put Latin-1 into an error comment.
        return value.decode("latin-1").strip(" \0")

    def text_opt(self, elem: int) -> str | None:
        return self.text(elem) if elem in self.raw else None

    def at_opt(self, elem: int) -> tuple[int, ...] | None:
        value = self.raw.get(elem)
        if value is None:
            return None
        if len(value) % 4:
            raise self._bad(elem, f"AT value of {len(value)} bytes")
        return tuple(
            (g << 16) | e for g, e in (_unpack_tag(value, i) for i in range(0, len(value), 4))
        )

    def status(self) -> Status:
        """The status, carrying the peer's Error Comment (0000,0902) when it sent one."""
        return Status(self.us(0x0900), error_comment=self.text_opt(0x0902))


def _store_rq(f: _Fields) -> CStoreRQ:
    return CStoreRQ(
        f.us(0x0110),
        f.ui(0x0002),
        f.ui(0x1000),
        f.us(0x0700),
        f.text_opt(0x1030),
        f.us_opt(0x1031),
    )


def _store_rsp(f: _Fields) -> CStoreRSP:
    return CStoreRSP(
        f.us(0x0120),
        f.status(),
        f.ui_opt(0x0002),
        f.ui_opt(0x1000),
        f.text_opt(0x0902),
        f.at_opt(0x0901),
    )


def _echo_rq(f: _Fields) -> CEchoRQ:
    return CEchoRQ(f.us(0x0110), f.ui(0x0002))


def _echo_rsp(f: _Fields) -> CEchoRSP:
    return CEchoRSP(f.us(0x0120), f.status(), f.ui_opt(0x0002))


def _find_rq(f: _Fields) -> CFindRQ:
    return CFindRQ(f.us(0x0110), f.ui(0x0002), f.us(0x0700))


def _find_rsp(f: _Fields) -> CFindRSP:
    return CFindRSP(
        f.us(0x0120), f.status(), f.ui_opt(0x0002), f.text_opt(0x0902), f.at_opt(0x0901)
    )


def _get_rq(f: _Fields) -> CGetRQ:
    return CGetRQ(f.us(0x0110), f.ui(0x0002), f.us(0x0700))


def _move_rq(f: _Fields) -> CMoveRQ:
    return CMoveRQ(f.us(0x0110), f.ui(0x0002), f.text(0x0600), f.us(0x0700))


def _get_rsp(f: _Fields) -> CGetRSP:
    return CGetRSP(
        f.us(0x0120),
        f.status(),
        f.ui_opt(0x0002),
        f.us_opt(0x1020),
        f.us_opt(0x1021),
        f.us_opt(0x1022),
        f.us_opt(0x1023),
        f.text_opt(0x0902),
        f.at_opt(0x0901),
    )


def _move_rsp(f: _Fields) -> CMoveRSP:
    return CMoveRSP(
        f.us(0x0120),
        f.status(),
        f.ui_opt(0x0002),
        f.us_opt(0x1020),
        f.us_opt(0x1021),
        f.us_opt(0x1022),
        f.us_opt(0x1023),
        f.text_opt(0x0902),
        f.at_opt(0x0901),
    )


def _cancel_rq(f: _Fields) -> CCancelRQ:
    return CCancelRQ(f.us(0x0120))


_DECODERS: Final[dict[int, tuple[str, Callable[[_Fields], Message]]]] = {
    CommandField.C_STORE_RQ: ("C-STORE-RQ", _store_rq),
    CommandField.C_STORE_RSP: ("C-STORE-RSP", _store_rsp),
    CommandField.C_ECHO_RQ: ("C-ECHO-RQ", _echo_rq),
    CommandField.C_ECHO_RSP: ("C-ECHO-RSP", _echo_rsp),
    CommandField.C_FIND_RQ: ("C-FIND-RQ", _find_rq),
    CommandField.C_FIND_RSP: ("C-FIND-RSP", _find_rsp),
    CommandField.C_GET_RQ: ("C-GET-RQ", _get_rq),
    CommandField.C_GET_RSP: ("C-GET-RSP", _get_rsp),
    CommandField.C_MOVE_RQ: ("C-MOVE-RQ", _move_rq),
    CommandField.C_MOVE_RSP: ("C-MOVE-RSP", _move_rsp),
    CommandField.C_CANCEL_RQ: ("C-CANCEL-RQ", _cancel_rq),
}


def decode_command(data: bytes | bytearray | memoryview) -> tuple[Message, bool]:
    """Decode a command set; return the message and whether a data set follows.

    The (0000,0000) group length is not trusted (the PDV boundaries are what
    delimit the command); every other length is checked against the buffer.
    """
    buf = data if type(data) is bytes else bytes(data)
    n = len(buf)
    pos = 0
    raw: dict[int, bytes] = {}
    while pos < n:
        if pos + 8 > n:
            raise MalformedCommandError(
                f"command set ends inside an element header at offset {pos} ({n - pos} bytes left)"
            )
        group, elem, length = _unpack_hdr(buf, pos)
        if group != 0:
            raise MalformedCommandError(
                f"command set holds ({group:04X},{elem:04X}) at offset {pos}; only group 0000 is allowed"
            )
        pos += 8
        if length & 1:
            raise MalformedCommandError(
                f"{_label(elem)} has an odd or undefined length 0x{length:X}"
            )
        end = pos + length
        if end > n:
            raise MalformedCommandError(
                f"{_label(elem)} claims {length} bytes but only {n - pos} remain"
            )
        raw[elem] = buf[pos:end]
        pos = end
    fields = _Fields(raw, "DIMSE")
    command = fields.us(0x0100)
    entry = _DECODERS.get(command)
    if entry is None:
        raise MalformedCommandError(f"unknown (0000,0100) Command Field 0x{command:04X}")
    fields.what = entry[0]
    msg = entry[1](fields)
    return msg, fields.us(0x0800) != NO_DATASET
