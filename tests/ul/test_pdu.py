"""PDU codec (PS3.8 section 9.3 and annex D of PS3.7): round trips, byte layout, malformed input.

Every PDU type and every item is encoded and decoded back; the bytes are checked
against pynetdicom's encoder, an independent implementation, in both directions
(pynetdicom is only a test oracle here, never a dependency of aiodicom).
"""

from __future__ import annotations

import struct
from typing import Any, TypeVar, cast

import pytest
from pynetdicom import pdu as pn_pdu
from pynetdicom import pdu_primitives as pn_prim
from pynetdicom.presentation import PresentationContext as PnContext

from aiodicom.errors import InvalidAETitleError, PDUTooLargeError, ProtocolError
from aiodicom.ul import pdu as P

VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
IMPL_UID = "1.2.826.0.1.3680043.9.7433.1"
AssocT = TypeVar("AssocT", P.AssociateRQ, P.AssociateAC)


def full_user_information(**overrides: object) -> P.UserInformation:
    """User information using every sub-item the codec knows, plus an unknown one."""
    info = P.UserInformation(
        max_pdu_length=16384,
        implementation_class_uid=IMPL_UID,
        implementation_version_name="TEST_01",
        async_ops_window=(5, 3),
        role_selections=[
            P.RoleSelection(CT_STORAGE, True, True),
            P.RoleSelection(MR_STORAGE, False, True),
        ],
        user_identity_rq=P.UserIdentityRQ(2, True, b"alice", b"s3cret"),
        sop_class_extended=[P.SOPClassExtendedNegotiation(CT_STORAGE, b"\x01\x00\x01")],
        sop_class_common_extended=[
            P.SOPClassCommonExtendedNegotiation(
                "1.2.840.10008.5.1.4.1.1.88.22",
                "1.2.840.10008.4.2",
                ["1.2.840.10008.5.1.4.1.1.88.11"],
            )
        ],
        unknown=[(0x7A, b"private stuff"), (0x5F, b"")],
    )
    for name, value in overrides.items():
        setattr(info, name, value)
    return info


def full_rq() -> P.AssociateRQ:
    return P.AssociateRQ(
        called_ae="STORE-SCP",
        calling_ae="MODALITY1",
        presentation_contexts=[
            P.PresentationContextRQ(1, VERIFICATION, [IMPLICIT]),
            P.PresentationContextRQ(3, CT_STORAGE, [JPEG_LOSSLESS, EXPLICIT, IMPLICIT]),
            P.PresentationContextRQ(255, MR_STORAGE, [EXPLICIT]),
        ],
        user_information=full_user_information(),
    )


def full_ac() -> P.AssociateAC:
    return P.AssociateAC(
        called_ae="STORE-SCP",
        calling_ae="MODALITY1",
        presentation_contexts=[
            P.PresentationContextAC(1, P.ContextResult.ACCEPTANCE, IMPLICIT),
            P.PresentationContextAC(3, P.ContextResult.USER_REJECTION),
            P.PresentationContextAC(5, P.ContextResult.NO_REASON, IMPLICIT),
            P.PresentationContextAC(7, P.ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED),
            P.PresentationContextAC(9, P.ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        ],
        user_information=full_user_information(
            user_identity_rq=None, user_identity_ac=P.UserIdentityAC(b"ticket-42")
        ),
    )


def roundtrip(pdu: P.PDU) -> P.PDU:
    return P.decode_bytes(P.encode(pdu))


def normalise(pdu: P.PDU) -> P.PDU:
    """PDV payloads decode as memoryviews; compare them as bytes."""
    if isinstance(pdu, P.PDataTF):
        return P.PDataTF(
            [P.PDV(v.context_id, v.is_command, v.is_last, bytes(v.data)) for v in pdu.pdvs]
        )
    return pdu


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pdu",
    [
        pytest.param(full_rq(), id="A-ASSOCIATE-RQ"),
        pytest.param(full_ac(), id="A-ASSOCIATE-AC"),
        pytest.param(
            P.AssociateRJ(P.RJ_TRANSIENT, P.RJ_SOURCE_PRESENTATION, 2), id="A-ASSOCIATE-RJ"
        ),
        pytest.param(
            P.PDataTF(
                [P.PDV(1, True, True, b"\x00\x01cmd"), P.PDV(3, False, False, b"data" * 100)]
            ),
            id="P-DATA-TF",
        ),
        pytest.param(P.ReleaseRQ(), id="A-RELEASE-RQ"),
        pytest.param(P.ReleaseRP(), id="A-RELEASE-RP"),
        pytest.param(
            P.Abort(P.AbortSource.SERVICE_PROVIDER, P.REASON_UNEXPECTED_PDU), id="A-ABORT"
        ),
    ],
)
def test_every_pdu_type_round_trips(pdu: P.PDU) -> None:
    assert normalise(roundtrip(pdu)) == normalise(pdu)


@pytest.mark.parametrize("result", [0, 1, 2, 3, 4])
def test_presentation_context_ac_results_round_trip(result: int) -> None:
    ac = full_ac()
    ac.presentation_contexts = [P.PresentationContextAC(1, result, IMPLICIT if result == 0 else "")]
    decoded = roundtrip(ac)
    assert isinstance(decoded, P.AssociateAC)
    assert decoded.presentation_contexts == [
        P.PresentationContextAC(1, result, IMPLICIT if result == 0 else "")
    ]


