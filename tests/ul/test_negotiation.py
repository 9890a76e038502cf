"""Association negotiation as pure functions (PS3.8 9.3.2-9.3.3, PS3.7 annex D)."""

from __future__ import annotations

from typing import Any

import pytest

from aiodicom.codec.uids import (
    APPLICATION_CONTEXT_NAME,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
)
from aiodicom.errors import ProtocolError
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    AcceptedContext,
    AcceptorPolicy,
    accepted_contexts,
    build_request,
    choose_transfer_syntax,
    default_storage_policy,
    negotiate,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.22"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG2000 = "1.2.840.10008.1.2.4.90"
IMPLICIT, EXPLICIT, BIG = (
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)


def policy(**options: Any) -> AcceptorPolicy:
    return default_storage_policy("STORE_SCP", [VERIFICATION_SOP_CLASS, CT, MR], **options)


def rq(
    *contexts: tuple[str, list[str]],
    called: str = "STORE_SCP",
    calling: str = "MODALITY",
    **kw: object,
) -> P.AssociateRQ:
    request = build_request("STORE_SCP", "MODALITY", contexts or [(CT, [IMPLICIT])], **kw)  # type: ignore[arg-type]
    # The titles as a peer may send them (build_request refuses invalid ones of our own).
    request.called_ae, request.calling_ae = called, calling
    return request


def accept(
    request: P.AssociateRQ, pol: AcceptorPolicy | None = None
) -> tuple[P.AssociateAC, list[AcceptedContext]]:
    answer, accepted = negotiate(request, pol or policy())
    assert isinstance(answer, P.AssociateAC), answer
    return answer, accepted


def reject(request: P.AssociateRQ, pol: AcceptorPolicy) -> P.AssociateRJ:
    answer, accepted = negotiate(request, pol)
    assert isinstance(answer, P.AssociateRJ), answer
    assert accepted == []
    return answer


# --- presentation contexts ------------------------------------------------------------------


def test_unsupported_abstract_syntax_gets_result_3() -> None:
    ac, accepted = accept(rq((SR, [IMPLICIT]), (CT, [IMPLICIT])))
    assert ac.presentation_contexts == [
        P.PresentationContextAC(1, P.ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED),
        P.PresentationContextAC(3, P.ContextResult.ACCEPTANCE, IMPLICIT),
    ]
    assert accepted == [AcceptedContext(3, CT, IMPLICIT)]


def test_unsupported_transfer_syntaxes_get_result_4() -> None:
    ac, accepted = accept(rq((CT, [JPEG_LOSSLESS, JPEG2000])))
    assert ac.presentation_contexts == [
        P.PresentationContextAC(1, P.ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED)
    ]
    assert accepted == []


def test_answer_survives_the_codec_and_pynetdicom_would_read_the_results() -> None:
    ac, _ = accept(rq((SR, [IMPLICIT]), (CT, [JPEG2000]), (MR, [BIG, EXPLICIT])))
    decoded = P.decode_bytes(P.encode(ac))
    assert decoded == ac
    assert [(c.id, c.result) for c in ac.presentation_contexts] == [(1, 3), (3, 4), (5, 0)]


def test_our_preference_order_wins_over_the_requestors() -> None:
    _, accepted = accept(rq((CT, [IMPLICIT, BIG, EXPLICIT])))
    assert accepted[0].transfer_syntax == UNCOMPRESSED_TRANSFER_SYNTAXES[0] == EXPLICIT
    pol = default_storage_policy("STORE_SCP", [CT], transfer_syntaxes=(BIG, IMPLICIT))
    _, accepted = accept(rq((CT, [IMPLICIT, EXPLICIT, BIG])), pol)
    assert accepted[0].transfer_syntax == BIG


def test_accept_any_keeps_the_requestors_first_compressed_choice() -> None:
    pol = policy(accept_any_transfer_syntax=True)
    _, accepted = accept(rq((CT, [JPEG_LOSSLESS, EXPLICIT, IMPLICIT])), pol)
    assert accepted == [AcceptedContext(1, CT, JPEG_LOSSLESS)]
    # Still only for abstract syntaxes we support.
    ac, _ = accept(rq((SR, [JPEG_LOSSLESS])), pol)
    assert ac.presentation_contexts[0].result == P.ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED


DEFLATED = "1.2.840.10008.1.2.1.99"


@pytest.mark.parametrize(
    ("proposed", "chosen"),
    [
        # An uncompressed first choice: explicit little endian, then implicit, whatever the order.
        ([BIG, IMPLICIT, EXPLICIT], EXPLICIT),
        ([IMPLICIT, BIG, EXPLICIT], EXPLICIT),
        ([BIG, IMPLICIT], IMPLICIT),
        ([IMPLICIT, JPEG_LOSSLESS], IMPLICIT),
        ([BIG, JPEG2000, EXPLICIT], EXPLICIT),
        # Only retired big endian and something else uncompressed-first: never big endian first.
        ([BIG, JPEG2000], JPEG2000),
        ([BIG], BIG),
        # A compressed or deflated first choice is kept as offered (data stored untouched).
        ([JPEG2000, JPEG_LOSSLESS, EXPLICIT], JPEG2000),
        ([DEFLATED, EXPLICIT], DEFLATED),
    ],
)
def test_accept_any_prefers_explicit_little_endian_among_uncompressed(
    proposed: list[str], chosen: str
) -> None:
    assert choose_transfer_syntax(proposed, (IMPLICIT,), accept_any=True) == chosen
    _, accepted = accept(rq((CT, proposed)), policy(accept_any_transfer_syntax=True))
    assert accepted == [AcceptedContext(1, CT, chosen)]


def test_choose_transfer_syntax_ignores_empty_names() -> None:
    assert choose_transfer_syntax(["", IMPLICIT], (IMPLICIT,), accept_any=True) == IMPLICIT
    assert choose_transfer_syntax([""], (IMPLICIT,), accept_any=True) is None
    assert choose_transfer_syntax([], (IMPLICIT,), accept_any=False) is None


def test_several_contexts_for_one_abstract_syntax_are_answered_separately() -> None:
    """A sender proposes CT once per encoding it holds; each context is decided on its own."""
    _, accepted = accept(rq((CT, [JPEG_LOSSLESS]), (CT, [IMPLICIT]), (CT, [EXPLICIT, IMPLICIT])))
    assert accepted == [AcceptedContext(3, CT, IMPLICIT), AcceptedContext(5, CT, EXPLICIT)]
    _, accepted = accept(
        rq((CT, [JPEG_LOSSLESS]), (CT, [IMPLICIT])), policy(accept_any_transfer_syntax=True)
    )
    assert accepted == [AcceptedContext(1, CT, JPEG_LOSSLESS), AcceptedContext(3, CT, IMPLICIT)]


def test_ac_echoes_ae_titles_and_names_our_implementation() -> None:
    ac, _ = accept(rq(called="STORE_SCP", calling="MODALITY"))
    assert (ac.called_ae, ac.calling_ae) == ("STORE_SCP", "MODALITY")
    assert ac.application_context == APPLICATION_CONTEXT_NAME
    info = ac.user_information
    assert info.max_pdu_length == DEFAULT_MAX_PDU_LENGTH
    assert info.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert info.implementation_version_name == IMPLEMENTATION_VERSION_NAME
    assert (
        info.async_ops_window is None
        and info.user_identity_ac is None
        and info.role_selections == []
    )
    ac, _ = accept(rq(), policy(max_pdu_length=0))
    assert ac.user_information.max_pdu_length == 0  # 0 = unlimited is announced as such


def test_unknown_application_context_is_rejected_reason_2() -> None:
    request = rq()
    request.application_context = "1.2.3.4"
    assert reject(request, policy()) == P.AssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, 2)


# --- AE titles ------------------------------------------------------------------------------


@pytest.mark.parametrize("called", ["STORE_SCP", "STORE_SCP   ", "  STORE_SCP"])
def test_called_ae_check_ignores_padding(called: str) -> None:
    accept(rq(called=called), policy(require_called_ae=True))


