"""DIMSE command set codec, checked against pydicom and pynetdicom."""

from __future__ import annotations

import random
import struct
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.filereader import read_dataset
from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom.dsutils import decode as pnd_decode
from pynetdicom.dsutils import encode as pnd_encode

from aiodicom.dimse.command import (
    NO_DATASET,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    Message,
    Priority,
    decode_command,
    encode_command,
    message_fields,
)
from aiodicom.dimse.status import SUCCESS, Status
from aiodicom.errors import DimseError, MalformedCommandError

CT = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.12345678901234567890123"

# Our field names -> the standard's keywords (which pydicom and pynetdicom use).
KEYWORDS = {
    "message_id": "MessageID",
    "message_id_being_responded_to": "MessageIDBeingRespondedTo",
    "affected_sop_class_uid": "AffectedSOPClassUID",
    "affected_sop_instance_uid": "AffectedSOPInstanceUID",
    "priority": "Priority",
    "move_originator_ae_title": "MoveOriginatorApplicationEntityTitle",
    "move_originator_message_id": "MoveOriginatorMessageID",
    "status": "Status",
    "error_comment": "ErrorComment",
    "offending_element": "OffendingElement",
    "remaining_suboperations": "NumberOfRemainingSuboperations",
    "completed_suboperations": "NumberOfCompletedSuboperations",
    "failed_suboperations": "NumberOfFailedSuboperations",
    "warning_suboperations": "NumberOfWarningSuboperations",
    "move_destination": "MoveDestination",
}

# Our message class -> (pynetdicom message class, primitive class, is request, field)
PYNETDICOM: dict[type[Any], tuple[Any, Any]] = {
    CEchoRQ: (dimse_messages.C_ECHO_RQ, dimse_primitives.C_ECHO),
    CEchoRSP: (dimse_messages.C_ECHO_RSP, dimse_primitives.C_ECHO),
    CStoreRQ: (dimse_messages.C_STORE_RQ, dimse_primitives.C_STORE),
    CStoreRSP: (dimse_messages.C_STORE_RSP, dimse_primitives.C_STORE),
    CFindRQ: (dimse_messages.C_FIND_RQ, dimse_primitives.C_FIND),
    CFindRSP: (dimse_messages.C_FIND_RSP, dimse_primitives.C_FIND),
    CGetRQ: (dimse_messages.C_GET_RQ, dimse_primitives.C_GET),
    CGetRSP: (dimse_messages.C_GET_RSP, dimse_primitives.C_GET),
    CMoveRQ: (dimse_messages.C_MOVE_RQ, dimse_primitives.C_MOVE),
    CMoveRSP: (dimse_messages.C_MOVE_RSP, dimse_primitives.C_MOVE),
    CCancelRQ: (dimse_messages.C_CANCEL_RQ, dimse_primitives.C_CANCEL),
}

EXAMPLES: list[Message] = [
    CEchoRQ(1),
    CEchoRSP(1, SUCCESS),
    CStoreRQ(7, CT, INSTANCE),
    CStoreRQ(65535, CT, INSTANCE, Priority.HIGH, "MOVE_SCU", 12),
    CStoreRSP(7, SUCCESS, CT, INSTANCE),
    CStoreRSP(7, Status(0xA700), CT, INSTANCE, "disk full", (0x00100020,)),
    CStoreRSP(0, Status(0xC000)),
    CFindRQ(3, "1.2.840.10008.5.1.4.1.2.2.1", Priority.LOW),
    CFindRSP(3, Status(0xFF00), "1.2.840.10008.5.1.4.1.2.2.1"),
    CFindRSP(3, Status(0xA900), "", "bad key", (0x00100010, 0x00100020)),
    CGetRQ(4, "1.2.840.10008.5.1.4.1.2.2.3"),
    CGetRSP(4, Status(0xFF00), "1.2.840.10008.5.1.4.1.2.2.3", 10, 2, 0, 1),
    CMoveRQ(5, "1.2.840.10008.5.1.4.1.2.2.2", "STORESCP"),
    CMoveRSP(5, Status(0xA801), "1.2.840.10008.5.1.4.1.2.2.2", error_comment="who?"),
    CMoveRSP(5, SUCCESS, "", 0, 12, 0, 0),
    CCancelRQ(5),
]


