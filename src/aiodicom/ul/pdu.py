"""PS3.8 section 9.3: the seven PDU types and their items, encoded and decoded.

Pure functions over bytes. Decoding never trusts a length field: every length
is checked against the bytes actually present before it is used, so a hostile
peer can make us raise :class:`~aiodicom.errors.ProtocolError` (which the state
machine turns into the right A-ABORT) but never make us allocate or loop.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from typing import Any

from aiodicom._record import Record, field
from aiodicom.codec.ae import AE_TITLE_LENGTH, normalize_ae_title
from aiodicom.errors import AssociationError, PDUTooLargeError, ProtocolError
from aiodicom.errors import describe_rejection as describe_rejection  # re-exported

# A-ABORT reasons (PS3.8 table 9-26), used as ProtocolError.abort_reason.
REASON_NOT_SPECIFIED = 0
REASON_UNRECOGNIZED_PDU = 1
REASON_UNEXPECTED_PDU = 2
REASON_UNRECOGNIZED_PARAMETER = 4
REASON_UNEXPECTED_PARAMETER = 5
REASON_INVALID_PARAMETER = 6

#: The largest PDU body we ever read, whatever we announced (we are lenient
#: with peers that exceed our maximum, up to this).
HARD_PDU_CAP = 64 * 1024 * 1024

#: The cap until an association is established. An A-ASSOCIATE-RQ/AC is a few
#: kilobytes; a peer that has not associated must not make us reserve megabytes
#: per connection just by announcing a large PDU (memory exhaustion by many
#: idle connections).
ASSOCIATE_PDU_CAP = 1024 * 1024

HEADER = struct.Struct(">BxI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ITEM_HEADER = struct.Struct(">BxH")
_PDV_HEADER = struct.Struct(">IBB")


class PDUType(IntEnum):
    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


class ItemType(IntEnum):
    """Item and sub-item types of the A-ASSOCIATE PDUs (PS3.8 9.3.2-9.3.3, PS3.7 annex D)."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNC_OPERATIONS_WINDOW = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED = 0x56
    SOP_CLASS_COMMON_EXTENDED = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


_I = ItemType


class ContextResult(IntEnum):
    """Presentation context result/reason (PS3.8 table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class AbortSource(IntEnum):
    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


# A-ASSOCIATE-RJ result, source and reasons (PS3.8 table 9-21).
RJ_PERMANENT = 1
RJ_TRANSIENT = 2
RJ_SOURCE_USER = 1
RJ_SOURCE_ACSE = 2
RJ_SOURCE_PRESENTATION = 3
RJ_USER_NO_REASON = 1
RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED = 2
RJ_USER_CALLING_AE_NOT_RECOGNIZED = 3
RJ_USER_CALLED_AE_NOT_RECOGNIZED = 7
RJ_ACSE_NO_REASON = 1
RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED = 2
RJ_PRESENTATION_TEMPORARY_CONGESTION = 1
RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED = 2


# --- items ---------------------------------------------------------------------


class PresentationContextRQ(Record):
    id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


class PresentationContextAC(Record):
    id: int
    result: int
    transfer_syntax: str = ""


class RoleSelection(Record):
    sop_class_uid: str
    scu_role: bool
    scp_role: bool


class UserIdentityRQ(Record):
    """PS3.7 D.3.3.7: 1 username, 2 username+passcode, 3 Kerberos, 4 SAML, 5 JWT."""

    identity_type: int
    positive_response_requested: bool
    primary: bytes
    secondary: bytes = b""


class UserIdentityAC(Record):
    server_response: bytes


class SOPClassExtendedNegotiation(Record):
    sop_class_uid: str
    application_information: bytes


class SOPClassCommonExtendedNegotiation(Record):
    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: list[str] = field(default_factory=list)


class UserInformation(Record):
    max_pdu_length: int | None = None
    implementation_class_uid: str = ""
    implementation_version_name: str | None = None
    #: (maximum operations invoked, maximum operations performed); 0 = unlimited.
    async_ops_window: tuple[int, int] | None = None
    role_selections: list[RoleSelection] = field(default_factory=list)
    user_identity_rq: UserIdentityRQ | None = None
    user_identity_ac: UserIdentityAC | None = None
    sop_class_extended: list[SOPClassExtendedNegotiation] = field(default_factory=list)
    sop_class_common_extended: list[SOPClassCommonExtendedNegotiation] = field(
        default_factory=list
    )
    #: Sub-items we do not know, kept so they are not silently lost: (type, value).
    unknown: list[tuple[int, bytes]] = field(default_factory=list)


# --- PDUs ------------------------------------------------------------------------


class AssociateRQ(Record):
    called_ae: str
    calling_ae: str
    presentation_contexts: list[PresentationContextRQ]
    user_information: UserInformation
    application_context: str = "1.2.840.10008.3.1.1.1"
    protocol_version: int = 1


class AssociateAC(Record):
    called_ae: str
    calling_ae: str
    presentation_contexts: list[PresentationContextAC]
    user_information: UserInformation
    application_context: str = "1.2.840.10008.3.1.1.1"
    protocol_version: int = 1


class AssociateRJ(Record):
    result: int
    source: int
    reason: int


class PDV(Record):
    """One presentation data value: a command or data set fragment."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | bytearray | memoryview


