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

import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import (
    Any,
    Final,
    NamedTuple,
    TypeAlias,
    cast,
)

from aiodicom._record import FrozenRecord
from aiodicom._record import FrozenRecordError as FrozenRecordError
from aiodicom._record import replace as replace
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
    "FieldSpec",
    "FrozenRecordError",
    "Message",
    "MessageSpec",
    "SCHEMA",
    "NO_DATASET",
    "DATASET_PRESENT",
    "RESPONSE_TYPES",
    "Priority",
    "decode_command",
    "encode_command",
    "encode_response",
    "error_comment",
    "message_fields",
    "replace",
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


# --- messages -------------------------------------------------------------------
#
# The message classes are records (:mod:`aiodicom._record`: frozen dataclasses to a
# type checker, no code generated at import). What goes on the wire is not here but
# in :data:`SCHEMA`, one table per message.


class _Message(FrozenRecord):
    """A DIMSE message: an immutable record whose ``status`` is always a Status."""

    __slots__ = ()

    def _set(self, values: Sequence[object]) -> None:
        setter = object.__setattr__
        for name, value in zip(self._field_names, values, strict=True):
            # A status is a Status (a code with its meaning), whatever int was given.
            if name == "status" and not isinstance(value, Status):
                value = Status(cast(int, value))
            setter(self, name, value)


class CEchoRQ(_Message):
    """C-ECHO request: is the peer alive and speaking DICOM?"""

    message_id: int
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS


class CEchoRSP(_Message):
    """C-ECHO response."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS


class CStoreRQ(_Message):
    """C-STORE request; the data set to store follows in data PDVs. The Move Originator
    fields are set when the store is a sub-operation of a C-MOVE (PS3.7 9.3.1.1)."""

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None


class CStoreRSP(_Message):
    """C-STORE response. The UIDs are optional in the standard: "" when absent."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None


class CFindRQ(_Message):
    """C-FIND request; the identifier (query keys) follows as a data set."""

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM


class CFindRSP(_Message):
    """C-FIND response; pending responses carry a matching identifier."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None


class CGetRQ(_Message):
    """C-GET request; the identifier follows as a data set."""

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM


class CGetRSP(_Message):
    """C-GET response with the sub-operation counters (None when absent). The Failed
    SOP Instance UID List is not a command element: it travels in the data set."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    remaining_suboperations: int | None = None
    completed_suboperations: int | None = None
    failed_suboperations: int | None = None
    warning_suboperations: int | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None


class CMoveRQ(_Message):
    """C-MOVE request: send the matches to ``move_destination`` (an AE title)."""

    message_id: int
    affected_sop_class_uid: str
    move_destination: str
    priority: int = Priority.MEDIUM


class CMoveRSP(_Message):
    """C-MOVE response with the sub-operation counters (None when absent). The Failed
    SOP Instance UID List is not a command element: it travels in the data set."""

    message_id_being_responded_to: int
    status: Status
    affected_sop_class_uid: str = ""
    remaining_suboperations: int | None = None
    completed_suboperations: int | None = None
    failed_suboperations: int | None = None
    warning_suboperations: int | None = None
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None


class CCancelRQ(_Message):
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

# --- the schema ---------------------------------------------------------------------
#
# Two tables, read by both the encoder and the decoder: the elements of group 0000
# (PS3.7 annex E) with their VR, and for each message the fields of its class, the
# element each is carried in and whether the standard requires it (PS3.7 9.3, tables
# 9.3-1 to 9.3-13: "M" required; "U", "C" and "=" optional, absent as "" for a UID
# and as None for the rest).
# (0000,0100) Command Field and (0000,0800) Command Data Set Type are added to every
# message by the encoder.

