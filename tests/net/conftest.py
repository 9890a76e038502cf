"""A running :class:`~aiodicom.dimse.server.Server` and a raw-bytes peer to attack it with.

The hostile-peer tests speak bytes they craft themselves (valid parts encoded with
:mod:`aiodicom.ul.pdu`, broken parts by hand), so what they check is exactly what a
misbehaving implementation on the network would see: the A-ABORT or A-ASSOCIATE-RJ
that comes back, or a closed connection. Every test then proves the server is still
useful by running a normal C-ECHO through :func:`aiodicom.connect`.

Helpers are plain functions and classes here (imported by the test modules with
``from .conftest import ...``) so that tests can start servers with their own options.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

import aiodicom
from aiodicom.cli.receive import FileWriter
from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
)
from aiodicom.dimse import command as C
from aiodicom.dimse.server import Server
from aiodicom.synthetic import CT_IMAGE_STORAGE
from aiodicom.transport.association import Timeouts
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import build_request

HOST = "127.0.0.1"
SERVER_AE = "HOSTILE-SCP"
#: Bound for one test's network conversation; normal runs take a fraction of a second.
TEST_TIMEOUT = 20.0
#: Small timeouts so that timeout behaviour is observable within a fast test.
FAST = Timeouts(connect=2.0, acse=2.0, dimse=2.0, network_idle=1.0, artim=0.5)
#: What the server announces, and the hard cap it enforces on what it reads.
SERVER_MAX_PDU = 16384
SERVER_PDU_CAP = 256 * 1024

#: Presentation contexts a raw peer proposes: 1 = Verification, 3 = CT (explicit VR LE).
ECHO_CONTEXT = 1
CT_CONTEXT = 3
RAW_CONTEXTS: list[tuple[str, list[str]]] = [
    (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
    (CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN]),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the server ------------------------------------------------------------------------


@dataclass
class RunningServer:
    server: Server
    port: int
    output_dir: Path
    spool_dir: Path

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def partial_files(self) -> list[Path]:
        """Spool files holding data: the server keeps a few *empty* ones ready on purpose."""
        if not self.spool_dir.exists():
            return []
        return sorted(p for p in self.spool_dir.rglob("*.part") if p.stat().st_size > 0)


@asynccontextmanager
async def running_server(
    tmp_path: Path, *, on_store: Any = None, timeouts: Timeouts = FAST, **options: Any
) -> AsyncIterator[RunningServer]:
    """A server on an ephemeral port writing with the CLI's :class:`FileWriter`.

    Data sets are spooled to disk from their first byte (``memory_threshold=0``, as
    ``aiodicom receive`` does), so tests can see temporary files appear and vanish.
    """
    output_dir = tmp_path / "out"
    spool_dir = tmp_path / "spool"
    options.setdefault("max_pdu_length", SERVER_MAX_PDU)
    options.setdefault("max_pdu_cap", SERVER_PDU_CAP)
    options.setdefault("memory_threshold", 0)
    server = Server(
        SERVER_AE,
        HOST,
        0,
        on_store=on_store if on_store is not None else FileWriter(output_dir),
        timeouts=timeouts,
        spool_dir=spool_dir,
        **options,
    )
    async with anyio.create_task_group() as task_group:
        port: int = await task_group.start(server.serve)
        try:
            yield RunningServer(server, port, output_dir, spool_dir)
        finally:
            server.shutdown(grace=1.0)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path) as running:
        yield running


def open_connections(server: Server) -> int:
    """Connections the server tracks, associated or not.

    Read from a private set because the server exposes no such count; it is exactly
    the state that must not grow under hostile connection patterns.
    """
    return len(server._connections)


async def wait_idle(server: Server, timeout: float = 5.0) -> None:
    """Wait until the server holds no association (it must get there by itself)."""
    with anyio.fail_after(timeout):
        while server.active_associations:
            await anyio.sleep(0.02)


async def assert_still_serving(running: RunningServer) -> None:
    """A well-behaved peer still gets a C-ECHO answered, and nothing is left behind."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with aiodicom.connect(
            HOST, running.port, called_ae=SERVER_AE, calling_ae="GOOD-SCU", timeouts=FAST
        ) as assoc:
            status = await assoc.echo()
    assert status.is_success
    await wait_idle(running.server)


# --- crafting bytes ----------------------------------------------------------------------


def associate_rq(
    contexts: Sequence[tuple[str, Sequence[str]]] = RAW_CONTEXTS,
    *,
    called_ae: str = SERVER_AE,
    calling_ae: str = "RAW-PEER",
    max_pdu_length: int = 0,
) -> P.AssociateRQ:
    return build_request(called_ae, calling_ae, contexts, max_pdu_length=max_pdu_length)


def pdata(*pdvs: tuple[int, bool, bool, bytes]) -> bytes:
    """A P-DATA-TF PDU from ``(context_id, is_command, is_last, data)`` tuples."""
    return P.encode(P.PDataTF([P.PDV(cid, cmd, last, data) for cid, cmd, last, data in pdvs]))