class PDataTF(Record):
    pdvs: list[PDV]


class ReleaseRQ(Record):
    pass


class ReleaseRP(Record):
    pass


class Abort(Record):
    source: int = AbortSource.SERVICE_USER
    reason: int = REASON_NOT_SPECIFIED


PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | ReleaseRQ | ReleaseRP | Abort


# --- encoding ---------------------------------------------------------------------


def _ae(title: str, what: str) -> bytes:
    """A 16-byte AE title field. An invalid title raises instead of being cut or
    mangled: a cut title names another AE (and `require_called_ae` with a long
    title rejected every peer)."""
    return normalize_ae_title(title, what).encode("ascii").ljust(AE_TITLE_LENGTH, b" ")


def _uid(uid: str) -> bytes:
    # PS3.8 9.3.2.2: UIDs in items are not padded (a trailing NUL is tolerated on read).
    return uid.encode("ascii")


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} value too long ({len(value)} bytes)")
    return _ITEM_HEADER.pack(item_type, len(value)) + value


def _uid_with_length(uid: str) -> bytes:
    raw = _uid(uid)
    return _U16.pack(len(raw)) + raw


def _encode_user_information(info: UserInformation) -> bytes:
    parts: list[bytes] = []
    if info.max_pdu_length is not None:
        parts.append(_item(_I.MAXIMUM_LENGTH, _U32.pack(info.max_pdu_length)))
    parts.append(_item(_I.IMPLEMENTATION_CLASS_UID, _uid(info.implementation_class_uid)))
    if info.async_ops_window is not None:
        invoked, performed = info.async_ops_window
        parts.append(_item(_I.ASYNC_OPERATIONS_WINDOW, struct.pack(">HH", invoked, performed)))
    for role in info.role_selections:
        parts.append(
            _item(
                _I.ROLE_SELECTION,
                _uid_with_length(role.sop_class_uid)
                + bytes((int(role.scu_role), int(role.scp_role))),
            )
        )
    if info.implementation_version_name is not None:
        parts.append(_item(_I.IMPLEMENTATION_VERSION_NAME, info.implementation_version_name.encode("ascii")[:16]))
    for ext in info.sop_class_extended:
        parts.append(_item(_I.SOP_CLASS_EXTENDED, _uid_with_length(ext.sop_class_uid) + ext.application_information))
    for common in info.sop_class_common_extended:
        related = b"".join(_uid_with_length(uid) for uid in common.related_general_sop_classes)
        parts.append(
            _item(
                _I.SOP_CLASS_COMMON_EXTENDED,
                _uid_with_length(common.sop_class_uid)
                + _uid_with_length(common.service_class_uid)
                + _U16.pack(len(related))
                + related,
            )
        )
    if info.user_identity_rq is not None:
        ident = info.user_identity_rq
        parts.append(
            _item(
                _I.USER_IDENTITY_RQ,
                bytes((ident.identity_type, int(ident.positive_response_requested)))
                + _U16.pack(len(ident.primary))
                + ident.primary
                + _U16.pack(len(ident.secondary))
                + ident.secondary,
            )
        )
    if info.user_identity_ac is not None:
        response = info.user_identity_ac.server_response
        parts.append(_item(_I.USER_IDENTITY_AC, _U16.pack(len(response)) + response))
    for item_type, value in info.unknown:
        parts.append(_item(item_type, value))
    return _item(_I.USER_INFORMATION, b"".join(parts))


def _answer_item(context_id: int, result: int, transfer_syntax: str) -> bytes:
    """One presentation context item of an A-ASSOCIATE-AC.

    An acceptor gives the same few hundred answers again and again, so each is
    encoded once (a syntax longer than a UID, which only ``accept_any`` echoes back,
    is not kept: the cache stays small whatever peers propose).
    """
    if len(transfer_syntax) <= 64:
        return _cached_answer_item(context_id, result, transfer_syntax)
    return _encode_answer_item(context_id, result, transfer_syntax)