#: Group 0000 elements: element number -> (name, VR).
_ELEMENTS: Final[dict[int, tuple[str, str]]] = {
    0x0000: ("Command Group Length", "UL"),
    0x0002: ("Affected SOP Class UID", "UI"),
    0x0100: ("Command Field", "US"),
    0x0110: ("Message ID", "US"),
    0x0120: ("Message ID Being Responded To", "US"),
    0x0600: ("Move Destination", "AE"),
    0x0700: ("Priority", "US"),
    0x0800: ("Command Data Set Type", "US"),
    0x0900: ("Status", "US"),
    0x0901: ("Offending Element", "AT"),
    0x0902: ("Error Comment", "LO"),
    0x1000: ("Affected SOP Instance UID", "UI"),
    0x1020: ("Number of Remaining Sub-operations", "US"),
    0x1021: ("Number of Completed Sub-operations", "US"),
    0x1022: ("Number of Failed Sub-operations", "US"),
    0x1023: ("Number of Warning Sub-operations", "US"),
    0x1030: ("Move Originator Application Entity Title", "AE"),
    0x1031: ("Move Originator Message ID", "US"),
}

REQUIRED: Final = True
OPTIONAL: Final = False


class FieldSpec(NamedTuple):
    """One row of a message's schema: which element carries a field of its class."""

    name: str
    elem: int
    required: bool

    @property
    def vr(self) -> str:
        return _ELEMENTS[self.elem][1]


class MessageSpec(NamedTuple):
    """A message's schema: its Command Field, its name and its fields in class order."""

    command_field: CommandField
    label: str
    fields: tuple[FieldSpec, ...]


_F = FieldSpec
_RQ_ID = _F("message_id", 0x0110, REQUIRED)
_RSP_ID = _F("message_id_being_responded_to", 0x0120, REQUIRED)
_STATUS = _F("status", 0x0900, REQUIRED)
_CLASS = _F("affected_sop_class_uid", 0x0002, REQUIRED)
_CLASS_OPT = _F("affected_sop_class_uid", 0x0002, OPTIONAL)
_PRIORITY = _F("priority", 0x0700, REQUIRED)
_COMMENT = _F("error_comment", 0x0902, OPTIONAL)
_OFFENDING = _F("offending_element", 0x0901, OPTIONAL)
_SUBOPERATIONS = (
    _F("remaining_suboperations", 0x1020, OPTIONAL),
    _F("completed_suboperations", 0x1021, OPTIONAL),
    _F("failed_suboperations", 0x1022, OPTIONAL),
    _F("warning_suboperations", 0x1023, OPTIONAL),
)
_CF = CommandField

#: The schema of every message type, the only description of its wire form.
SCHEMA: Final[dict[type[_Message], MessageSpec]] = {
    CEchoRQ: MessageSpec(_CF.C_ECHO_RQ, "C-ECHO-RQ", (_RQ_ID, _CLASS)),
    CEchoRSP: MessageSpec(_CF.C_ECHO_RSP, "C-ECHO-RSP", (_RSP_ID, _STATUS, _CLASS_OPT)),
    CStoreRQ: MessageSpec(
        _CF.C_STORE_RQ,
        "C-STORE-RQ",
        (
            _RQ_ID,
            _CLASS,
            _F("affected_sop_instance_uid", 0x1000, REQUIRED),
            _PRIORITY,
            _F("move_originator_ae_title", 0x1030, OPTIONAL),
            _F("move_originator_message_id", 0x1031, OPTIONAL),
        ),
    ),
    CStoreRSP: MessageSpec(
        _CF.C_STORE_RSP,
        "C-STORE-RSP",
        (
            _RSP_ID,
            _STATUS,
            _CLASS_OPT,
            _F("affected_sop_instance_uid", 0x1000, OPTIONAL),
            _COMMENT,
            _OFFENDING,
        ),
    ),
    CFindRQ: MessageSpec(_CF.C_FIND_RQ, "C-FIND-RQ", (_RQ_ID, _CLASS, _PRIORITY)),
    CFindRSP: MessageSpec(
        _CF.C_FIND_RSP, "C-FIND-RSP", (_RSP_ID, _STATUS, _CLASS_OPT, _COMMENT, _OFFENDING)
    ),
    CGetRQ: MessageSpec(_CF.C_GET_RQ, "C-GET-RQ", (_RQ_ID, _CLASS, _PRIORITY)),
    CGetRSP: MessageSpec(
        _CF.C_GET_RSP,
        "C-GET-RSP",
        (_RSP_ID, _STATUS, _CLASS_OPT, *_SUBOPERATIONS, _COMMENT, _OFFENDING),
    ),
    CMoveRQ: MessageSpec(
        _CF.C_MOVE_RQ,
        "C-MOVE-RQ",
        (_RQ_ID, _CLASS, _F("move_destination", 0x0600, REQUIRED), _PRIORITY),
    ),
    CMoveRSP: MessageSpec(
        _CF.C_MOVE_RSP,
        "C-MOVE-RSP",
        (_RSP_ID, _STATUS, _CLASS_OPT, *_SUBOPERATIONS, _COMMENT, _OFFENDING),
    ),
    CCancelRQ: MessageSpec(_CF.C_CANCEL_RQ, "C-CANCEL-RQ", (_RSP_ID,)),
}