def raw_pdv(length: int, context_id: int, control: int, data: bytes = b"") -> bytes:
    """A PDV item with whatever length field we like (for broken ones)."""
    return struct.pack(">IBB", length, context_id, control) + data


def pdu(pdu_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """Any PDU, with an honest length unless ``length`` says otherwise."""
    return struct.pack(">BxI", pdu_type, len(body) if length is None else length) + body


def echo_rq(message_id: int = 1) -> bytes:
    return C.encode_command(C.CEchoRQ(message_id), has_dataset=False)


def store_rq(sop_instance_uid: str, message_id: int = 1) -> bytes:
    return C.encode_command(
        C.CStoreRQ(message_id, CT_IMAGE_STORAGE, sop_instance_uid), has_dataset=True
    )


def encode_dataset(ds: Dataset) -> bytes:
    """The data set (no file meta) in explicit VR little endian, as it travels."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return bytes(buffer.getvalue())


ResponseT = TypeVar("ResponseT")


# --- the raw peer --------------------------------------------------------------------------


class RawPeer:
    """One TCP connection that speaks whatever bytes a test gives it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, source: str | None = None) -> RawPeer:
        """Connect from ``source`` (another loopback address, e.g. 127.0.0.2) if given."""
        local = (source, 0) if source is not None else None
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=local)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def half_close(self) -> None:
        """Send FIN: we will send nothing more (the peer sees end of stream)."""
        self.writer.write_eof()

    async def read_pdu(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next PDU as ``(type, body)``, or None if the connection closed first."""
        with anyio.fail_after(timeout):
            try:
                header = await self.reader.readexactly(6)
                pdu_type, length = struct.unpack(">BxI", header)
                assert length <= 1 << 24, f"server sent a PDU announcing {length} bytes"
                return pdu_type, await self.reader.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                assert not exc.partial, f"connection closed inside a PDU after {exc.partial!r}"
                return None
            except ConnectionError:  # reset, or a broken pipe noticed while we were writing
                return None

    async def expect_pdu(self, timeout: float = 5.0) -> P.PDU:
        got = await self.read_pdu(timeout)
        assert got is not None, "the server closed the connection without answering"
        return P.decode(*got)

    async def expect_abort(self, source: int, reason: int, timeout: float = 5.0) -> None:
        answer = await self.expect_pdu(timeout)
        assert answer == P.Abort(source, reason)

    async def expect_closed(self, timeout: float = 5.0) -> None:
        """The server closes without sending another byte."""
        got = await self.read_pdu(timeout)
        assert got is None, f"expected the connection to close, got PDU {got!r}"

    async def associate(self, rq: P.AssociateRQ | None = None) -> P.AssociateAC:
        await self.send(P.encode(rq or associate_rq()))
        answer = await self.expect_pdu()
        assert isinstance(answer, P.AssociateAC), answer
        return answer

    async def echo(self, message_id: int = 1) -> C.CEchoRSP:
        await self.send(pdata((ECHO_CONTEXT, True, True, echo_rq(message_id))))
        return await self.expect_response(C.CEchoRSP)

    async def expect_response(self, kind: type[ResponseT]) -> ResponseT:
        answer = await self.expect_pdu()
        assert isinstance(answer, P.PDataTF), answer
        command = b"".join(bytes(pdv.data) for pdv in answer.pdvs if pdv.is_command)
        message, has_dataset = C.decode_command(command)
        assert isinstance(message, kind) and not has_dataset, message
        return message

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


@asynccontextmanager
async def raw_peer(port: int, source: str | None = None) -> AsyncIterator[RawPeer]:
    peer = await RawPeer.connect(port, source)
    try:
        yield peer
    finally:
        await peer.close()


# --- raw acceptors, for testing our client ----------------------------------------------------

#: Contexts our client proposes to raw acceptors, and the timeouts it waits with.
ECHO_ONLY = [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]
CLIENT_TIMEOUTS = Timeouts(connect=2.0, acse=0.5, dimse=0.5, network_idle=1.0, artim=0.5)


@asynccontextmanager
async def raw_acceptor(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A listener running ``handle`` per connection; yields its port."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(wrapped, HOST, 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


async def read_pdu(reader: asyncio.StreamReader) -> P.PDU:
    pdu_type, length = struct.unpack(">BxI", await reader.readexactly(6))
    return P.decode(pdu_type, await reader.readexactly(length))


def accept_all(rq: P.PDU) -> bytes:
    assert isinstance(rq, P.AssociateRQ)
    return P.encode(
        P.AssociateAC(
            rq.called_ae,
            rq.calling_ae,
            [
                P.PresentationContextAC(c.id, 0, c.transfer_syntaxes[0])
                for c in rq.presentation_contexts
            ],
            P.UserInformation(max_pdu_length=16384, implementation_class_uid="1.2.3.4"),
        )
    )