def _encode_answer_item(context_id: int, result: int, transfer_syntax: str) -> bytes:
    sub = _item(_I.TRANSFER_SYNTAX, _uid(transfer_syntax)) if transfer_syntax else b""
    return _item(_I.PRESENTATION_CONTEXT_AC, bytes((context_id, 0, result, 0)) + sub)


_cached_answer_item = functools.lru_cache(maxsize=4096)(_encode_answer_item)


def _encode_associate(pdu: AssociateRQ | AssociateAC) -> bytes:
    items = [_item(_I.APPLICATION_CONTEXT, _uid(pdu.application_context))]
    if isinstance(pdu, AssociateRQ):
        for rq in pdu.presentation_contexts:
            sub = _item(_I.ABSTRACT_SYNTAX, _uid(rq.abstract_syntax)) + b"".join(
                _item(_I.TRANSFER_SYNTAX, _uid(ts)) for ts in rq.transfer_syntaxes
            )
            items.append(_item(_I.PRESENTATION_CONTEXT_RQ, bytes((rq.id, 0, 0, 0)) + sub))
        pdu_type = PDUType.ASSOCIATE_RQ
    else:
        items += [_answer_item(ac.id, ac.result, ac.transfer_syntax) for ac in pdu.presentation_contexts]
        pdu_type = PDUType.ASSOCIATE_AC
    items.append(_encode_user_information(pdu.user_information))
    body = (
        _U16.pack(pdu.protocol_version)
        + b"\x00\x00"
        + _ae(pdu.called_ae, "called AE title")
        + _ae(pdu.calling_ae, "calling AE title")
        + bytes(32)
        + b"".join(items)
    )
    return HEADER.pack(pdu_type, len(body)) + body


def _encode_pdata_pdu(pdu: PDataTF) -> bytes:
    return b"".join(bytes(part) for part in encode_pdata(pdu.pdvs))


def _encode_rj(pdu: AssociateRJ) -> bytes:
    return HEADER.pack(PDUType.ASSOCIATE_RJ, 4) + bytes((0, pdu.result, pdu.source, pdu.reason))


def _encode_release_rq(pdu: ReleaseRQ) -> bytes:
    return HEADER.pack(PDUType.RELEASE_RQ, 4) + bytes(4)


def _encode_release_rp(pdu: ReleaseRP) -> bytes:
    return HEADER.pack(PDUType.RELEASE_RP, 4) + bytes(4)


def _encode_abort(pdu: Abort) -> bytes:
    return HEADER.pack(PDUType.ABORT, 4) + bytes((0, 0, pdu.source, pdu.reason))


#: PDU class -> its encoder.
_PDU_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    PDataTF: _encode_pdata_pdu,
    AssociateRQ: _encode_associate,
    AssociateAC: _encode_associate,
    AssociateRJ: _encode_rj,
    ReleaseRQ: _encode_release_rq,
    ReleaseRP: _encode_release_rp,
    Abort: _encode_abort,
}


def encode(pdu: PDU) -> bytes:
    """Encode any PDU to its bytes on the wire (header included)."""
    encoder = _PDU_ENCODERS.get(type(pdu))
    if encoder is None:
        raise TypeError(f"not a PDU: {pdu!r}")
    return encoder(pdu)


def encode_pdata(pdvs: Sequence[PDV]) -> list[bytes | bytearray | memoryview]:
    """Encode a P-DATA-TF PDU as a list of buffers, so PDV payloads are never copied."""
    parts: list[bytes | bytearray | memoryview] = [b""]
    total = 0
    for pdv in pdvs:
        n = len(pdv.data)
        control = (1 if pdv.is_command else 0) | (2 if pdv.is_last else 0)
        parts.append(_PDV_HEADER.pack(n + 2, pdv.context_id, control))
        parts.append(pdv.data)
        total += 6 + n
    parts[0] = HEADER.pack(PDUType.P_DATA_TF, total)
    return parts


def fragment(
    context_id: int,
    is_command: bool,
    data: bytes | bytearray | memoryview,
    max_pdu_length: int,
    *,
    final: bool = True,
) -> Iterator[list[bytes | bytearray | memoryview]]:
    """Split one message part into P-DATA-TF PDUs that respect the peer's maximum.

    ``max_pdu_length`` is the peer's announced maximum (0 = unlimited). Each
    yielded PDU carries one PDV and is a list of buffers (header, payload view).
    With ``final=False`` no fragment is marked last: more of the same data set
    follows (streaming a large data set in chunks).
    """
    parts = fragment_buffers(context_id, is_command, data, max_pdu_length, final=final)
    for index in range(0, len(parts), 2):
        yield parts[index : index + 2]