def message_fields(message_type: type[_Message]) -> tuple[str, ...]:
    """The field names of a message class, in constructor order."""
    return message_type._field_names


def _label(elem: int) -> str:
    entry = _ELEMENTS.get(elem)
    return f"(0000,{elem:04X}) {entry[0] if entry else 'element'}"


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


def _lo(elem: int, value: str) -> bytes:
    return _text(elem, value, 64)


#: How group 0000 encodes each VR it uses (its own implicit-VR coder, not a VR fact).
_ENCODERS: Final[dict[str, Callable[[int, Any], bytes]]] = {
    "US": _us,
    "UI": _ui,
    "AE": _ae,
    "LO": _lo,
    "AT": _at,
}

#: The fixed elements every command carries, as pseudo-field indexes of a plan.
_COMMAND_FIELD: Final = -1
_DATA_SET_TYPE: Final = -2


class _Plan(NamedTuple):
    """A message's schema compiled for encoding: rows in ascending element order."""

    command_field: bytes
    #: (field index or a fixed element, encoder, required, the absent value, element)
    rows: tuple[tuple[int, Callable[[int, Any], bytes], bool, object, int], ...]


#: The value of an optional field that is not sent ("" for a UID, None for the rest).
_ABSENT: Final[dict[str, object]] = {"UI": ""}


def _plan(spec: MessageSpec) -> _Plan:
    rows = [
        (f.elem, i, _ENCODERS[f.vr], f.required, _ABSENT.get(f.vr))
        for i, f in enumerate(spec.fields)
    ]
    rows += [(0x0100, _COMMAND_FIELD, _us, True, None), (0x0800, _DATA_SET_TYPE, _us, True, None)]
    # PS3.5 7.1 requires ascending tag order.
    rows.sort(key=lambda row: row[0])
    return _Plan(
        _pack_us(0, 0x0100, 2, spec.command_field),
        tuple((index, enc, req, absent, elem) for elem, index, enc, req, absent in rows),
    )


_PLANS: Final = {message_type: _plan(spec) for message_type, spec in SCHEMA.items()}
_DST_PRESENT: Final = _pack_us(0, 0x0800, 2, DATASET_PRESENT)
_DST_NONE: Final = _pack_us(0, 0x0800, 2, NO_DATASET)