def elements(command: bytes) -> list[tuple[int, bytes]]:
    """Split an implicit VR LE group 0000 byte string into (element, value)."""
    out, pos = [], 0
    while pos < len(command):
        _, elem, length = struct.unpack_from("<HHI", command, pos)
        out.append((elem, command[pos + 8 : pos + 8 + length]))
        pos += 8 + length
    return out


def join(elems: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in elems)


def set_fields(msg: Message) -> dict[str, Any]:
    """The fields of ``msg`` that are encoded (not None; UIDs not empty)."""
    out = {}
    for name in message_fields(type(msg)):
        value = getattr(msg, name)
        if value is None or (value == "" and name.endswith("_uid")):
            continue
        out[name] = value
    return out


def as_int_tags(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (int(value),)
    return tuple(int(t) for t in value)


# --- strategies -------------------------------------------------------------------

uids = st.from_regex(r"[1-9][0-9]{0,8}(\.(0|[1-9][0-9]{0,8})){1,6}", fullmatch=True).filter(
    lambda uid: len(uid) <= 64
)
ae_titles = st.from_regex(r"[A-Z0-9_][A-Z0-9_ ]{0,14}[A-Z0-9_]", fullmatch=True)
comments = st.from_regex(r"([A-Za-z0-9][A-Za-z0-9 .:]{0,60}[a-z0-9.])?", fullmatch=True)
us = st.integers(0, 0xFFFF)
statuses = st.integers(0, 0xFFFF).map(Status)
opt_us = st.none() | us
tags = st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=3).map(tuple)
priorities = st.sampled_from(list(Priority))

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(CEchoRQ, us, uids),
    st.builds(CEchoRSP, us, statuses, uids),
    st.builds(CStoreRQ, us, uids, uids, priorities, st.none() | ae_titles, opt_us),
    st.builds(
        CStoreRSP,
        us,
        statuses,
        uids | st.just(""),
        uids | st.just(""),
        st.none() | comments,
        st.none() | tags,
    ),
    st.builds(CFindRQ, us, uids, priorities),
    st.builds(CFindRSP, us, statuses, uids, st.none() | comments, st.none() | tags),
    st.builds(CGetRQ, us, uids, priorities),
    st.builds(CGetRSP, us, statuses, uids, opt_us, opt_us, opt_us, opt_us, st.none() | comments),
    st.builds(CMoveRQ, us, uids, ae_titles, priorities),
    st.builds(CMoveRSP, us, statuses, uids, opt_us, opt_us, opt_us, opt_us, st.none() | comments),
    st.builds(CCancelRQ, us),
)


# --- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("has_dataset", [True, False])
def test_round_trip_examples(msg: Message, has_dataset: bool) -> None:
    encoded = encode_command(msg, has_dataset=has_dataset)
    decoded, flag = decode_command(encoded)
    assert decoded == msg and flag is has_dataset
    assert type(decoded) is type(msg)
    assert decode_command(memoryview(encoded)) == (msg, has_dataset)
    assert decode_command(bytearray(encoded)) == (msg, has_dataset)


@settings(max_examples=300, deadline=None)
@given(messages, st.booleans())
def test_round_trip_property(msg: Message, has_dataset: bool) -> None:
    decoded, flag = decode_command(encode_command(msg, has_dataset=has_dataset))
    assert decoded == msg and flag is has_dataset


def test_status_decodes_to_status() -> None:
    msg, _ = decode_command(
        encode_command(CStoreRSP(1, Status(0xB000), CT, INSTANCE), has_dataset=False)
    )
    assert isinstance(msg, CStoreRSP)
    assert type(msg.status) is Status and msg.status.is_warning


def test_plain_int_status_is_coerced() -> None:
    rsp = CEchoRSP(1, 0x0110)  # type: ignore[arg-type]
    assert type(rsp.status) is Status and rsp.status.is_failure


