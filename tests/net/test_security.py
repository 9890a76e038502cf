"""What a hostile peer must not achieve: write outside the output folder, exhaust the
server with associations or connections, or get past the AE title checks.
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from aiodicom.cli.receive import FileWriter
from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse.client import connect
from aiodicom.dimse.command import CStoreRSP
from aiodicom.errors import AssociationRejected
from aiodicom.synthetic import CT_IMAGE_STORAGE
from aiodicom.ul import pdu as P
from peers import aiodicom_receive

from .conftest import (
    CT_CONTEXT,
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    RawPeer,
    RunningServer,
    assert_still_serving,
    associate_rq,
    open_connections,
    pdata,
    raw_peer,
    running_server,
    store_rq,
    wait_idle,
)

pytestmark = pytest.mark.anyio


# --- paths from the wire -------------------------------------------------------------------------


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length (UI, CS, ...)."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _hostile_dataset(study: str, series: str, instance: str) -> bytes:
    """A minimal CT data set whose UIDs are whatever the attacker likes (NULs included)."""
    return b"".join(
        (
            _element(0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE.encode()),
            _element(0x0008, 0x0018, b"UI", instance.encode("latin-1")),
            _element(0x0008, 0x0060, b"CS", b"CT"),
            _element(0x0010, 0x0020, b"LO", b"../../patient"),
            _element(0x0020, 0x000D, b"UI", study.encode("latin-1")),
            _element(0x0020, 0x000E, b"UI", series.encode("latin-1")),
        )
    )


HOSTILE_UIDS = {
    "parent-dirs": "../../x",
    "absolute": "/etc/passwd",
    "dot-dot": "..",
    "dot": ".",
    "nul-then-parent": "1.2.3\0/../../x",
    "backslashes": "..\\..\\x",
    "trailing-nul": "1.2.3\0",
}


def _assert_inside(output_dir: Path, tmp_path: Path) -> list[Path]:
    """Every file written is ``<study>/<series>/<instance>.dcm`` under ``output_dir``."""
    root = output_dir.resolve()
    written = sorted(
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and "spool" not in p.relative_to(tmp_path).parts
    )
    for path in written:
        resolved = path.resolve()
        assert resolved.is_relative_to(root), f"{path} escaped {root}"
        parts = resolved.relative_to(root).parts
        assert len(parts) == 3, f"{path} is not <study>/<series>/<instance>.dcm"
        for part in parts:
            assert part not in (".", "..") and "\0" not in part and "\\" not in part
        assert parts[2].endswith(".dcm")
    assert not Path("/etc/passwd.dcm").exists()
    return written


@pytest.mark.parametrize("where", ["instance", "study", "series", "all"])
@pytest.mark.parametrize("case", sorted(HOSTILE_UIDS))
async def test_uids_from_the_wire_never_leave_the_output_folder(
    tmp_path: Path, case: str, where: str
) -> None:
    hostile = HOSTILE_UIDS[case]
    uids = {name: new_uid() for name in ("study", "series", "instance")}
    for name in uids:
        if where in (name, "all"):
            uids[name] = hostile
    data = _hostile_dataset(uids["study"], uids["series"], uids["instance"])
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(
                    pdata(
                        (CT_CONTEXT, True, True, store_rq(uids["instance"])),
                        (CT_CONTEXT, False, True, data),
                    )
                )
                response = await peer.expect_response(CStoreRSP)
                await peer.send(P.encode(P.ReleaseRQ()))
                assert await peer.expect_pdu() == P.ReleaseRP()
        await assert_still_serving(running)
    written = _assert_inside(running.output_dir, tmp_path)
    # Kept, under a sanitised name: refusing would lose data over a cosmetic problem.
    assert response.status == S.SUCCESS
    [stored] = written
    assert stored.read_bytes().endswith(data)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_cli_receiver_keeps_hostile_uids_inside(tmp_path: Path) -> None:
    """The same through ``aiodicom receive``'s writer with a normal client sending a Dataset."""
    from aiodicom.synthetic import make_dataset

    ds = make_dataset(rows=16, columns=16, sop_instance_uid="../../x")
    ds.StudyInstanceUID = "/etc"
    ds.SeriesInstanceUID = ".."
    output_dir = tmp_path / "out"
    async with running_server(tmp_path, on_store=FileWriter(output_dir)) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST) as assoc:
                status = await assoc.store(ds)
    assert status.is_success
    [written] = _assert_inside(output_dir, tmp_path)
    assert written.name.endswith(".dcm") and written.name != "x.dcm"


# --- exhaustion ------------------------------------------------------------------------------------