@pytest.mark.parametrize(
    ("identity_type", "primary", "secondary"),
    [
        (1, b"username", b""),
        (2, b"username", b"passcode"),
        (3, b"\x60\x82kerberos-ticket" * 10, b""),
        (4, b"<saml:Assertion/>", b""),
        (5, b"eyJhbGciOiJIUzI1NiJ9.e30.sig", b""),
    ],
)
@pytest.mark.parametrize("wants_response", [False, True])
def test_user_identity_rq_types_1_to_5_round_trip(
    identity_type: int, primary: bytes, secondary: bytes, wants_response: bool
) -> None:
    rq = full_rq()
    rq.user_information.user_identity_rq = P.UserIdentityRQ(
        identity_type, wants_response, primary, secondary
    )
    decoded = roundtrip(rq)
    assert isinstance(decoded, P.AssociateRQ)
    assert decoded.user_information.user_identity_rq == P.UserIdentityRQ(
        identity_type, wants_response, primary, secondary
    )


def test_user_identity_ac_round_trips_including_empty_response() -> None:
    for response in (b"", b"server-token"):
        ac = full_ac()
        ac.user_information.user_identity_ac = P.UserIdentityAC(response)
        decoded = roundtrip(ac)
        assert isinstance(decoded, P.AssociateAC)
        assert decoded.user_information.user_identity_ac == P.UserIdentityAC(response)


def test_minimal_user_information_round_trips() -> None:
    """Only the implementation class UID is mandatory; absent optional items stay absent."""
    rq = full_rq()
    rq.user_information = P.UserInformation(implementation_class_uid=IMPL_UID)
    decoded = roundtrip(rq)
    assert isinstance(decoded, P.AssociateRQ)
    assert decoded.user_information == P.UserInformation(implementation_class_uid=IMPL_UID)


def test_unknown_user_information_sub_items_are_preserved_in_order() -> None:
    rq = full_rq()
    decoded = roundtrip(rq)
    assert isinstance(decoded, P.AssociateRQ)
    assert decoded.user_information.unknown == [(0x7A, b"private stuff"), (0x5F, b"")]
    # And they go back on the wire when re-encoded.
    assert P.encode(decoded) == P.encode(rq)