def test_layout_is_canonical() -> None:
    """Group length first and right, elements ascending, every value even."""
    encoded = encode_command(CStoreRQ(9, CT, INSTANCE, Priority.LOW, "ABC", 3), has_dataset=True)
    elems = elements(encoded)
    assert elems[0][0] == 0x0000
    assert struct.unpack("<I", elems[0][1])[0] == len(encoded) - 12
    order = [e for e, _ in elems]
    assert order == sorted(order)
    assert all(len(v) % 2 == 0 for _, v in elems)
    values = dict(elems)
    assert values[0x1030] == b"ABC "  # AE padded with a space
    assert values[0x1000] == INSTANCE.encode() + b"\0"  # 49 characters: padded with NUL
    assert values[0x0002] == CT.encode() + b"\0"


@pytest.mark.parametrize("has_dataset", [True, False])
def test_command_data_set_type_values(has_dataset: bool) -> None:
    values = dict(elements(encode_command(CEchoRQ(1), has_dataset=has_dataset)))
    dst = struct.unpack("<H", values[0x0800])[0]
    assert (dst == NO_DATASET) is (not has_dataset)
    # Any value other than 0x0101 means "present" when decoding.
    for other in (0x0000, 0x0102, 0xFEFE):
        values[0x0800] = struct.pack("<H", other)
        assert decode_command(join(list(values.items())))[1] is True


# --- independent implementations ---------------------------------------------------


def check_against_pydicom(msg: Message, encoded: bytes, has_dataset: bool) -> None:
    ds = read_dataset(BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert (
        ds.CommandField
        == {
            CEchoRQ: CommandField.C_ECHO_RQ,
            CEchoRSP: CommandField.C_ECHO_RSP,
            CStoreRQ: CommandField.C_STORE_RQ,
            CStoreRSP: CommandField.C_STORE_RSP,
            CFindRQ: CommandField.C_FIND_RQ,
            CFindRSP: CommandField.C_FIND_RSP,
            CGetRQ: CommandField.C_GET_RQ,
            CGetRSP: CommandField.C_GET_RSP,
            CMoveRQ: CommandField.C_MOVE_RQ,
            CMoveRSP: CommandField.C_MOVE_RSP,
            CCancelRQ: CommandField.C_CANCEL_RQ,
        }[type(msg)]
    )
    assert (ds.CommandDataSetType != 0x0101) is has_dataset
    present = set_fields(msg)
    for name, value in present.items():
        theirs = ds[KEYWORDS[name]].value
        if name == "offending_element":
            assert as_int_tags(theirs) == value
        else:
            assert theirs == value, name
    # Nothing beyond what the message holds (plus the bookkeeping elements).
    ours = {KEYWORDS[n] for n in present} | {
        "CommandGroupLength",
        "CommandField",
        "CommandDataSetType",
    }
    assert {e.keyword for e in ds} == ours


def check_against_pynetdicom(msg: Message, encoded: bytes) -> None:
    msg_cls, _ = PYNETDICOM[type(msg)]
    message = msg_cls()
    message.command_set = pnd_decode(BytesIO(encoded), True, True)
    primitive = message.message_to_primitive()
    for name, value in set_fields(msg).items():
        theirs = getattr(primitive, KEYWORDS[name])
        if name == "offending_element":
            assert as_int_tags(theirs) == value
        elif name in ("affected_sop_class_uid", "affected_sop_instance_uid"):
            assert str(theirs) == value
        else:
            assert theirs == value, name


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_ours_read_by_pydicom_and_pynetdicom(msg: Message) -> None:
    for has_dataset in (True, False):
        encoded = encode_command(msg, has_dataset=has_dataset)
        check_against_pydicom(msg, encoded, has_dataset)
        check_against_pynetdicom(msg, encoded)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.booleans())
