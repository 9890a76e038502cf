"""A sans-I/O DICOM Upper Layer endpoint: bytes in, events and bytes out.

In the manner of h11 and wsproto, :class:`UpperLayer` does no I/O and keeps no
clock. The transport feeds it PDUs (or raw bytes) and transport events, calls
its primitive methods for what the local user wants, and after each call:

* writes out :meth:`UpperLayer.data_to_send`,
* closes the connection when :attr:`UpperLayer.should_close` is true,
* runs the ARTIM timer while :attr:`UpperLayer.artim_running` is true and calls
  :meth:`UpperLayer.artim_expired` when it fires.

Every transition follows :data:`aiodicom.ul.fsm.TRANSITIONS`; the state names
are the standard's, so a trace can be read against PS3.8 table 9-10.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from aiodicom.errors import ProtocolError
from aiodicom.ul import pdu as P
from aiodicom.ul.events import (
    AbortIndication as AbortIndication,
)
from aiodicom.ul.events import (
    AssociateAcceptConfirmation as AssociateAcceptConfirmation,
)
from aiodicom.ul.events import (
    AssociateIndication as AssociateIndication,
)
from aiodicom.ul.events import (
    AssociateRejectConfirmation as AssociateRejectConfirmation,
)
from aiodicom.ul.events import (
    DataIndication as DataIndication,
)
from aiodicom.ul.events import (
    ReleaseConfirmation as ReleaseConfirmation,
)
from aiodicom.ul.events import (
    ReleaseIndication as ReleaseIndication,
)
from aiodicom.ul.events import (
    TransportClosed as TransportClosed,
)
from aiodicom.ul.events import (
    UpperLayerEvent as UpperLayerEvent,
)
from aiodicom.ul.fsm import ACTIONS, Event, State, action_for


class Role(Enum):
    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


# The events live in aiodicom.ul.events; re-exported here, where they were first defined.
# The old names below are aliases kept for callers written before the rename (issue 7);
# ``AssociationRejected`` is gone from here: it is the exception in aiodicom.errors.
DataReceived = DataIndication
AssociationRequested = AssociateIndication
AssociationAccepted = AssociateAcceptConfirmation
ReleaseConfirmed = ReleaseConfirmation
Aborted = AbortIndication
ConnectionClosed = TransportClosed


class LocalProtocolError(RuntimeError):
    """Our own user asked for something the standard does not allow in this state."""


class UpperLayer:
    """One association endpoint's PS3.8 state machine."""

    def __init__(self, role: Role, *, max_pdu_cap: int = P.HARD_PDU_CAP) -> None:
        self.role = role
        self.state = State.STA1
        self.artim_running = False
        self.should_close = False
        self.max_pdu_cap = max_pdu_cap
        #: (state, event, action, next state) for every transition; for tests and debugging.
        self.trace: list[tuple[State, Event, str, State]] = []
        self._out: list[bytes | bytearray | memoryview] = []
        self._pending_rq: P.AssociateRQ | None = None
        self._rx = bytearray()
        #: The indication the local user still has to answer (see ``_answer_is_stale``).
        self._unanswered: type[AssociateIndication] | type[ReleaseIndication] | None = None

    # --- output -----------------------------------------------------------------

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        """Take the buffers queued for the wire, in order."""
        out, self._out = self._out, []
        return out

    # --- transitions --------------------------------------------------------------

    def _step(self, event: Event) -> str:
        action = action_for(event, self.state)
        if action is None:
            raise LocalProtocolError(f"{event.value} is not allowed in {self.state.value}")
        next_state = ACTIONS[action][1]
        if next_state is not None:
            self.trace.append((self.state, event, action, next_state))
            self.state = next_state
        return action

    def _goto(self, event: Event, action: str, state: State) -> None:
        self.trace.append((self.state, event, action, state))
        self.state = state

    def _send_abort(self, source: int, reason: int) -> None:
        self._out.append(P.encode(P.Abort(source, reason)))

    def _provider_abort(self, event: Event, action: str, reason: int, why: str) -> list[UpperLayerEvent]:
        """Carry out AA-1/AA-7/AA-8 for a PDU that is unexpected or invalid here."""
        if action == "AA-6":
            return []
        self._send_abort(P.AbortSource.SERVICE_PROVIDER, reason)
        self.artim_running = True
        if action == "AA-7":
            return []
        return [AbortIndication(P.AbortSource.SERVICE_PROVIDER, reason, False, why)]

    # --- transport events -------------------------------------------------------------

    def request(self, rq: P.AssociateRQ) -> None:
        """Evt1 (requestor): the local user asks for an association."""
        if self.role is not Role.REQUESTOR:  # AR-8 picks Sta9/Sta10 by role: it must be truthful
            raise LocalProtocolError("only an association-requestor issues A-ASSOCIATE requests")
        self._step(Event.EVT1)
        self._pending_rq = rq

    def connection_made(self) -> None:
        """Evt2 (requestor, transport confirmed) or Evt5 (acceptor, connection indication)."""
        if self.role is Role.REQUESTOR:
            self._step(Event.EVT2)
            assert self._pending_rq is not None
            self._out.append(P.encode(self._pending_rq))
        else:
            self._step(Event.EVT5)
            self.artim_running = True

    def connection_lost(self) -> list[UpperLayerEvent]:
        """Evt17: the transport connection closed (for whatever reason)."""
        if self.state is State.STA1:
            return []
        action = self._step(Event.EVT17)
        self.artim_running = False
        if action in ("AR-5", "AA-5"):
            return [TransportClosed(expected=action == "AR-5")]
        return [
            AbortIndication(
                P.AbortSource.SERVICE_PROVIDER,
                P.REASON_NOT_SPECIFIED,
                False,
                "transport connection closed unexpectedly",
            ),
            TransportClosed(expected=False),
        ]

    def artim_expired(self) -> None:
        """Evt18: the ARTIM timer ran out; the transport should now close."""
        if action_for(Event.EVT18, self.state) is None:
            return
        self._step(Event.EVT18)
        self.artim_running = False
        self.should_close = True

    # --- received PDUs ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[UpperLayerEvent]:
        """Feed raw bytes from the transport (any split); returns the events they complete.

        The transport in :mod:`aiodicom.transport` frames PDUs itself to avoid
        copies and calls :meth:`receive_pdu`; this is the general entry point.
        """
        self._rx += data
        events: list[UpperLayerEvent] = []
        while len(self._rx) >= 6 and self.state is not State.STA1:
            try:
                pdu_type, length = P.parse_header(self._rx[:6], self.max_pdu_cap)
            except ProtocolError as exc:
                self._rx.clear()
                events += self.invalid_pdu(exc)
                break
            if len(self._rx) < 6 + length:
                break
            body = bytes(self._rx[6 : 6 + length])
            del self._rx[: 6 + length]
            events += self.receive_pdu(pdu_type, body)
        return events

    def invalid_pdu(self, error: ProtocolError) -> list[UpperLayerEvent]:
        """Evt19: an unrecognized or invalid PDU arrived (framing or decoding failed)."""
        action = action_for(Event.EVT19, self.state)
        if action is None:
            return []
        self._step(Event.EVT19)
        return self._provider_abort(Event.EVT19, action, error.abort_reason, str(error))

    def receive_pdu(self, pdu_type: int, body: bytes | bytearray | memoryview) -> list[UpperLayerEvent]:
        """Feed one framed PDU body (header already validated by :func:`pdu.parse_header`)."""
        try:
            pdu = P.decode(pdu_type, body)
        except ProtocolError as exc:
            return self.invalid_pdu(exc)
        return self.receive(pdu)

    def established_pdvs(self, pdu_type: int, body: bytes | bytearray | memoryview) -> list[P.PDV] | None:
        """The PDVs of a P-DATA-TF that arrives established (DT-2), or None.

        DT-2 changes no state and sends nothing, so a driver's hot path can hand the
        PDVs straight to its assembler without an event object per PDU. None means the
        PDU must go through :meth:`receive_pdu` (another type or state, or a body that
        does not decode: that path refuses it).
        """
        if pdu_type != P.PDUType.P_DATA_TF or self.state is not State.STA6:
            return None
        try:
            return P.decode_pdata(body)
        except ProtocolError:
            return None

    def receive(self, pdu: P.PDU) -> list[UpperLayerEvent]:
        """Process one decoded PDU."""
        if isinstance(pdu, P.PDataTF):
            if self.state is State.STA6:  # the hot path: DT-2 without the table lookup
                return [DataIndication(pdu.pdvs)]
            return self._on_pdu(Event.EVT10, pdu)
        if isinstance(pdu, P.AssociateRQ):
            return self._on_pdu(Event.EVT6, pdu)
        if isinstance(pdu, P.AssociateAC):
            return self._on_pdu(Event.EVT3, pdu)
        if isinstance(pdu, P.AssociateRJ):
            return self._on_pdu(Event.EVT4, pdu)
        if isinstance(pdu, P.ReleaseRQ):
            return self._on_pdu(Event.EVT12, pdu)
        if isinstance(pdu, P.ReleaseRP):
            return self._on_pdu(Event.EVT13, pdu)
        return self._on_pdu(Event.EVT16, pdu)

    def _on_pdu(self, event: Event, pdu: P.PDU) -> list[UpperLayerEvent]:
        action = action_for(event, self.state)
        if action is None:
            # No transport connection (Sta1/Sta4): nothing can arrive; ignore.
            return []
        before = self.state
        if action in ("AA-1", "AA-7", "AA-8", "AA-6"):
            self._step(event)
            reason = P.REASON_UNEXPECTED_PDU
            return self._provider_abort(
                event, action, reason, f"unexpected {type(pdu).__name__} in {before.value}"
            )
        if action == "AE-6":
            assert isinstance(pdu, P.AssociateRQ)
            self.artim_running = False
            if not pdu.protocol_version & 1:
                self._goto(event, action, State.STA13)
                self._out.append(
                    P.encode(
                        P.AssociateRJ(
                            P.RJ_PERMANENT, P.RJ_SOURCE_ACSE, P.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED
                        )
                    )
                )
                self.artim_running = True
                return []
            self._goto(event, action, State.STA3)
            self._unanswered = AssociateIndication
            return [AssociateIndication(pdu)]
        self._step(event)
        if action == "AE-3":
            assert isinstance(pdu, P.AssociateAC)
            return [AssociateAcceptConfirmation(pdu)]
        if action == "AE-4":
            assert isinstance(pdu, P.AssociateRJ)
            self.should_close = True
            return [AssociateRejectConfirmation(pdu)]
        if action in ("DT-2", "AR-6"):
            assert isinstance(pdu, P.PDataTF)
            return [DataIndication(pdu.pdvs)]
        if action == "AR-2":
            self._unanswered = ReleaseIndication
            return [ReleaseIndication()]
        if action == "AR-8":
            self._goto(event, action, State.STA9 if self.role is Role.REQUESTOR else State.STA10)
            self._unanswered = ReleaseIndication
            return [ReleaseIndication(collision=True)]
        if action == "AR-3":
            self.should_close = True
            return [ReleaseConfirmation()]
        if action == "AR-10":
            return [ReleaseConfirmation()]
        if action in ("AA-2", "AA-3"):
            self.artim_running = False
            self.should_close = True
            if action == "AA-2":
                return []
            assert isinstance(pdu, P.Abort)
            return [AbortIndication(pdu.source, pdu.reason, True, _describe_abort(pdu))]
        raise AssertionError(f"unhandled action {action}")  # pragma: no cover

    # --- local primitives ------------------------------------------------------------------

    def _answer_is_stale(self, indication: type[AssociateIndication] | type[ReleaseIndication]) -> bool:
        """True when the association ended (A-ABORT sent or received, connection lost)
        before the local user answered an A-ASSOCIATE or A-RELEASE indication.

        :meth:`receive_data` reports every event of the bytes it was given, so an
        indication may be followed by a PDU that aborted the association (a second
        A-ASSOCIATE-RQ, garbage after an A-RELEASE-RQ); and a server answers a release
        only after its last operations finished, by which time the peer may have
        aborted. Such an answer has nothing left to answer: it is ignored, like
        :meth:`abort` in those states, rather than raised as our own mistake. Answering
        an indication that was never given still raises :class:`LocalProtocolError`.
        """
        if self._unanswered is not indication:
            return False
        self._unanswered = None
        return self.state in (State.STA1, State.STA13)

    def accept(self, ac: P.AssociateAC) -> None:
        """Evt7: answer an A-ASSOCIATE indication with acceptance."""
        if self._answer_is_stale(AssociateIndication):
            return
        self._step(Event.EVT7)
        self._out.append(P.encode(ac))

    def reject(self, rj: P.AssociateRJ) -> None:
        """Evt8: answer an A-ASSOCIATE indication with rejection."""
        if self._answer_is_stale(AssociateIndication):
            return
        self._step(Event.EVT8)
        self._out.append(P.encode(rj))
        self.artim_running = True

    def send_pdata(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Evt9: queue encoded P-DATA-TF PDUs (buffers from :func:`pdu.fragment_buffers`)."""
        if self.state is not State.STA6:
            self._step(Event.EVT9)  # AR-7 in Sta8, or LocalProtocolError
        self._out.extend(parts)

    def release(self) -> None:
        """Evt11: ask the peer to release the association."""
        self._step(Event.EVT11)
        self._out.append(P.encode(P.ReleaseRQ()))

    def release_response(self) -> list[UpperLayerEvent]:
        """Evt14: answer an A-RELEASE indication."""
        if self._answer_is_stale(ReleaseIndication):
            return []
        action = self._step(Event.EVT14)
        self._out.append(P.encode(P.ReleaseRP()))
        if action == "AR-4":
            self.artim_running = True
        return []

    def abort(self, reason: int = P.REASON_NOT_SPECIFIED) -> None:
        """Evt15: abort the association (A-ABORT, service-user source)."""
        if self.state in (State.STA1, State.STA13):
            self.should_close = True
            return
        action = self._step(Event.EVT15)
        if action == "AA-2":
            self.should_close = True
            return
        self._send_abort(P.AbortSource.SERVICE_USER, reason)
        self.artim_running = True

    @property
    def is_established(self) -> bool:
        return self.state is State.STA6


def _describe_abort(pdu: P.Abort) -> str:
    who = "service user" if pdu.source == 0 else "service provider" if pdu.source == 2 else f"source {pdu.source}"
    reasons = {
        0: "reason not specified",
        1: "unrecognized PDU",
        2: "unexpected PDU",
        4: "unrecognized PDU parameter",
        5: "unexpected PDU parameter",
        6: "invalid PDU parameter value",
    }
    return f"peer aborted the association ({who}, {reasons.get(pdu.reason, f'reason {pdu.reason}')})"