def test_common_extended_negotiation_with_several_or_no_related_classes() -> None:
    for related in ([], ["1.2.3", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.88.11"]):
        rq = full_rq()
        rq.user_information.sop_class_common_extended = [
            P.SOPClassCommonExtendedNegotiation("1.2.3.9", "1.2.840.10008.4.2", related)
        ]
        decoded = roundtrip(rq)
        assert isinstance(decoded, P.AssociateRQ)
        assert (
            decoded.user_information.sop_class_common_extended[0].related_general_sop_classes
            == related
        )


# --- byte layout (PS3.8 tables 9-11 .. 9-26) ---------------------------------------------


def test_associate_rq_fixed_fields_layout() -> None:
    raw = P.encode(full_rq())
    assert raw[0] == 0x01 and raw[1] == 0
    assert struct.unpack(">I", raw[2:6])[0] == len(raw) - 6
    assert raw[6:8] == b"\x00\x01"  # protocol version bit 0
    assert raw[8:10] == b"\x00\x00"
    assert raw[10:26] == b"STORE-SCP       "  # called AE, space padded to 16
    assert raw[26:42] == b"MODALITY1       "
    assert raw[42:74] == bytes(32)
    # First variable item: application context, UID unpadded.
    assert raw[74] == 0x10
    assert raw[76:78] == struct.pack(">H", 21)
    assert raw[78:99] == b"1.2.840.10008.3.1.1.1"


def test_presentation_context_items_layout() -> None:
    raw = P.encode(full_rq())
    offset = raw.index(b"\x20\x00", 99)
    (length,) = struct.unpack(">H", raw[offset + 2 : offset + 4])
    item = raw[offset + 4 : offset + 4 + length]
    assert item[0] == 1 and item[1:4] == b"\x00\x00\x00"  # context ID, reserved
    assert item[4] == 0x30 and item[8:].startswith(VERIFICATION.encode())
    ac_raw = P.encode(full_ac())
    offset = ac_raw.index(b"\x21\x00", 99)
    assert ac_raw[offset + 4 : offset + 8] == bytes(
        (1, 0, 0, 0)
    )  # ID, reserved, result 0, reserved


def test_fixed_size_pdus_bytes() -> None:
    assert P.encode(P.ReleaseRQ()) == b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    assert P.encode(P.ReleaseRP()) == b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    assert P.encode(P.Abort(2, 6)) == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"
    assert P.encode(P.AssociateRJ(1, 2, 2)) == b"\x03\x00\x00\x00\x00\x04\x00\x01\x02\x02"


def test_pdata_layout_and_message_control_header() -> None:
    raw = P.encode(P.PDataTF([P.PDV(7, True, False, b"ab"), P.PDV(7, False, True, b"xyz")]))
    assert raw == (
        b"\x04\x00"
        + struct.pack(">I", (4 + 2 + 2) + (4 + 2 + 3))
        + struct.pack(">I", 4)
        + b"\x07\x01ab"
        + struct.pack(">I", 5)
        + b"\x07\x02xyz"
    )


def test_encode_pdata_keeps_payload_objects_uncopied() -> None:
    payload = bytearray(b"x" * 1000)
    parts = P.encode_pdata([P.PDV(1, False, True, payload)])
    assert any(part is payload for part in parts)


def test_decode_pdata_gives_views_into_the_body() -> None:
    body = bytearray(P.encode(P.PDataTF([P.PDV(1, False, True, b"hello")]))[6:])
    (pdv,) = P.decode_pdata(body)
    assert isinstance(pdv.data, memoryview)
    assert pdv.data.obj is body
    body[6] = ord("j")
    assert bytes(pdv.data) == b"jello"


def test_decode_tolerates_trailing_nul_and_ae_padding() -> None:
    rq = full_rq()
    raw = bytearray(P.encode(rq))
    # Pad the application context UID with a NUL (allowed on read by PS3.8 9.3.2.2 practice).
    uid = b"1.2.840.10008.3.1.1.1"
    start = raw.index(uid)
    raw[start - 2 : start + len(uid)] = struct.pack(">H", len(uid) + 1) + uid + b"\0"
    raw[2:6] = struct.pack(">I", len(raw) - 6)
    decoded = P.decode_bytes(bytes(raw))
    assert isinstance(decoded, P.AssociateRQ)
    assert decoded.application_context == "1.2.840.10008.3.1.1.1"
    assert decoded.called_ae == "STORE-SCP"


def test_describe_rejection_is_readable() -> None:
    text = P.describe_rejection(1, 1, 7)
    assert "permanently" in text and "called AE title not recognized" in text
    assert "transiently" in P.describe_rejection(2, 3, 2)
    assert "local limit exceeded" in P.describe_rejection(2, 3, 2)
    assert "reason 9" in P.describe_rejection(1, 1, 9)


# --- fragmentation ---------------------------------------------------------------------


@pytest.mark.parametrize("max_pdu", [0, 7, 100, 4096, 16384])
@pytest.mark.parametrize("size", [0, 1, 94, 95, 10_000])
def test_fragment_respects_max_pdu_and_reassembles(max_pdu: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pdus = list(P.fragment(5, False, data, max_pdu))
    rebuilt = bytearray()
    for index, parts in enumerate(pdus):
        raw = b"".join(bytes(p) for p in parts)
        if max_pdu:
            assert len(raw) - 6 <= max_pdu
        decoded = P.decode_bytes(raw)
        assert isinstance(decoded, P.PDataTF)
        (pdv,) = decoded.pdvs
        assert pdv.context_id == 5 and not pdv.is_command
        assert pdv.is_last == (index == len(pdus) - 1)
        rebuilt += pdv.data
    assert bytes(rebuilt) == data
    if max_pdu == 0:
        assert len(pdus) == 1


def test_fragment_command_flag_and_not_final() -> None:
    pdus = list(P.fragment(1, True, b"c" * 30, 16, final=False))
    assert len(pdus) == 3
    for parts in pdus:
        decoded = P.decode_bytes(b"".join(bytes(p) for p in parts))
        assert isinstance(decoded, P.PDataTF)
        assert decoded.pdvs[0].is_command and not decoded.pdvs[0].is_last


def test_fragment_payload_is_a_view_not_a_copy() -> None:
    data = bytearray(b"z" * 64)
    (parts,) = list(P.fragment(1, False, data, 0))
    assert isinstance(parts[1], memoryview) and parts[1].obj is data


def test_fragment_refuses_a_max_pdu_with_no_room_for_data() -> None:
    with pytest.raises(ValueError):
        list(P.fragment(1, False, b"abc", 6))


# --- cross-check with pynetdicom (independent encoder) ------------------------------------


def _pn_user_information(info: P.UserInformation, *, ac: bool) -> list[Any]:
    items: list[Any] = []
    if info.max_pdu_length is not None:
        item = pn_prim.MaximumLengthNotification()
        item.maximum_length_received = info.max_pdu_length
        items.append(item)
    impl = pn_prim.ImplementationClassUIDNotification()
    impl.implementation_class_uid = info.implementation_class_uid
    items.append(impl)
    if info.async_ops_window is not None:
        window = pn_prim.AsynchronousOperationsWindowNegotiation()
        window.maximum_number_operations_invoked, window.maximum_number_operations_performed = (
            info.async_ops_window
        )
        items.append(window)
    for role in info.role_selections:
        sel = pn_prim.SCP_SCU_RoleSelectionNegotiation()
        sel.sop_class_uid = role.sop_class_uid
        sel.scu_role, sel.scp_role = role.scu_role, role.scp_role
        items.append(sel)
    if info.implementation_version_name is not None:
        version = pn_prim.ImplementationVersionNameNotification()
        version.implementation_version_name = info.implementation_version_name
        items.append(version)
    for ext in info.sop_class_extended:
        e = pn_prim.SOPClassExtendedNegotiation()
        e.sop_class_uid = ext.sop_class_uid
        e.service_class_application_information = ext.application_information
        items.append(e)
    for common in info.sop_class_common_extended:
        c = pn_prim.SOPClassCommonExtendedNegotiation()
        c.sop_class_uid = common.sop_class_uid
        c.service_class_uid = common.service_class_uid
        c.related_general_sop_class_identification = cast(Any, common.related_general_sop_classes)
        items.append(c)
    if info.user_identity_rq is not None and not ac:
        ident = pn_prim.UserIdentityNegotiation()
        ident.user_identity_type = info.user_identity_rq.identity_type
        ident.positive_response_requested = info.user_identity_rq.positive_response_requested
        ident.primary_field = info.user_identity_rq.primary
        ident.secondary_field = info.user_identity_rq.secondary
        items.append(ident)
    if info.user_identity_ac is not None and ac:
        ident = pn_prim.UserIdentityNegotiation()
        ident.server_response = info.user_identity_ac.server_response
        items.append(ident)
    return items


def _pn_associate(pdu: P.AssociateRQ | P.AssociateAC) -> bytes:
    """Encode ``pdu`` with pynetdicom, built from primitives (not from our bytes)."""
    prim = pn_prim.A_ASSOCIATE()
    prim.application_context_name = pdu.application_context
    prim.called_ae_title = pdu.called_ae
    prim.calling_ae_title = pdu.calling_ae
    info = P.UserInformation(
        **{
            f: getattr(pdu.user_information, f)
            for f in (
                "max_pdu_length",
                "implementation_class_uid",
                "implementation_version_name",
                "async_ops_window",
                "role_selections",
                "user_identity_rq",
                "user_identity_ac",
                "sop_class_extended",
                "sop_class_common_extended",
            )
        }
    )
    if isinstance(pdu, P.AssociateRQ):
        contexts = []
        for rq_ctx in pdu.presentation_contexts:
            ctx = PnContext()
            ctx.context_id = rq_ctx.id
            ctx.abstract_syntax = rq_ctx.abstract_syntax
            ctx.transfer_syntax = cast(Any, rq_ctx.transfer_syntaxes)
            contexts.append(ctx)
        prim.presentation_context_definition_list = contexts
        prim.user_information = _pn_user_information(info, ac=False)
        rq = pn_pdu.A_ASSOCIATE_RQ()
        rq.from_primitive(prim)
        return bytes(rq.encode())
    prim.result = 0
    contexts = []
    for ac_ctx in pdu.presentation_contexts:
        ctx = PnContext()
        ctx.context_id = ac_ctx.id
        ctx.result = ac_ctx.result
        ctx.transfer_syntax = [ac_ctx.transfer_syntax] if ac_ctx.transfer_syntax else []
        contexts.append(ctx)
    prim.presentation_context_definition_results_list = contexts
    prim.user_information = _pn_user_information(info, ac=True)
    ac = pn_pdu.A_ASSOCIATE_AC()
    ac.from_primitive(prim)
    return bytes(ac.encode())


def _without_unknown(pdu: AssocT) -> AssocT:
    pdu.user_information.unknown = []
    return pdu


def test_associate_rq_bytes_match_pynetdicom_both_ways() -> None:
    ours = _without_unknown(full_rq())
    theirs = _pn_associate(ours)
    assert P.encode(ours) == theirs
    assert P.decode_bytes(theirs) == ours
    # pynetdicom decodes our bytes to the same fields.
    parsed = pn_pdu.A_ASSOCIATE_RQ()
    parsed.decode(P.encode(ours))
    assert parsed.called_ae_title == "STORE-SCP"
    assert parsed.calling_ae_title == "MODALITY1"
    assert [
        (c.context_id, c.abstract_syntax, c.transfer_syntax) for c in parsed.presentation_context
    ] == [(c.id, c.abstract_syntax, c.transfer_syntaxes) for c in ours.presentation_contexts]
    prim = parsed.to_primitive()
    assert prim.maximum_length_received == 16384
    assert prim.implementation_class_uid == IMPL_UID
    assert parsed.encode() == P.encode(ours)


def test_associate_ac_bytes_match_pynetdicom_both_ways() -> None:
    ours = _without_unknown(full_ac())
    # pynetdicom always writes a transfer syntax sub-item, so give every context one.
    for ctx in ours.presentation_contexts:
        ctx.transfer_syntax = ctx.transfer_syntax or IMPLICIT
    theirs = _pn_associate(ours)
    assert P.encode(ours) == theirs
    assert P.decode_bytes(theirs) == ours
    parsed = pn_pdu.A_ASSOCIATE_AC()
    parsed.decode(P.encode(ours))
    assert [(c.context_id, c.result) for c in parsed.presentation_context] == [
        (1, 0),
        (3, 1),
        (5, 2),
        (7, 3),
        (9, 4),
    ]
    user_info: Any = parsed.user_information
    assert user_info.user_identity.server_response == b"ticket-42"


def test_associate_rj_matches_pynetdicom_both_ways() -> None:
    prim = pn_prim.A_ASSOCIATE()
    prim.result, prim.result_source, prim.diagnostic = 2, 3, 1
    rj = pn_pdu.A_ASSOCIATE_RJ()
    rj.from_primitive(prim)
    theirs = bytes(rj.encode())
    assert theirs == P.encode(P.AssociateRJ(2, 3, 1))
    assert P.decode_bytes(theirs) == P.AssociateRJ(2, 3, 1)
    parsed = pn_pdu.A_ASSOCIATE_RJ()
    parsed.decode(P.encode(P.AssociateRJ(1, 1, 7)))
    assert (parsed.result, parsed.source, parsed.reason_diagnostic) == (1, 1, 7)


def test_pdata_matches_pynetdicom_both_ways() -> None:
    prim = pn_prim.P_DATA()
    pdv_list: Any = [
        [1, b"\x03command"],
        [1, b"\x00dataset-part"],
        [3, b"\x02end"],
    ]
    prim.presentation_data_value_list = pdv_list
    pd = pn_pdu.P_DATA_TF()
    pd.from_primitive(prim)
    theirs = bytes(pd.encode())
    ours = P.PDataTF(
        [
            P.PDV(1, True, True, b"command"),
            P.PDV(1, False, False, b"dataset-part"),
            P.PDV(3, False, True, b"end"),
        ]
    )
    assert P.encode(ours) == theirs
    assert normalise(P.decode_bytes(theirs)) == ours
    parsed = pn_pdu.P_DATA_TF()
    parsed.decode(P.encode(ours))
    assert [
        (i.presentation_context_id, i.presentation_data_value)
        for i in parsed.presentation_data_value_items
    ] == [(1, b"\x03command"), (1, b"\x00dataset-part"), (3, b"\x02end")]


def test_release_and_abort_match_pynetdicom_both_ways() -> None:
    for ours, theirs_cls in (
        (P.ReleaseRQ(), pn_pdu.A_RELEASE_RQ),
        (P.ReleaseRP(), pn_pdu.A_RELEASE_RP),
    ):
        theirs = bytes(theirs_cls().encode())
        assert P.encode(ours) == theirs
        assert P.decode_bytes(theirs) == ours
    p_abort = pn_prim.A_P_ABORT()
    p_abort.provider_reason = 2
    ab = pn_pdu.A_ABORT_RQ()
    ab.from_primitive(p_abort)
    theirs = bytes(ab.encode())
    assert theirs == P.encode(P.Abort(2, 2))
    assert P.decode_bytes(theirs) == P.Abort(2, 2)
    parsed = pn_pdu.A_ABORT_RQ()
    parsed.decode(P.encode(P.Abort(0, 0)))
    assert (parsed.source, parsed.reason_diagnostic) == (0, 0)


# --- malformed PDUs ---------------------------------------------------------------------


def _reframe(body: bytes, pdu_type: int = 0x01) -> bytes:
    return struct.pack(">BxI", pdu_type, len(body)) + body


def _associate_body(items: bytes, version: int = 1) -> bytes:
    return (
        struct.pack(">H", version)
        + b"\0\0"
        + b"CALLED".ljust(16)
        + b"CALLING".ljust(16)
        + bytes(32)
        + items
    )


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


APP = _item(0x10, b"1.2.840.10008.3.1.1.1")
USER = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, IMPL_UID.encode()))


def _context(
    context_id: int, abstract: str = VERIFICATION, syntaxes: tuple[str, ...] = (IMPLICIT,)
) -> bytes:
    sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
    return _item(0x20, bytes((context_id, 0, 0, 0)) + sub)


def expect_error(raw: bytes, reason: int | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        P.decode_bytes(raw)
    if reason is not None:
        assert info.value.abort_reason == reason, str(info.value)
    return info.value


def test_well_formed_handmade_rq_decodes() -> None:
    """The malformed cases below differ from this one in a single respect."""
    decoded = P.decode_bytes(_reframe(_associate_body(APP + _context(1) + USER)))
    assert isinstance(decoded, P.AssociateRQ)
    assert decoded.presentation_contexts == [P.PresentationContextRQ(1, VERIFICATION, [IMPLICIT])]


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0x09, 0x10, 0x7F, 0xFF])
def test_unknown_pdu_type(pdu_type: int) -> None:
    raw = struct.pack(">BxI", pdu_type, 4) + bytes(4)
    expect_error(raw, P.REASON_UNRECOGNIZED_PDU)
    with pytest.raises(ProtocolError):
        P.parse_header(raw[:6])
    with pytest.raises(ProtocolError):
        P.decode(pdu_type, bytes(4))