def test_ours_read_by_others_property(msg: Message, has_dataset: bool) -> None:
    encoded = encode_command(msg, has_dataset=has_dataset)
    check_against_pydicom(msg, encoded, has_dataset)
    check_against_pynetdicom(msg, encoded)


def pynetdicom_bytes(msg: Message, has_dataset: bool) -> bytes:
    """Encode ``msg`` with pynetdicom: primitive -> message -> command set bytes."""
    msg_cls, prim_cls = PYNETDICOM[type(msg)]
    primitive = prim_cls()
    for name, value in set_fields(msg).items():
        if name == "offending_element":
            value = list(value)
        setattr(primitive, KEYWORDS[name], int(value) if isinstance(value, Status) else value)
    if has_dataset:
        for attr in ("DataSet", "Identifier"):
            if hasattr(primitive, attr):
                setattr(primitive, attr, BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00"))
    message = msg_cls()
    message.primitive_to_message(primitive)
    encoded = pnd_encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_pynetdicom_read_by_ours(msg: Message) -> None:
    encoded = pynetdicom_bytes(
        msg, has_dataset=isinstance(msg, CStoreRQ | CFindRQ | CGetRQ | CMoveRQ)
    )
    decoded, flag = decode_command(encoded)
    assert decoded == msg
    assert flag is isinstance(msg, CStoreRQ | CFindRQ | CGetRQ | CMoveRQ)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_pynetdicom_read_by_ours_property(msg: Message) -> None:
    decoded, _ = decode_command(pynetdicom_bytes(msg, has_dataset=False))
    assert decoded == msg


# --- tolerance ----------------------------------------------------------------------


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_any_order_extra_elements_and_no_group_length(msg: Message) -> None:
    elems = elements(encode_command(msg, has_dataset=True))
    rng = random.Random(len(elems))
    body = elems[1:] + [(0x0001, b"\x10\x00\x00\x00"), (0x5010, b"XY"), (0x4000, b"")]
    rng.shuffle(body)
    assert decode_command(join(body)) == (msg, True)
    # A wrong group length is not trusted either: the PDV delimits the command.
    assert decode_command(join([(0x0000, b"\xff\xff\xff\xff")] + body)) == (msg, True)


def test_trailing_padding_in_values_is_stripped() -> None:
    elems = dict(
        elements(
            encode_command(
                CStoreRQ(1, CT, INSTANCE, move_originator_ae_title="AB"), has_dataset=True
            )
        )
    )
    elems[0x0002] = CT.encode() + b" \0\0"
    elems[0x1030] = b"  AB    "
    msg, _ = decode_command(join(sorted(elems.items())))
    assert isinstance(msg, CStoreRQ)
    assert msg.affected_sop_class_uid == CT and msg.move_originator_ae_title == "AB"


# --- malformed input ----------------------------------------------------------------

REQUIRED = {
    CEchoRQ: [0x0100, 0x0110, 0x0002, 0x0800],
    CEchoRSP: [0x0100, 0x0120, 0x0900, 0x0800],
    CStoreRQ: [0x0100, 0x0110, 0x0002, 0x1000, 0x0700, 0x0800],
    CStoreRSP: [0x0100, 0x0120, 0x0900, 0x0800],
    CFindRQ: [0x0100, 0x0110, 0x0002, 0x0700, 0x0800],
    CFindRSP: [0x0100, 0x0120, 0x0900, 0x0800],
    CGetRQ: [0x0100, 0x0110, 0x0002, 0x0700, 0x0800],
    CGetRSP: [0x0100, 0x0120, 0x0900, 0x0800],
    CMoveRQ: [0x0100, 0x0110, 0x0002, 0x0600, 0x0700, 0x0800],
    CMoveRSP: [0x0100, 0x0120, 0x0900, 0x0800],
    CCancelRQ: [0x0100, 0x0120, 0x0800],
}


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_missing_required_element_is_named(msg: Message) -> None:
    elems = elements(encode_command(msg, has_dataset=False))
    for required in REQUIRED[type(msg)]:
        broken = [(e, v) for e, v in elems if e != required]
        with pytest.raises(MalformedCommandError, match=f"0000,{required:04X}"):
            decode_command(join(broken))


def test_unknown_command_field() -> None:
    elems = dict(elements(encode_command(CEchoRQ(1), has_dataset=False)))
    elems[0x0100] = b"\x99\x00"
    with pytest.raises(MalformedCommandError, match="Command Field 0x0099"):
        decode_command(join(list(elems.items())))


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda b: b[:-1], "remain"),  # value cut short
        (lambda b: b + b"\x00\x00\x10", "element header"),  # 3 stray bytes
        (lambda b: b + struct.pack("<HHI", 8, 0x16, 0), "group 0000"),
        (lambda b: b + struct.pack("<HHI", 0, 0x5000, 3) + b"abc", "odd"),
        (lambda b: b + struct.pack("<HHI", 0, 0x5000, 0xFFFFFFFF), "undefined"),
        (lambda b: b + struct.pack("<HHI", 0, 0x5000, 0x7FFFFFFE), "claims"),
    ],
)
def test_malformed_layout(mutate: Any, pattern: str) -> None:
    good = encode_command(CEchoRQ(1), has_dataset=False)
    with pytest.raises(MalformedCommandError, match=pattern):
        decode_command(mutate(good))


