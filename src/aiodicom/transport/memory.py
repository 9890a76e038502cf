"""Two DICOM endpoints wired back to back in memory: DIMSE tests without sockets.

:func:`memory_pair` connects a requestor's and an acceptor's :class:`DicomProtocol`
through a pair of :class:`MemoryTransport` objects that hand each write to the other
side's buffer on the next loop turn, honouring ``pause_reading`` (so back-pressure,
the inbox limit and the PDU codecs run as they do on a socket). Real sockets stay
for interoperability tests; this is for routing and timing logic, where a socket
adds only noise (as httpcore tests its pool on a mock backend).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from aiodicom.transport.association import Association, DicomProtocol, Timeouts
from aiodicom.ul import pdu as P
from aiodicom.ul.assembly import CommandDecoder
from aiodicom.ul.machine import Role
from aiodicom.ul.negotiation import AcceptorPolicy, negotiate

_ports = itertools.count(50000)


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection; its peer is set by :func:`memory_pair`."""

    def __init__(self, protocol: DicomProtocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self.peer: MemoryTransport | None = None
        self._incoming: deque[memoryview] = deque()
        self._paused = False
        self._closing = False
        self._lost = False
        self._address = ("memory", next(_ports))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer._address if name == "peername" and self.peer is not None else default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.peer is None:
            return
        self.peer._incoming.append(memoryview(bytes(data)))
        self._loop.call_soon(self.peer._feed)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._loop.call_soon(self._feed)

    def is_reading(self) -> bool:
        return not self._paused

    def _feed(self) -> None:
        """Hand queued bytes to our protocol through its buffers, stopping when it pauses."""
        while self._incoming and not self._paused and not self._lost:
            chunk = self._incoming[0]
            buffer = self._protocol.get_buffer(len(chunk))
            n = min(len(buffer), len(chunk))
            buffer[:n] = chunk[:n]
            if n == len(chunk):
                self._incoming.popleft()
            else:
                self._incoming[0] = chunk[n:]
            self._protocol.buffer_updated(n)

    def close(self) -> None:
        """Close after the bytes already written reach the peer."""
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._lose)
        if self.peer is not None:
            self._loop.call_soon(self.peer._peer_closed)

    def abort(self) -> None:
        self._incoming.clear()
        self.close()

    def _peer_closed(self) -> None:
        self._feed()
        self._closing = True
        self._lose()

    def _lose(self) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(None)


async def memory_pair(
    request: P.AssociateRQ,
    policy: AcceptorPolicy,
    *,
    requestor_decoder: Callable[[Association], CommandDecoder[Any]],
    acceptor_decoder: Callable[[Association], CommandDecoder[Any]],
    timeouts: Timeouts,
) -> tuple[Association, Association]:
    """Negotiate ``request`` against ``policy`` in memory: (requestor's, acceptor's) associations.

    Raises what ``connect`` would (e.g. :class:`~aiodicom.errors.AssociationRejected`).
    """
    acceptor_side: asyncio.Future[Association] = asyncio.get_running_loop().create_future()
    acceptor = DicomProtocol(
        Role.ACCEPTOR,
        timeouts=timeouts,
        command_decoder=acceptor_decoder,
        negotiate=lambda rq: negotiate(rq, policy),
        on_established=acceptor_side.set_result,
    )
    requestor = DicomProtocol(Role.REQUESTOR, timeouts=timeouts, command_decoder=requestor_decoder)
    requestor.propose(request)
    ours, theirs = MemoryTransport(requestor), MemoryTransport(acceptor)
    ours.peer, theirs.peer = theirs, ours
    acceptor.connection_made(theirs)
    requestor.connection_made(ours)
    association = await asyncio.wait_for(requestor.established, timeouts.acse)
    return association, await acceptor_side


__all__ = ["MemoryTransport", "memory_pair"]
