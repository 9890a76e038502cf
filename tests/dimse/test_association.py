"""The role-neutral DIMSE association on the in-memory transport pair (no sockets).

Two :class:`DicomProtocol` endpoints wired back to back (:func:`memory_pair`) run
the real PDU codecs, state machine and reassembly; what is tested here is the DIMSE
routing on top: responses by Message ID Being Responded To, requests to the handler
registry, per-operation cancel, per-response timeouts, and both roles receiving
C-STORE requests. Interoperability stays with the socket tests (DCMTK, pynetdicom).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
)
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import DimseAssociation, Request, Response, ResponseTimeout
from aiodicom.dimse.services import Service, ServiceRegistry
from aiodicom.dimse.services.storage import Storage
from aiodicom.dimse.services.verification import Verification
from aiodicom.dimse.store import ReceivedInstance, SpoolFiles
from aiodicom.errors import AssociationError
from aiodicom.synthetic import CT_IMAGE_STORAGE, make_dataset
from aiodicom.transport.association import Timeouts
from aiodicom.transport.memory import memory_pair
from aiodicom.ul.negotiation import AcceptorPolicy, build_request
from dimse.running import running_pair

pytestmark = pytest.mark.anyio

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve - GET
FAST = Timeouts(connect=2.0, acse=2.0, dimse=2.0, network_idle=5.0, artim=0.5)
#: Context IDs in proposal order: 1 Verification, 3 FIND, 5 GET, 7 CT storage.
ECHO_CONTEXT, FIND_CONTEXT, GET_CONTEXT, CT_CONTEXT = 1, 3, 5, 7


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def identifier(value: str) -> bytes:
    """A one-element data set, (0010,0020) in implicit VR: enough to tell responses apart."""
    raw = value.encode() + b" " * (len(value) % 2)
    return struct.pack("<HHI", 0x0010, 0x0020, len(raw)) + raw


class Handlers(Service):
    """A test service: the given handlers for C-FIND and C-GET."""

    sop_classes = (FIND, GET)

    def __init__(self, **handlers: object) -> None:
        table = {"find": C.CFindRQ, "get": C.CGetRQ}
        self.handlers = {table[name]: handler for name, handler in handlers.items()}  # type: ignore[misc]


@asynccontextmanager
async def dimse_pair(
    acceptor: Sequence[Service],
    requestor: Sequence[Service] = (),
    *,
    window: int = 1,
) -> AsyncIterator[tuple[DimseAssociation, DimseAssociation]]:
    """(requestor, acceptor) DIMSE associations over memory, each reading in its own task."""
    ours, theirs = ServiceRegistry(requestor), ServiceRegistry(acceptor)
    syntaxes = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    contexts = [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]), (FIND, syntaxes), (GET, syntaxes),
                (CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN])]
    rq = build_request("SCP", "SCU", contexts, async_ops_window=(window, window) if window > 1 else None)
    policy = AcceptorPolicy(
        ae_title="SCP",
        supported={uid: syntaxes for uid, _ in contexts},
        max_operations_performed=window,
    )
    async with running_pair(rq, policy, ours, theirs, timeouts=FAST, window=window) as pair:
        yield pair


async def collect(scu: DimseAssociation, context: int, make: object, dataset: bytes | None = None,
                  **options: float) -> list[Response]:
    return [r async for r in scu.request(context, make, dataset, **options)]  # type: ignore[arg-type]


def find(mid: int) -> C.CFindRQ:
    return C.CFindRQ(mid, FIND)


async def test_responses_are_routed_by_message_id_when_answered_out_of_order() -> None:
    """Three requests in flight; the SCP answers the last first. Each caller gets its own answer."""
    arrived: list[Request] = []
    all_in = asyncio.Event()

    async def handler(request: Request) -> None:
        arrived.append(request)
        if len(arrived) == 3:
            all_in.set()
        await all_in.wait()
        # Answer in reverse arrival order: the last request's answer goes out first.
        await asyncio.sleep(0.05 * (3 - arrived.index(request)))
        assert isinstance(request.dataset, object)
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        await request.respond(C.CFindRSP(rq.message_id, S.PENDING, FIND), identifier(f"P{rq.message_id}"))
        await request.respond(C.CFindRSP(rq.message_id, S.SUCCESS, FIND))

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler)], window=3) as (scu, _):
            results = await asyncio.gather(
                *(collect(scu, FIND_CONTEXT, find, identifier(f"Q{i}")) for i in range(3))
            )
    for responses in results:
        mid = responses[0].command.message_id_being_responded_to  # type: ignore[union-attr]
        assert [r.status for r in responses] == [S.PENDING, S.SUCCESS]
        assert responses[0].dataset == identifier(f"P{mid}")
        assert all(r.command.message_id_being_responded_to == mid for r in responses)  # type: ignore[union-attr]
    assert len({r[0].dataset for r in results}) == 3


async def test_pending_responses_of_two_operations_interleave_within_the_window() -> None:
    """Two C-FINDs in a window of 2: their pending responses alternate on the wire."""
    order: list[int] = []
    turn = asyncio.Condition()

    async def handler(request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        for n in range(4):
            async with turn:  # one response per operation per turn, alternating
                order.append(rq.message_id)
                turn.notify_all()
                await asyncio.wait_for(turn.wait(), 0.2) if n < 3 else None
            await request.respond(C.CFindRSP(rq.message_id, S.PENDING, FIND), identifier(f"{rq.message_id}-{n}"))
        await request.respond(C.CFindRSP(rq.message_id, S.SUCCESS, FIND))

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler)], window=2) as (scu, _):
            first, second = await asyncio.gather(collect(scu, FIND_CONTEXT, find, b""),
                                                 collect(scu, FIND_CONTEXT, find, b""))
    for responses in (first, second):
        mid = responses[0].command.message_id_being_responded_to  # type: ignore[union-attr]
        assert [r.dataset for r in responses[:-1]] == [identifier(f"{mid}-{n}") for n in range(4)]
        assert responses[-1].status == S.SUCCESS
    assert len(set(order[:2])) == 2, order  # both were running at once


async def test_c_cancel_cancels_one_operation_while_another_runs() -> None:
    release_b = asyncio.Event()

    async def handler(request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        await request.respond(C.CFindRSP(rq.message_id, S.PENDING, FIND), identifier("first"))
        await release_b.wait()  # A waits here until cancelled; B until released
        await request.respond(C.CFindRSP(rq.message_id, S.SUCCESS, FIND))

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler), Verification()], window=2) as (scu, scp):
            a = scu.request(FIND_CONTEXT, find, b"")
            b = scu.request(FIND_CONTEXT, find, b"")
            first_a, first_b = await anext(a), await anext(b)
            mid_a = first_a.command.message_id_being_responded_to  # type: ignore[union-attr]
            await scu.cancel(FIND_CONTEXT, mid_a)
            final_a = await anext(a)
            assert final_a.status == S.CANCEL
            assert final_a.command.message_id_being_responded_to == mid_a  # type: ignore[union-attr]
            assert len(scp._running) == 1  # B still runs
            release_b.set()
            final_b = await anext(b)
            assert final_b.status == S.SUCCESS
            assert first_b.status == S.PENDING
            # The association serves on.
            assert (await scu.request_final(ECHO_CONTEXT, C.CEchoRQ)).status == S.SUCCESS


@pytest.fixture
def ct_dataset() -> tuple[str, bytes]:
    dataset = make_dataset(rows=16, columns=16)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, dataset)
    return str(dataset.SOPInstanceUID), buffer.getvalue()


async def test_c_store_requests_arrive_at_the_requestor(tmp_path: Path, ct_dataset: tuple[str, bytes]) -> None:
    """A C-GET SCU receives C-STOREs on its own association; the C-GET SCP reads their responses."""
    uid, data = ct_dataset
    kept: list[ReceivedInstance] = []

    async def on_store(instance: ReceivedInstance) -> None:
        instance.save(tmp_path / "got" / f"{instance.sop_instance_uid}.dcm")
        kept.append(instance)

    async def get(request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CGetRQ)
        sub = await request.association.request_final(
            CT_CONTEXT, lambda mid: C.CStoreRQ(mid, CT_IMAGE_STORAGE, uid), data
        )
        done = 1 if sub.status == S.SUCCESS else 0
        await request.respond(C.CGetRSP(rq.message_id, S.SUCCESS, GET, 0, done, 1 - done, 0))

    spool = SpoolFiles(tmp_path)
    storage = Storage(on_store, memory_threshold=1024)  # spills to the spool
    storage.open(spool)
    try:
        with anyio.fail_after(10):
            async with dimse_pair([Handlers(get=get)], [storage]) as (scu, _):
                final = await scu.request_final(GET_CONTEXT, lambda mid: C.CGetRQ(mid, GET), b"")
    finally:
        spool.close()
    assert final.status == S.SUCCESS
    assert final.command.completed_suboperations == 1  # type: ignore[union-attr]
    assert (tmp_path / "got" / f"{uid}.dcm").read_bytes().endswith(data)
    assert [i.sop_instance_uid for i in kept] == [uid]


async def test_a_handler_that_raises_is_answered_and_the_association_serves_on() -> None:
    calls = 0

    async def handler(request: Request) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug")

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler), Verification()]) as (scu, _):
            (response,) = await collect(scu, FIND_CONTEXT, find, b"")
            assert response.status == S.PROCESSING_FAILURE
            assert "RuntimeError" in (response.command.error_comment or "")  # type: ignore[union-attr]
            (again,) = await collect(scu, FIND_CONTEXT, find, b"")
            assert again.status == S.PROCESSING_FAILURE
            assert (await scu.request_final(ECHO_CONTEXT, C.CEchoRQ)).status == S.SUCCESS
    assert calls == 2


async def test_a_request_nobody_handles_is_answered_unrecognized() -> None:
    with anyio.fail_after(10):
        async with dimse_pair([Verification()]) as (scu, _):
            (response,) = await collect(scu, FIND_CONTEXT, find, b"")
    assert response.status == S.UNRECOGNIZED_OPERATION


async def test_the_timeout_is_per_response_not_per_operation() -> None:
    """Five pending responses 0.15 s apart fit a 0.5 s timeout: each one restarts it."""

    async def handler(request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        for n in range(5):
            await asyncio.sleep(0.15)
            await request.respond(C.CFindRSP(rq.message_id, S.PENDING, FIND), identifier(str(n)))
        await request.respond(C.CFindRSP(rq.message_id, S.SUCCESS, FIND))

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler)]) as (scu, _):
            responses = await collect(scu, FIND_CONTEXT, find, b"", timeout=0.5)
    assert [r.status for r in responses] == [S.PENDING] * 5 + [S.SUCCESS]


async def test_a_response_that_never_comes_times_out_and_aborts() -> None:
    async def handler(request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        await request.respond(C.CFindRSP(rq.message_id, S.PENDING, FIND), identifier("one"))
        await asyncio.Event().wait()  # never answers again

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler)]) as (scu, _):
            responses = scu.request(FIND_CONTEXT, find, b"", timeout=0.3)
            assert (await anext(responses)).status == S.PENDING
            started = asyncio.get_running_loop().time()
            with pytest.raises(ResponseTimeout):
                await anext(responses)
            assert 0.25 < asyncio.get_running_loop().time() - started < 2
            assert not scu.association.is_open
            with pytest.raises(AssociationError):
                await scu.request_final(ECHO_CONTEXT, C.CEchoRQ)


async def test_a_detached_instance_outlives_its_handler_until_closed(
    tmp_path: Path, ct_dataset: tuple[str, bytes]
) -> None:
    """Ownership is explicit: a handler that detaches keeps the spool file; one that does not, does not."""
    uid, data = ct_dataset
    kept: list[ReceivedInstance] = []
    left: list[ReceivedInstance] = []

    async def on_store(instance: ReceivedInstance) -> None:
        (kept if not kept else left).append(instance.detach() if not kept else instance)

    (tmp_path / "spool").mkdir()
    spool = SpoolFiles(tmp_path / "spool")
    storage = Storage(on_store, memory_threshold=1024)  # spills: the spool file is what is owned
    storage.open(spool)
    try:
        with anyio.fail_after(10):
            async with dimse_pair([storage]) as (scu, _):
                for _n in range(2):
                    rsp = await scu.request_final(CT_CONTEXT, lambda mid: C.CStoreRQ(mid, CT_IMAGE_STORAGE, uid), data)
                    assert rsp.status == S.SUCCESS
        (instance,), (dropped,) = kept, left
        assert instance.detached and not dropped.detached
        assert dropped.spooled_path is None or not dropped.spooled_path.exists()
        path = instance.spooled_path
        assert path is not None and path.exists()
        assert instance.dataset_bytes() == data  # still readable after its handler returned
        with instance:
            pass  # closing it is the holder's job
        assert not path.exists()
    finally:
        spool.close()


async def test_timeouts_say_which_wait_ran_out() -> None:
    """A peer that accepts TCP but never answers A-ASSOCIATE: AssociateTimeout (nothing was sent)."""
    from aiodicom import AssociateTimeout, IdleTimeout, connect

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with anyio.fail_after(10), pytest.raises(AssociateTimeout):
            async with connect("127.0.0.1", port, timeouts=Timeouts(acse=0.3)):
                pass
    finally:
        listener.close()
        await listener.wait_closed()
    # An established association on which the peer sends nothing: IdleTimeout.
    quiet = Timeouts(acse=2.0, network_idle=0.3, artim=0.5)
    rq = build_request("SCP", "SCU", [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])])
    policy = AcceptorPolicy(ae_title="SCP", supported={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)})
    registry = ServiceRegistry([Verification()])
    ours, theirs = await memory_pair(
        rq, policy, requestor_decoder=registry.decoder, acceptor_decoder=registry.decoder, timeouts=quiet
    )
    with anyio.fail_after(10), pytest.raises(IdleTimeout):
        await DimseAssociation(theirs, registry.handlers).run()
    ours.abort()


async def test_c_cancel_does_not_cancel_a_c_store(tmp_path: Path, ct_dataset: tuple[str, bytes]) -> None:
    """PS3.7 defines C-CANCEL for C-FIND, C-GET and C-MOVE: a store in progress completes."""
    uid, data = ct_dataset
    storing, go_on = asyncio.Event(), asyncio.Event()

    async def on_store(instance: ReceivedInstance) -> None:
        storing.set()
        await go_on.wait()
        instance.save(tmp_path / "kept.dcm")

    spool = SpoolFiles(tmp_path)
    storage = Storage(on_store)
    storage.open(spool)
    try:
        with anyio.fail_after(10):
            async with dimse_pair([storage]) as (scu, _):
                store = asyncio.ensure_future(
                    scu.request_final(CT_CONTEXT, lambda mid: C.CStoreRQ(mid, CT_IMAGE_STORAGE, uid), data)
                )
                await storing.wait()
                await scu.cancel(CT_CONTEXT, 1)  # the store's Message ID (the first one)
                await asyncio.sleep(0.05)
                go_on.set()
                assert (await store).status == S.SUCCESS
    finally:
        spool.close()
    assert (tmp_path / "kept.dcm").exists()


async def test_one_idle_timer_bounds_every_wait_by_its_own_limit() -> None:
    """The network idle wait re-arms one timer instead of starting one per message: a timer
    armed by an earlier wait neither ends a later, longer one nor lets a later, shorter one
    wait past its own limit; a wait that runs out is an IdleTimeout, and the reader still
    serves the association after a wait that a message ended."""
    from aiodicom import IdleTimeout

    rq = build_request("SCP", "SCU", [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])])
    policy = AcceptorPolicy(ae_title="SCP", supported={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)})
    registry = ServiceRegistry([Verification()])
    ours, theirs = await memory_pair(
        rq, policy, requestor_decoder=registry.decoder, acceptor_decoder=registry.decoder,
        timeouts=Timeouts(acse=2.0, network_idle=30.0, artim=0.5),
    )  # fmt: skip
    context_id = next(iter(ours.contexts))
    try:
        with anyio.fail_after(20):
            # A short wait ended by a message arms the timer; a long wait outlives it.
            await ours.send(context_id, C.encode_command(C.CEchoRQ(1), has_dataset=False))
            assert (await theirs.receive(0.3)).command == C.CEchoRQ(1)  # type: ignore[union-attr]

            async def later() -> None:
                await asyncio.sleep(1.0)  # past the first wait's 0.3 s
                await ours.send(context_id, C.encode_command(C.CEchoRQ(2), has_dataset=False))

            sender = asyncio.create_task(later())
            assert (await theirs.receive(30.0)).command == C.CEchoRQ(2)  # type: ignore[union-attr]
            await sender
            # A long wait's timer must not hold up a shorter one that follows it.
            await ours.send(context_id, C.encode_command(C.CEchoRQ(3), has_dataset=False))
            assert (await theirs.receive(30.0)).command == C.CEchoRQ(3)  # type: ignore[union-attr]
        with anyio.fail_after(10), pytest.raises(IdleTimeout):
            await theirs.receive(0.3)
    finally:
        ours.abort()
        theirs.abort()