@pytest.mark.parametrize("n", range(6))
def test_truncated_header(n: int) -> None:
    expect_error(P.encode(P.ReleaseRQ())[:n])


def test_length_larger_or_smaller_than_the_bytes_that_follow() -> None:
    raw = P.encode(full_rq())
    expect_error(raw[:-1])
    expect_error(raw + b"\0")


def test_parse_header_refuses_huge_lengths_before_reading_the_body() -> None:
    for length in (0xFFFFFFFF, P.HARD_PDU_CAP + 1):
        with pytest.raises(PDUTooLargeError) as info:
            P.parse_header(struct.pack(">BxI", 0x04, length))
        assert info.value.abort_reason == P.REASON_INVALID_PARAMETER
    with pytest.raises(PDUTooLargeError):
        P.parse_header(struct.pack(">BxI", 0x04, 1001), cap=1000)
    assert P.parse_header(struct.pack(">BxI", 0x04, 1000), cap=1000) == (0x04, 1000)
    # decode_bytes checks the header before comparing the length with what follows.
    with pytest.raises(PDUTooLargeError):
        P.decode_bytes(struct.pack(">BxI", 0x04, 0xFFFFFFFF) + bytes(10))
    assert P.parse_header(struct.pack(">BxI", 0x04, P.HARD_PDU_CAP)) == (0x04, P.HARD_PDU_CAP)


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
@pytest.mark.parametrize("length", [0, 3, 65, 0x10000])
def test_fixed_length_pdus_with_wrong_length(pdu_type: int, length: int) -> None:
    with pytest.raises(ProtocolError):
        P.parse_header(struct.pack(">BxI", pdu_type, length))


