"""The asyncio transport: one :class:`DicomProtocol` per TCP (or TLS) connection.

It frames PDUs straight out of the socket into buffers it owns (a reused
staging buffer for small PDUs; one exact-size buffer per large PDU, filled by
the kernel with no intermediate copy), feeds them to the sans-I/O
:class:`~aiodicom.ul.machine.UpperLayer`, reassembles DIMSE messages, and hands
complete messages to whoever awaits :meth:`Association.receive`. Data set
fragments go to the message's sink synchronously as they arrive, so a data set
is never held whole unless its sink decides to.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl as _ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from aiodicom._log import get_logger
from aiodicom._record import FrozenRecord
from aiodicom.errors import (
    AssociationAborted,
    AssociationError,
    ProtocolError,
)
from aiodicom.transport.budget import MemoryBudget
from aiodicom.transport.timeouts import DEFAULT_TIMEOUTS as DEFAULT_TIMEOUTS
from aiodicom.transport.timeouts import AssociateTimeout as AssociateTimeout
from aiodicom.transport.timeouts import ConnectTimeout as ConnectTimeout
from aiodicom.transport.timeouts import IdleTimeout as IdleTimeout
from aiodicom.transport.timeouts import ResponseTimeout as ResponseTimeout
from aiodicom.transport.timeouts import Timeouts as Timeouts
from aiodicom.transport.timeouts import no_data_taken, release_timed_out
from aiodicom.ul import pdu as P
from aiodicom.ul.assembly import AssembledMessage, CommandDecoder, MessageAssembler
from aiodicom.ul.events import (
    CLOSED_BEFORE_RELEASE,
    AbortIndication,
    AssociateAcceptConfirmation,
    AssociateIndication,
    AssociateRejectConfirmation,
    DataIndication,
    ReleaseConfirmation,
    ReleaseIndication,
    TransportClosed,
    UpperLayerEvent,
    abort_error,
    invalid_accept,
    rejection_error,
)
from aiodicom.ul.fsm import State
from aiodicom.ul.machine import Role, UpperLayer
from aiodicom.ul.negotiation import AcceptedContext, accepted_contexts, select_context

_STAGING_SIZE = 256 * 1024
#: PDUs larger than this get a buffer of their own that the kernel fills
#: directly, instead of being read into staging and copied out.
_DIRECT_PDU_SIZE = 32 * 1024
#: A large PDU's body buffer starts at this size (or the PDU's, if smaller) and
#: doubles as its bytes arrive: a 6-byte header alone never reserves more.
_FIRST_BODY_SIZE = 1024 * 1024
#: PDUs decoded from one read before the connection lets the loop serve others.
_PDUS_PER_TURN = 128
#: Why reading is paused (a bit mask): the queue of complete messages is full,
#: the connection yielded the loop, the server's memory budget is spent, or the
#: association is over and the peer still sends data (ARTIM closes it).
_INBOX, _YIELD, _BUDGET, _CLOSING = 1, 2, 4, 8
_STOP_DECODING = _YIELD | _BUDGET | _CLOSING
_ids = itertools.count(1)


class ReleaseRequest(FrozenRecord):
    """The peer asked to release; answer with :meth:`Association.accept_release`."""

    collision: bool = False


class DicomProtocol(asyncio.BufferedProtocol):
    """Drives one :class:`UpperLayer` over an asyncio transport."""

    def __init__(
        self,
        role: Role,
        *,
        timeouts: Timeouts,
        command_decoder: Callable[[Association], CommandDecoder[Any]],
        max_pdu_cap: int = P.HARD_PDU_CAP,
        max_queued_messages: int = 8,
        negotiate: Callable[[P.AssociateRQ], tuple[P.AssociateAC | P.AssociateRJ, list[AcceptedContext]]]
        | None = None,
        on_established: Callable[[Association], None] | None = None,
        on_closed: Callable[[DicomProtocol], None] | None = None,
        admit: Callable[[DicomProtocol], bool] | None = None,
        log: Any = None,
        budget: MemoryBudget | None = None,
        tls: _ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.machine = UpperLayer(role, max_pdu_cap=max_pdu_cap)
        self.timeouts = timeouts
        self.id = next(_ids)
        self.log = (log or get_logger("aiodicom.association")).bind(assoc=self.id)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self._command_decoder = command_decoder
        self._negotiate = negotiate
        self._on_established = on_established
        self._on_closed = on_closed
        self._admit = admit
        self._max_queued = max_queued_messages
        self._staging = bytearray(_STAGING_SIZE)
        self._view = memoryview(self._staging)
        self._start = 0
        self._end = 0
        self._body: bytearray | None = None
        self._body_view: memoryview | None = None
        self._body_filled = 0
        self._body_type = 0
        #: The full length of the body in progress (its buffer may still be smaller).
        self._body_length = 0
        self._budget = budget
        #: Bytes this connection holds charged to the budget, and bytes granted ahead.
        self._charged = 0
        self._prepaid = 0
        #: The size of the pending budget request (granted bytes become prepaid).
        self._budget_waiting = 0
        #: Server side TLS: the handshake runs after admission, counted as a connection.
        self._tls = tls
        self._tls_task: asyncio.Task[None] | None = None
        self._progress_timer: asyncio.TimerHandle | None = None
        self._progress_base = 0
        self._inbox: deque[AssembledMessage[Any] | ReleaseRequest] = deque()
        self._waiter: asyncio.Future[None] | None = None
        #: The network idle timer of next_item: one handle, re-armed only when it fires
        #: before the latest wait's deadline (not one timer per message); see _idle_fired.
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_armed = 0.0  # when the timer fires
        self._idle_deadline = 0.0  # when the wait in progress runs out
        self._idle_waiter: asyncio.Future[None] | None = None  # the wait it may end
        self._idle_expired = False
        self._paused = 0
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._artim: asyncio.TimerHandle | None = None
        #: Total bytes read; the idle timeout restarts while this grows.
        self.bytes_received = 0
        self.established: asyncio.Future[Association] = self.loop.create_future()
        self.released: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.error: AssociationError | None = None
        self.assembler: MessageAssembler[Any] | None = None
        self.association: Association | None = None

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - exotic sockets
                pass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        self.log = self.log.bind(peer=f"{self.peer[0]}:{self.peer[1]}")
        if self._admit is not None and not self._admit(self):
            # Too many connections: refuse before spending anything on this one.
            transport.abort()  # type: ignore[attr-defined]
            return
        if self._tls is not None:
            # The handshake starts only now, once the connection is admitted and counted
            # (a TLS listener would run it before any protocol callback, uncounted).
            transport.pause_reading()  # type: ignore[attr-defined]  # a no-op under uvloop, see _handshake
            self._tls_task = self.loop.create_task(self._handshake(self._tls))
            return
        self._start_machine()

    def _start_machine(self) -> None:
        self.machine.connection_made()
        self._sync()

    async def _handshake(self, context: _ssl.SSLContext) -> None:
        raw = self.transport
        assert raw is not None
        handshake = asyncio.ensure_future(
            self.loop.start_tls(raw, self, context, server_side=True, ssl_handshake_timeout=self.timeouts.connect)
        )
        try:
            # uvloop starts reading right after connection_made, so the start of the
            # ClientHello may already sit in staging. start_tls's first step (which runs
            # before this one resumes) schedules the TLS protocol's connection_made and
            # its first read; a callback scheduled now runs right after them, before the
            # loop polls the socket again, and replays those bytes in order.
            await asyncio.sleep(0)
            self.loop.call_soon(self._replay_early_bytes, raw)
            secure = await handshake
        except OSError as exc:  # ssl.SSLError, resets, and the handshake timeout (ConnectionAbortedError)
            self.log.info("tls_handshake_failed", error=str(exc) or type(exc).__name__)
            raw.abort()
            # asyncio tells the application protocol nothing about a failed handshake.
            self.connection_lost(exc)
            return
        finally:
            self._tls_task = None
        self.transport = secure
        self._start_machine()
        # What arrived with the end of the handshake waited in staging for the machine.
        self._drain_staging()

    def _drop_staging(self) -> None:
        """Free the 256 KiB read buffer now, not when the collector finds this protocol.

        A closed protocol sits in reference cycles (transport, tasks, futures) that only
        the cyclic collector breaks; until then its staging buffer stayed allocated, so
        under many short associations hundreds of dead buffers piled up and set the
        process's memory high-water mark (issue 6, soak benchmark).
        """
        self._start = self._end = 0
        self._staging = bytearray()
        self._view = memoryview(self._staging)

    def _replay_early_bytes(self, raw: asyncio.Transport) -> None:
        early = memoryview(bytes(self._view[self._start : self._end]))
        self._start = self._end = 0
        tls_protocol = cast(asyncio.BufferedProtocol, raw.get_protocol())
        if tls_protocol is self:  # pragma: no cover - start_tls failed before taking over
            return
        while early:
            buffer = memoryview(tls_protocol.get_buffer(len(early)))
            n = min(len(buffer), len(early))
            buffer[:n] = early[:n]
            tls_protocol.buffer_updated(n)
            early = early[n:]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body_view is not None:
            return self._body_view[self._body_filled :]
        if self._end >= _STAGING_SIZE - 6:
            self._compact()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        body = self._body
        if body is not None:
            self._body_filled += nbytes
            if self._body_filled == len(body):
                if len(body) < self._body_length:
                    self._grow_body()
                else:
                    pdu_type = self._body_type
                    self._body = self._body_view = None
                    self._release_charge()
                    self._deliver(pdu_type, body)
        else:
            self._end += nbytes
            self._drain_staging()
        if self._progress_timer is None and self.timeouts.pdu is not None and self._busy():
            self._progress_base = self.bytes_received - nbytes
            self._progress_timer = self.loop.call_later(self.timeouts.pdu, self._check_progress)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return  # a failed TLS handshake may report twice
        events = self.machine.connection_lost()
        self._cancel_artim()
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._body = self._body_view = None
        self._drop_staging()
        if self._budget is not None:
            self._budget.cancel(self._budget_granted)
        self._release_charge()
        self._handle(events)
        if self.assembler is not None:
            self.assembler.abandon()
        if self.error is None and not self.released.done():
            self.error = AssociationAborted(CLOSED_BEFORE_RELEASE)
        self._fail_waiters()
        if not self.closed.done():
            self.closed.set_result(None)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._on_closed is not None:
            self._on_closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # --- reading: pausing, fairness, progress ----------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        """Clear one pause reason; read again (and decode what waits in staging) when none is left."""
        if not self._paused & reason:
            return
        self._paused &= ~reason
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._paused:
            transport.resume_reading()
            if reason != _YIELD and self._progress_timer is not None:
                # We stopped reading, not the peer: its rate is measured afresh.
                self._progress_timer.cancel()
                self._progress_timer = None
        # Decoding stops for a turn or for the budget (not for a full queue: staging bounds it).
        if reason != _INBOX and not self._paused & _STOP_DECODING and self._end > self._start and self._body is None:
            self.loop.call_soon(self._drain_staging)

    def _end_turn(self) -> None:
        self._resume(_YIELD)

    def _busy(self) -> bool:
        """True while a PDU or a DIMSE message is partially received."""
        assembler = self.assembler
        return (
            self._body is not None
            or self._end > self._start
            or (assembler is not None and not assembler.idle)
        )

    def _check_progress(self) -> None:
        """The ``Timeouts.pdu`` window ended: abort a peer that sent too little in it."""
        self._progress_timer = None
        window = self.timeouts.pdu
        if window is None or self.closed.done() or self.machine.should_close or not self._busy():
            return
        received = self.bytes_received - self._progress_base
        if received < window * self.timeouts.min_rate and not self._paused & (_INBOX | _BUDGET):
            self._too_slow(received, window)
            return
        self._progress_base = self.bytes_received
        self._progress_timer = self.loop.call_later(window, self._check_progress)

    def _too_slow(self, received: int, window: float) -> None:
        self.log.warning("peer_too_slow", received=received, seconds=window, state=self.machine.state.value)
        if self.error is None:
            self.error = AssociationAborted(
                f"peer sent {received} bytes in {window:g} s inside a PDU or message "
                f"(minimum {self.timeouts.min_rate:g} bytes/s)"
            )
        if self.assembler is not None:
            self.assembler.abandon()  # the partial message goes now, not when the socket closes
        if self.association is not None:
            self.association.abort()
        elif self.transport is not None:
            self.transport.abort()

    # --- memory budget ------------------------------------------------------------------

    def _reserve(self, nbytes: int) -> bool:
        """Charge ``nbytes`` to the server's budget, or queue for them and pause reading."""
        budget = self._budget
        if budget is None:
            return True
        if self._prepaid >= nbytes or budget.take(nbytes - self._prepaid):
            self._prepaid = max(self._prepaid - nbytes, 0)
            self._charged += nbytes
            return True
        if self._prepaid:
            budget.give(self._prepaid)
            self._prepaid = 0
        self._pause(_BUDGET)
        budget.wait(nbytes, self._budget_granted)
        return False

    def _budget_granted(self) -> None:
        # Called from inside MemoryBudget.give(), wherever that runs: act on the next turn.
        self.loop.call_soon(self._after_grant, self._budget_waiting)

    def _after_grant(self, nbytes: int) -> None:
        self._prepaid += nbytes
        if self.closed.done():
            self._release_charge()
            return
        if self._body is not None:
            self._grow_body()
        self._resume(_BUDGET)

    def _release_charge(self) -> None:
        budget = self._budget
        if budget is None:
            return
        held, self._charged, self._prepaid = self._charged + self._prepaid, 0, 0
        if held:
            budget.give(held)

    # --- framing -----------------------------------------------------------------------

    def _compact(self) -> None:
        n = self._end - self._start
        if n and self._start:
            self._staging[:n] = bytes(self._view[self._start : self._end])
        self._start, self._end = 0, n

    def _grow_body(self) -> None:
        """The body buffer is full but the PDU is not: double it, as its bytes arrive."""
        assert self._body is not None
        old = self._body
        size = min(self._body_length, 2 * len(old))
        self._budget_waiting = size - len(old)
        if not self._reserve(size - len(old)):
            return  # reading is paused until the budget allows it
        body = bytearray(size)
        body[: len(old)] = old
        self._body = body
        self._body_view = memoryview(body)

    def _drain_staging(self) -> None:
        view = self._view
        turn = 0
        while (
            self.machine.state is not State.STA1
            and not self.machine.should_close
            and not self._paused & _STOP_DECODING
        ):
            available = self._end - self._start
            if available < 6:
                break
            cap = self.machine.max_pdu_cap
            if self.association is None:
                cap = min(cap, P.ASSOCIATE_PDU_CAP)
            try:
                pdu_type, length = P.parse_header(view[self._start : self._start + 6], cap)
            except ProtocolError as exc:
                self._start = self._end = 0
                self._protocol_error(exc)
                return
            if pdu_type == P.PDUType.P_DATA_TF and self.machine.state is State.STA13:
                # Data after our A-ABORT (or release): PS3.8 ignores it, so we do not even
                # read it. Decoding it until ARTIM ran out was CPU for the taking.
                self._start = self._end = 0
                self._pause(_CLOSING)
                return
            if available >= 6 + length:
                turn += 1
                if turn > _PDUS_PER_TURN:
                    # Many small PDUs in one read: let other connections run first.
                    self._pause(_YIELD)
                    self.loop.call_soon(self._end_turn)
                    return
                # A view, not a copy: _deliver consumes it before staging is reused.
                body = view[self._start + 6 : self._start + 6 + length]
                self._start += 6 + length
                self._deliver(pdu_type, body)
                continue
            if length > _DIRECT_PDU_SIZE:
                # A large PDU: the kernel fills a buffer of its own from here on.
                have = available - 6
                size = min(length, max(_FIRST_BODY_SIZE, have))
                self._budget_waiting = size
                if not self._reserve(size):
                    return  # the header stays in staging until the budget allows it
                body_buffer = bytearray(size)
                body_buffer[:have] = view[self._start + 6 : self._end]
                self._body = body_buffer
                self._body_view = memoryview(body_buffer)
                self._body_filled = have
                self._body_length = length
                self._body_type = pdu_type
                self._start = self._end = 0
                return
            if self._start + 6 + length > _STAGING_SIZE:
                self._compact()
            break
        if self._start == self._end:
            self._start = self._end = 0

    def _deliver(self, pdu_type: int, body: bytearray | memoryview) -> None:
        """Hand one PDU body to the machine; ``body`` may be a view into staging.

        Established P-DATA (the hot path, DT-2) goes to the assembler as views, which
        hands each fragment to its sink synchronously: a sink that keeps bytes copies
        them (:class:`~aiodicom.ul.assembly.DataSink`), so staging is free for the next
        read once this returns. Every other PDU is decoded from a copy of its own.
        """
        pdvs = self.machine.established_pdvs(pdu_type, body)  # the hot path (DT-2)
        if pdvs is not None:
            self._on_pdvs(pdvs)
            return
        events = self.machine.receive_pdu(pdu_type, body if type(body) is bytearray else bytes(body))
        self._sync()
        self._handle(events)

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.log.warning("protocol_error", error=str(exc), state=self.machine.state.value)
        events = self.machine.invalid_pdu(exc)
        self._sync()
        self._handle(events)

    # --- machine output -----------------------------------------------------------------

    def _sync(self) -> None:
        out = self.machine.data_to_send()
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
        if self.machine.should_close and transport is not None and not transport.is_closing():
            transport.close()
        if self.machine.artim_running:
            if self._artim is None:
                self._artim = self.loop.call_later(self.timeouts.artim, self._artim_fired)
        else:
            self._cancel_artim()

    def _cancel_artim(self) -> None:
        if self._artim is not None:
            self._artim.cancel()
            self._artim = None

    def _artim_fired(self) -> None:
        self._artim = None
        self.log.info("artim_expired", state=self.machine.state.value)
        self.machine.artim_expired()
        self._sync()
        if self.transport is not None and self.machine.should_close:
            self.transport.abort()

    # --- events --------------------------------------------------------------------------

    def _handle(self, events: list[UpperLayerEvent]) -> None:
        for event in events:
            if isinstance(event, DataIndication):
                self._on_data(event)
            elif isinstance(event, AssociateIndication):
                self._on_request(event.request)
            elif isinstance(event, AssociateAcceptConfirmation):
                self._on_accepted(event.response)
            elif isinstance(event, AssociateRejectConfirmation):
                self.error = rejection_error(event)
                if not self.established.done():
                    self._fail_established(self.error)
            elif isinstance(event, ReleaseIndication):
                self._push(ReleaseRequest(event.collision))
            elif isinstance(event, ReleaseConfirmation):
                if not self.released.done():
                    self.released.set_result(None)
            elif isinstance(event, AbortIndication):
                self._on_aborted(event)
            elif isinstance(event, TransportClosed):
                pass

    def _on_data(self, event: DataIndication) -> None:
        self._on_pdvs(event.pdvs)

    def _on_pdvs(self, pdvs: list[P.PDV]) -> None:
        assembler = self.assembler
        if assembler is None:  # pragma: no cover - the machine only delivers data once established
            return
        try:
            messages = assembler.feed(pdvs)
        except ProtocolError as exc:
            assembler.abandon()
            self._protocol_error(exc)
            return
        for message in messages:
            self._push(message)

    def _push(self, item: AssembledMessage[Any] | ReleaseRequest) -> None:
        self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(self._inbox) >= self._max_queued:
            self._pause(_INBOX)

    def _on_request(self, rq: P.AssociateRQ) -> None:
        assert self._negotiate is not None
        answer, contexts = self._negotiate(rq)
        self.log = self.log.bind(calling_ae=rq.calling_ae, called_ae=rq.called_ae)
        if isinstance(answer, P.AssociateRJ):
            self.log.info(
                "association_rejected", reason=P.describe_rejection(answer.result, answer.source, answer.reason)
            )
            self.machine.reject(answer)
            self._sync()
            return
        self.machine.accept(answer)
        self._sync()
        self._establish(rq, answer, contexts)

    def _on_accepted(self, ac: P.AssociateAC) -> None:
        rq = self.machine_request
        try:
            contexts = accepted_contexts(rq, ac)
        except ProtocolError as exc:
            # A provider abort (reason 6), as for any invalid PDU: a user abort carries no reason.
            self.error = invalid_accept(exc)
            self._protocol_error(exc)
            if not self.established.done():
                self._fail_established(self.error)
            return
        self._establish(rq, ac, contexts)

    def _establish(self, rq: P.AssociateRQ, ac: P.AssociateAC, contexts: list[AcceptedContext]) -> None:
        association = Association(self, rq, ac, contexts)
        self.association = association
        self.assembler = MessageAssembler({c.id for c in contexts}, self._command_decoder(association))
        self.log.info(
            "association_established",
            contexts=len(contexts),
            peer_max_pdu=ac.user_information.max_pdu_length
            if self.machine.role is Role.REQUESTOR
            else rq.user_information.max_pdu_length,
        )
        if not self.established.done():
            self.established.set_result(association)
        if self._on_established is not None:
            self._on_established(association)

    def _on_aborted(self, event: AbortIndication) -> None:
        if self.error is None:
            self.error = abort_error(event)
        self.log.info("association_aborted", by_peer=event.by_peer, description=event.description)
        if self.assembler is not None:
            self.assembler.abandon()
        if not self.established.done():
            self._fail_established(self.error)
        self._fail_waiters()

    def _fail_established(self, error: AssociationError) -> None:
        self.established.set_exception(error)
        # An acceptor's future has no awaiter: without this, asyncio reports
        # "Future exception was never retrieved" for every refused connection.
        self.established.exception()

    def _fail_waiters(self) -> None:
        if self.error is not None:
            # Complete messages not yet answered are dropped: the peer never got a
            # response, so it has not been told they are safe.
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, AssembledMessage) and item.dataset is not None:
                    item.dataset.discard()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self.established.done():
            self._fail_established(self.error or AssociationAborted("connection closed"))
        if not self.released.done() and self.error is not None:
            self.released.set_exception(self.error)
            self.released.exception()  # mark retrieved: nobody may be waiting for it

    # --- used by Association ---------------------------------------------------------------

    machine_request: P.AssociateRQ

    def propose(self, rq: P.AssociateRQ) -> None:
        """Requestor side: send ``rq`` once connected (call before the transport connects)."""
        self.machine_request = rq
        self.machine.request(rq)

    async def next_item(self, timeout: float | None) -> AssembledMessage[Any] | ReleaseRequest:
        limited = timeout is not None and timeout != float("inf")
        while not self._inbox:
            if self.error is not None or self.closed.done():
                raise self.error or AssociationError("association closed")
            seen = self.bytes_received
            waiter = self._waiter = self.loop.create_future()
            self._idle_expired = False  # a wait cancelled as it expired leaves no stale flag
            if limited:
                assert timeout is not None
                self._idle_wait(waiter, timeout)
            try:
                await waiter
            finally:
                self._waiter = self._idle_waiter = None
            if self._idle_expired:
                self._idle_expired = False
                if self.bytes_received != seen:
                    continue  # a long message is still arriving: not idle
                raise IdleTimeout(f"peer sent nothing for {timeout} s (network idle timeout)")
        return self._take()

    def _idle_wait(self, waiter: asyncio.Future[None], timeout: float) -> None:
        """Bound this wait by ``timeout``: the timer is armed anew only when none would
        fire by then (a message per wait would otherwise cost a timer and its cancel)."""
        deadline = self.loop.time() + timeout
        self._idle_deadline = deadline
        self._idle_waiter = waiter
        timer = self._idle_timer
        if timer is None or self._idle_armed > deadline:
            if timer is not None:
                timer.cancel()
            self._idle_armed = deadline
            self._idle_timer = self.loop.call_at(deadline, self._idle_fired)

    def _idle_fired(self) -> None:
        self._idle_timer = None
        waiter = self._idle_waiter
        if waiter is None or waiter.done():
            return  # no wait in progress: the next one arms the timer again
        if self._idle_deadline > self._idle_armed:  # armed by an earlier wait: not yet
            self._idle_armed = self._idle_deadline
            self._idle_timer = self.loop.call_at(self._idle_deadline, self._idle_fired)
            return
        self._idle_expired = True
        waiter.set_result(None)

    def _take(self) -> AssembledMessage[Any] | ReleaseRequest:
        """Pop the oldest queued item, reading from the socket again once the queue drains."""
        item = self._inbox.popleft()
        if self._paused & _INBOX and len(self._inbox) < self._max_queued // 2 + 1:
            self._resume(_INBOX)
        return item

    def write_pdus(self, buffers: list[bytes | bytearray | memoryview]) -> None:
        """Queue encoded P-DATA-TF PDUs (flat header/payload buffers) and write them."""
        if self.error is not None:
            raise self.error
        self.machine.send_pdata(buffers)
        self._sync()

    async def drain(self, timeout: float | None) -> None:
        if self.error is not None:
            raise self.error
        if not self._write_paused:
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise no_data_taken(timeout) from None
        if self.error is not None:
            raise self.error


