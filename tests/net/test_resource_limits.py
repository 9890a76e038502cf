"""Hostile peers that go after resources rather than parsing: memory, CPU, connection slots.

Each case runs a real :class:`Server` on 127.0.0.1, attacks it with raw sockets (from
other loopback addresses, 127.0.0.2 and up, where a per-host limit is involved: Linux
routes all of 127/8), and checks both sides of the bargain: the attacker is cut off
within a bounded time or memory, and a well-behaved client is served meanwhile.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
import trustme

import aiodicom
from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STUDY_ROOT_FIND,
    VERIFICATION_SOP_CLASS,
    new_uid,
)
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.server import Server
from aiodicom.synthetic import CT_IMAGE_STORAGE, make_dataset
from aiodicom.transport.association import Timeouts
from aiodicom.ul import pdu as P
from peers import aiodicom_command, aiodicom_receive, peer_env

from .conftest import (
    CT_CONTEXT,
    ECHO_CONTEXT,
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    RawPeer,
    assert_still_serving,
    associate_rq,
    encode_dataset,
    open_connections,
    pdata,
    raw_peer,
    running_server,
    store_rq,
    wait_idle,
)

pytestmark = pytest.mark.anyio

PROVIDER = P.AbortSource.SERVICE_PROVIDER
FIND_CONTEXT = 5
CONTEXTS = [
    (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
    (CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN]),
    (STUDY_ROOT_FIND, [IMPLICIT_VR_LITTLE_ENDIAN]),
]
SOP_CLASSES = [VERIFICATION_SOP_CLASS, CT_IMAGE_STORAGE, STUDY_ROOT_FIND]
MIB = 1024 * 1024
#: The transport relies on loop details (buffered reading, pausing, TLS): run on both.
BOTH_LOOPS = pytest.mark.parametrize(
    "anyio_backend", [("asyncio", {}), ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"]
)


#: After its A-ABORT the server waits ARTIM for the peer to close. A peer still writing then
#: gets a reset, which discards the A-ABORT if it was not read yet: so a long ARTIM here.
ABORT_THEN_WAIT = Timeouts(connect=2.0, acse=2.0, dimse=2.0, network_idle=5.0, artim=5.0)


def _raw_pdu_of_pdvs(context_id: int, control: int, size: int, count: int) -> bytes:
    """One P-DATA-TF holding ``count`` PDVs of ``size`` data bytes each."""
    pdv = struct.pack(">IBB", size + 2, context_id, control) + bytes(size)
    body = pdv * count
    return struct.pack(">BxI", P.PDUType.P_DATA_TF, len(body)) + body


async def _stream_until_cut(peer: RawPeer, chunk: bytes, limit: int) -> tuple[P.PDU | None, int]:
    """Write ``chunk`` again and again (up to ``limit`` bytes) until the server answers or closes.

    Returns what the server sent (an A-ABORT, or None for a plain close) and the bytes written.
    """
    answer: asyncio.Task[tuple[int, bytes] | None] = asyncio.ensure_future(peer.read_pdu(timeout=30))
    written = 0
    try:
        while written < limit and not answer.done():
            try:
                await peer.send(chunk)
            except ConnectionError:
                break
            written += len(chunk)
            # In-process attackers must not hog the loop the server and the prober share:
            # a real one is another process.
            await asyncio.sleep(0)
        got = await answer
    finally:
        answer.cancel()
    return (None if got is None else P.decode(*got)), written


async def _peers(stack: AsyncExitStack, port: int, sources: list[str | None]) -> list[RawPeer]:
    """One raw connection per entry of ``sources`` (a loopback address, or None: 127.0.0.1)."""
    return [await stack.enter_async_context(raw_peer(port, source)) for source in sources]


# --- 4. memory: fragments, not only bytes ------------------------------------------------------

#: (what the tiny fragments belong to, the command that opens the message)
_TINY_CASES = {
    "store-data-set": (CT_CONTEXT, 0, lambda: store_rq(new_uid())),
    "find-identifier": (FIND_CONTEXT, 0, lambda: C.encode_command(C.CFindRQ(1, STUDY_ROOT_FIND), has_dataset=True)),
    "command-set": (ECHO_CONTEXT, 1, None),
}


@pytest.mark.parametrize("threshold", [0, MIB], ids=["spool", "memory"])
@pytest.mark.parametrize("size", [0, 1], ids=["empty", "one-byte"])
@pytest.mark.parametrize("per_pdu", [1, 200], ids=["one-per-pdu", "packed"])
@pytest.mark.parametrize("case", sorted(_TINY_CASES))
async def test_streams_of_tiny_fragments_are_cut_with_bounded_memory(
    tmp_path: Path, case: str, size: int, per_pdu: int, threshold: int
) -> None:
    """Empty or one-byte PDVs cost a Python object each: 60 MiB of them once held 2 GB.

    Whatever message they belong to (a C-STORE data set in memory or spooled, a C-FIND
    identifier, a command set), the server aborts the peer after a few of them and
    holds a bounded amount of memory meanwhile.
    """
    context_id, control, opener = _TINY_CASES[case]
    chunk = _raw_pdu_of_pdvs(context_id, control, size, per_pdu) * (64 * 1024 // (12 + size) // per_pdu)
    async with running_server(
        tmp_path, sop_classes=SOP_CLASSES, memory_threshold=threshold, timeouts=ABORT_THEN_WAIT
    ) as running:
        with anyio.fail_after(TEST_TIMEOUT * 2):
            async with raw_peer(running.port) as peer:
                await peer.associate(associate_rq(CONTEXTS))
                if opener is not None:
                    await peer.send(pdata((context_id, True, True, opener())))
                tracemalloc.start()
                try:
                    before, _ = tracemalloc.get_traced_memory()
                    answer, written = await _stream_until_cut(peer, chunk, 8 * MIB)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        assert answer == P.Abort(PROVIDER, P.REASON_INVALID_PARAMETER), f"{answer} after {written} bytes"
        assert peak - before < 4 * MIB, f"{(peak - before) / MIB:.1f} MiB held for {written} bytes"
        assert running.partial_files() == []
        await assert_still_serving(running)


@BOTH_LOOPS
async def test_pdu_headers_alone_reserve_little_on_established_associations(tmp_path: Path) -> None:
    """A 6-byte header announcing the largest PDU allowed reserves at most 1 MiB until bytes come.

    Before, each association's header allocated the whole announced body at once (the
    cap, 8 MiB by default): a few associations sending only headers held gigabytes.
    """
    associations = 6
    async with running_server(tmp_path, max_pdu_length=4 * MIB, max_pdu_cap=None) as running:
        cap = running.server.max_pdu_cap
        assert cap >= 8 * MIB
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                peers = await _peers(stack, running.port, [None] * associations)
                for peer in peers:
                    await peer.associate()
                tracemalloc.start()
                try:
                    before, _ = tracemalloc.get_traced_memory()
                    for peer in peers:
                        await peer.send(struct.pack(">BxI", P.PDUType.P_DATA_TF, cap) + bytes(100))
                    await anyio.sleep(0.3)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        assert peak - before < associations * 1.5 * MIB, f"{(peak - before) / MIB:.1f} MiB held"
        await wait_idle(running.server)
        await assert_still_serving(running)


@BOTH_LOOPS
@pytest.mark.parametrize("threshold", [0, 2 * MIB], ids=["spool", "memory"])
async def test_large_pdus_wait_for_the_server_memory_budget_then_complete(
    tmp_path: Path, threshold: int
) -> None:
    """Many associations sending large PDUs at once share ``max_memory``; none is lost.

    With a budget of 4 MiB and 1 MiB PDUs on six associations, the buffers of some
    wait (their connections stop reading) until others are delivered, and data sets
    that would stay in memory spill to the spool instead; memory never goes past the
    budget, and every instance is stored.
    """
    associations = 6
    datasets = [make_dataset(rows=700, columns=700, index=n, slices=associations) for n in range(associations)]
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    encoded = [encode_dataset(ds) for ds in datasets]  # ~1 MiB: one PDU each
    async with running_server(
        tmp_path,
        max_pdu_length=2 * MIB,
        max_pdu_cap=2 * MIB,
        max_memory=4 * MIB,
        memory_threshold=threshold,
    ) as running:
        budget = running.server.memory
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                peers = await _peers(stack, running.port, [None] * associations)
                for peer, uid in zip(peers, uids, strict=True):
                    await peer.associate()
                    await peer.send(pdata((CT_CONTEXT, True, True, store_rq(uid))))
                whole = [pdata((CT_CONTEXT, False, True, data)) for data in encoded]
                most = [w[: len(w) - 10] for w in whole]
                highest = 0
                for peer, part in zip(peers, most, strict=True):
                    await peer.send(part)
                for _ in range(20):
                    highest = max(highest, budget.used)
                    await anyio.sleep(0.02)
                assert budget.used <= budget.limit
                assert highest > 2 * MIB  # the budget was really in use
                for peer, w in zip(peers, whole, strict=True):
                    await peer.send(w[len(w) - 10 :])
                for peer in peers:
                    response = await peer.expect_response(C.CStoreRSP)
                    assert response.status == S.SUCCESS
        stored = running.stored_files()
        assert sorted(p.stem for p in stored) == sorted(uids)
        for path in stored:
            assert path.read_bytes().endswith(encoded[uids.index(path.stem)])
        await wait_idle(running.server)
        assert budget.used == 0
        await assert_still_serving(running)


# --- 5. CPU: nobody monopolises the loop ---------------------------------------------------------


@asynccontextmanager
async def _echo_prober(port: int) -> AsyncIterator[list[float]]:
    """A well-behaved client doing C-ECHO after C-ECHO; yields the round trip times."""
    times: list[float] = []
    stop = anyio.Event()

    async def probe() -> None:
        async with aiodicom.connect(HOST, port, called_ae=SERVER_AE, calling_ae="GOOD-SCU", timeouts=FAST) as assoc:
            while not stop.is_set():
                started = time.perf_counter()
                assert (await assoc.echo()).is_success
                times.append(time.perf_counter() - started)
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(probe)
        try:
            yield times
        finally:
            stop.set()


@BOTH_LOOPS
@pytest.mark.parametrize("per_pdu", [1, 200], ids=["one-per-pdu", "packed"])
async def test_one_byte_fragments_neither_starve_others_nor_run_on(tmp_path: Path, per_pdu: int) -> None:
    """Four peers stream 1-byte PDVs (~0.5 s of CPU per MiB before): cut quickly, others unharmed."""
    chunk = _raw_pdu_of_pdvs(CT_CONTEXT, 0, 1, per_pdu) * (256 * 1024 // 13 // per_pdu)
    async with running_server(tmp_path, timeouts=ABORT_THEN_WAIT) as running:
        with anyio.fail_after(TEST_TIMEOUT * 2):
            async with _echo_prober(running.port) as times:
                while not times:
                    await anyio.sleep(0.01)

                async def attack(source: str, results: list[tuple[P.PDU | None, int, float]]) -> None:
                    async with raw_peer(running.port, source) as peer:
                        await peer.associate()
                        await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
                        started = time.perf_counter()
                        answer, written = await _stream_until_cut(peer, chunk, 32 * MIB)
                        results.append((answer, written, time.perf_counter() - started))

                results: list[tuple[P.PDU | None, int, float]] = []
                async with anyio.create_task_group() as attackers:
                    for n in range(4):
                        attackers.start_soon(attack, f"127.0.0.{n + 2}", results)
                await anyio.sleep(0.5)  # probes after the attack too: their count is asserted
        for answer, written, seconds in results:
            assert answer == P.Abort(PROVIDER, P.REASON_INVALID_PARAMETER), f"{answer} after {written} bytes"
            assert seconds < 3.0, f"aborted only after {seconds:.1f} s and {written} bytes"
        assert len(times) >= 5, times
        assert max(times) < 1.0, f"C-ECHO round trips up to {max(times):.2f} s during the attack"
        await assert_still_serving(running)


async def test_data_after_the_servers_abort_is_not_even_read(tmp_path: Path) -> None:
    """After its A-ABORT the server waits (ARTIM) for the peer to close; it no longer
    decodes whatever the peer keeps sending meanwhile, which was CPU for the taking."""
    chunk = pdata((CT_CONTEXT, False, False, bytes(60000))) * 16
    async with running_server(tmp_path, timeouts=ABORT_THEN_WAIT) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(pdata((CT_CONTEXT, False, True, b"data before any command")))
                await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PARAMETER)
                written = 0
                with anyio.move_on_after(2):
                    while written < 64 * MIB:
                        await peer.send(chunk)
                        written += len(chunk)
        # Socket buffers take a few MiB; a server still reading would have taken all 64.
        assert written < 32 * MIB, f"{written / MIB:.0f} MiB taken after the abort"
        await assert_still_serving(running)


# --- 6. lock-outs --------------------------------------------------------------------------------


def _slow() -> Timeouts:
    """Sub-second limits so that every lock-out ends within a fast test."""
    return Timeouts(connect=1.0, acse=2.0, dimse=2.0, network_idle=1.0, artim=0.5, pdu=1.0, min_rate=1024)


async def _echo_within(port: int, seconds: float, context: ssl.SSLContext | None = None) -> float:
    """Retry a C-ECHO from 127.0.0.1 until it succeeds; how long it took (fails after ``seconds``)."""
    started = time.perf_counter()
    with anyio.fail_after(seconds):
        while True:
            try:
                async with aiodicom.connect(
                    HOST, port, called_ae=SERVER_AE, calling_ae="GOOD-SCU", timeouts=FAST, ssl=context
                ) as assoc:
                    assert (await assoc.echo()).is_success
                    return time.perf_counter() - started
            except (aiodicom.AssociationError, OSError):
                await anyio.sleep(0.1)


async def _trickle_into_a_pdu(peer: RawPeer) -> None:
    await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
    whole = pdata((CT_CONTEXT, False, True, bytes(2000)))
    for byte in whole:
        await peer.send(bytes((byte,)))
        await anyio.sleep(0.3)


async def _trickle_whole_pdus(peer: RawPeer) -> None:
    """Complete PDUs of 300 bytes, each well formed, three a second: 900 bytes/s."""
    await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
    while True:
        await peer.send(pdata((CT_CONTEXT, False, False, bytes(300))))
        await anyio.sleep(0.33)


@BOTH_LOOPS
@pytest.mark.parametrize("trickle", [_trickle_into_a_pdu, _trickle_whole_pdus], ids=["inside-a-pdu", "whole-pdus"])
async def test_trickling_peers_cannot_hold_association_slots(tmp_path: Path, trickle: object) -> None:
    """Bytes that keep coming, too slowly, no longer keep an association alive."""
    assert callable(trickle)
    async with running_server(tmp_path, max_associations=2, timeouts=_slow()) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                peers = await _peers(stack, running.port, ["127.0.0.2", "127.0.0.3"])
                for peer in peers:
                    await peer.associate()
                assert running.server.active_associations == 2

                async def hold(peer: RawPeer) -> None:
                    try:
                        await trickle(peer)  # type: ignore[operator]
                    except ConnectionError:
                        pass  # cut off: what we want

                async with anyio.create_task_group() as task_group:
                    for peer in peers:
                        task_group.start_soon(hold, peer)
                    # Every slot is taken now; within a few seconds one is free again.
                    waited = await _echo_within(running.port, 6.0)
                    task_group.cancel_scope.cancel()
                for peer in peers:
                    got = await peer.read_pdu()
                    assert got is None or P.decode(*got) == P.Abort(P.AbortSource.SERVICE_USER, 0)
        assert waited < 6.0
        await wait_idle(running.server)
        assert running.partial_files() == []
        await assert_still_serving(running)


async def test_idle_sockets_from_one_host_leave_room_for_others(tmp_path: Path) -> None:
    """One host opening more sockets than the server takes no longer locks everyone out."""
    # ARTIM long enough that the idle sockets stay for the whole test.
    patient = Timeouts(connect=2.0, acse=2.0, dimse=2.0, network_idle=2.0, artim=10.0)
    async with running_server(tmp_path, max_associations=4, timeouts=patient) as running:
        server = running.server
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                peers = await _peers(stack, running.port, ["127.0.0.2"] * (server.max_connections + 10))
                await anyio.sleep(0.3)  # every one accepted (or refused) by now
                await _echo_within(running.port, 2.0)
                per_host = server.max_connections_per_host
                assert per_host < server.max_connections
                assert open_connections(server) <= per_host
                # The excess was refused at once (closed before any ARTIM could run).
                closed = 0
                for peer in peers:
                    with anyio.move_on_after(0.05):
                        if await peer.reader.read(1) == b"":
                            closed += 1
                assert closed >= len(peers) - per_host
        await assert_still_serving(running)


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@BOTH_LOOPS
async def test_unfinished_tls_handshakes_are_counted_and_timed_out(tmp_path: Path) -> None:
    """Sockets that never send a ClientHello count against the limits and expire.

    Before, handshakes ran before any protocol callback: uncounted, and kept for
    asyncio's default 60 s (1,000 of them exhausted file descriptors).
    """
    server_tls, client_tls = _tls_contexts()
    async with running_server(tmp_path, max_associations=4, ssl=server_tls, timeouts=_slow()) as running:
        server = running.server
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                peers = await _peers(stack, running.port, ["127.0.0.2"] * (server.max_connections + 10))
                await anyio.sleep(0.3)
                # Counted while they handshake (or rather, never do) ...
                assert open_connections(server) > 0
                assert open_connections(server) == server.max_connections_per_host
                await _echo_within(running.port, 3.0, client_tls)
                started = time.perf_counter()
                for peer in peers:
                    assert await peer.reader.read(1) == b""
                # All gone within the handshake timeout (1 s here), not 60 s.
                assert time.perf_counter() - started < 3.0
        while open_connections(server):
            await anyio.sleep(0.02)
        assert (await _echo_within(running.port, 3.0, client_tls)) < 3.0


async def test_defaults_leave_one_host_every_association(tmp_path: Path) -> None:
    """The per-host default never gets in the way of one host using all associations."""
    async with running_server(tmp_path, max_associations=6) as running:
        server = running.server
        assert server.max_connections_per_host >= server.max_associations
        assert Timeouts().pdu is not None and Timeouts().min_rate > 0
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                for _ in range(server.max_associations):
                    assoc = await stack.enter_async_context(
                        aiodicom.connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST)
                    )
                    assert (await assoc.echo()).is_success
        await assert_still_serving(running)


def test_memory_budget_grants_waiters_in_order_and_never_overcommits() -> None:
    from aiodicom.transport.budget import MemoryBudget

    budget = MemoryBudget(10)
    granted: list[str] = []
    assert budget.take(6)
    assert not budget.take(5)
    budget.wait(5, lambda: granted.append("a"))
    budget.wait(1, lambda: granted.append("b"))
    assert not budget.take(1)  # nobody jumps the queue, even when it would fit
    budget.give(1)
    assert granted == ["a"] and budget.used == 10
    budget.give(1)
    assert granted == ["a", "b"] and budget.used == 10
    withdrawn = lambda: granted.append("never")  # noqa: E731
    budget.wait(9, withdrawn)
    budget.cancel(withdrawn)
    budget.give(10)
    assert granted == ["a", "b"] and budget.used == 0
    with pytest.raises(ValueError):
        MemoryBudget(0)


def test_a_memory_budget_below_the_pdu_cap_is_refused_at_start(tmp_path: Path) -> None:
    from aiodicom.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="twice the PDU cap"):
        Server("SCP", max_pdu_cap=4 * MIB, max_memory=4 * MIB)
    done = subprocess.run(
        aiodicom_command("receive", "--output-dir", str(tmp_path), "--port", "0", "--max-memory", "1"),
        capture_output=True, text=True, timeout=30, env=peer_env(),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "aiodicom receive: error: max_memory (1048576 bytes) must be at least twice the PDU cap (8388608 bytes)"
    ]


async def test_receive_command_applies_its_per_host_limit(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out", aet=SERVER_AE, args=["--max-connections-per-host", "2", "--workers", "1"]) as receiver:
        with anyio.fail_after(TEST_TIMEOUT):
            async with AsyncExitStack() as stack:
                held = await _peers(stack, receiver.port, ["127.0.0.2"] * 2)
                refused = await stack.enter_async_context(raw_peer(receiver.port, "127.0.0.2"))
                assert await refused.reader.read(1) == b""
                await _echo_within(receiver.port, 3.0)
                for peer in held:
                    await peer.associate()
    assert receiver.returncode == 0, receiver.output()