def test_associate_pdu_shorter_than_fixed_fields() -> None:
    with pytest.raises(ProtocolError):
        P.parse_header(struct.pack(">BxI", 0x01, 67))
    with pytest.raises(ProtocolError):
        P.decode(0x02, bytes(67))


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        pytest.param(
            _context(1) + USER, P.REASON_INVALID_PARAMETER, id="missing-application-context"
        ),
        pytest.param(APP + _context(1), P.REASON_INVALID_PARAMETER, id="missing-user-information"),
        pytest.param(APP + USER, P.REASON_INVALID_PARAMETER, id="no-presentation-context"),
        pytest.param(
            APP + APP + _context(1) + USER,
            P.REASON_UNEXPECTED_PARAMETER,
            id="duplicate-app-context",
        ),
        pytest.param(
            APP + _context(1) + USER + USER, P.REASON_UNEXPECTED_PARAMETER, id="duplicate-user-info"
        ),
        pytest.param(
            APP + _context(1) + _context(1) + USER,
            P.REASON_INVALID_PARAMETER,
            id="duplicate-context-id",
        ),
        pytest.param(APP + _context(0) + USER, P.REASON_INVALID_PARAMETER, id="context-id-zero"),
        pytest.param(APP + _context(2) + USER, P.REASON_INVALID_PARAMETER, id="context-id-even"),
        pytest.param(
            APP + _item(0x20, bytes((1, 0, 0, 0)) + _item(0x40, IMPLICIT.encode())) + USER,
            P.REASON_INVALID_PARAMETER,
            id="context-without-abstract-syntax",
        ),
        pytest.param(
            APP + _context(1, syntaxes=()) + USER,
            P.REASON_INVALID_PARAMETER,
            id="context-without-ts",
        ),
        pytest.param(
            APP
            + _item(
                0x20,
                bytes((1, 0, 0, 0))
                + _item(0x30, b"1.2")
                + _item(0x30, b"1.3")
                + _item(0x40, b"1.2"),
            )
            + USER,
            P.REASON_UNEXPECTED_PARAMETER,
            id="two-abstract-syntaxes",
        ),
        pytest.param(
            APP
            + _item(0x20, bytes((1, 0, 0, 0)) + _item(0x30, b"1.2") + _item(0x41, b"1.2"))
            + USER,
            P.REASON_UNRECOGNIZED_PARAMETER,
            id="unknown-sub-item-in-context",
        ),
        pytest.param(
            APP + _item(0x20, b"\x01\x00") + USER,
            P.REASON_INVALID_PARAMETER,
            id="truncated-context",
        ),
        pytest.param(
            APP + _item(0x21, bytes(4)) + USER, P.REASON_UNRECOGNIZED_PARAMETER, id="ac-item-in-rq"
        ),
        pytest.param(
            APP + _context(1) + USER + _item(0x99, b"x"),
            P.REASON_UNRECOGNIZED_PARAMETER,
            id="unknown-item",
        ),
        pytest.param(
            APP + _context(1) + USER + b"\x10\x00",
            P.REASON_INVALID_PARAMETER,
            id="truncated-item-header",
        ),
        pytest.param(
            APP + _context(1) + USER[:2] + struct.pack(">H", 0xFFFF) + USER[4:],
            P.REASON_INVALID_PARAMETER,
            id="item-length-overruns",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x51, struct.pack(">I", 1))),
            P.REASON_INVALID_PARAMETER,
            id="no-implementation-class-uid",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x51, b"\0\0\0")),
            P.REASON_INVALID_PARAMETER,
            id="max-length-not-4-bytes",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x52, b"1.3")),
            P.REASON_UNEXPECTED_PARAMETER,
            id="duplicate-implementation-uid",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(0x50, _item(0x52, b"1.2") + _item(0x51, struct.pack(">I", 6))),
            P.REASON_INVALID_PARAMETER,
            id="max-length-too-small-for-any-data",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x53, b"\0\1")),
            P.REASON_INVALID_PARAMETER,
            id="async-window-bad-length",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(0x50, _item(0x52, b"1.2") + _item(0x54, b"\0\x09" + b"1.2\x01\x01")),
            P.REASON_INVALID_PARAMETER,
            id="role-selection-uid-overruns",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(0x50, _item(0x52, b"1.2") + _item(0x58, b"\x01\x00\x00\x09ab\x00\x00")),
            P.REASON_INVALID_PARAMETER,
            id="user-identity-primary-overruns",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x59, b"\x00\x05ab")),
            P.REASON_INVALID_PARAMETER,
            id="user-identity-response-bad-length",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(
                0x50,
                _item(0x52, b"1.2")
                + _item(
                    0x57, b"\x00\x01" + b"1" + b"\x00\x01" + b"2" + b"\x00\x09" + b"\x00\x01" + b"3"
                ),
            ),
            P.REASON_INVALID_PARAMETER,
            id="common-extended-related-list-bad-length",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x54, b"\x00")),
            P.REASON_INVALID_PARAMETER,
            id="role-selection-truncated-uid-length",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x54, b"\x00\x031.2\x01")),
            P.REASON_INVALID_PARAMETER,
            id="role-selection-missing-role-byte",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(0x50, _item(0x52, b"1.2") + _item(0x57, b"\x00\x011\x00\x012")),
            P.REASON_INVALID_PARAMETER,
            id="common-extended-missing-related-length",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x58, b"\x01\x00\x00")),
            P.REASON_INVALID_PARAMETER,
            id="user-identity-truncated",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(0x50, _item(0x52, b"1.2") + _item(0x58, b"\x02\x00\x00\x01a\x00\x05b")),
            P.REASON_INVALID_PARAMETER,
            id="user-identity-secondary-overruns",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, b"1.2") + _item(0x59, b"\x00")),
            P.REASON_INVALID_PARAMETER,
            id="user-identity-response-truncated",
        ),
        pytest.param(
            APP
            + _context(1)
            + _item(0x50, _item(0x52, b"1.2") + _item(0x55, b"A") + _item(0x55, b"B")),
            P.REASON_UNEXPECTED_PARAMETER,
            id="duplicate-version-name",
        ),
        pytest.param(
            APP + _context(1) + _item(0x50, _item(0x52, "1.2.\u00e9".encode("latin-1"))),
            P.REASON_INVALID_PARAMETER,
            id="non-ascii-uid",
        ),
    ],
)
def test_malformed_associate_rq(items: bytes, reason: int) -> None:
    expect_error(_reframe(_associate_body(items)), reason)


