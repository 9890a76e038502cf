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
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.uids import new_uid
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
    CLIENT_TIMEOUTS,
    CT_CONTEXT,
    ECHO_ONLY,
    FAST,
    HOST,
    SERVER_AE,
    SERVER_PDU_CAP,
    TEST_TIMEOUT,
    RawPeer,
    RunningServer,
    accept_all,
    assert_still_serving,
    associate_rq,
    encode_dataset,
    pdata,
    raw_acceptor,
    raw_peer,
    read_pdu,
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


async def test_slow_associate_rq_is_cut_by_artim(server: RunningServer) -> None:
    """Trickling the A-ASSOCIATE-RQ does not keep ARTIM from ending the connection."""
    request = P.encode(associate_rq())
    with anyio.fail_after(HANG_GUARD):
        async with raw_peer(server.port) as peer:
            sent = 0
            try:
                for byte in request:
                    await peer.send(bytes((byte,)))
                    sent += 1
                    await anyio.sleep(0.05)
            except ConnectionError:
                pass  # closed under our feet: what we expect
            assert sent < len(request), "the server waited for the whole trickled request"
            await peer.expect_closed()
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


async def test_peer_silent_inside_a_large_pdu_is_aborted(server: RunningServer) -> None:
    """A PDU header announcing (nearly) the cap, a few bytes, then silence: idle timeout."""
    with anyio.fail_after(HANG_GUARD):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(struct.pack(">BxI", P.PDUType.P_DATA_TF, SERVER_PDU_CAP) + bytes(100))
            await peer.expect_abort(USER, P.REASON_NOT_SPECIFIED, timeout=HANG_GUARD)
            await peer.expect_closed(timeout=HANG_GUARD)
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


async def test_client_times_out_when_the_acceptor_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_pdu(reader)
        await reader.read()  # until our client gives up and closes

    async with raw_acceptor(silent) as port:
        with anyio.fail_after(HANG_GUARD), pytest.raises(DicomTimeoutError):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS):
                pytest.fail("an association was established with a silent acceptor")


async def test_client_times_out_when_no_dimse_response_comes() -> None:
    closed_by_client = anyio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        assert isinstance(await read_pdu(reader), P.PDataTF)  # the C-ECHO-RQ, never answered
        assert await read_pdu(reader) == P.Abort(USER, P.REASON_NOT_SPECIFIED)
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
        writer.write(accept_all(await read_pdu(reader)))
        await read_pdu(reader)
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
        writer.write(accept_all(await read_pdu(reader)))
        await read_pdu(reader)  # then close without a word

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


async def test_a_stalled_peer_does_not_hold_up_others(tmp_path: Path) -> None:
    """One association stuck mid-data set is its own problem: others are served meanwhile."""
    patient = Timeouts(connect=2.0, acse=2.0, dimse=2.0, network_idle=30.0, artim=0.5)
    data = encode_dataset(make_dataset(rows=64, columns=64))
    async with running_server(tmp_path, timeouts=patient) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as stalled:
                await stalled.associate()
                await stalled.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
                await stalled.send(pdata((CT_CONTEXT, False, False, data[:1000])))
                for _ in range(3):
                    async with connect(
                        HOST, running.port, called_ae=SERVER_AE, timeouts=FAST
                    ) as assoc:
                        assert (await assoc.echo()).is_success
                        assert (await assoc.store(make_dataset(rows=16, columns=16))).is_success
                assert running.server.active_associations == 1  # the stalled one, still waiting
                assert len(running.stored_files()) == 3
        await wait_idle(running.server)  # our close ended it
        assert len(running.stored_files()) == 3
        assert running.partial_files() == []


async def test_shutdown_aborts_associations_left_after_the_grace_period(tmp_path: Path) -> None:
    patient = Timeouts(connect=2.0, acse=2.0, dimse=2.0, network_idle=30.0, artim=0.5)
    data = encode_dataset(make_dataset(rows=64, columns=64))
    with anyio.fail_after(TEST_TIMEOUT):
        async with running_server(tmp_path, timeouts=patient) as running:
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
                await peer.send(pdata((CT_CONTEXT, False, False, data[:1000])))
                running.server.shutdown(grace=0.2)
                await peer.expect_abort(USER, P.REASON_NOT_SPECIFIED)
                await peer.expect_closed()
            # New connections are no longer accepted.
            with pytest.raises(OSError):
                await RawPeer.connect(running.port)
    # serve() returned: the context manager's task group is done, nothing half stored.
    assert running.server.active_associations == 0
    assert running.stored_files() == []
    assert running.partial_files() == []
