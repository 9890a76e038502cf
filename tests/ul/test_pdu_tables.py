"""The PDU codec's tables: every PDU type and every user information sub-item type
has exactly one entry, and the at-most-once rule holds for each single sub-item."""

from __future__ import annotations

import struct

import pytest

from aiodicom.errors import ProtocolError
from aiodicom.ul import pdu as P
from tests.ul.test_pdu import full_ac, full_rq

SINGLE_SUB_ITEMS = [
    P.ItemType.MAXIMUM_LENGTH,
    P.ItemType.IMPLEMENTATION_CLASS_UID,
    P.ItemType.ASYNC_OPERATIONS_WINDOW,
    P.ItemType.IMPLEMENTATION_VERSION_NAME,
    P.ItemType.USER_IDENTITY_RQ,
    P.ItemType.USER_IDENTITY_AC,
]


def _items(body: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(body):
        item_type, length = struct.unpack_from(">BxH", body, pos)
        out.append((item_type, body[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _user_sub_items(pdu: bytes) -> list[tuple[int, bytes]]:
    (user,) = [value for t, value in _items(pdu[6 + 68 :]) if t == P.ItemType.USER_INFORMATION]
    return _items(user)


def _with_user_sub_items(pdu: bytes, sub_items: list[tuple[int, bytes]]) -> bytes:
    """``pdu`` (an A-ASSOCIATE-RQ/AC) with its user information item replaced."""
    user = b"".join(struct.pack(">BxH", t, len(v)) + v for t, v in sub_items)
    items = [
        (t, user if t == P.ItemType.USER_INFORMATION else v) for t, v in _items(pdu[6 + 68 :])
    ]
    body = pdu[6 : 6 + 68] + b"".join(struct.pack(">BxH", t, len(v)) + v for t, v in items)
    return struct.pack(">BxI", pdu[0], len(body)) + body


def test_every_pdu_type_has_a_decoder_and_an_encoder() -> None:
    assert set(P._PDU_DECODERS) == set(P.PDUType)
    decoded = {type(P.decode_bytes(P.encode(pdu))) for pdu in _one_of_each()}
    assert decoded == set(P._PDU_ENCODERS)


def _one_of_each() -> list[P.PDU]:
    return [
        full_rq(),
        full_ac(),
        P.AssociateRJ(1, 1, 7),
        P.PDataTF([P.PDV(1, True, True, b"\x00\x01")]),
        P.ReleaseRQ(),
        P.ReleaseRP(),
        P.Abort(2, 6),
    ]


def test_every_user_information_sub_item_type_is_decoded() -> None:
    """full_rq/full_ac between them use every known sub-item; none lands in ``unknown``."""
    seen = {t for pdu in (full_rq(), full_ac()) for t, _ in _user_sub_items(P.encode(pdu))}
    known = {t for t in P.ItemType if t >= P.ItemType.MAXIMUM_LENGTH}
    assert known <= seen
    assert set(P._USER_SUB_ITEMS) == known
    for pdu in (full_rq(), full_ac()):
        decoded = P.decode_bytes(P.encode(pdu))
        assert isinstance(decoded, P.AssociateRQ | P.AssociateAC)
        assert all(t not in known for t, _ in decoded.user_information.unknown)


@pytest.mark.parametrize("item_type", SINGLE_SUB_ITEMS, ids=lambda t: t.name)
@pytest.mark.parametrize("make", [full_rq, full_ac], ids=["rq", "ac"])
def test_a_repeated_single_sub_item_is_refused(item_type: P.ItemType, make: object) -> None:
    assert callable(make)
    pdu = P.encode(make())
    sub_items = _user_sub_items(pdu)
    value = {
        P.ItemType.USER_IDENTITY_RQ: b"\x01\x00\x00\x01a\x00\x00",
        P.ItemType.USER_IDENTITY_AC: b"\x00\x01x",
    }.get(item_type) or dict(sub_items)[item_type]
    twice = [s for s in sub_items if s[0] != item_type] + [(item_type, value)] * 2
    with pytest.raises(ProtocolError, match=f"duplicate user information sub-item 0x{item_type:02X}"):
        P.decode_bytes(_with_user_sub_items(pdu, twice))


@pytest.mark.parametrize("item_type", [P.ItemType.ROLE_SELECTION, P.ItemType.SOP_CLASS_EXTENDED])
def test_repeatable_sub_items_may_repeat(item_type: P.ItemType) -> None:
    pdu = P.encode(full_rq())
    sub_items = _user_sub_items(pdu)
    value = dict(sub_items)[item_type]
    decoded = P.decode_bytes(_with_user_sub_items(pdu, [*sub_items, (item_type, value)]))
    assert isinstance(decoded, P.AssociateRQ)