def test_more_than_128_presentation_contexts() -> None:
    ok = APP + b"".join(_context(2 * i + 1) for i in range(128)) + USER
    decoded = P.decode_bytes(_reframe(_associate_body(ok)))
    assert isinstance(decoded, P.AssociateRQ) and len(decoded.presentation_contexts) == 128
    too_many = (
        APP + b"".join(_context(2 * i + 1) for i in range(128)) + _context(1, CT_STORAGE) + USER
    )
    # ID 1 twice is caught as a duplicate; 129 distinct odd IDs do not exist, so any 129th is a duplicate.
    expect_error(_reframe(_associate_body(too_many)), P.REASON_INVALID_PARAMETER)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"\xe9CHO", "\xe9CHO"),  # a non-ASCII byte is kept as one character
        (b"A\\B", "A\\B"),
        (b"A\x01B", "A\x01B"),
        (b"", ""),
        (b"\0" * 16, ""),
        (b"  PADDED  \0\0\0\0\0\0", "PADDED"),
        (b"SIXTEEN-CHARS-AE", "SIXTEEN-CHARS-AE"),
    ],
)
@pytest.mark.parametrize("pdu_type", [0x01, 0x02])
def test_odd_ae_title_fields_decode_as_sent(field: bytes, expected: str, pdu_type: int) -> None:
    """Decoding never aborts on a title: the acceptor rejects it with reason 3/7 instead,
    and a requestor does not test what an A-ASSOCIATE-AC echoes (PS3.8 9.3.3)."""
    items = APP + (_context(1) if pdu_type == 0x01 else _item(0x21, bytes((1, 0, 3, 0)))) + USER
    for start in (4, 20):  # called, then calling
        body = bytearray(_associate_body(items))
        body[start : start + 16] = field.ljust(16)
        decoded = P.decode_bytes(_reframe(bytes(body), pdu_type))
        assert isinstance(decoded, (P.AssociateRQ, P.AssociateAC))
        assert (decoded.called_ae if start == 4 else decoded.calling_ae) == expected


