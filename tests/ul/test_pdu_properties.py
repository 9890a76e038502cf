"""Property tests of the PDU codec and of the state machine's input side.

* every PDU hypothesis can build round-trips through encode -> decode;
* random bytes, and random mutations or truncations of valid PDUs, make the codec
  raise :class:`~aiodicom.errors.ProtocolError` and nothing else;
* fed to an :class:`UpperLayer` in Sta2 or Sta6 they never raise at all (a bad PDU
  becomes an A-ABORT), and never make it buffer more than it was given.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.errors import PDUTooLargeError, ProtocolError
from aiodicom.ul import pdu as P
from aiodicom.ul.fsm import State
from aiodicom.ul.machine import Role, UpperLayer
from aiodicom.ul.negotiation import build_request

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies --------------------------------------------------------------------------

uids = st.builds(
    ".".join,
    st.lists(st.integers(0, 10**12).map(str), min_size=2, max_size=6),
).filter(lambda u: len(u) <= 64)
ae_titles = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
    min_size=1,
    max_size=16,
)
short_ascii = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.", max_size=16)
blobs = st.binary(max_size=64)
u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 0xFF)

KNOWN_SUB_ITEMS = set(range(0x51, 0x5A))

user_identity_rq = st.builds(P.UserIdentityRQ, st.integers(1, 5), st.booleans(), blobs, blobs)
user_information = st.builds(
    P.UserInformation,
    max_pdu_length=st.none() | st.just(0) | st.integers(7, 0xFFFFFFFF),
    implementation_class_uid=uids,
    implementation_version_name=st.none() | short_ascii,
    async_ops_window=st.none() | st.tuples(u16, u16),
    role_selections=st.lists(
        st.builds(P.RoleSelection, uids, st.booleans(), st.booleans()), max_size=3
    ),
    user_identity_rq=st.none() | user_identity_rq,
    user_identity_ac=st.none() | st.builds(P.UserIdentityAC, blobs),
    sop_class_extended=st.lists(st.builds(P.SOPClassExtendedNegotiation, uids, blobs), max_size=3),
    sop_class_common_extended=st.lists(
        st.builds(P.SOPClassCommonExtendedNegotiation, uids, uids, st.lists(uids, max_size=3)),
        max_size=2,
    ),
    unknown=st.lists(st.tuples(u8.filter(lambda t: t not in KNOWN_SUB_ITEMS), blobs), max_size=3),
)


@st.composite
def context_ids(draw: st.DrawFn, min_size: int = 1) -> list[int]:
    return draw(
        st.lists(
            st.integers(0, 127).map(lambda i: 2 * i + 1), min_size=min_size, max_size=6, unique=True
        )
    )


@st.composite
def associate_rqs(draw: st.DrawFn) -> P.AssociateRQ:
    ids = draw(context_ids())
    contexts = [
        P.PresentationContextRQ(i, draw(uids), draw(st.lists(uids, min_size=1, max_size=4)))
        for i in ids
    ]
    return P.AssociateRQ(
        draw(ae_titles), draw(ae_titles), contexts, draw(user_information), draw(uids), draw(u16)
    )


@st.composite
def context_acs(draw: st.DrawFn, context_id: int) -> P.PresentationContextAC:
    result = draw(st.integers(0, 4))
    syntax = draw(uids) if result == 0 else draw(st.just("") | uids)
    return P.PresentationContextAC(context_id, result, syntax)


@st.composite
def associate_acs(draw: st.DrawFn) -> P.AssociateAC:
    ids = draw(context_ids(min_size=0))
    contexts = [draw(context_acs(i)) for i in ids]
    return P.AssociateAC(
        draw(ae_titles), draw(ae_titles), contexts, draw(user_information), draw(uids), draw(u16)
    )


pdvs = st.builds(
    P.PDV,
    st.integers(0, 127).map(lambda i: 2 * i + 1),
    st.booleans(),
    st.booleans(),
    st.binary(max_size=200),
)
pdus = st.one_of(
    associate_rqs(),
    associate_acs(),
    st.builds(P.AssociateRJ, u8, u8, u8),
    st.builds(P.PDataTF, st.lists(pdvs, min_size=1, max_size=5)),
    st.just(P.ReleaseRQ()),
    st.just(P.ReleaseRP()),
    st.builds(P.Abort, u8, u8),
)


def _normalise(pdu: P.PDU) -> P.PDU:
    if isinstance(pdu, P.PDataTF):
        return P.PDataTF(
            [P.PDV(v.context_id, v.is_command, v.is_last, bytes(v.data)) for v in pdu.pdvs]
        )
    return pdu


# --- round trip --------------------------------------------------------------------------


@SETTINGS
@given(pdus)
def test_every_pdu_round_trips(pdu: P.PDU) -> None:
    raw = P.encode(pdu)
    assert _normalise(P.decode_bytes(raw)) == _normalise(pdu)
    # And the encoding is canonical: decoding then encoding gives the same bytes.
    assert P.encode(P.decode_bytes(raw)) == raw


# --- hostile input to the codec ------------------------------------------------------------


def _decode_or_protocol_error(raw: bytes) -> None:
    try:
        P.decode_bytes(raw)
    except ProtocolError:
        pass


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_protocol_error(raw: bytes) -> None:
    _decode_or_protocol_error(raw)


@SETTINGS
@given(st.integers(1, 7), st.binary(max_size=600))
def test_random_bodies_behind_a_valid_header_raise_only_protocol_error(
    pdu_type: int, body: bytes
) -> None:
    _decode_or_protocol_error(struct.pack(">BxI", pdu_type, len(body)) + body)
    try:
        P.decode(pdu_type, body)
    except ProtocolError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(P.encode(draw(pdus)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        index = draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            raw[index] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            raw[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif len(raw) > 1:
            del raw[index]
    if draw(st.booleans()):
        # Keep the PDU length consistent so the mutation reaches the body decoder.
        raw[2:6] = struct.pack(">I", max(len(raw) - 6, 0))
    return bytes(raw)


@SETTINGS
@given(mutated())
def test_mutated_pdus_raise_only_protocol_error(raw: bytes) -> None:
    _decode_or_protocol_error(raw)


@SETTINGS
@given(pdus, st.data())
def test_truncated_pdus_raise_only_protocol_error(pdu: P.PDU, data: st.DataObject) -> None:
    raw = P.encode(pdu)
    cut = data.draw(st.integers(0, len(raw) - 1))
    try:
        P.decode_bytes(raw[:cut])
    except ProtocolError:
        return
    raise AssertionError("a truncated PDU decoded")  # the length field no longer matches


@SETTINGS
@given(pdus, st.data())
def test_truncated_bodies_with_fixed_length_raise_only_protocol_error(
    pdu: P.PDU, data: st.DataObject
) -> None:
    body = P.encode(pdu)[6:]
    cut = data.draw(st.integers(0, len(body)))
    try:
        P.decode(P.encode(pdu)[0], body[:cut])
    except ProtocolError:
        pass


@SETTINGS
@given(st.integers(1, 7), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_parse_header_never_allows_more_than_the_cap(pdu_type: int, length: int, cap: int) -> None:
    header = struct.pack(">BxI", pdu_type, length)
    try:
        got_type, got_length = P.parse_header(header, cap)
    except PDUTooLargeError:
        assert length > cap
        return
    except ProtocolError:
        return
    assert (got_type, got_length) == (pdu_type, length)
    assert got_length <= cap


# --- hostile input to the state machine ------------------------------------------------------

RQ = build_request("SCP", "SCU", [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
AC = P.AssociateAC(
    "SCP", "SCU", [P.PresentationContextAC(1, 0, "1.2.840.10008.1.2")], P.UserInformation(0, "1.2")
)


def _machine(state: State) -> UpperLayer:
    if state is State.STA2:
        ul = UpperLayer(Role.ACCEPTOR, max_pdu_cap=1 << 20)
        ul.connection_made()
    else:
        ul = UpperLayer(Role.REQUESTOR, max_pdu_cap=1 << 20)
        ul.request(RQ)
        ul.connection_made()
        ul.receive_data(P.encode(AC))
        ul.data_to_send()
    assert ul.state is state
    return ul


def _check_machine_survives(state: State, chunks: list[bytes]) -> None:
    ul = _machine(state)
    fed = 0
    for chunk in chunks:
        ul.receive_data(chunk)  # must not raise, whatever arrives
        fed += len(chunk)
        assert len(ul._rx) <= fed  # noqa: SLF001 - buffering is bounded by input
    # Whatever happened, the bytes it queued are well-formed PDUs.
    out = b"".join(bytes(b) for b in ul.data_to_send())
    while out:
        _pdu_type, length = P.parse_header(out[:6])
        P.decode_bytes(out[: 6 + length])
        out = out[6 + length :]
    if ul.state is State.STA13:
        assert ul.artim_running


@SETTINGS
@given(st.sampled_from([State.STA2, State.STA6]), st.lists(st.binary(max_size=300), max_size=4))
def test_machine_survives_random_bytes(state: State, chunks: list[bytes]) -> None:
    _check_machine_survives(state, chunks)


@SETTINGS
@given(st.sampled_from([State.STA2, State.STA6]), st.lists(mutated(), min_size=1, max_size=3))
def test_machine_survives_mutated_pdus(state: State, raws: list[bytes]) -> None:
    _check_machine_survives(state, raws)


@SETTINGS
@given(st.sampled_from([State.STA2, State.STA6]), pdus, st.data())
def test_machine_survives_truncated_pdus_then_close(
    state: State, pdu: P.PDU, data: st.DataObject
) -> None:
    raw = P.encode(pdu)
    cut = data.draw(st.integers(0, len(raw)))
    ul = _machine(state)
    ul.receive_data(raw[:cut])
    ul.connection_lost()
    assert ul.state is State.STA1
    assert not ul.artim_running