@pytest.mark.parametrize("called", ["store_scp", "OTHER", "STORE_SCP2", ""])
def test_called_ae_check_rejects_reason_7_and_is_case_sensitive(called: str) -> None:
    """AE titles are case sensitive (PS3.5 AE value representation)."""
    answer = reject(rq(called=called), policy(require_called_ae=True))
    assert answer == P.AssociateRJ(
        P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED
    )
    assert P.encode(answer)[7:10] == b"\x01\x01\x07"


def test_called_ae_is_not_checked_unless_asked() -> None:
    accept(rq(called="ANYTHING"))


def test_called_ae_check_after_the_wire() -> None:
    """The called AE title goes on the wire space padded to 16 bytes and must still match."""
    request = P.decode_bytes(P.encode(rq(called="STORE_SCP")))
    assert isinstance(request, P.AssociateRQ)
    accept(request, policy(require_called_ae=True))


def test_calling_ae_allow_list_rejects_reason_3() -> None:
    pol = policy(calling_ae_allowlist=["MODALITY ", "CT01"])
    accept(rq(calling="MODALITY"), pol)
    accept(rq(calling="CT01   "), pol)
    for calling in ("modality", "INTRUDER"):
        answer = reject(rq(calling=calling), pol)
        assert answer == P.AssociateRJ(
            P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLING_AE_NOT_RECOGNIZED
        )
    # An empty allow list lets nobody in; None lets everybody in.
    reject(rq(), policy(calling_ae_allowlist=[]))
    accept(rq(), policy(calling_ae_allowlist=None))


# --- user information -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proposed", "performed_by_us", "answer"),
    [
        ((5, 5), 1, (1, 1)),  # we perform one at a time
        ((5, 5), 8, (5, 1)),  # never more than the requestor invokes
        ((0, 0), 8, (8, 1)),  # 0 = unlimited invoked: our own limit
        ((3, 1), 2, (2, 1)),
        ((1, 1), 0, (1, 1)),  # never answer 0 (= unlimited) by accident
    ],
)
def test_async_ops_window_answer(
    proposed: tuple[int, int], performed_by_us: int, answer: tuple[int, int]
) -> None:
    """PS3.7 D.3.3.3: the AC's first field is how many operations the requestor may invoke
    (what we perform, capped by what it proposed); the second concerns operations we would
    invoke, and an SCP of C-ECHO/C-STORE invokes none asynchronously."""
    ac, _ = accept(rq(async_ops_window=proposed), policy(max_operations_performed=performed_by_us))
    assert ac.user_information.async_ops_window == answer


def test_no_async_ops_window_answer_without_a_proposal() -> None:
    """D.3.3.3: if the negotiation is absent from the request it is omitted from the response."""
    ac, _ = accept(rq(), policy(max_operations_performed=8))
    assert ac.user_information.async_ops_window is None


def test_role_selection_answers() -> None:
    roles = [
        P.RoleSelection(CT, True, True),
        P.RoleSelection(MR, False, True),
        P.RoleSelection(SR, True, False),
    ]
    ac, _ = accept(rq(role_selections=roles), policy(accept_scp_role_for=[MR]))
    assert ac.user_information.role_selections == [
        P.RoleSelection(CT, True, False),  # SCP role refused: not in accept_scp_role_for
        P.RoleSelection(MR, False, True),
        P.RoleSelection(SR, True, False),
    ]


def test_no_role_selection_answer_without_a_proposal() -> None:
    ac, _ = accept(rq(), policy(accept_scp_role_for=[CT]))
    assert ac.user_information.role_selections == []


def _identity(wants_response: bool, identity_type: int = 2) -> P.UserIdentityRQ:
    return P.UserIdentityRQ(
        identity_type, wants_response, b"alice", b"secret" if identity_type == 2 else b""
    )


def test_identity_check_accepting_with_response_requested() -> None:
    seen: list[P.UserIdentityRQ] = []

    def check(identity: P.UserIdentityRQ) -> bytes | None:
        seen.append(identity)
        return b"welcome" if identity.primary == b"alice" else None

    ac, _ = accept(rq(user_identity=_identity(True)), policy(identity_check=check))
    assert seen == [_identity(True)]
    assert ac.user_information.user_identity_ac == P.UserIdentityAC(b"welcome")