@pytest.mark.parametrize(
    "title", ["SEVENTEEN-CHARS-A", "A\\B", "TAB\tAE", "CAF\u00c9", "", "    ", "NUL\0AE"]
)
def test_invalid_ae_titles_are_never_encoded(title: str) -> None:
    """Encoding refused to cut long titles silently: it raises, for either field."""
    for called, calling in ((title, "OK"), ("OK", title)):
        with pytest.raises(InvalidAETitleError):
            P.encode(P.AssociateRQ(called, calling, [P.PresentationContextRQ(1, "1.2", ["1.2"])], P.UserInformation()))


def test_malformed_associate_ac() -> None:
    def ac(items: bytes) -> bytes:
        return _reframe(_associate_body(items), 0x02)

    accepted_without_ts = _item(0x21, bytes((1, 0, 0, 0)))
    expect_error(ac(APP + accepted_without_ts + USER), P.REASON_INVALID_PARAMETER)
    two_ts = _item(0x21, bytes((1, 0, 0, 0)) + _item(0x40, b"1.2") + _item(0x40, b"1.3"))
    expect_error(ac(APP + two_ts + USER), P.REASON_INVALID_PARAMETER)
    abstract_in_ac = _item(0x21, bytes((1, 0, 0, 0)) + _item(0x30, b"1.2") + _item(0x40, b"1.2"))
    expect_error(ac(APP + abstract_in_ac + USER), P.REASON_UNRECOGNIZED_PARAMETER)
    even = _item(0x21, bytes((4, 0, 0, 0)) + _item(0x40, b"1.2"))
    expect_error(ac(APP + even + USER), P.REASON_INVALID_PARAMETER)
    # A rejected context needs no transfer syntax, and an AC may accept nothing at all.
    rejected = _item(0x21, bytes((1, 0, 3, 0)))
    decoded = P.decode_bytes(ac(APP + rejected + USER))
    assert isinstance(decoded, P.AssociateAC)
    assert decoded.presentation_contexts == [P.PresentationContextAC(1, 3, "")]


