"""The PS3.8 section 9.2 state machine: table 9-10 cell by cell, driven through real sequences.

Each (state, event) pair the standard defines is reached by a legitimate sequence of
primitives and PDUs (for each role that can be in that state), then the event is
applied and the next state, the bytes queued for the wire, ``should_close``,
``artim_running`` and the indications returned are checked against tables 9-6..9-9.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.fsm import TRANSITION_TABLE as PYNETDICOM_TABLE

from aiodicom.ul import pdu as P
from aiodicom.ul.events import (
    AbortIndication,
    AssociateAcceptConfirmation,
    AssociateIndication,
    AssociateRejectConfirmation,
    DataIndication,
    ReleaseConfirmation,
    ReleaseIndication,
    TransportClosed,
    UpperLayerEvent,
)
from aiodicom.ul.fsm import ACTIONS, TRANSITIONS, Event, State, action_for
from aiodicom.ul.machine import LocalProtocolError, Role, UpperLayer
from aiodicom.ul.negotiation import build_request

S = State
E = Event

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"

RQ = build_request("SCP", "SCU", [(VERIFICATION, [IMPLICIT])])
AC = P.AssociateAC(
    "SCP", "SCU", [P.PresentationContextAC(1, 0, IMPLICIT)], P.UserInformation(16384, "1.2.3.4")
)
RJ = P.AssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED)
PDATA = P.PDataTF([P.PDV(1, True, True, b"\x00" * 12)])
UNKNOWN_PDU = b"\x0a\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def abort_bytes(source: int, reason: int) -> bytes:
    return P.encode(P.Abort(source, reason))


# --- the table, transcribed independently ------------------------------------------------

# PS3.8 table 9-10, one line per event, columns Sta1..Sta13 ("-" = no action defined).
# Transcribed from the standard's table for this test, separately from aiodicom.ul.fsm.
STANDARD_TABLE_9_10 = """
Evt1  AE-1 -    -    -    -    -    -    -    -    -     -    -    -
Evt2  -    -    -    AE-2 -    -    -    -    -    -     -    -    -
Evt3  -    AA-1 AA-8 -    AE-3 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8 AA-8 AA-6
Evt4  -    AA-1 AA-8 -    AE-4 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8 AA-8 AA-6
Evt5  AE-5 -    -    -    -    -    -    -    -    -     -    -    -
Evt6  -    AE-6 AA-8 -    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8 AA-8 AA-7
Evt7  -    -    AE-7 -    -    -    -    -    -    -     -    -    -
Evt8  -    -    AE-8 -    -    -    -    -    -    -     -    -    -
Evt9  -    -    -    -    -    DT-1 -    AR-7 -    -     -    -    -
Evt10 -    AA-1 AA-8 -    AA-8 DT-2 AR-6 AA-8 AA-8 AA-8  AA-8 AA-8 AA-6
Evt11 -    -    -    -    -    AR-1 -    -    -    -     -    -    -
Evt12 -    AA-1 AA-8 -    AA-8 AR-2 AR-8 AA-8 AA-8 AA-8  AA-8 AA-8 AA-6
Evt13 -    AA-1 AA-8 -    AA-8 AA-8 AR-3 AA-8 AA-8 AR-10 AR-3 AA-8 AA-6
Evt14 -    -    -    -    -    -    -    AR-4 AR-9 -     -    AR-4 -
Evt15 -    -    AA-1 AA-2 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1  AA-1 AA-1 -
Evt16 -    AA-2 AA-3 -    AA-3 AA-3 AA-3 AA-3 AA-3 AA-3  AA-3 AA-3 AA-2
Evt17 -    AA-5 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4  AA-4 AA-4 AR-5
Evt18 -    AA-2 -    -    -    -    -    -    -    -     -    -    AA-2
Evt19 -    AA-1 AA-8 -    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8 AA-8 AA-7
"""


def _parse_standard() -> dict[tuple[Event, State], str]:
    cells: dict[tuple[Event, State], str] = {}
    for line in STANDARD_TABLE_9_10.strip().splitlines():
        event, *actions = line.split()
        assert len(actions) == 13
        for index, action in enumerate(actions, start=1):
            if action != "-":
                cells[(Event(event), State(f"Sta{index}"))] = action
    return cells


STANDARD = _parse_standard()


def _table_cells() -> dict[tuple[Event, State], str]:
    return {
        (event, state): action
        for event, row in TRANSITIONS.items()
        for state, action in row.items()
    }


def test_transitions_match_table_9_10() -> None:
    assert _table_cells() == STANDARD


def test_transitions_match_pynetdicoms_transcription() -> None:
    """A second, independent transcription of table 9-10 (pynetdicom's) agrees cell by cell."""
    theirs = {(Event(e), State(s)): a for (e, s), a in PYNETDICOM_TABLE.items()}
    assert _table_cells() == theirs


def test_action_next_states_match_tables_9_6_to_9_9() -> None:
    expected = {
        "AE-1": S.STA4, "AE-2": S.STA5, "AE-3": S.STA6, "AE-4": S.STA1, "AE-5": S.STA2, "AE-6": None,
        "AE-7": S.STA6, "AE-8": S.STA13, "DT-1": S.STA6, "DT-2": S.STA6, "AR-1": S.STA7, "AR-2": S.STA8,
        "AR-3": S.STA1, "AR-4": S.STA13, "AR-5": S.STA1, "AR-6": S.STA7, "AR-7": S.STA8, "AR-8": None,
        "AR-9": S.STA11, "AR-10": S.STA12, "AA-1": S.STA13, "AA-2": S.STA1, "AA-3": S.STA1,
        "AA-4": S.STA1, "AA-5": S.STA1, "AA-6": S.STA13, "AA-7": S.STA13, "AA-8": S.STA13,
    }  # fmt: skip
    assert {name: nxt for name, (_text, nxt) in ACTIONS.items()} == expected
    assert set(ACTIONS) == set(STANDARD.values())


def test_action_for_returns_none_for_undefined_cells() -> None:
    assert action_for(E.EVT1, S.STA6) is None
    assert action_for(E.EVT6, S.STA2) == "AE-6"


# --- reaching every state legitimately ---------------------------------------------------


def _requestor_sta4() -> UpperLayer:
    ul = UpperLayer(Role.REQUESTOR)
    ul.request(RQ)
    return ul


def _requestor_sta5() -> UpperLayer:
    ul = _requestor_sta4()
    ul.connection_made()
    return ul


def _acceptor_sta2() -> UpperLayer:
    ul = UpperLayer(Role.ACCEPTOR)
    ul.connection_made()
    return ul


def _acceptor_sta3() -> UpperLayer:
    ul = _acceptor_sta2()
    (event,) = ul.receive_data(P.encode(RQ))
    assert isinstance(event, AssociateIndication)
    return ul


def _sta6(role: Role) -> UpperLayer:
    if role is Role.REQUESTOR:
        ul = _requestor_sta5()
        ul.receive_data(P.encode(AC))
    else:
        ul = _acceptor_sta3()
        ul.accept(AC)
    return ul


def _sta7(role: Role) -> UpperLayer:
    ul = _sta6(role)
    ul.release()
    return ul


def _sta8(role: Role) -> UpperLayer:
    ul = _sta6(role)
    ul.receive_data(P.encode(P.ReleaseRQ()))
    return ul


def _collision(role: Role) -> UpperLayer:
    """Sta9 (requestor) or Sta10 (acceptor)."""
    ul = _sta7(role)
    ul.receive_data(P.encode(P.ReleaseRQ()))
    return ul


def _requestor_sta11() -> UpperLayer:
    ul = _collision(Role.REQUESTOR)
    ul.release_response()
    return ul


def _acceptor_sta12() -> UpperLayer:
    ul = _collision(Role.ACCEPTOR)
    ul.receive_data(P.encode(P.ReleaseRP()))
    return ul


def _sta13(role: Role) -> UpperLayer:
    if role is Role.ACCEPTOR:
        ul = _acceptor_sta3()
        ul.reject(RJ)
    else:
        ul = _sta6(role)
        ul.abort()
    return ul


REACH: dict[tuple[State, Role], Callable[[], UpperLayer]] = {
    (S.STA1, Role.REQUESTOR): lambda: UpperLayer(Role.REQUESTOR),
    (S.STA1, Role.ACCEPTOR): lambda: UpperLayer(Role.ACCEPTOR),
    (S.STA2, Role.ACCEPTOR): _acceptor_sta2,
    (S.STA3, Role.ACCEPTOR): _acceptor_sta3,
    (S.STA4, Role.REQUESTOR): _requestor_sta4,
    (S.STA5, Role.REQUESTOR): _requestor_sta5,
    (S.STA9, Role.REQUESTOR): lambda: _collision(Role.REQUESTOR),
    (S.STA10, Role.ACCEPTOR): lambda: _collision(Role.ACCEPTOR),
    (S.STA11, Role.REQUESTOR): _requestor_sta11,
    (S.STA12, Role.ACCEPTOR): _acceptor_sta12,
}
for _role in Role:
    REACH[(S.STA6, _role)] = partial(_sta6, _role)
    REACH[(S.STA7, _role)] = partial(_sta7, _role)
    REACH[(S.STA8, _role)] = partial(_sta8, _role)
    REACH[(S.STA13, _role)] = partial(_sta13, _role)


def state_of(ul: UpperLayer) -> State:
    """``ul.state``, read through a call so type checkers do not pin it across calls."""
    return ul.state


def reach(state: State, role: Role) -> UpperLayer:
    ul = REACH[(state, role)]()
    assert ul.state is state
    assert ul.artim_running == (state in (S.STA2, S.STA13))
    ul.data_to_send()  # forget what the way here queued
    ul.should_close = False
    return ul


def test_every_state_is_reachable() -> None:
    assert {state for state, _role in REACH} == set(State)


# --- applying events ---------------------------------------------------------------------

PDU_EVENTS: dict[Event, bytes] = {
    E.EVT3: P.encode(AC),
    E.EVT4: P.encode(RJ),
    E.EVT6: P.encode(RQ),
    E.EVT10: P.encode(PDATA),
    E.EVT12: P.encode(P.ReleaseRQ()),
    E.EVT13: P.encode(P.ReleaseRP()),
    E.EVT16: P.encode(P.Abort(P.AbortSource.SERVICE_USER, 0)),
    E.EVT19: UNKNOWN_PDU,
}
PDATA_PARTS = next(iter(P.fragment(1, True, b"\x00" * 12, 0)))


def apply(ul: UpperLayer, event: Event) -> list[UpperLayerEvent]:
    if event in PDU_EVENTS:
        return ul.receive_data(PDU_EVENTS[event])
    if event is E.EVT1:
        ul.request(RQ)
    elif event in (E.EVT2, E.EVT5):
        ul.connection_made()
    elif event is E.EVT7:
        ul.accept(AC)
    elif event is E.EVT8:
        ul.reject(RJ)
    elif event is E.EVT9:
        ul.send_pdata(PDATA_PARTS)
    elif event is E.EVT11:
        ul.release()
    elif event is E.EVT14:
        return ul.release_response()
    elif event is E.EVT15:
        ul.abort()
    elif event is E.EVT17:
        return ul.connection_lost()
    elif event is E.EVT18:
        ul.artim_expired()
    else:  # pragma: no cover
        raise AssertionError(event)
    return []


@dataclass
class Expected:
    sent: bytes
    indications: list[type]
    should_close: bool


def _abort_reason_for(event: Event) -> int:
    return P.REASON_UNRECOGNIZED_PDU if event is E.EVT19 else P.REASON_UNEXPECTED_PDU


def expected_for(action: str, event: Event) -> Expected:
    """What tables 9-6..9-9 say each action puts on the wire and tells the user."""
    provider_abort = abort_bytes(P.AbortSource.SERVICE_PROVIDER, _abort_reason_for(event))
    table: dict[str, Expected] = {
        "AE-1": Expected(b"", [], False),
        "AE-2": Expected(P.encode(RQ), [], False),
        "AE-3": Expected(b"", [AssociateAcceptConfirmation], False),
        "AE-4": Expected(b"", [AssociateRejectConfirmation], True),
        "AE-5": Expected(b"", [], False),
        "AE-6": Expected(b"", [AssociateIndication], False),
        "AE-7": Expected(P.encode(AC), [], False),
        "AE-8": Expected(P.encode(RJ), [], False),
        "DT-1": Expected(P.encode(PDATA), [], False),
        "DT-2": Expected(b"", [DataIndication], False),
        "AR-1": Expected(P.encode(P.ReleaseRQ()), [], False),
        "AR-2": Expected(b"", [ReleaseIndication], False),
        "AR-3": Expected(b"", [ReleaseConfirmation], True),
        "AR-4": Expected(P.encode(P.ReleaseRP()), [], False),
        "AR-5": Expected(b"", [TransportClosed], False),
        "AR-6": Expected(b"", [DataIndication], False),
        "AR-7": Expected(P.encode(PDATA), [], False),
        "AR-8": Expected(b"", [ReleaseIndication], False),
        "AR-9": Expected(P.encode(P.ReleaseRP()), [], False),
        "AR-10": Expected(b"", [ReleaseConfirmation], False),
        # AA-1 for a local A-ABORT request: service-user source, reason 0.
        # AA-1 for a PDU received in Sta2: see test_aa1_on_a_received_pdu_names_the_problem.
        "AA-1": (
            Expected(abort_bytes(P.AbortSource.SERVICE_USER, 0), [], False)
            if event is E.EVT15
            else Expected(provider_abort, [AbortIndication], False)
        ),
        "AA-2": Expected(b"", [], True),
        "AA-3": Expected(b"", [AbortIndication], True),
        "AA-4": Expected(b"", [AbortIndication, TransportClosed], False),
        "AA-5": Expected(b"", [TransportClosed], False),
        "AA-6": Expected(b"", [], False),
        "AA-7": Expected(provider_abort, [], False),
        "AA-8": Expected(provider_abort, [AbortIndication], False),
    }
    return table[action]


def _roles_for(state: State) -> list[Role]:
    return [role for role in Role if (state, role) in REACH]


def _cases() -> list[Any]:
    cases = []
    for (event, state), action in sorted(
        STANDARD.items(), key=lambda kv: (kv[0][0].name, kv[0][1].name)
    ):
        for role in _roles_for(state):
            if (
                event is E.EVT1
                and role is Role.ACCEPTOR
                or event is E.EVT5
                and role is Role.REQUESTOR
            ):
                continue  # the requestor issues A-ASSOCIATE requests, the acceptor listens
            cases.append(
                pytest.param(
                    event, state, role, action, id=f"{state.value}-{event.value}-{role.value}"
                )
            )
    return cases


@pytest.mark.parametrize(("event", "state", "role", "action"), _cases())
def test_table_9_10_cell(event: Event, state: State, role: Role, action: str) -> None:
    ul = reach(state, role)
    indications = apply(ul, event)

    next_state: State | None
    if action == "AE-6":
        next_state = S.STA3  # a valid A-ASSOCIATE-RQ (version 1); the other branch is tested below
    elif action == "AR-8":
        next_state = S.STA9 if role is Role.REQUESTOR else S.STA10
    else:
        next_state = ACTIONS[action][1]
    assert ul.state is next_state

    expected = expected_for(action, event)
    assert b"".join(bytes(b) for b in ul.data_to_send()) == expected.sent
    assert [type(i) for i in indications] == expected.indications
    assert ul.should_close is expected.should_close
    # ARTIM runs exactly while awaiting the A-ASSOCIATE-RQ (Sta2) or the transport close (Sta13):
    # started by AE-5/AE-8/AR-4/AA-1/AA-7/AA-8 and the AE-6 rejection, stopped by AE-6/AR-5/AA-2/AA-5.
    assert ul.artim_running is (next_state in (S.STA2, S.STA13))
    if action not in ("DT-1", "DT-2"):  # the data-transfer hot path is not traced
        assert ul.trace[-1] == (state, event, action, next_state)


MALFORMED_PDATA = struct.pack(">BxI", 0x04, 6) + struct.pack(
    ">IBB", 2, 1, 0x10
)  # reserved control bit


@pytest.mark.parametrize(
    ("state", "role"), [(s, r) for (s, r) in REACH if (E.EVT19, s) in STANDARD]
)
def test_evt19_malformed_known_pdu_aborts_with_its_reason(state: State, role: Role) -> None:
    """Evt19 also covers a known PDU type whose body is invalid: the abort names why (reason 6)."""
    ul = reach(state, role)
    action = STANDARD[(E.EVT19, state)]
    indications = ul.receive_data(MALFORMED_PDATA)
    assert state_of(ul) is S.STA13 and ul.artim_running
    assert b"".join(ul.data_to_send()) == abort_bytes(2, P.REASON_INVALID_PARAMETER)
    assert [type(i) for i in indications] == ([] if action == "AA-7" else [AbortIndication])
    assert ul.trace[-1] == (state, E.EVT19, action, S.STA13)


LOCAL_PRIMITIVES = (E.EVT1, E.EVT7, E.EVT8, E.EVT9, E.EVT11, E.EVT14, E.EVT15)


def _undefined_primitive_cases() -> list[Any]:
    cases = []
    for event in LOCAL_PRIMITIVES:
        for state, role in REACH:
            if (event, state) in STANDARD:
                continue
            if event is E.EVT15 and state in (S.STA1, S.STA13):
                continue  # abort() there just asks for the connection to close; tested below
            cases.append(
                pytest.param(event, state, role, id=f"{state.value}-{event.value}-{role.value}")
            )
    return cases


@pytest.mark.parametrize(("event", "state", "role"), _undefined_primitive_cases())
def test_undefined_local_primitive_raises(event: Event, state: State, role: Role) -> None:
    ul = reach(state, role)
    trace_length = len(ul.trace)
    with pytest.raises(LocalProtocolError):
        apply(ul, event)
    assert ul.state is state
    assert ul.data_to_send() == []
    assert len(ul.trace) == trace_length


def test_connection_events_in_the_wrong_role_or_state_raise() -> None:
    ul = reach(S.STA6, Role.REQUESTOR)
    with pytest.raises(LocalProtocolError):
        ul.connection_made()
    acceptor = reach(S.STA1, Role.ACCEPTOR)
    with pytest.raises(LocalProtocolError):
        acceptor.request(RQ)


@pytest.mark.parametrize("role", list(Role))
def test_abort_after_the_association_is_gone_only_closes(role: Role) -> None:
    for state in (S.STA1, S.STA13):
        ul = reach(state, role)
        ul.abort()
        assert ul.state is state
        assert ul.data_to_send() == []
        assert ul.should_close


def test_bytes_before_the_connection_is_confirmed_are_ignored() -> None:
    """Sta4 has no transport connection yet: table 9-10 defines no PDU event there."""
    ul = reach(S.STA4, Role.REQUESTOR)
    assert ul.receive_data(P.encode(AC)) == []
    assert ul.receive_data(UNKNOWN_PDU) == []
    assert state_of(ul) is S.STA4 and ul.data_to_send() == []


def test_connection_lost_when_idle_is_ignored() -> None:
    ul = UpperLayer(Role.ACCEPTOR)
    assert ul.connection_lost() == []
    assert state_of(ul) is S.STA1


@pytest.mark.parametrize(
    ("state", "role"), [(s, r) for (s, r) in REACH if s not in (S.STA2, S.STA13)]
)
def test_artim_expiry_outside_sta2_and_sta13_is_ignored(state: State, role: Role) -> None:
    """Evt18 is only defined in Sta2/Sta13; a late timer callback elsewhere must not derail us."""
    ul = reach(state, role)
    ul.artim_expired()
    assert ul.state is state
    assert not ul.should_close
    assert ul.data_to_send() == []


# --- scenarios named by the conformance checklist ----------------------------------------


def test_protocol_version_without_bit_0_is_rejected_permanently_by_acse() -> None:
    ul = reach(S.STA2, Role.ACCEPTOR)
    rq = build_request("SCP", "SCU", [(VERIFICATION, [IMPLICIT])])
    rq.protocol_version = 2
    assert ul.receive_data(P.encode(rq)) == []
    assert state_of(ul) is S.STA13
    assert b"".join(ul.data_to_send()) == b"\x03\x00\x00\x00\x00\x04\x00\x01\x02\x02"
    assert ul.artim_running
    assert ul.trace[-1] == (S.STA2, E.EVT6, "AE-6", S.STA13)
    # The requestor closes; the association never existed.
    assert ul.connection_lost() == [TransportClosed(expected=True)]
    assert state_of(ul) is S.STA1


def test_protocol_version_with_bit_0_and_others_is_accepted() -> None:
    ul = reach(S.STA2, Role.ACCEPTOR)
    rq = build_request("SCP", "SCU", [(VERIFICATION, [IMPLICIT])])
    rq.protocol_version = 0x8001
    (event,) = ul.receive_data(P.encode(rq))
    assert isinstance(event, AssociateIndication) and event.request.protocol_version == 0x8001
    assert state_of(ul) is S.STA3 and not ul.artim_running


@pytest.mark.parametrize("state", [S.STA2, S.STA13])
def test_artim_expiry_closes(state: State) -> None:
    ul = reach(state, Role.ACCEPTOR)
    ul.artim_expired()
    assert state_of(ul) is S.STA1
    assert ul.should_close and not ul.artim_running
    assert ul.data_to_send() == []
    assert ul.trace[-1] == (state, E.EVT18, "AA-2", S.STA1)


def test_abort_before_associate_rq_closes_silently() -> None:
    ul = reach(S.STA2, Role.ACCEPTOR)
    assert ul.receive_data(P.encode(P.Abort())) == []
    assert state_of(ul) is S.STA1 and ul.should_close and not ul.artim_running
    assert ul.data_to_send() == []


def test_connection_closed_without_any_pdu_is_not_an_abort() -> None:
    """A TCP health check: connect, close. Sta2 + Evt17 is AA-5, nothing to report but the close."""
    ul = reach(S.STA2, Role.ACCEPTOR)
    assert ul.connection_lost() == [TransportClosed(expected=False)]
    assert state_of(ul) is S.STA1 and not ul.artim_running


def test_pdata_after_we_sent_release_rq_is_still_delivered() -> None:
    ul = reach(S.STA7, Role.REQUESTOR)
    events = ul.receive_data(P.encode(P.PDataTF([P.PDV(1, False, True, b"late")])))
    assert len(events) == 1 and isinstance(events[0], DataIndication)
    assert bytes(events[0].pdvs[0].data) == b"late"
    assert state_of(ul) is S.STA7
    assert ul.trace[-1] == (S.STA7, E.EVT10, "AR-6", S.STA7)
    assert ul.receive_data(P.encode(P.ReleaseRP())) == [ReleaseConfirmation()]
    assert state_of(ul) is S.STA1 and ul.should_close


def test_pdata_may_be_sent_while_answering_a_release() -> None:
    """AR-7: in Sta8 the acceptor may still send (e.g. the last responses) before A-RELEASE-RP."""
    ul = reach(S.STA8, Role.ACCEPTOR)
    ul.send_pdata(PDATA_PARTS)
    assert state_of(ul) is S.STA8
    ul.release_response()
    assert b"".join(bytes(b) for b in ul.data_to_send()) == P.encode(PDATA) + P.encode(
        P.ReleaseRP()
    )
    assert state_of(ul) is S.STA13 and ul.artim_running


def test_aa1_on_a_received_pdu_names_the_problem() -> None:
    """Sta2: an unexpected PDU (here A-RELEASE-RQ) before any A-ASSOCIATE-RQ.

    Table 9-9 words AA-1 as "service-user source"; aiodicom deliberately sends a
    service-provider A-ABORT with reason 2 (unexpected PDU) instead, because
    only provider aborts carry a meaningful reason the peer can log.
    """
    ul = reach(S.STA2, Role.ACCEPTOR)
    events = ul.receive_data(P.encode(P.ReleaseRQ()))
    assert b"".join(ul.data_to_send()) == abort_bytes(2, P.REASON_UNEXPECTED_PDU)
    assert isinstance(events[0], AbortIndication) and not events[0].by_peer
    assert state_of(ul) is S.STA13 and ul.artim_running


@pytest.mark.parametrize(("state", "role"), [(S.STA2, Role.ACCEPTOR), (S.STA6, Role.REQUESTOR)])
def test_oversized_pdu_header_aborts_without_waiting_for_the_body(state: State, role: Role) -> None:
    ul = reach(state, role)
    events = ul.receive_data(struct.pack(">BxI", 0x04, 0xFFFFFFFF))
    assert b"".join(ul.data_to_send()) == abort_bytes(2, P.REASON_INVALID_PARAMETER)
    assert state_of(ul) is S.STA13 and ul.artim_running
    assert [type(e) for e in events] == [AbortIndication]
    # What follows is not buffered as part of that PDU.
    ul.receive_data(b"\x00" * 4096)
    assert len(ul._rx) < 4096  # noqa: SLF001 - the point is that nothing is accumulated


def test_max_pdu_cap_is_configurable() -> None:
    ul = UpperLayer(Role.ACCEPTOR, max_pdu_cap=1024)
    ul.connection_made()
    (event,) = ul.receive_data(struct.pack(">BxI", 0x01, 1025))
    assert isinstance(event, AbortIndication)
    assert b"".join(ul.data_to_send()) == abort_bytes(2, P.REASON_INVALID_PARAMETER)


def test_malformed_known_pdu_in_sta6_gives_its_own_reason() -> None:
    ul = reach(S.STA6, Role.ACCEPTOR)
    bad_pdata = struct.pack(">BxI", 0x04, 6) + struct.pack(
        ">IBB", 2, 1, 0x10
    )  # reserved control bit
    (event,) = ul.receive_data(bad_pdata)
    assert isinstance(event, AbortIndication) and event.reason == P.REASON_INVALID_PARAMETER
    assert b"".join(ul.data_to_send()) == abort_bytes(2, P.REASON_INVALID_PARAMETER)
    assert state_of(ul) is S.STA13
    assert ul.trace[-1] == (S.STA6, E.EVT19, "AA-8", S.STA13)


@pytest.mark.parametrize("role", list(Role))
def test_established_pdvs_is_dt2_without_events_and_nothing_else(role: Role) -> None:
    """The drivers' hot path: PDVs of a P-DATA-TF in Sta6 only; anything else takes receive_pdu."""
    body = P.encode(PDATA)[6:]
    ul = reach(S.STA6, role)
    assert ul.established_pdvs(P.PDUType.P_DATA_TF, body) == list(PDATA.pdvs)
    assert state_of(ul) is S.STA6 and not ul.data_to_send()
    release = P.encode(P.ReleaseRQ())
    assert ul.established_pdvs(release[0], release[6:]) is None  # another type
    for state in (S.STA7, S.STA8, S.STA13):  # P-DATA in other states has its own rows
        if (state, role) in REACH:
            assert reach(state, role).established_pdvs(P.PDUType.P_DATA_TF, body) is None
    bad = struct.pack(">IBB", 2, 1, 0x10)  # reserved control bit: refused by receive_pdu
    assert ul.established_pdvs(P.PDUType.P_DATA_TF, bad) is None
    (event,) = ul.receive_pdu(P.PDUType.P_DATA_TF, bad)
    assert isinstance(event, AbortIndication) and state_of(ul) is S.STA13


def test_bytes_may_arrive_in_any_split() -> None:
    stream = P.encode(RQ) + P.encode(P.ReleaseRQ())
    ul = reach(S.STA2, Role.ACCEPTOR)
    events: list[UpperLayerEvent] = []
    for i in range(len(P.encode(RQ))):
        events += ul.receive_data(stream[i : i + 1])
    assert [type(e) for e in events] == [AssociateIndication]
    ul.accept(AC)
    events = ul.receive_data(stream[len(P.encode(RQ)) :])
    assert events == [ReleaseIndication(collision=False)]


def test_several_pdus_in_one_chunk() -> None:
    ul = reach(S.STA6, Role.ACCEPTOR)
    chunk = P.encode(PDATA) * 3 + P.encode(P.ReleaseRQ())
    events = ul.receive_data(chunk)
    assert [type(e) for e in events] == [DataIndication] * 3 + [ReleaseIndication]
    assert state_of(ul) is S.STA8


# --- two machines talking to each other ----------------------------------------------------


def pump(src: UpperLayer, dst: UpperLayer) -> list[UpperLayerEvent]:
    return dst.receive_data(b"".join(bytes(b) for b in src.data_to_send()))


def test_full_association_between_two_machines() -> None:
    scu, scp = UpperLayer(Role.REQUESTOR), UpperLayer(Role.ACCEPTOR)
    scu.request(RQ)
    scp.connection_made()
    scu.connection_made()
    (indication,) = pump(scu, scp)
    assert isinstance(indication, AssociateIndication) and indication.request == RQ
    scp.accept(AC)
    (confirmation,) = pump(scp, scu)
    assert isinstance(confirmation, AssociateAcceptConfirmation) and confirmation.response == AC
    assert scu.is_established and scp.is_established
    for parts in P.fragment(1, False, b"d" * 1000, 300):
        scu.send_pdata(parts)
    received = pump(scu, scp)
    assert (
        b"".join(bytes(e.pdvs[0].data) for e in received if isinstance(e, DataIndication))
        == b"d" * 1000
    )
    scu.release()
    assert pump(scu, scp) == [ReleaseIndication(collision=False)]
    scp.release_response()
    assert pump(scp, scu) == [ReleaseConfirmation()]
    assert state_of(scu) is S.STA1 and scu.should_close
    assert state_of(scp) is S.STA13 and scp.artim_running
    assert scp.connection_lost() == [TransportClosed(expected=True)]


def test_release_collision_between_two_machines() -> None:
    """Both sides send A-RELEASE-RQ at once: Sta7 -> Sta9/Sta10 -> Sta11/Sta12 -> Sta1/Sta13."""
    scu, scp = reach(S.STA6, Role.REQUESTOR), reach(S.STA6, Role.ACCEPTOR)
    scu.release()
    scp.release()
    assert (scu.state, scp.state) == (S.STA7, S.STA7)
    assert pump(scu, scp) == [ReleaseIndication(collision=True)]
    assert pump(scp, scu) == [ReleaseIndication(collision=True)]
    assert (scu.state, scp.state) == (S.STA9, S.STA10)
    # PS3.8 9.2.4 (AR-8): the requestor answers first.
    scu.release_response()
    assert state_of(scu) is S.STA11 and not scu.artim_running
    assert pump(scu, scp) == [ReleaseConfirmation()]
    assert state_of(scp) is S.STA12
    scp.release_response()
    assert state_of(scp) is S.STA13 and scp.artim_running
    assert pump(scp, scu) == [ReleaseConfirmation()]
    assert state_of(scu) is S.STA1 and scu.should_close
    assert scp.connection_lost() == [TransportClosed(expected=True)]
    assert [t[2] for t in scu.trace[-3:]] == ["AR-8", "AR-9", "AR-3"]
    assert [t[2] for t in scp.trace[-4:]] == ["AR-8", "AR-10", "AR-4", "AR-5"]


def test_abort_between_two_machines() -> None:
    scu, scp = reach(S.STA6, Role.REQUESTOR), reach(S.STA6, Role.ACCEPTOR)
    scp.abort(reason=0)
    (event,) = pump(scp, scu)
    assert isinstance(event, AbortIndication)
    assert event == AbortIndication(0, 0, True, event.description)
    assert "service user" in event.description
    assert state_of(scu) is S.STA1 and scu.should_close
    assert state_of(scp) is S.STA13 and scp.artim_running


def test_rejection_between_two_machines() -> None:
    scu, scp = reach(S.STA5, Role.REQUESTOR), reach(S.STA2, Role.ACCEPTOR)
    scu_rq = P.encode(RQ)
    scp.receive_data(scu_rq)
    scp.reject(RJ)
    (event,) = pump(scp, scu)
    assert event == AssociateRejectConfirmation(RJ)
    assert state_of(scu) is S.STA1 and scu.should_close
    assert state_of(scp) is S.STA13 and scp.artim_running


# --- random event sequences ------------------------------------------------------------

RQ_VERSION_0 = P.encode(
    P.AssociateRQ("SCP", "SCU", RQ.presentation_contexts, RQ.user_information, protocol_version=0)
)
RANDOM_INPUTS: dict[str, bytes] = {
    **{f"pdu-{e.value}": raw for e, raw in PDU_EVENTS.items()},
    "pdu-rq-version-0": RQ_VERSION_0,
    "pdu-malformed-pdata": MALFORMED_PDATA,
    "pdu-oversized-header": struct.pack(">BxI", 0x04, 0xFFFFFFFF),
    "pdu-half-release-rq": P.encode(P.ReleaseRQ())[:5],
}
RANDOM_OPS = [
    *RANDOM_INPUTS,
    "request",
    "connection_made",
    "accept",
    "reject",
    "send_pdata",
    "release",
    "release_response",
    "abort",
    "connection_lost",
    "artim_expired",
]
PRIMITIVE_EVENTS = {
    "request": E.EVT1,
    "accept": E.EVT7,
    "reject": E.EVT8,
    "send_pdata": E.EVT9,
    "release": E.EVT11,
    "release_response": E.EVT14,
    "abort": E.EVT15,
}


def _run(ul: UpperLayer, op: str) -> None:
    if op in RANDOM_INPUTS:
        ul.receive_data(RANDOM_INPUTS[op])
    elif op == "request":
        ul.request(RQ)
    elif op == "connection_made":
        ul.connection_made()
    elif op == "accept":
        ul.accept(AC)
    elif op == "reject":
        ul.reject(RJ)
    elif op == "send_pdata":
        ul.send_pdata(PDATA_PARTS)
    elif op == "release":
        ul.release()
    elif op == "release_response":
        ul.release_response()
    elif op == "abort":
        ul.abort()
    elif op == "connection_lost":
        ul.connection_lost()
    else:
        ul.artim_expired()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(REACH, key=lambda k: (k[0].name, k[1].name))),
    st.lists(st.sampled_from(RANDOM_OPS), max_size=12),
)
def test_random_event_sequences_follow_the_table(start: tuple[State, Role], ops: list[str]) -> None:
    """Whatever happens, and in whatever order, every transition taken is a cell of table 9-10.

    Each run starts in a state reached legitimately (so the deep states are explored too).
    """
    state, role = start
    ul = reach(state, role)
    for op in ops:
        before, traced = ul.state, len(ul.trace)
        try:
            _run(ul, op)
        except LocalProtocolError:
            # Only a local primitive (or a transport event in the wrong role) may be refused,
            # and only where the table defines nothing for it (or the role cannot issue it).
            assert op in PRIMITIVE_EVENTS or op == "connection_made"
            event = PRIMITIVE_EVENTS.get(op)
            if op == "connection_made":
                event = E.EVT2 if role is Role.REQUESTOR else E.EVT5
            assert (event, before) not in STANDARD or (event is E.EVT1 and role is Role.ACCEPTOR)
            assert ul.state is before and len(ul.trace) == traced
            continue
        for state, event, action, after in ul.trace[traced:]:
            assert STANDARD[(event, state)] == action
            expected_next = ACTIONS[action][1]
            if action == "AR-8":
                expected_next = S.STA9 if role is Role.REQUESTOR else S.STA10
            if expected_next is not None:
                assert after is expected_next
            else:
                assert after in (S.STA3, S.STA13)  # AE-6 accepts or rejects
        assert ul.artim_running is (ul.state in (S.STA2, S.STA13))
        out = b"".join(bytes(b) for b in ul.data_to_send())
        while out:  # everything queued is a well-formed PDU
            _type, length = P.parse_header(out[:6])
            P.decode_bytes(out[: 6 + length])
            out = out[6 + length :]