def test_identity_response_only_when_requested() -> None:
    ac, _ = accept(rq(user_identity=_identity(False)), policy(identity_check=lambda _i: b"welcome"))
    assert ac.user_information.user_identity_ac is None


@pytest.mark.parametrize("identity_type", [1, 2, 3, 4, 5])
def test_identity_check_rejecting(identity_type: int) -> None:
    answer = reject(
        rq(user_identity=_identity(True, identity_type)), policy(identity_check=lambda _i: None)
    )
    assert answer == P.AssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_NO_REASON)


def test_identity_ignored_without_a_check() -> None:
    ac, _ = accept(rq(user_identity=_identity(True)))
    assert ac.user_information.user_identity_ac is None


def test_identity_check_not_called_without_identity() -> None:
    def check(_identity: P.UserIdentityRQ) -> bytes | None:
        raise AssertionError("no identity was proposed")

    accept(rq(), policy(identity_check=check))


# --- requestor side -----------------------------------------------------------------------


def test_build_request_numbers_contexts_odd_in_order() -> None:
    request = build_request(
        "A", "B", [(CT, [EXPLICIT]), (MR, (IMPLICIT, EXPLICIT)), (CT, [JPEG2000])]
    )
    assert [
        (c.id, c.abstract_syntax, c.transfer_syntaxes) for c in request.presentation_contexts
    ] == [(1, CT, [EXPLICIT]), (3, MR, [IMPLICIT, EXPLICIT]), (5, CT, [JPEG2000])]
    assert request.user_information.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert request.user_information.max_pdu_length == DEFAULT_MAX_PDU_LENGTH


def test_build_request_limits() -> None:
    with pytest.raises(ValueError):
        build_request("A", "B", [])
    request = build_request("A", "B", [(CT, [IMPLICIT])] * 128)
    assert request.presentation_contexts[-1].id == 255
    assert P.decode_bytes(P.encode(request)) == request
    with pytest.raises(ValueError):
        build_request("A", "B", [(CT, [IMPLICIT])] * 129)


def test_accepted_contexts_reads_the_answer() -> None:
    request = rq((CT, [JPEG2000, EXPLICIT]), (MR, [IMPLICIT]), (SR, [IMPLICIT]))
    ac, accepted_by_scp = accept(request)
    assert (
        accepted_contexts(request, ac)
        == accepted_by_scp
        == [AcceptedContext(1, CT, EXPLICIT), AcceptedContext(3, MR, IMPLICIT)]
    )


def test_accepted_contexts_rejects_an_answer_for_an_unknown_id() -> None:
    request = rq((CT, [IMPLICIT]))
    ac, _ = accept(request)
    ac.presentation_contexts.append(
        P.PresentationContextAC(7, P.ContextResult.ACCEPTANCE, IMPLICIT)
    )
    with pytest.raises(ProtocolError) as info:
        accepted_contexts(request, ac)
    assert info.value.abort_reason == P.REASON_INVALID_PARAMETER


def test_accepted_contexts_rejects_an_unknown_id_even_when_rejected() -> None:
    request = rq((CT, [IMPLICIT]))
    ac, _ = accept(request)
    ac.presentation_contexts.append(P.PresentationContextAC(9, P.ContextResult.USER_REJECTION))
    with pytest.raises(ProtocolError):
        accepted_contexts(request, ac)


def test_accepted_contexts_rejects_an_unproposed_transfer_syntax() -> None:
    request = rq((CT, [IMPLICIT]))
    ac, _ = accept(request)
    ac.presentation_contexts[0].transfer_syntax = JPEG2000
    with pytest.raises(ProtocolError) as info:
        accepted_contexts(request, ac)
    assert info.value.abort_reason == P.REASON_INVALID_PARAMETER


def test_accepted_contexts_ignores_the_transfer_syntax_of_rejected_contexts() -> None:
    """PS3.8 table 9-18: for a non-accepted context the transfer syntax is not significant."""
    request = rq((CT, [IMPLICIT]), (MR, [IMPLICIT]))
    ac, _ = accept(request)
    ac.presentation_contexts[1] = P.PresentationContextAC(3, P.ContextResult.NO_REASON, "9.9.9")
    assert accepted_contexts(request, ac) == [AcceptedContext(1, CT, IMPLICIT)]