def encode_command(msg: Message, *, has_dataset: bool) -> bytes:
    """Encode ``msg`` as a command set, (0000,0000) group length first.

    ``has_dataset`` sets (0000,0800) Command Data Set Type: the peer reads a
    data set after the command exactly when it says so, so it is explicit here
    rather than guessed from the message type. Values that cannot be encoded
    (a message ID above 65535, a non-ASCII UID, ...) raise
    :class:`~aiodicom.errors.MalformedCommandError`. Optional fields are left out
    when absent (None, or "" for a UID).
    """
    plan = _PLANS.get(type(msg))
    if plan is None:
        raise MalformedCommandError(f"cannot encode {type(msg).__name__} as a DIMSE command")
    values = msg._values()
    fixed = {_COMMAND_FIELD: plan.command_field, _DATA_SET_TYPE: _DST_PRESENT if has_dataset else _DST_NONE}
    parts: list[bytes] = []
    for index, encode, required, absent, elem in plan.rows:
        if index < 0:
            parts.append(fixed[index])
            continue
        value = values[index]
        if required or value != absent:
            parts.append(encode(elem, value))
    body = b"".join(parts)
    return _pack_ul_elem(0, 0, 4, len(body)) + body


def error_comment(text: str) -> str:
    """``text`` made fit for (0000,0902) Error Comment: printable ASCII, at most 64 characters."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text)
    return cleaned if len(cleaned) <= 64 else cleaned[:61] + "..."


#: The message types that answer a request (they carry a status).
RESPONSE_TYPES: Final = (CEchoRSP, CStoreRSP, CFindRSP, CGetRSP, CMoveRSP)


#: (0000,0100) C-STORE-RSP, (0000,0120) Message ID Being Responded To, (0000,0800) no data
#: set, (0000,0900) Status: the middle of every C-STORE-RSP, in ascending element order.
_pack_store_rsp_middle = struct.Struct("<HHIH HHIH HHIH HHIH").pack
#: Encoded (0000,0002) Affected SOP Class UID by UID: a receiver answers a handful of
#: classes, so each is encoded once; bounded, since the UIDs come from the network.
_STORE_RSP_CLASSES: Final[dict[str, bytes]] = {}
_STORE_RSP_CLASSES_MAX: Final = 256


def _encode_store_rsp(msg: CStoreRSP) -> bytes | None:
    """The C-STORE-RSP of every stored image, without the schema walk of :func:`encode_command`.

    Only the plain response (no Error Comment, no Offending Element) is done here;
    ``None`` hands anything else, or any value that does not encode, to the general
    path, which also names what is wrong. The bytes are those of the general path.
    """
    if msg.error_comment is not None or msg.offending_element is not None:
        return None
    sop_class = msg.affected_sop_class_uid
    head = _STORE_RSP_CLASSES.get(sop_class)
    try:
        if head is None:
            head = _ui(0x0002, sop_class) if sop_class else b""
            if len(_STORE_RSP_CLASSES) < _STORE_RSP_CLASSES_MAX:
                _STORE_RSP_CLASSES[sop_class] = head
        uid = msg.affected_sop_instance_uid
        body = (
            head
            + _pack_store_rsp_middle(
                0, 0x0100, 2, CommandField.C_STORE_RSP,
                0, 0x0120, 2, msg.message_id_being_responded_to,
                0, 0x0800, 2, NO_DATASET,
                0, 0x0900, 2, msg.status,
            )  # fmt: skip
            + (_ui(0x1000, uid) if uid else b"")
        )
    except (MalformedCommandError, struct.error):
        return None
    return _pack_ul_elem(0, 0, 4, len(body)) + body


def encode_response(msg: Message) -> bytes:
    """Encode a response built from a peer's request, whatever that request carried.

    A response echoes the request's SOP Class and Instance UIDs, and those came
    from the network: one longer than 64 characters (or otherwise unencodable)
    is left out, since both are optional in every response (PS3.7 9.3, "U" or
    "="), and an Error Comment is cut to what its VR holds. So a hostile
    request gets its failure answered instead of making the answer raise.
    """
    if type(msg) is CStoreRSP:
        encoded = _encode_store_rsp(msg)
        if encoded is not None:
            return encoded
    try:
        return encode_command(msg, has_dataset=False)
    except MalformedCommandError:
        if not isinstance(msg, RESPONSE_TYPES):
            raise
    changes: dict[str, object] = {}
    for field in SCHEMA[type(msg)].fields:
        if field.vr == "UI" and not field.required:
            try:
                _ui(field.elem, getattr(msg, field.name))
            except MalformedCommandError:
                changes[field.name] = ""
    comment = getattr(msg, "error_comment", None)
    if comment is not None:
        changes["error_comment"] = error_comment(comment)
    return encode_command(replace(msg, **changes), has_dataset=False)


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

    def status(self, elem: int = 0x0900) -> Status:
        """The status, carrying the peer's Error Comment (0000,0902) when it sent one."""
        return Status(self.us(elem), error_comment=self.text_opt(0x0902))