@pytest.mark.parametrize(
    ("source", "reason", "words"),
    [
        (0, 0, "service user"),
        (2, 1, "unrecognized PDU"),
        (2, 2, "unexpected PDU"),
        (2, 6, "invalid PDU parameter value"),
        (2, 3, "reason 3"),
        (1, 0, "source 1"),
    ],
)
def test_peer_abort_is_reported_with_its_source_and_reason(
    source: int, reason: int, words: str
) -> None:
    ul = reach(S.STA6, Role.REQUESTOR)
    (event,) = ul.receive_data(P.encode(P.Abort(source, reason)))
    assert isinstance(event, AbortIndication)
    assert (event.source, event.reason, event.by_peer) == (source, reason, True)
    assert words in event.description


def test_pdus_above_our_announced_maximum_are_accepted_up_to_the_cap() -> None:
    """Be lenient with senders that exceed the max PDU length we announced (PS3.8 allows
    no such thing, but real peers do it); only the hard cap is enforced."""
    ul = UpperLayer(Role.ACCEPTOR, max_pdu_cap=1 << 20)
    ul.connection_made()
    ul.receive_data(P.encode(RQ))  # RQ announces nothing about what *we* accept
    ul.accept(AC)  # we announced 16384
    big = P.encode(P.PDataTF([P.PDV(1, False, True, b"x" * 200_000)]))
    (event,) = ul.receive_data(big)
    assert isinstance(event, DataIndication) and len(event.pdvs[0].data) == 200_000
    assert state_of(ul) is S.STA6


