"""Peers that go silent, stop half way or abort, on either side of the connection.

Server side: a raw-bytes peer against a running :class:`Server` with sub-second
timeouts. Client side: our :func:`aiodicom.connect` against DCMTK ``storescp``'s fault
injection options and against raw acceptors that never answer. Every wait here is
bounded by ``anyio.fail_after``: the assertion is "a clear exception, never a hang",
not a measured duration.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.uids import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS, new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse.client import connect
from aiodicom.dimse.command import CStoreRSP
from aiodicom.dimse.store import AssociationInfo, ReceivedInstance
from aiodicom.errors import AssociationAborted, AssociationRejected, DicomTimeoutError
from aiodicom.synthetic import make_dataset, write_study
from aiodicom.transport.association import Timeouts
from aiodicom.ul import pdu as P
from peers import storescp

from .conftest import (
    CT_CONTEXT,
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    RunningServer,
    assert_still_serving,
    encode_dataset,
    pdata,
    raw_peer,
    running_server,
    store_rq,
    wait_idle,
)

pytestmark = pytest.mark.anyio

USER = P.AbortSource.SERVICE_USER
#: Longest any timeout case may take before we call it a hang.
HANG_GUARD = 10.0


def _no_partial_files(running: RunningServer) -> None:
    assert running.stored_files() == []
    assert running.partial_files() == []


# --- the server against silent and vanishing peers ------------------------------------------


async def test_connection_without_associate_rq_is_closed_after_artim(server: RunningServer) -> None:
    with anyio.fail_after(HANG_GUARD):
        async with raw_peer(server.port) as peer:
            await peer.expect_closed(timeout=HANG_GUARD)
    await assert_still_serving(server)


async def test_silent_peer_after_association_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(HANG_GUARD):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            # Nothing more from us: the network idle timeout ends the association.
            await peer.expect_abort(USER, P.REASON_NOT_SPECIFIED, timeout=HANG_GUARD)
            await peer.expect_closed(timeout=HANG_GUARD)
    await assert_still_serving(server)


async def test_peer_stopping_mid_data_set_is_aborted_and_nothing_is_kept(
    server: RunningServer,
) -> None:
    data = encode_dataset(make_dataset(rows=64, columns=64))
    with anyio.fail_after(HANG_GUARD):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
            await peer.send(pdata((CT_CONTEXT, False, False, data[: len(data) // 2])))
            # The spool file exists while the data set arrives ...
            with anyio.fail_after(5):
                while not server.partial_files():
                    await anyio.sleep(0.01)
            await peer.expect_abort(USER, P.REASON_NOT_SPECIFIED, timeout=HANG_GUARD)
            await peer.expect_closed(timeout=HANG_GUARD)
    await wait_idle(server.server)
    _no_partial_files(server)  # ... and is gone with the association.
    await assert_still_serving(server)


async def test_peer_not_closing_after_release_rp_is_cut_after_artim(server: RunningServer) -> None:
    with anyio.fail_after(HANG_GUARD):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
            # We keep the connection open; the server must not wait for us forever.
            await peer.expect_closed(timeout=HANG_GUARD)
    await assert_still_serving(server)


async def test_abort_in_the_middle_of_a_data_set_stores_nothing(tmp_path: Path) -> None:
    aborted: list[AssociationInfo] = []

    async def on_aborted(info: AssociationInfo) -> None:
        aborted.append(info)

    data = encode_dataset(make_dataset(rows=64, columns=64))
    async with running_server(tmp_path, on_aborted=on_aborted) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
                await peer.send(pdata((CT_CONTEXT, False, False, data[:2000])))
                with anyio.fail_after(5):
                    while not running.partial_files():
                        await anyio.sleep(0.01)
                await peer.send(P.encode(P.Abort(USER, P.REASON_NOT_SPECIFIED)))
                # No response (least of all a success) follows an abort: just the close.
                await peer.expect_closed()
            await wait_idle(running.server)
            with anyio.fail_after(5):
                while not aborted:
                    await anyio.sleep(0.01)
        assert [info.calling_ae.strip() for info in aborted] == ["RAW-PEER"]
        _no_partial_files(running)
        await assert_still_serving(running)


async def test_store_handler_exception_answers_out_of_resources(tmp_path: Path) -> None:
    calls = 0

    async def broken(instance: ReceivedInstance) -> int | None:
        nonlocal calls
        calls += 1
        raise RuntimeError("disk on fire")

    async with running_server(tmp_path, on_store=broken) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST) as assoc:
                for _ in range(2):
                    status = await assoc.store(make_dataset(rows=16, columns=16))
                    assert status == S.OUT_OF_RESOURCES == 0xA700
                    assert status.is_failure
                assert (await assoc.echo()).is_success
            # A raw peer sees the same on the wire.
            async with raw_peer(running.port) as peer:
                await peer.associate()
                uid = new_uid()
                data = encode_dataset(make_dataset(rows=16, columns=16, sop_instance_uid=uid))
                await peer.send(
                    pdata((CT_CONTEXT, True, True, store_rq(uid)), (CT_CONTEXT, False, True, data))
                )
                response = await peer.expect_response(CStoreRSP)
                assert response.status == 0xA700
                assert response.affected_sop_instance_uid == uid
        assert calls == 3
        _no_partial_files(running)
        await assert_still_serving(running)


# --- our client against peers that misbehave ----------------------------------------------------


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


async def _read_pdu(reader: asyncio.StreamReader) -> P.PDU:
    pdu_type, length = struct.unpack(">BxI", await reader.readexactly(6))
    return P.decode(pdu_type, await reader.readexactly(length))


def _accept(rq: P.PDU) -> bytes:
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


ECHO_ONLY = [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]
CLIENT_TIMEOUTS = Timeouts(connect=2.0, acse=0.5, dimse=0.5, network_idle=1.0, artim=0.5)


async def test_client_times_out_when_the_acceptor_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_pdu(reader)
        await reader.read()  # until our client gives up and closes

    async with raw_acceptor(silent) as port:
        with anyio.fail_after(HANG_GUARD), pytest.raises(DicomTimeoutError):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS):
                pytest.fail("an association was established with a silent acceptor")


async def test_client_times_out_when_no_dimse_response_comes() -> None:
    closed_by_client = anyio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_accept(await _read_pdu(reader)))
        assert isinstance(await _read_pdu(reader), P.PDataTF)  # the C-ECHO-RQ, never answered
        assert await _read_pdu(reader) == P.Abort(USER, P.REASON_NOT_SPECIFIED)
        closed_by_client.set()

    async with raw_acceptor(mute) as port:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(DicomTimeoutError):
                async with connect(
                    HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS
                ) as assoc:
                    await assoc.echo()
            await closed_by_client.wait()


async def test_client_sees_the_acceptor_abort() -> None:
    async def aborting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_accept(await _read_pdu(reader)))
        await _read_pdu(reader)
        writer.write(P.encode(P.Abort(P.AbortSource.SERVICE_PROVIDER, P.REASON_UNEXPECTED_PDU)))
        await reader.read()

    async with raw_acceptor(aborting) as port:
        with anyio.fail_after(HANG_GUARD), pytest.raises(AssociationAborted) as caught:
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS) as assoc:
                await assoc.echo()
    assert (caught.value.source, caught.value.reason) == (
        P.AbortSource.SERVICE_PROVIDER,
        P.REASON_UNEXPECTED_PDU,
    )


async def test_client_sees_the_acceptor_vanish() -> None:
    async def vanishing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_accept(await _read_pdu(reader)))
        await _read_pdu(reader)  # then close without a word

    async with raw_acceptor(vanishing) as port:
        with anyio.fail_after(HANG_GUARD), pytest.raises(AssociationAborted):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS) as assoc:
                await assoc.echo()


# --- our client against DCMTK storescp's fault injection --------------------------------------------


@pytest.fixture(scope="module")
def one_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [path] = write_study(tmp_path_factory.mktemp("study"), images_per_series=1, rows=32, columns=32)
    return path


async def _store_to_storescp(args: tuple[str, ...], path: Path, tmp_path: Path) -> S.Status:
    with storescp(output_dir=tmp_path, args=args) as peer:
        with anyio.fail_after(HANG_GUARD):
            async with connect(
                HOST, peer.port, called_ae="STORESCP", timeouts=CLIENT_TIMEOUTS
            ) as assoc:
                return await assoc.store(path)


@pytest.mark.dcmtk
@pytest.mark.parametrize("option", ["--abort-during", "--abort-after"])
async def test_client_against_storescp_aborting(
    option: str, one_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(AssociationAborted):
        await _store_to_storescp((option,), one_file, tmp_path)


@pytest.mark.dcmtk
@pytest.mark.parametrize("option", ["--sleep-during", "--sleep-after"])
async def test_client_against_storescp_sleeping(
    option: str, one_file: Path, tmp_path: Path
) -> None:
    # storescp sleeps 3 s; our DIMSE timeout is 0.5 s.
    with pytest.raises(DicomTimeoutError):
        await _store_to_storescp((option, "3"), one_file, tmp_path)


@pytest.mark.dcmtk
async def test_client_against_storescp_refusing(one_file: Path, tmp_path: Path) -> None:
    with pytest.raises(AssociationRejected) as caught:
        await _store_to_storescp(("--refuse",), one_file, tmp_path)
    rejection = caught.value
    assert (rejection.result, rejection.source, rejection.reason) == (
        P.RJ_PERMANENT,
        P.RJ_SOURCE_USER,
        P.RJ_USER_NO_REASON,
    )


@pytest.mark.dcmtk
async def test_client_against_storescp_reject_option_is_accepted(
    one_file: Path, tmp_path: Path
) -> None:
    """``--reject`` refuses requestors without an implementation class UID; we always send one."""
    status = await _store_to_storescp(("--reject",), one_file, tmp_path)
    assert status.is_success
    assert len(list(tmp_path.glob("*"))) == 1