class Association:
    """An established association, either side. DIMSE services build on it."""

    def __init__(
        self,
        protocol: DicomProtocol,
        request: P.AssociateRQ,
        response: P.AssociateAC,
        contexts: list[AcceptedContext],
    ) -> None:
        self._protocol = protocol
        self.request = request
        self.response = response
        self.contexts: dict[int, AcceptedContext] = {c.id: c for c in contexts}
        self.id = protocol.id
        self.log = protocol.log
        self.is_requestor = protocol.machine.role is Role.REQUESTOR
        peer_info = response.user_information if self.is_requestor else request.user_information
        self.peer_max_pdu = peer_info.max_pdu_length or 0
        self.calling_ae = request.calling_ae
        self.called_ae = request.called_ae

    @property
    def peer(self) -> tuple[str, int]:
        return self._protocol.peer

    @property
    def timeouts(self) -> Timeouts:
        """The waits this association bounds."""
        return self._protocol.timeouts

    @property
    def is_open(self) -> bool:
        return self._protocol.error is None and not self._protocol.closed.done()

    def context_for(self, abstract_syntax: str, transfer_syntaxes: Sequence[str] = ()) -> AcceptedContext | None:
        """An accepted context for ``abstract_syntax``, preferring the given transfer syntaxes."""
        return select_context(self.contexts.values(), abstract_syntax, transfer_syntaxes)

    async def receive(self, timeout: float | None = None) -> AssembledMessage[Any] | ReleaseRequest:
        """The next complete message, or the peer's release request."""
        if timeout is None:
            timeout = self._protocol.timeouts.network_idle
        return await self._protocol.next_item(timeout)

    async def send(
        self,
        context_id: int,
        command: bytes,
        dataset: bytes | bytearray | memoryview | None = None,
    ) -> None:
        """Send one message; the data set (already encoded) is fragmented, never copied."""
        max_pdu = self.peer_max_pdu
        buffers = P.fragment_buffers(context_id, True, command, max_pdu)
        if dataset is not None:
            buffers += P.fragment_buffers(context_id, False, dataset, max_pdu)
        self._protocol.write_pdus(buffers)
        await self._protocol.drain(self._protocol.timeouts.dimse)

    async def send_streamed(
        self,
        context_id: int,
        command: bytes,
        read_chunk: Callable[[int], bytes],
        length: int,
        chunk_size: int = 4 * 1024 * 1024,
    ) -> None:
        """Send a message whose data set is read in chunks (large files), bounded memory."""
        protocol = self._protocol
        for buffers in P.streamed_buffers(context_id, command, read_chunk, length, self.peer_max_pdu, chunk_size):
            protocol.write_pdus(buffers)
            await protocol.drain(protocol.timeouts.dimse)

    async def release(self) -> None:
        """A-RELEASE as requestor: ask, wait for the answer, close."""
        protocol = self._protocol
        if protocol.error is not None:
            raise protocol.error
        protocol.machine.release()
        protocol._sync()
        try:
            async with asyncio.timeout(protocol.timeouts.acse):
                while not protocol.released.done():
                    if protocol._inbox:
                        item = protocol._take()
                        if isinstance(item, ReleaseRequest):  # release collision (PS3.8 9.2.1)
                            protocol.machine.release_response()
                            protocol._sync()
                        elif item.dataset is not None:
                            item.dataset.discard()
                        continue
                    waiter: asyncio.Future[None] = protocol.loop.create_future()
                    protocol._waiter = waiter
                    try:
                        await asyncio.wait((waiter, protocol.released), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        protocol._waiter = None
        except TimeoutError:
            self.abort()
            raise release_timed_out() from None
        protocol.released.result()
        await self.wait_closed()

    def accept_release(self) -> None:
        """Answer the peer's A-RELEASE-RQ (acceptor side, after our last response)."""
        self._protocol.machine.release_response()
        self._protocol._sync()

    def abort(self) -> None:
        """A-ABORT now; anything in flight is lost."""
        protocol = self._protocol
        if protocol.error is None:
            protocol.error = AssociationAborted("association aborted by the local user")
        protocol.machine.abort()
        protocol._sync()
        if protocol.transport is not None:
            # Give the A-ABORT its chance on the wire, then stop waiting for the peer.
            protocol.loop.call_later(0.5, protocol.transport.abort)
        protocol._fail_waiters()

    async def wait_closed(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self._protocol.timeouts.artim
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._protocol.closed)
        except TimeoutError:
            if self._protocol.transport is not None:
                self._protocol.transport.abort()