#: How group 0000 decodes each VR it uses: (reader when required, reader when optional).
_READERS: Final[dict[str, tuple[Callable[[_Fields, int], object], Callable[[_Fields, int], object]]]] = {
    "US": (_Fields.us, _Fields.us_opt),
    "UI": (_Fields.ui, _Fields.ui_opt),
    "AE": (_Fields.text, _Fields.text_opt),
    "LO": (_Fields.text, _Fields.text_opt),
    "AT": (_Fields.at_opt, _Fields.at_opt),
}
#: Elements read by a reader of their own: the status carries the peer's Error Comment.
_SPECIAL_READERS: Final[dict[int, Callable[[_Fields, int], object]]] = {0x0900: _Fields.status}


class _Decoder(NamedTuple):
    label: str
    message_type: type[_Message]
    readers: tuple[tuple[Callable[[_Fields, int], object], int], ...]


def _decoder(message_type: type[_Message], spec: MessageSpec) -> _Decoder:
    readers = tuple(
        (_SPECIAL_READERS.get(f.elem) or _READERS[f.vr][0 if f.required else 1], f.elem)
        for f in spec.fields
    )
    return _Decoder(spec.label, message_type, readers)


_DECODERS: Final[dict[int, _Decoder]] = {spec.command_field: _decoder(t, spec) for t, spec in SCHEMA.items()}


def _group_end(raw: Mapping[int, bytes]) -> int | None:
    """Where group 0000 ends by its own (0000,0000) group length, if it came first."""
    length = raw.get(0x0000)
    if length is None or len(length) != 4:
        return None
    return 12 + int.from_bytes(length, "little")


def decode_command(data: bytes | bytearray | memoryview) -> tuple[Message, bool]:
    """Decode a command set; return the message and whether a data set follows.

    The (0000,0000) group length is not trusted (the PDV boundaries are what
    delimit the command); every other length is checked against the buffer.
    One exception, for responses only: elements of another group right where the group
    length says group 0000 ends are ignored. Orthanc (1.10) sends the Failed SOP
    Instance UID List of a cancelled C-GET that way, inside the command PDV; aborting
    for it would take a usable association down. A request stays strict.
    """
    buf = data if type(data) is bytes else bytes(data)
    n = len(buf)
    pos = 0
    raw: dict[int, bytes] = {}
    trailing: str | None = None
    while pos < n:
        if pos + 8 > n:
            raise MalformedCommandError(
                f"command set ends inside an element header at offset {pos} ({n - pos} bytes left)"
            )
        group, elem, length = _unpack_hdr(buf, pos)
        if group != 0:
            trailing = f"command set holds ({group:04X},{elem:04X}) at offset {pos}; only group 0000 is allowed"
            if pos != _group_end(raw):
                raise MalformedCommandError(trailing)
            break
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
    decoder = _DECODERS.get(command)
    if decoder is None:
        raise MalformedCommandError(f"unknown (0000,0100) Command Field 0x{command:04X}")
    if trailing is not None and not issubclass(decoder.message_type, RESPONSE_TYPES):
        raise MalformedCommandError(trailing)
    fields.what = decoder.label
    values = [read(fields, elem) for read, elem in decoder.readers]
    msg = cast(Message, decoder.message_type._from_values(values))
    return msg, fields.us(0x0800) != NO_DATASET