def fragment_buffers(
    context_id: int,
    is_command: bool,
    data: bytes | bytearray | memoryview,
    max_pdu_length: int,
    *,
    final: bool = True,
) -> list[bytes | bytearray | memoryview]:
    """:func:`fragment` flattened: ``[header, payload, header, payload, ...]``.

    The hot path of sending: every full-size fragment shares one header, so a
    data set costs one slice per PDU and no per-PDU packing.
    """
    view = memoryview(data)
    total = len(view)
    # Unlimited: one PDV (at least 1 so that empty data still yields one, empty, PDV).
    chunk = max(total, 1) if max_pdu_length == 0 else max_pdu_length - 6
    if chunk <= 0:
        raise ValueError(f"maximum PDU length {max_pdu_length} leaves no room for data")
    control = 1 if is_command else 0
    full_header = HEADER.pack(PDUType.P_DATA_TF, chunk + 6) + _PDV_HEADER.pack(chunk + 2, context_id, control)
    parts: list[bytes | bytearray | memoryview] = []
    last_start = ((total - 1) // chunk) * chunk if total else 0
    for offset in range(0, last_start, chunk):
        parts.append(full_header)
        parts.append(view[offset : offset + chunk])
    n = total - last_start
    parts.append(
        HEADER.pack(PDUType.P_DATA_TF, n + 6)
        + _PDV_HEADER.pack(n + 2, context_id, control | (2 if final else 0))
    )
    parts.append(view[last_start:])
    return parts


def streamed_buffers(
    context_id: int,
    command: bytes,
    read_chunk: Callable[[int], bytes],
    length: int,
    max_pdu_length: int,
    chunk_size: int = 4 * 1024 * 1024,
) -> Iterator[list[bytes | bytearray | memoryview]]:
    """A message whose data set of ``length`` bytes is read in chunks (large files):
    one list of PDU buffers per chunk, the command's PDUs in the first, so the sender
    holds one chunk at a time whichever way it writes them."""
    pending = fragment_buffers(context_id, True, command, max_pdu_length)
    remaining = length
    while True:
        take = min(chunk_size, remaining)
        chunk = read_chunk(take)
        if len(chunk) != take:
            raise AssociationError(f"data set source ended {remaining - len(chunk)} bytes early")
        remaining -= take
        pending += fragment_buffers(context_id, False, chunk, max_pdu_length, final=remaining == 0)
        yield pending
        if remaining == 0:
            return
        pending = []


# --- decoding ---------------------------------------------------------------------


def parse_header(header: bytes | bytearray | memoryview, cap: int = HARD_PDU_CAP) -> tuple[int, int]:
    """Validate a 6-byte PDU header before any body byte is read or allocated.

    Returns ``(pdu_type, body_length)``.
    """
    pdu_type, length = HEADER.unpack_from(header)
    if pdu_type not in _KNOWN_TYPES:
        raise ProtocolError(f"unrecognized PDU type 0x{pdu_type:02X}", REASON_UNRECOGNIZED_PDU)
    if length > cap:
        raise PDUTooLargeError(
            f"PDU of type 0x{pdu_type:02X} announces {length} bytes, above the cap of {cap}",
            REASON_INVALID_PARAMETER,
        )
    if pdu_type in _FIXED_LENGTH and length != 4:
        # Be lenient with longer fixed PDUs only within reason: the standard says 4.
        if length < 4 or length > 64:
            raise ProtocolError(
                f"PDU type 0x{pdu_type:02X} has length {length}, expected 4",
                REASON_INVALID_PARAMETER,
            )
    if pdu_type == PDUType.ASSOCIATE_RQ or pdu_type == PDUType.ASSOCIATE_AC:
        if length < 68:
            raise ProtocolError("A-ASSOCIATE PDU shorter than its fixed fields", REASON_INVALID_PARAMETER)
    return pdu_type, length


_KNOWN_TYPES = frozenset(int(t) for t in PDUType)
_FIXED_LENGTH = frozenset(
    (PDUType.ASSOCIATE_RJ, PDUType.RELEASE_RQ, PDUType.RELEASE_RP, PDUType.ABORT)
)


def _text(raw: bytes | memoryview, what: str) -> str:
    try:
        return bytes(raw).decode("ascii").rstrip("\0 ").lstrip(" ")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not ASCII", REASON_INVALID_PARAMETER) from None


def _ae_field(raw: memoryview) -> str:
    """An AE title field as received, insignificant spaces (and NUL padding) removed.

    Not validated here and never an abort: the field is always exactly 16 bytes,
    and an odd title is the acceptor's to refuse with the right A-ASSOCIATE-RJ
    reason (3 or 7, see :mod:`aiodicom.ul.negotiation`), while a requestor does
    not test the titles an A-ASSOCIATE-AC echoes (PS3.8 9.3.3). Latin-1 keeps
    every byte as one character, so a validator sees exactly what was sent.
    """
    return bytes(raw).decode("latin-1").rstrip("\0 ").lstrip(" ")


def _iter_items(body: memoryview, what: str) -> Iterator[tuple[int, memoryview]]:
    offset = 0
    end = len(body)
    while offset < end:
        if end - offset < 4:
            raise ProtocolError(f"truncated item header in {what}", REASON_INVALID_PARAMETER)
        item_type, length = _ITEM_HEADER.unpack_from(body, offset)
        offset += 4
        if offset + length > end:
            raise ProtocolError(
                f"item 0x{item_type:02X} in {what} claims {length} bytes, only {end - offset} left",
                REASON_INVALID_PARAMETER,
            )
        yield item_type, body[offset : offset + length]
        offset += length


def _read_uid_with_length(value: memoryview, offset: int, what: str) -> tuple[str, int]:
    if offset + 2 > len(value):
        raise ProtocolError(f"truncated {what}", REASON_INVALID_PARAMETER)
    (n,) = _U16.unpack_from(value, offset)
    offset += 2
    if offset + n > len(value):
        raise ProtocolError(f"{what} UID length {n} exceeds its item", REASON_INVALID_PARAMETER)
    return _text(value[offset : offset + n], what), offset + n


def _read_maximum_length(info: UserInformation, value: memoryview) -> None:
    if len(value) != 4:
        raise ProtocolError("maximum length sub-item must be 4 bytes", REASON_INVALID_PARAMETER)
    (info.max_pdu_length,) = _U32.unpack_from(value)
    if 0 < info.max_pdu_length <= 6:
        # Not even one byte of PDV data would fit: a peer announcing this could
        # never be sent anything, so refuse it here rather than fail later.
        raise ProtocolError(
            f"maximum length {info.max_pdu_length} leaves no room for data",
            REASON_INVALID_PARAMETER,
        )


def _read_implementation_class(info: UserInformation, value: memoryview) -> None:
    info.implementation_class_uid = _text(value, "implementation class UID")


def _read_async_window(info: UserInformation, value: memoryview) -> None:
    if len(value) != 4:
        raise ProtocolError("asynchronous operations window must be 4 bytes", REASON_INVALID_PARAMETER)
    invoked, performed = struct.unpack_from(">HH", value)
    info.async_ops_window = (invoked, performed)


def _read_role_selection(info: UserInformation, value: memoryview) -> None:
    uid, offset = _read_uid_with_length(value, 0, "role selection")
    if offset + 2 != len(value):
        raise ProtocolError("role selection sub-item has a bad length", REASON_INVALID_PARAMETER)
    info.role_selections.append(RoleSelection(uid, bool(value[offset]), bool(value[offset + 1])))


def _read_implementation_version(info: UserInformation, value: memoryview) -> None:
    info.implementation_version_name = _text(value, "implementation version name")


def _read_extended(info: UserInformation, value: memoryview) -> None:
    uid, offset = _read_uid_with_length(value, 0, "SOP class extended negotiation")
    info.sop_class_extended.append(SOPClassExtendedNegotiation(uid, bytes(value[offset:])))


def _read_common_extended(info: UserInformation, value: memoryview) -> None:
    uid, offset = _read_uid_with_length(value, 0, "SOP class common extended negotiation")
    service, offset = _read_uid_with_length(value, offset, "service class")
    if offset + 2 > len(value):
        raise ProtocolError("truncated common extended negotiation", REASON_INVALID_PARAMETER)
    (n,) = _U16.unpack_from(value, offset)
    offset += 2
    if offset + n != len(value):
        raise ProtocolError("related SOP class list has a bad length", REASON_INVALID_PARAMETER)
    related = []
    while offset < len(value):
        rel, offset = _read_uid_with_length(value, offset, "related general SOP class")
        related.append(rel)
    info.sop_class_common_extended.append(SOPClassCommonExtendedNegotiation(uid, service, related))


def _read_user_identity_rq(info: UserInformation, value: memoryview) -> None:
    if len(value) < 6:
        raise ProtocolError("truncated user identity", REASON_INVALID_PARAMETER)
    identity_type, wants_response = value[0], value[1]
    (n,) = _U16.unpack_from(value, 2)
    if 4 + n + 2 > len(value):
        raise ProtocolError("user identity primary field overruns", REASON_INVALID_PARAMETER)
    primary = bytes(value[4 : 4 + n])
    (m,) = _U16.unpack_from(value, 4 + n)
    if 6 + n + m != len(value):
        raise ProtocolError("user identity secondary field has a bad length", REASON_INVALID_PARAMETER)
    secondary = bytes(value[6 + n : 6 + n + m])
    info.user_identity_rq = UserIdentityRQ(identity_type, bool(wants_response), primary, secondary)


def _read_user_identity_ac(info: UserInformation, value: memoryview) -> None:
    if len(value) < 2:
        raise ProtocolError("truncated user identity response", REASON_INVALID_PARAMETER)
    (n,) = _U16.unpack_from(value)
    if 2 + n != len(value):
        raise ProtocolError("user identity response has a bad length", REASON_INVALID_PARAMETER)
    info.user_identity_ac = UserIdentityAC(bytes(value[2:]))


#: User information sub-items: type -> (at most one per PDU, decoder). Types not
#: here are kept in ``UserInformation.unknown``.
_USER_SUB_ITEMS: dict[int, tuple[bool, Callable[[UserInformation, memoryview], None]]] = {
    _I.MAXIMUM_LENGTH: (True, _read_maximum_length),
    _I.IMPLEMENTATION_CLASS_UID: (True, _read_implementation_class),
    _I.ASYNC_OPERATIONS_WINDOW: (True, _read_async_window),
    _I.ROLE_SELECTION: (False, _read_role_selection),
    _I.IMPLEMENTATION_VERSION_NAME: (True, _read_implementation_version),
    _I.SOP_CLASS_EXTENDED: (False, _read_extended),
    _I.SOP_CLASS_COMMON_EXTENDED: (False, _read_common_extended),
    _I.USER_IDENTITY_RQ: (True, _read_user_identity_rq),
    _I.USER_IDENTITY_AC: (True, _read_user_identity_ac),
}


def _decode_user_information(body: memoryview) -> UserInformation:
    info = UserInformation()
    seen: set[int] = set()
    for item_type, value in _iter_items(body, "user information"):
        entry = _USER_SUB_ITEMS.get(item_type)
        if entry is None:
            info.unknown.append((item_type, bytes(value)))
            continue
        single, read = entry
        if single and item_type in seen:
            raise ProtocolError(
                f"duplicate user information sub-item 0x{item_type:02X}", REASON_UNEXPECTED_PARAMETER
            )
        seen.add(item_type)
        read(info, value)
    if _I.IMPLEMENTATION_CLASS_UID not in seen:
        raise ProtocolError("user information lacks the implementation class UID", REASON_INVALID_PARAMETER)
    return info


#: Sub-items of proposed presentation contexts -> (abstract syntax, transfer syntaxes).
#: A requestor proposes the same contexts on every association (storescu: 120 or
#: more each time), so each is parsed and checked once, not once per association.
_PROPOSED_CACHE: dict[bytes, tuple[str, tuple[str, ...]]] = {}
#: Entries and key size kept: a peer that varies its proposals costs a parse each, and
#: this cache never more than about 2 MB.
_PROPOSED_CACHE_ENTRIES = 4096
_PROPOSED_CACHE_KEY = 512


def _proposed_syntaxes(sub_items: memoryview, context_id: int) -> tuple[str, tuple[str, ...]]:
    """A proposed context's abstract syntax and transfer syntaxes (see :data:`_PROPOSED_CACHE`)."""
    key = bytes(sub_items)
    cached = _PROPOSED_CACHE.get(key)
    if cached is not None:
        return cached
    abstract, syntaxes = _context_sub_items(sub_items, is_rq=True)
    if abstract is None or not syntaxes:
        raise ProtocolError(
            f"presentation context {context_id} lacks an abstract or transfer syntax", REASON_INVALID_PARAMETER
        )
    answer = (abstract, tuple(syntaxes))
    if len(key) <= _PROPOSED_CACHE_KEY:
        if len(_PROPOSED_CACHE) >= _PROPOSED_CACHE_ENTRIES:
            _PROPOSED_CACHE.clear()
        _PROPOSED_CACHE[key] = answer
    return answer


def _context_sub_items(sub_items: memoryview, *, is_rq: bool) -> tuple[str | None, list[str]]:
    abstract: str | None = None
    syntaxes: list[str] = []
    for sub_type, sub in _iter_items(sub_items, "presentation context"):
        if sub_type == _I.ABSTRACT_SYNTAX and is_rq:
            if abstract is not None:
                raise ProtocolError("two abstract syntaxes in one context", REASON_UNEXPECTED_PARAMETER)
            abstract = _text(sub, "abstract syntax")
        elif sub_type == _I.TRANSFER_SYNTAX:
            syntaxes.append(_text(sub, "transfer syntax"))
        else:
            raise ProtocolError(
                f"unexpected sub-item 0x{sub_type:02X} in a presentation context", REASON_UNRECOGNIZED_PARAMETER
            )
    return abstract, syntaxes


def _decode_associate(pdu_type: int, body: memoryview) -> AssociateRQ | AssociateAC:
    is_rq = pdu_type == PDUType.ASSOCIATE_RQ
    name = "A-ASSOCIATE-RQ" if is_rq else "A-ASSOCIATE-AC"
    if len(body) < 68:
        raise ProtocolError(f"{name} shorter than its fixed fields", REASON_INVALID_PARAMETER)
    (version,) = _U16.unpack_from(body)
    called = _ae_field(body[4:20])
    calling = _ae_field(body[20:36])
    app_context: str | None = None
    user_info: UserInformation | None = None
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    ids: set[int] = set()
    for item_type, value in _iter_items(body[68:], name):
        if item_type == _I.APPLICATION_CONTEXT:
            if app_context is not None:
                raise ProtocolError("duplicate application context item", REASON_UNEXPECTED_PARAMETER)
            app_context = _text(value, "application context name")
        elif item_type == (_I.PRESENTATION_CONTEXT_RQ if is_rq else _I.PRESENTATION_CONTEXT_AC):
            if len(value) < 4:
                raise ProtocolError("truncated presentation context item", REASON_INVALID_PARAMETER)
            context_id = value[0]
            if context_id % 2 == 0:
                raise ProtocolError(
                    f"presentation context ID {context_id} is not odd", REASON_INVALID_PARAMETER
                )
            if context_id in ids:
                raise ProtocolError(
                    f"duplicate presentation context ID {context_id}", REASON_INVALID_PARAMETER
                )
            ids.add(context_id)
            if is_rq:
                abstract, proposed = _proposed_syntaxes(value[4:], context_id)
                rq_contexts.append(PresentationContextRQ(context_id, abstract, list(proposed)))
            else:
                _, syntaxes = _context_sub_items(value[4:], is_rq=False)
                result = value[2]
                if len(syntaxes) > 1:
                    raise ProtocolError("accepted context names several transfer syntaxes", REASON_INVALID_PARAMETER)
                if result == ContextResult.ACCEPTANCE and not syntaxes:
                    raise ProtocolError(
                        f"accepted presentation context {context_id} has no transfer syntax",
                        REASON_INVALID_PARAMETER,
                    )
                ac_contexts.append(PresentationContextAC(context_id, result, syntaxes[0] if syntaxes else ""))
        elif item_type == _I.USER_INFORMATION:
            if user_info is not None:
                raise ProtocolError("duplicate user information item", REASON_UNEXPECTED_PARAMETER)
            user_info = _decode_user_information(value)
        else:
            raise ProtocolError(
                f"unrecognized item 0x{item_type:02X} in {name}", REASON_UNRECOGNIZED_PARAMETER
            )
    if app_context is None:
        raise ProtocolError(f"{name} lacks the application context item", REASON_INVALID_PARAMETER)
    if user_info is None:
        raise ProtocolError(f"{name} lacks the user information item", REASON_INVALID_PARAMETER)
    if len(ids) > 128:
        raise ProtocolError(f"{name} has {len(ids)} presentation contexts (at most 128)", REASON_INVALID_PARAMETER)
    if is_rq:
        if not rq_contexts:
            raise ProtocolError("A-ASSOCIATE-RQ proposes no presentation context", REASON_INVALID_PARAMETER)
        return AssociateRQ(called, calling, rq_contexts, user_info, app_context, version)
    return AssociateAC(called, calling, ac_contexts, user_info, app_context, version)


#: A P-DATA-TF may hold at most this many PDVs of under :data:`SMALL_PDV` bytes.
#: Real peers send one or two PDVs per PDU; a large PDU packed with empty or
#: one-byte PDVs would cost a Python object per 6 or 7 bytes on the wire (CPU
#: and memory far beyond its size), so it is refused as it is decoded.
MAX_SMALL_PDVS = 256
SMALL_PDV = 256


def decode_pdata(body: bytes | bytearray | memoryview) -> list[PDV]:
    """Split a P-DATA-TF body into PDVs whose data are views into ``body`` (no copy)."""
    view = memoryview(body)
    end = len(view)
    if end == 0:
        raise ProtocolError("P-DATA-TF PDU carries no PDV", REASON_INVALID_PARAMETER)
    pdvs: list[PDV] = []
    offset = 0
    small = 0
    unpack = _PDV_HEADER.unpack_from
    while offset < end:
        if end - offset < 6:
            raise ProtocolError("truncated PDV header", REASON_INVALID_PARAMETER)
        length, context_id, control = unpack(view, offset)
        if length < SMALL_PDV:
            if length < 2:
                raise ProtocolError(f"PDV length {length} is too short", REASON_INVALID_PARAMETER)
            small += 1
            if small > MAX_SMALL_PDVS:
                raise ProtocolError(
                    f"P-DATA-TF PDU packs more than {MAX_SMALL_PDVS} PDVs of under {SMALL_PDV} bytes",
                    REASON_INVALID_PARAMETER,
                )
        stop = offset + 4 + length
        if stop > end:
            raise ProtocolError(
                f"PDV claims {length} bytes, only {end - offset - 4} left in its PDU",
                REASON_INVALID_PARAMETER,
            )
        if context_id % 2 == 0:
            raise ProtocolError(f"PDV on even presentation context ID {context_id}", REASON_INVALID_PARAMETER)
        if control & 0xFC:
            raise ProtocolError(f"PDV message control header 0x{control:02X} has reserved bits", REASON_INVALID_PARAMETER)
        pdvs.append(PDV(context_id, bool(control & 1), bool(control & 2), view[offset + 6 : stop]))
        offset = stop
    return pdvs


def _fixed(pdu_type: int, view: memoryview) -> memoryview:
    """The 4-byte body of a fixed-length PDU (longer bodies tolerated, see parse_header)."""
    if len(view) < 4:
        raise ProtocolError(f"PDU type 0x{pdu_type:02X} shorter than 4 bytes", REASON_INVALID_PARAMETER)
    return view


def _decode_rj(view: memoryview) -> AssociateRJ:
    view = _fixed(PDUType.ASSOCIATE_RJ, view)
    return AssociateRJ(view[1], view[2], view[3])


def _decode_release_rq(view: memoryview) -> ReleaseRQ:
    _fixed(PDUType.RELEASE_RQ, view)
    return ReleaseRQ()


def _decode_release_rp(view: memoryview) -> ReleaseRP:
    _fixed(PDUType.RELEASE_RP, view)
    return ReleaseRP()


def _decode_abort(view: memoryview) -> Abort:
    view = _fixed(PDUType.ABORT, view)
    return Abort(view[2], view[3])


#: PDU type -> decoder of its body (PS3.8 table 9-11).
_PDU_DECODERS: dict[int, Callable[[memoryview], PDU]] = {
    PDUType.ASSOCIATE_RQ: lambda view: _decode_associate(PDUType.ASSOCIATE_RQ, view),
    PDUType.ASSOCIATE_AC: lambda view: _decode_associate(PDUType.ASSOCIATE_AC, view),
    PDUType.ASSOCIATE_RJ: _decode_rj,
    PDUType.P_DATA_TF: lambda view: PDataTF(decode_pdata(view)),
    PDUType.RELEASE_RQ: _decode_release_rq,
    PDUType.RELEASE_RP: _decode_release_rp,
    PDUType.ABORT: _decode_abort,
}


def decode(pdu_type: int, body: bytes | bytearray | memoryview) -> PDU:
    """Decode a PDU body (the bytes after the 6-byte header)."""
    decoder = _PDU_DECODERS.get(pdu_type)
    if decoder is None:
        raise ProtocolError(f"unrecognized PDU type 0x{pdu_type:02X}", REASON_UNRECOGNIZED_PDU)
    return decoder(memoryview(body))


def decode_bytes(data: bytes | bytearray | memoryview) -> PDU:
    """Decode one complete PDU, header included (tests and tools; the transport frames itself)."""
    view = memoryview(data)
    if len(view) < 6:
        raise ProtocolError("truncated PDU header", REASON_INVALID_PARAMETER)
    pdu_type, length = parse_header(view[:6])
    if len(view) - 6 != length:
        raise ProtocolError(
            f"PDU announces {length} bytes but {len(view) - 6} follow", REASON_INVALID_PARAMETER
        )
    return decode(pdu_type, view[6:])