# --- answers that come after the association ended -----------------------------------------------

_GONE = {
    "second-rq": P.encode(RQ),  # Evt6 in Sta3 or Sta8: AA-8, the association is aborted
    "garbage": UNKNOWN_PDU,  # Evt19: AA-8
    "peer-abort": abort_bytes(0, 0),  # Evt16: AA-3, the peer ended it
}


@pytest.mark.parametrize("ending", _GONE.values(), ids=_GONE.keys())
@pytest.mark.parametrize("answer", ["accept", "reject"])
def test_answering_an_association_that_ended_meanwhile_is_ignored(ending: bytes, answer: str) -> None:
    """receive_data reports every event of its bytes: an A-ASSOCIATE indication may be
    followed, in the same call, by a PDU that ends the association. Answering it then
    sends nothing and raises nothing (found by fuzz/fuzz_pdu.py)."""
    ul = _acceptor_sta2()
    events = ul.receive_data(P.encode(RQ) + ending)
    assert isinstance(events[0], AssociateIndication)
    sent = ul.data_to_send()
    getattr(ul, answer)(AC if answer == "accept" else RJ)
    assert ul.data_to_send() == [] and ul.state in (S.STA1, S.STA13)
    assert sent == [] or P.decode_bytes(b"".join(sent)).__class__ is P.Abort


@pytest.mark.parametrize("ending", [*_GONE.values(), None], ids=[*_GONE.keys(), "connection-lost"])
@pytest.mark.parametrize("role", [Role.REQUESTOR, Role.ACCEPTOR])
def test_answering_a_release_after_the_association_ended_is_ignored(ending: bytes | None, role: Role) -> None:
    """A server answers A-RELEASE-RQ only once its operations finished; the peer may have
    aborted or closed by then. That answer must not raise (it would end the server task)."""
    ul = _sta6(role)
    (event,) = ul.receive_data(P.encode(P.ReleaseRQ()))
    assert isinstance(event, ReleaseIndication)
    if ending is None:
        ul.connection_lost()
    else:
        ul.receive_data(ending)
    ul.data_to_send()
    assert ul.release_response() == []
    assert ul.data_to_send() == []


def test_an_answer_without_an_indication_still_raises() -> None:
    for ul in (_acceptor_sta2(), UpperLayer(Role.ACCEPTOR)):
        with pytest.raises(LocalProtocolError):
            ul.accept(AC)
    ul = _sta6(Role.ACCEPTOR)
    ul.receive_data(abort_bytes(0, 0))
    with pytest.raises(LocalProtocolError):
        ul.release_response()