async def test_too_many_associations_are_rejected_transiently(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_associations=2) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                first = await stack.enter_async_context(
                    connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST)
                )
                second = await stack.enter_async_context(
                    connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST)
                )
                assert running.server.active_associations == 2
                # The third, over the wire: A-ASSOCIATE-RJ transient, presentation source, local limit.
                async with raw_peer(running.port) as peer:
                    await peer.send(P.encode(associate_rq()))
                    assert await peer.expect_pdu() == P.AssociateRJ(
                        P.RJ_TRANSIENT,
                        P.RJ_SOURCE_PRESENTATION,
                        P.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED,
                    )
                    await peer.expect_closed()
                # ... and through our client, as an exception that says so.
                with pytest.raises(AssociationRejected) as caught:
                    async with connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST):
                        pytest.fail("a third association was accepted")
                assert (caught.value.result, caught.value.source, caught.value.reason) == (2, 3, 2)
                assert "local limit exceeded" in str(caught.value)
                # The first two never noticed.
                assert (await first.echo()).is_success
                assert (await second.echo()).is_success
            await wait_idle(running.server)
            await assert_still_serving(running)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_many_quick_connections_leave_nothing_behind(server: RunningServer) -> None:
    await assert_still_serving(server)  # warm up: first-use allocations are not leaks
    fds_before = _open_fds()
    with anyio.fail_after(60):
        for cycle in range(300):
            peer = await RawPeer.connect(server.port)
            kind = cycle % 3
            if kind == 1:  # a request, then gone before the answer is read
                await peer.send(P.encode(associate_rq()))
            elif kind == 2:  # a full association, then an A-ABORT
                await peer.associate()
                await peer.send(P.encode(P.Abort(0, 0)))
            await peer.close()
        while open_connections(server.server) or server.server.active_associations:
            await anyio.sleep(0.02)
    await assert_still_serving(server)
    assert _open_fds() <= fds_before + 4
    assert server.partial_files() == []


async def test_flood_of_idle_connections_is_capped_and_expires(tmp_path: Path) -> None:
    """Connections that never associate are bounded (and refused at once beyond the cap).

    The per-host limit is lifted here so that the global cap is what binds; the
    per-host limit has tests of its own (test_resource_limits.py).
    """
    async with running_server(tmp_path, max_associations=2, max_connections_per_host=100) as running:
        cap = running.server.max_connections
        with anyio.fail_after(TEST_TIMEOUT):
            peers = [await RawPeer.connect(running.port) for _ in range(cap + 10)]
            try:
                # The server holds exactly ``cap`` of them while all are open ...
                while open_connections(running.server) < cap:
                    await anyio.sleep(0.01)
                assert open_connections(running.server) == cap
                # ... and closes every one: the excess at once, the rest by ARTIM.
                for peer in peers:
                    await peer.expect_closed(timeout=10)
            finally:
                for peer in peers:
                    await peer.close()
            while open_connections(running.server):
                await anyio.sleep(0.02)
        await assert_still_serving(running)


# --- AE titles --------------------------------------------------------------------------------------


async def test_calling_ae_not_on_the_allow_list_is_rejected(tmp_path: Path) -> None:
    async with running_server(tmp_path, calling_ae_allowlist=["GOOD-SCU", "OTHER"]) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            with pytest.raises(AssociationRejected) as caught:
                async with connect(
                    HOST, running.port, called_ae=SERVER_AE, calling_ae="INTRUDER", timeouts=FAST
                ):
                    pytest.fail("an AE title off the allow list was accepted")
            assert (caught.value.result, caught.value.source, caught.value.reason) == (
                P.RJ_PERMANENT,
                P.RJ_SOURCE_USER,
                P.RJ_USER_CALLING_AE_NOT_RECOGNIZED,
            )
            async with raw_peer(running.port) as peer:
                await peer.send(P.encode(associate_rq(calling_ae="INTRUDER")))
                assert await peer.expect_pdu() == P.AssociateRJ(1, 1, 3)
            # Leading/trailing spaces are not significant in an AE title.
            async with connect(
                HOST, running.port, called_ae=SERVER_AE, calling_ae=" OTHER ", timeouts=FAST
            ) as assoc:
                assert (await assoc.echo()).is_success
        await assert_still_serving(running)  # calls as GOOD-SCU


async def test_wrong_called_ae_is_rejected_when_required(tmp_path: Path) -> None:
    async with running_server(tmp_path, require_called_ae=True) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            with pytest.raises(AssociationRejected) as caught:
                async with connect(HOST, running.port, called_ae="SOMEONE-ELSE", timeouts=FAST):
                    pytest.fail("a wrong called AE title was accepted")
            assert (caught.value.result, caught.value.source, caught.value.reason) == (
                P.RJ_PERMANENT,
                P.RJ_SOURCE_USER,
                P.RJ_USER_CALLED_AE_NOT_RECOGNIZED,
            )
        await assert_still_serving(running)  # calls SERVER_AE


