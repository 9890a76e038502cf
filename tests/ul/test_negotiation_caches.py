"""What association set-up remembers between associations, and what it must not.

A requestor proposes the same presentation contexts on every association, so the
acceptor parses each proposed context, chooses each transfer syntax and encodes each
answer item once. These tests hold the caches to three rules: an answer is the same
as without them, nothing decoded is shared between associations, and a peer cannot
grow them or slip an invalid proposal through them.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicom.codec.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
)
from aiodicom.errors import ProtocolError
from aiodicom.ul import negotiation as N
from aiodicom.ul import pdu as P

CT = "1.2.840.10008.5.1.4.1.1.2"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
SYNTAXES = [
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    JPEG_LOSSLESS,
    "1.2.3",
]


def wire(contexts: list[tuple[str, list[str]]]) -> bytes:
    return P.encode(N.build_request("SCP", "SCU", contexts))


def decode_rq(data: bytes) -> P.AssociateRQ:
    pdu = P.decode_bytes(data)
    assert isinstance(pdu, P.AssociateRQ)
    return pdu


def test_a_request_decoded_twice_shares_nothing_mutable() -> None:
    data = wire(
        [
            (CT, [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]),
            (VERIFICATION_SOP_CLASS, SYNTAXES),
        ]
    )
    first = decode_rq(data)
    first.presentation_contexts[0].transfer_syntaxes.append("9.9.9")
    first.presentation_contexts[1].abstract_syntax = "1.1"
    second = decode_rq(data)
    assert second == decode_rq(data)
    assert second.presentation_contexts[0].transfer_syntaxes == [
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
    ]
    assert second.presentation_contexts[1].abstract_syntax == VERIFICATION_SOP_CLASS


@pytest.mark.parametrize(
    "sub_items",
    [
        P._item(P.ItemType.ABSTRACT_SYNTAX, CT.encode()),  # no transfer syntax
        P._item(
            P.ItemType.TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN.encode()
        ),  # no abstract syntax
        P._item(P.ItemType.ABSTRACT_SYNTAX, CT.encode()) * 2
        + P._item(P.ItemType.TRANSFER_SYNTAX, b"1.2"),
        P._item(P.ItemType.ABSTRACT_SYNTAX, b"1.2\xff")
        + P._item(P.ItemType.TRANSFER_SYNTAX, b"1.2"),
        P._item(P.ItemType.ABSTRACT_SYNTAX, CT.encode()) + b"\x40\x00\x00",  # truncated sub-item
    ],
)
def test_an_invalid_proposal_is_refused_every_time(sub_items: bytes) -> None:
    good = wire([(CT, [EXPLICIT_VR_LITTLE_ENDIAN])])
    good_item = P._item(P.ItemType.PRESENTATION_CONTEXT_RQ, bytes((1, 0, 0, 0)) + good_sub_items())
    bad_item = P._item(P.ItemType.PRESENTATION_CONTEXT_RQ, bytes((1, 0, 0, 0)) + sub_items)
    assert good_item in good
    bad = good.replace(good_item, bad_item)
    bad = bad[:2] + (len(bad) - 6).to_bytes(4, "big") + bad[6:]
    for _ in range(3):  # refused on each association, not only while it is new
        with pytest.raises(ProtocolError):
            P.decode_bytes(bad)
    decode_rq(good)


def good_sub_items() -> bytes:
    return P._item(P.ItemType.ABSTRACT_SYNTAX, CT.encode()) + P._item(
        P.ItemType.TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN.encode()
    )


def test_a_peer_varying_its_proposals_cannot_grow_the_caches() -> None:
    P._PROPOSED_CACHE.clear()
    policy = N.default_storage_policy("SCP", [CT], accept_any_transfer_syntax=True)
    for batch in range(40):
        contexts = [(CT, [f"1.2.840.99.{batch}.{i}" + "1" * 40]) for i in range(128)]
        answer, _ = N.negotiate(decode_rq(wire(contexts)), policy)
        P.encode(answer)
        assert len(P._PROPOSED_CACHE) <= P._PROPOSED_CACHE_ENTRIES
    assert N._choose_cached.cache_info().currsize <= 4096
    assert P._cached_answer_item.cache_info().currsize <= 4096
    # A proposal too long for a UID (accept_any echoes it) is answered, not kept.
    long_syntax = "1." + "2" * 3000
    P._PROPOSED_CACHE.clear()
    answer, accepted = N.negotiate(decode_rq(wire([(CT, [long_syntax])])), policy)
    assert [c.transfer_syntax for c in accepted] == [long_syntax]
    assert long_syntax.encode() in P.encode(answer)
    assert not P._PROPOSED_CACHE


@given(
    proposed=st.lists(st.sampled_from(SYNTAXES), min_size=1, max_size=6),
    ours=st.permutations(SYNTAXES[:3]),
    accept_any=st.booleans(),
)
def test_a_remembered_choice_is_the_choice(
    proposed: list[str], ours: list[str], accept_any: bool
) -> None:
    expected = N.choose_transfer_syntax(proposed, tuple(ours), accept_any)
    for _ in range(2):
        assert N._choose(tuple(proposed), tuple(ours), accept_any) == expected


@given(
    contexts=st.lists(
        st.tuples(
            st.sampled_from([CT, VERIFICATION_SOP_CLASS, "1.2.3.4"]),
            st.lists(st.sampled_from(SYNTAXES), min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_answers_encode_as_without_the_caches(contexts: list[tuple[str, list[str]]]) -> None:
    answer, _ = N.negotiate(
        decode_rq(wire(contexts)), N.default_storage_policy("SCP", [CT, VERIFICATION_SOP_CLASS])
    )
    assert isinstance(answer, P.AssociateAC)
    items = b"".join(
        P._encode_answer_item(ac.id, ac.result, ac.transfer_syntax)
        for ac in answer.presentation_contexts
    )
    assert items in P.encode(answer)
    assert P.decode_bytes(P.encode(answer)) == answer