def test_bad_values() -> None:
    elems = dict(
        elements(
            encode_command(
                CStoreRQ(1, CT, INSTANCE, move_originator_message_id=2), has_dataset=True
            )
        )
    )
    for elem, value, pattern in [
        (0x0110, b"\x01\x00\x00\x00", "0000,0110"),
        (0x0002, b"1.2.\xc3\xa9", "0000,0002"),
    ]:
        broken = dict(elems)
        broken[elem] = value
        with pytest.raises(MalformedCommandError, match=pattern):
            decode_command(join(list(broken.items())))
    rsp = dict(
        elements(encode_command(CStoreRSP(1, SUCCESS, offending_element=(1,)), has_dataset=False))
    )
    rsp[0x0901] = b"\x10\x00\x20"
    rsp[0x0902] = b"x"
    with pytest.raises(MalformedCommandError, match="0000,0901"):
        decode_command(join(list(rsp.items())))


def test_empty_and_missing_command_field() -> None:
    with pytest.raises(MalformedCommandError, match="0000,0100"):
        decode_command(b"")
    assert issubclass(MalformedCommandError, DimseError)


@pytest.mark.parametrize(
    "msg",
    [
        CEchoRQ(70000),
        CEchoRQ(-1),
        CStoreRQ(1, "1.2.é", INSTANCE),
        CStoreRQ(1, CT, "1." * 40),
        CMoveRQ(1, CT, "A" * 17),
        CStoreRSP(1, SUCCESS, error_comment="x" * 65),
        CStoreRSP(1, SUCCESS, offending_element=(1 << 33,)),
        CGetRSP(1, SUCCESS, remaining_suboperations=1 << 16),
    ],
)
def test_unencodable_values(msg: Message) -> None:
    with pytest.raises(MalformedCommandError):
        encode_command(msg, has_dataset=False)


def test_not_a_message() -> None:
    with pytest.raises(MalformedCommandError):
        encode_command("C-ECHO", has_dataset=False)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    try:
        decode_command(data)
    except MalformedCommandError:
        pass


@settings(max_examples=500, deadline=None)
@given(messages, st.data())
def test_corrupted_commands_only_raise_malformed(msg: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode_command(msg, has_dataset=True))
    cut = data.draw(st.integers(0, len(encoded)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(encoded) - 1), st.integers(0, 255)), max_size=4)
    )
    for index, value in flips:
        encoded[index] = value
    try:
        decode_command(bytes(encoded[:cut]))
    except MalformedCommandError:
        pass