async def test_any_called_ae_is_accepted_by_default(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with connect(HOST, server.port, called_ae="WHATEVER", timeouts=FAST) as assoc:
            assert (await assoc.echo()).is_success


async def test_storing_is_refused_without_a_storage_context(tmp_path: Path) -> None:
    """A store on the Verification context is not a way around negotiation."""
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                ac = await peer.associate(
                    associate_rq(
                        [
                            ("1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),
                            (CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN]),
                        ]
                    )
                )
                assert all(c.result == 0 for c in ac.presentation_contexts)
                uid = new_uid()
                data = _hostile_dataset(new_uid(), new_uid(), uid)
                await peer.send(pdata((1, True, True, store_rq(uid)), (1, False, True, data)))
                response = await peer.expect_response(CStoreRSP)
                assert response.status == S.SOP_CLASS_NOT_SUPPORTED
        assert running.stored_files() == []
        assert running.partial_files() == []


@pytest.mark.parametrize("pdu_type", [P.PDUType.ASSOCIATE_RQ, P.PDUType.P_DATA_TF])
async def test_connections_not_yet_associated_cannot_claim_large_buffers(
    tmp_path: Path, pdu_type: int
) -> None:
    """Before any association, a PDU header alone must not reserve megabytes.

    Peers that have not associated announce the largest PDU an association may
    send (the cap, 8 MiB by default) and send nothing more, on many connections at
    once. Without a lower cap before association that is cap x connections of
    memory for free (64 associations allow 136 connections: over 1 GiB).
    """
    connections = 8
    async with running_server(
        tmp_path, max_pdu_length=4 * 1024 * 1024, max_pdu_cap=None
    ) as running:
        cap = running.server.max_pdu_cap
        assert cap >= 8 * 1024 * 1024
        with anyio.fail_after(TEST_TIMEOUT):
            tracemalloc.start()
            try:
                before, _ = tracemalloc.get_traced_memory()
                peers = [await RawPeer.connect(running.port) for _ in range(connections)]
                for peer in peers:
                    await peer.send(struct.pack(">BxI", pdu_type, cap) + bytes(64))
                for peer in peers:
                    await peer.expect_abort(
                        P.AbortSource.SERVICE_PROVIDER, P.REASON_INVALID_PARAMETER
                    )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            for peer in peers:
                await peer.close()
        assert peak - before < connections * 1024 * 1024, f"{(peak - before) >> 20} MiB held"
        await assert_still_serving(running)


async def test_association_request_up_to_its_cap_is_read(server: RunningServer) -> None:
    """The pre-association cap (P.ASSOCIATE_PDU_CAP) is far above any real A-ASSOCIATE-RQ."""
    rq = associate_rq()
    rq.user_information.unknown.append((0x7F, bytes(60000)))  # an unknown sub-item: kept, ignored
    encoded = P.encode(rq)
    assert 60000 < len(encoded) < P.ASSOCIATE_PDU_CAP
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate(rq)
            assert (await peer.echo()).status.is_success
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
    await assert_still_serving(server)


async def test_aiodicom_receive_process_keeps_hostile_uids_inside(tmp_path: Path) -> None:
    """End to end through the real command: its spool lives inside the output folder too."""
    output_dir = tmp_path / "out"
    sent: list[bytes] = []
    with aiodicom_receive(output_dir, aet=SERVER_AE) as receiver:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(receiver.port) as peer:
                await peer.associate()
                for message_id, hostile in enumerate(sorted(HOSTILE_UIDS.values()), start=1):
                    data = _hostile_dataset(hostile, ".incoming", hostile)
                    await peer.send(
                        pdata(
                            (CT_CONTEXT, True, True, store_rq(hostile, message_id)),
                            (CT_CONTEXT, False, True, data),
                        )
                    )
                    response = await peer.expect_response(CStoreRSP)
                    assert response.status == S.SUCCESS, hostile
                    sent.append(data)
                await peer.send(P.encode(P.ReleaseRQ()))
                assert await peer.expect_pdu() == P.ReleaseRP()
    assert receiver.returncode == 0, receiver.output()
    written = _assert_inside(output_dir, tmp_path)
    # Distinct UIDs, distinct files: sanitised names carry a hash of the original.
    assert len(written) == len(sent)
    for path in written:
        assert any(path.read_bytes().endswith(data) for data in sent), path
    assert not (output_dir / ".incoming").exists()  # the spool folder went away with the server
