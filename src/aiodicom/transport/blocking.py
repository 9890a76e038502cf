"""A blocking driver of the sans-I/O Upper Layer: one requestor association on a socket.

One-shot commands (``aiodicom echo``, an ``aiodicom store`` that a script runs per
file) pay their start-up on every call, and importing asyncio alone (ssl,
concurrent.futures, logging, subprocess...) costs more than their whole exchange with
a local peer. As h11 is driven by blocking and asyncio code alike, the same
:class:`~aiodicom.ul.machine.UpperLayer`, :class:`~aiodicom.ul.assembly.MessageAssembler`
and event-to-error mapping (:func:`~aiodicom.ul.events.event_error`) run here over a
plain socket; only how bytes move and how waits are bounded differ: each wait has a
deadline from the same :class:`~aiodicom.transport.timeouts.Timeouts` and ends in the
same error as under asyncio.

Requestor only, one request at a time: what a one-shot command needs. Applications
use :func:`aiodicom.connect`.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiodicom.errors import AssociationAborted, AssociationError, DicomTimeoutError, ProtocolError
from aiodicom.transport.address import connect_failed
from aiodicom.transport.timeouts import (
    Timeouts,
    associate_timed_out,
    connect_timed_out,
    no_data_taken,
    release_timed_out,
)
from aiodicom.ul import pdu as P
from aiodicom.ul.assembly import AssembledMessage, CommandDecoder, MessageAssembler
from aiodicom.ul.events import (
    CLOSED_BEFORE_RELEASE,
    PEER_RELEASED,
    AssociateAcceptConfirmation,
    DataIndication,
    ReleaseConfirmation,
    ReleaseIndication,
    UpperLayerEvent,
    event_error,
    invalid_accept,
)
from aiodicom.ul.machine import Role, UpperLayer
from aiodicom.ul.negotiation import AcceptedContext, accepted_contexts

if TYPE_CHECKING:
    import ssl

#: Buffers per ``sendmsg`` call (Linux and BSDs accept 1024).
_IOV_MAX = 512
#: How long an A-ABORT we send may take to go out before the socket just closes.
_ABORT_GRACE = 0.5


class BlockingAssociation:
    """A requestor association over a blocking socket; open one with :func:`associate`."""

    def __init__(self, sock: socket.socket, request: P.AssociateRQ, timeouts: Timeouts) -> None:
        self._sock: socket.socket | None = sock
        self.machine = UpperLayer(Role.REQUESTOR)
        self.request = request
        self.timeouts = timeouts
        self.response: P.AssociateAC | None = None
        self.contexts: dict[int, AcceptedContext] = {}
        self.peer_max_pdu = 0
        #: What ended the association, once something did.
        self.error: AssociationError | None = None
        self.released = False
        self._releasing = False
        self._assembler: MessageAssembler[Any] | None = None
        self._inbox: deque[AssembledMessage[Any]] = deque()

    @property
    def is_open(self) -> bool:
        return self._sock is not None and self.error is None and not self.released

    # --- sending ------------------------------------------------------------------------

    def send(self, context_id: int, command: bytes, dataset: bytes | bytearray | memoryview | None = None) -> None:
        """Send one message; each write may wait ``Timeouts.dimse`` for the peer to take it."""
        buffers = P.fragment_buffers(context_id, True, command, self.peer_max_pdu)
        if dataset is not None:
            buffers += P.fragment_buffers(context_id, False, dataset, self.peer_max_pdu)
        self._send_pdata(buffers)

    def send_streamed(self, context_id: int, command: bytes, read_chunk: Callable[[int], bytes], length: int) -> None:
        """Send a message whose data set is read in chunks (large files), bounded memory."""
        for buffers in P.streamed_buffers(context_id, command, read_chunk, length, self.peer_max_pdu):
            self._send_pdata(buffers)

    def _send_pdata(self, buffers: list[bytes | bytearray | memoryview]) -> None:
        if self.error is not None:
            raise self.error
        self.machine.send_pdata(buffers)
        self._flush(self.timeouts.dimse)

    def _flush(self, seconds: float | None) -> None:
        """Write what the machine queued, then close if it says so."""
        out = self.machine.data_to_send()
        sock = self._sock
        if out and sock is not None:
            sock.settimeout(seconds)
            try:
                _send_all(sock, out)
            except TimeoutError:
                self.abort()
                raise no_data_taken(seconds) from None
            except OSError:
                # The peer hung up; what it sent first (an A-ABORT, say) tells why.
                self._read_what_is_left()
                self._handle(self.machine.connection_lost())
                self.close()
                raise self._failure() from None
        if self.machine.should_close:
            self.close()

    # --- receiving ------------------------------------------------------------------------

    def receive(self, deadline: float | None) -> AssembledMessage[Any]:
        """The next complete message; :class:`TimeoutError` at ``deadline`` (``time.monotonic()``)."""
        while not self._inbox:
            if self.error is not None:
                raise self.error
            self._handle(self._read_pdu(deadline))
        return self._inbox.popleft()

    def _read_pdu(self, deadline: float | None) -> list[UpperLayerEvent]:
        """Read one PDU and run it through the machine: the events it caused."""
        header = bytearray(6)
        if not self._read_exact(memoryview(header), deadline):
            return self._connection_lost()
        cap = self.machine.max_pdu_cap if self.response is not None else P.ASSOCIATE_PDU_CAP
        try:
            pdu_type, length = P.parse_header(header, cap)
        except ProtocolError as exc:
            return self.machine.invalid_pdu(exc)
        body = bytearray(length)
        if length and not self._read_exact(memoryview(body), deadline):
            return self._connection_lost()
        return self.machine.receive_pdu(pdu_type, body)

    def _read_exact(self, view: memoryview, deadline: float | None) -> bool:
        """Fill ``view``; False when the peer closed first (or reset the connection)."""
        sock = self._sock
        if sock is None:
            return False
        while view:
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 1e-3))
            try:
                n = sock.recv_into(view)
            except TimeoutError:
                raise
            except OSError:
                return False
            if not n:
                return False
            view = view[n:]
        return True

    def poll(self) -> None:
        """Take in what the peer already sent, without waiting for more.

        Before a release: a peer that aborted or hung up after its last answer (the
        asyncio driver's reader sees that as it happens) is not asked to release.
        """
        while self._sock is not None and self.error is None and _readable(self._sock):
            self._handle(self._read_pdu(_deadline(self.timeouts.acse)))

    def _read_what_is_left(self) -> None:
        """After a failed write: the PDUs the peer sent before it went (no waiting)."""
        try:
            while self._sock is not None and self.error is None:
                self._handle(self._read_pdu(time.monotonic()), flush=False)
        except (OSError, AssociationError):
            pass

    def _connection_lost(self) -> list[UpperLayerEvent]:
        events = self.machine.connection_lost()
        self.close()
        return events

    # --- machine events -----------------------------------------------------------------------

    def _handle(self, events: list[UpperLayerEvent], *, flush: bool = True) -> None:
        for event in events:
            react = _REACTIONS.get(type(event))
            if react is not None:
                react(self, event)
            elif (error := event_error(event)) is not None:  # rejected, aborted
                self._fail(error)
        if self._sock is None and not self.released:
            self._fail(AssociationAborted(CLOSED_BEFORE_RELEASE))
        if flush:
            self._flush_quietly()

    def _on_release_request(self, _event: ReleaseIndication) -> None:
        # A collision with our release, or a peer that releases first (it should not):
        # answered either way; in the second case our request failed.
        self.machine.release_response()
        if not self._releasing:
            self._fail(AssociationError(PEER_RELEASED))

    def _on_released(self, _event: ReleaseConfirmation) -> None:
        self.released = True

    def _on_data(self, event: DataIndication) -> None:
        assert self._assembler is not None  # the machine delivers data only once established
        try:
            self._inbox.extend(self._assembler.feed(event.pdvs))
        except ProtocolError as exc:
            self._assembler.abandon()
            self._handle(self.machine.invalid_pdu(exc), flush=False)

    def _on_accepted(self, event: AssociateAcceptConfirmation) -> None:
        ac = event.response
        try:
            contexts = accepted_contexts(self.request, ac)
        except ProtocolError as exc:
            self._fail(invalid_accept(exc))  # a provider abort, as for any invalid PDU
            self.machine.invalid_pdu(exc)
            return
        self.response = ac
        self.contexts = {c.id: c for c in contexts}
        self.peer_max_pdu = ac.user_information.max_pdu_length or 0

    def _fail(self, error: AssociationError) -> None:
        if self.error is None:
            self.error = error
        if self._assembler is not None:
            self._assembler.abandon()
        self._inbox.clear()

    def _failure(self) -> AssociationError:
        return self.error or AssociationAborted(CLOSED_BEFORE_RELEASE)

    def _flush_quietly(self) -> None:
        """Write what the machine queued in reaction to a PDU (an A-ABORT, a release answer)."""
        try:
            self._flush(_ABORT_GRACE if self.error is not None else self.timeouts.dimse)
        except (AssociationError, DicomTimeoutError):
            pass  # self.error says what happened (the timeout aborted the association)

    # --- establishing and ending -----------------------------------------------------------

    def establish(self, host: str, port: int, decoder: Callable[[BlockingAssociation], CommandDecoder[Any]]) -> None:
        """Send the A-ASSOCIATE-RQ and wait ``Timeouts.acse`` for the answer."""
        self.machine.request(self.request)
        self.machine.connection_made()
        self._flush(self.timeouts.acse)
        deadline = _deadline(self.timeouts.acse)
        try:
            while self.response is None:
                if self.error is not None:
                    raise self.error
                self._handle(self._read_pdu(deadline))
        except TimeoutError:
            self.abort()
            raise associate_timed_out(host, port, self.timeouts.acse) from None
        self._assembler = MessageAssembler(set(self.contexts), decoder(self))

    def release(self) -> None:
        """A-RELEASE: ask, wait ``Timeouts.acse`` for the answer, close."""
        if self.error is not None:
            raise self.error
        self._releasing = True
        self.machine.release()
        self._flush(self.timeouts.acse)
        deadline = _deadline(self.timeouts.acse)
        try:
            while not self.released:
                if self.error is not None:
                    raise self.error
                self._handle(self._read_pdu(deadline))
                for message in self._inbox:  # answers nobody waits for any more
                    if message.dataset is not None:
                        message.dataset.discard()
                self._inbox.clear()
        except TimeoutError:
            self.abort()
            raise release_timed_out() from None
        self.close()

    def abort(self) -> None:
        """A-ABORT now (given a moment to go out), then close."""
        if self.error is None:
            self.error = AssociationAborted("association aborted by the local user")
        if self._sock is None:
            return
        self.machine.abort()
        out = self.machine.data_to_send()
        try:
            self._sock.settimeout(_ABORT_GRACE)
            _send_all(self._sock, out)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        """Close the socket (after release or abort); idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


#: What the association does on each Upper Layer event (the others end it, see ``_handle``).
_REACTIONS: dict[type, Callable[[BlockingAssociation, Any], None]] = {
    DataIndication: BlockingAssociation._on_data,
    AssociateAcceptConfirmation: BlockingAssociation._on_accepted,
    ReleaseIndication: BlockingAssociation._on_release_request,
    ReleaseConfirmation: BlockingAssociation._on_released,
}


def _send_all(sock: socket.socket, buffers: list[bytes | bytearray | memoryview]) -> None:
    """``sendall`` of several buffers without joining them: a data set is not copied once more.

    ``sendmsg`` gathers them (as the asyncio transport's ``writelines`` does); what a call
    leaves unsent is sent by the next. The socket's timeout bounds each call. A TLS socket
    has no ``sendmsg`` (it encrypts into records of its own anyway): it gets one joined write.
    """
    if type(sock) is not socket.socket:  # ssl.SSLSocket
        sock.sendall(b"".join(buffers))
        return
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while sent:
            first = len(views[0])
            if sent < first:
                views[0] = views[0][sent:]
                break
            sent -= first
            del views[0]


def _readable(sock: socket.socket) -> bool:
    """Bytes wait to be read (TLS: decrypted ones in the socket's own buffer, or raw ones)."""
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket
    return bool(pending is not None and pending()) or bool(select.select([sock], [], [], 0)[0])


def _deadline(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def associate(
    host: str,
    port: int,
    request: P.AssociateRQ,
    decoder: Callable[[BlockingAssociation], CommandDecoder[Any]],
    *,
    timeouts: Timeouts,
    ssl_context: ssl.SSLContext | None = None,
) -> BlockingAssociation:
    """Connect (TLS when given a context) within ``Timeouts.connect`` and negotiate ``request``."""
    # An ASCII name or address goes as bytes: a str would be IDNA-encoded first, and the
    # codec's import (stringprep, unicodedata) costs a one-shot command ~10% of its run.
    address = host.encode("ascii") if host.isascii() else host
    try:
        sock = socket.create_connection((address, port), timeout=timeouts.connect)  # type: ignore[arg-type]
    except TimeoutError:
        raise connect_timed_out(host, port, timeouts.connect) from None
    except OSError as exc:
        raise connect_failed(host, port, exc) from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
    except TimeoutError:
        sock.close()
        raise connect_timed_out(host, port, timeouts.connect) from None
    except OSError as exc:
        sock.close()
        raise connect_failed(host, port, exc) from exc
    association = BlockingAssociation(sock, request, timeouts)
    try:
        association.establish(host, port, decoder)
    except BaseException:
        association.abort()
        raise
    return association