def test_a_response_status_carries_the_error_comment() -> None:
    """(0000,0902) used to be decoded into the message only; the status a caller gets keeps it."""
    from aiodicom.dimse.command import CStoreRSP, decode_command, encode_command
    from aiodicom.dimse.status import Status

    for comment, expected in (("no PatientID", "no PatientID"), (None, None)):
        rsp = CStoreRSP(7, Status(0xA900), "1.2.840.10008.5.1.4.1.1.2", "1.2.3", error_comment=comment)
        decoded, _ = decode_command(encode_command(rsp, has_dataset=False))
        assert isinstance(decoded, CStoreRSP)
        assert decoded.status == 0xA900
        assert decoded.status.error_comment == expected
        assert str(decoded.status).endswith(f": {expected}") == (expected is not None)
    warned = Status(0xB000, error_comment="coerced").with_local_changes(("padded",))
    assert (warned, warned.error_comment, warned.local_changes) == (0xB000, "coerced", ("padded",))
    assert Status(0).error_comment is None and Status(0).local_changes == ()


def test_a_response_with_elements_after_its_group_is_read_and_a_request_is_not() -> None:
    """Orthanc puts a cancelled C-GET's Failed SOP Instance UID List inside the command PDV,
    right after group 0000; a response is read without it, a request stays malformed."""
    from aiodicom.dimse.command import CGetRSP
    from aiodicom.dimse.status import CANCEL

    extra = struct.pack("<HHI", 8, 0, 4) + struct.pack("<I", 12) + struct.pack("<HHI", 8, 0x58, 4) + b"1.2\x00"
    response = CGetRSP(7, CANCEL, "1.2.840.10008.5.1.4.1.2.2.3", 4, 1, 0, 0)
    message, has_dataset = decode_command(encode_command(response, has_dataset=False) + extra)
    assert message == response and not has_dataset
    with pytest.raises(MalformedCommandError, match="group 0000"):
        decode_command(encode_command(CEchoRQ(1), has_dataset=False) + extra)
    wrong = bytearray(encode_command(response, has_dataset=False))
    struct.pack_into("<I", wrong, 8, struct.unpack_from("<I", wrong, 8)[0] - 2)  # a group length that lies
    with pytest.raises(MalformedCommandError, match="group 0000"):  # not where the group length ends
        decode_command(bytes(wrong) + extra)


@pytest.mark.parametrize(
    "rsp",
    [
        CStoreRSP(7, SUCCESS, CT, INSTANCE),
        CStoreRSP(65535, Status(0xB000), CT, INSTANCE + "1"),  # odd and even instance UIDs
        CStoreRSP(0, Status(0xA700)),  # no UIDs at all
        CStoreRSP(1, SUCCESS, "", INSTANCE),
        CStoreRSP(2, SUCCESS, CT + "9", ""),  # an odd class UID, no instance
        CStoreRSP(3, Status(0xC000), CT, INSTANCE, "disk full"),
        CStoreRSP(4, SUCCESS, CT, INSTANCE, offending_element=(0x00100020,)),
        CStoreRSP(5, SUCCESS, "1." * 40, INSTANCE),  # an unencodable class UID: left out
        CStoreRSP(6, SUCCESS, CT, "1." * 40),  # an unencodable instance UID: left out
        CStoreRSP(8, SUCCESS, "1.2.é", INSTANCE),
    ],
)
def test_store_response_fast_path_encodes_as_the_general_path(rsp: CStoreRSP) -> None:
    """Every image's C-STORE-RSP is encoded from cached parts: the bytes are exactly the
    schema-driven encoder's, and what that encoder refuses goes down the general path."""
    from aiodicom.dimse.command import encode_response, replace

    general: dict[str, object] = {}
    for name in ("affected_sop_class_uid", "affected_sop_instance_uid"):
        value = getattr(rsp, name)
        if len(value) > 64 or not value.isascii():
            general[name] = ""
    for _ in range(2):  # the second time, the class UID comes from the cache
        encoded = encode_response(rsp)
        assert encoded == encode_command(replace(rsp, **general), has_dataset=False)
        assert decode_command(encoded)[0] == replace(rsp, **general)
    with pytest.raises(MalformedCommandError, match="16-bit"):
        encode_response(CStoreRSP(1 << 16, SUCCESS, CT, INSTANCE))