def _pdata(*pdvs: bytes) -> bytes:
    return _reframe(b"".join(pdvs), 0x04)


def _pdv(length: int, context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", length, context_id, control) + data


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_pdata(), id="no-pdv"),
        pytest.param(_pdata(_pdv(0, 1, 3, b"")), id="pdv-length-0"),
        pytest.param(_pdata(_pdv(1, 1, 3, b"")), id="pdv-length-1"),
        pytest.param(_pdata(_pdv(10, 1, 3, b"abc")), id="pdv-longer-than-pdu"),
        pytest.param(_pdata(_pdv(0xFFFFFFFF, 1, 3, b"abc")), id="pdv-length-huge"),
        pytest.param(_pdata(_pdv(5, 1, 3, b"abc"), b"\x00\x00"), id="truncated-second-pdv-header"),
        pytest.param(_pdata(_pdv(5, 2, 3, b"abc")), id="even-context-id"),
        pytest.param(_pdata(_pdv(5, 0, 3, b"abc")), id="context-id-zero"),
        pytest.param(_pdata(_pdv(5, 1, 0x04, b"abc")), id="reserved-control-bit-2"),
        pytest.param(_pdata(_pdv(5, 1, 0x80, b"abc")), id="reserved-control-bit-7"),
    ],
)
def test_malformed_pdata(raw: bytes) -> None:
    expect_error(raw, P.REASON_INVALID_PARAMETER)


def test_empty_pdv_payload_is_valid() -> None:
    decoded = P.decode_bytes(_pdata(_pdv(2, 1, 3, b"")))
    assert isinstance(decoded, P.PDataTF)
    assert bytes(decoded.pdvs[0].data) == b""


@pytest.mark.parametrize("pdu_type", [0x03, 0x05, 0x06, 0x07])
def test_fixed_length_body_shorter_than_4_bytes(pdu_type: int) -> None:
    with pytest.raises(ProtocolError):
        P.decode(pdu_type, b"\x00\x00\x00")


def test_encoder_refuses_what_cannot_be_framed() -> None:
    rq = full_rq()
    rq.user_information.sop_class_extended = [P.SOPClassExtendedNegotiation("1.2", b"x" * 0x10000)]
    with pytest.raises(ValueError):
        P.encode(rq)
    with pytest.raises(TypeError):
        P.encode("not a PDU")  # type: ignore[arg-type]


@pytest.mark.parametrize("max_length", [0, 7, 0xFFFFFFFF])
def test_max_length_values_that_can_carry_data_are_accepted(max_length: int) -> None:
    """0 means unlimited; 7 is the smallest PDU with one data byte (PDV header is 6)."""
    rq = full_rq()
    rq.user_information.max_pdu_length = max_length
    decoded = roundtrip(rq)
    assert isinstance(decoded, P.AssociateRQ)
    assert decoded.user_information.max_pdu_length == max_length
    if max_length:
        assert len(list(P.fragment(1, False, b"abc", max_length))) >= 1


@pytest.mark.parametrize("size", [0, 1, P.SMALL_PDV - 3])
def test_a_pdu_packed_with_small_pdvs_is_refused_while_decoding(size: int) -> None:
    """One object per 6 bytes on the wire is refused past MAX_SMALL_PDVS, however large the PDU."""
    small = _pdv(size + 2, 1, 0, bytes(size))
    assert len(P.decode_pdata(_pdata(small * P.MAX_SMALL_PDVS)[6:])) == P.MAX_SMALL_PDVS
    expect_error(_pdata(small * (P.MAX_SMALL_PDVS + 1)), P.REASON_INVALID_PARAMETER)
    # Larger PDVs do not count towards it.
    large = _pdv(P.SMALL_PDV, 1, 0, bytes(P.SMALL_PDV - 2))
    assert len(P.decode_pdata(_pdata(large * (P.MAX_SMALL_PDVS + 1))[6:])) == P.MAX_SMALL_PDVS + 1
