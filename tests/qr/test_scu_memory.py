"""The Query/Retrieve SCU on the in-memory transport pair: routing, cancel, counts, ownership.

A scripted Query/Retrieve service on the acceptor side answers C-FIND, C-GET (sending real
C-STOREs back on the same association) and C-MOVE; the requestor is the
:class:`ClientAssociation` that ``connect`` returns, with the C-GET storage ``connect``
sets up. What the real peers cannot be made to do on demand (a failure after matches,
some sub-operations failing, a peer that keeps answering until cancelled) is scripted
here; interoperability is in the DCMTK and Orthanc tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import DimseAssociation, Request
from aiodicom.dimse.client import (
    ClientAssociation,
    _get_storage,
    _storage_to_receive,
    query_retrieve_contexts,
)
from aiodicom.dimse.retrieve import (
    INSTANCES_AHEAD,
    InvalidQueryError,
    QueryFailed,
    RetrieveFailed,
    RetrieveResult,
)
from aiodicom.dimse.services import Service, ServiceRegistry
from aiodicom.dimse.services.models import UnknownModelError
from aiodicom.dimse.services.verification import Verification
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.errors import (
    AssociationError,
    ConfigurationError,
    MalformedDatasetError,
    NoPresentationContext,
)
from aiodicom.synthetic import CT_IMAGE_STORAGE, make_dataset
from aiodicom.transport.association import Timeouts
from aiodicom.ul.negotiation import AcceptorPolicy, build_request, scp_role_selections
from dimse.running import running_pair

pytestmark = pytest.mark.anyio

FAST = Timeouts(connect=2.0, acse=2.0, dimse=3.0, network_idle=10.0, artim=0.5)
SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def encode(dataset: Dataset, transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def decode(data: bytes, transfer_syntax: str) -> Dataset:
    from aiodicom.codec.identifier import read_identifier

    return read_identifier(data, transfer_syntax)


class Scripted(Service):
    """A Query/Retrieve SCP whose answers the test sets: matches, instances, statuses."""

    sop_classes = (STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE)

    def __init__(self) -> None:
        self.handlers = {C.CFindRQ: self.find, C.CGetRQ: self.get, C.CMoveRQ: self.move}
        self.matches = 3
        self.pause = 0.0
        self.find_final = S.SUCCESS
        #: (SOP Instance UID, data set bytes) to send by C-STORE for a C-GET.
        self.instances: list[tuple[str, bytes]] = []
        #: SOP Instance UIDs whose C-STORE is refused by the SCU-side sink (bad UID).
        self.corrupt: set[str] = set()
        self.identifiers: list[Dataset] = []
        self.sent = 0
        self.store_statuses: list[int] = []
        self.cancelled = asyncio.Event()
        self.move_destinations: list[str] = []
        #: Send this instead of the second match's identifier (garbage from a broken peer).
        self.bad_identifier: bytes | None = None
        #: Abort the association after this many C-STOREs of a C-GET.
        self.abort_after: int | None = None

    def _identifier(self, request: Request) -> Dataset:
        sink = request.dataset
        data = sink.data() if sink is not None else b""  # type: ignore[attr-defined]
        identifier = decode(data, request.context.transfer_syntax)
        self.identifiers.append(identifier)
        return identifier

    async def find(self, request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        self._identifier(request)
        try:
            for n in range(self.matches):
                match = Dataset()
                match.QueryRetrieveLevel = "STUDY"
                match.StudyInstanceUID = f"1.2.3.{n}"
                data = encode(match, request.context.transfer_syntax)
                if n == 1 and self.bad_identifier is not None:
                    data = self.bad_identifier
                await request.respond(C.CFindRSP(rq.message_id, S.PENDING, STUDY_ROOT_FIND), data)
                self.sent += 1
                await asyncio.sleep(self.pause)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        await request.respond(C.CFindRSP(rq.message_id, S.Status(self.find_final), STUDY_ROOT_FIND))

    async def get(self, request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CGetRQ)
        self._identifier(request)
        dimse = request.association
        context = dimse.association.context_for(CT_IMAGE_STORAGE)
        assert context is not None
        done = failed = 0
        failed_uids: list[str] = []
        total = len(self.instances)
        try:
            for uid, data in self.instances:
                payload = data
                if uid in self.corrupt:  # the data set names another instance: refused 0xA900
                    payload = encode(make_dataset(rows=4, columns=4))
                final = await dimse.request_final(context.id, lambda mid, uid=uid: C.CStoreRQ(mid, CT_IMAGE_STORAGE, uid),
                                                  payload)  # fmt: skip
                self.store_statuses.append(int(final.status))
                if self.abort_after == len(self.store_statuses):
                    dimse.association.abort()
                    return
                if final.status.is_success:
                    done += 1
                else:
                    failed += 1
                    failed_uids.append(uid)
                remaining = total - done - failed
                if remaining:
                    await request.respond(C.CGetRSP(rq.message_id, S.PENDING, STUDY_ROOT_GET, remaining, done, failed, 0))
                await asyncio.sleep(self.pause)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        status = S.SUCCESS if not failed else (S.SUB_OPERATIONS_COMPLETE_WITH_FAILURES if done else S.Status(0xA702))
        identifier = None
        if failed_uids:
            listed = Dataset()
            listed.FailedSOPInstanceUIDList = failed_uids
            identifier = encode(listed, request.context.transfer_syntax)
        await request.respond(C.CGetRSP(rq.message_id, status, STUDY_ROOT_GET, None, done, failed, 0), identifier)

    async def move(self, request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CMoveRQ)
        self._identifier(request)
        self.move_destinations.append(rq.move_destination)
        if rq.move_destination != "KNOWN":
            await request.respond(C.CMoveRSP(rq.message_id, S.MOVE_DESTINATION_UNKNOWN, STUDY_ROOT_MOVE))
            return
        for done in range(1, 4):
            await request.respond(C.CMoveRSP(rq.message_id, S.PENDING, STUDY_ROOT_MOVE, 3 - done, done, 0, 0))
        await request.respond(C.CMoveRSP(rq.message_id, S.SUCCESS, STUDY_ROOT_MOVE, None, 3, 0, 0))


@asynccontextmanager
async def client_pair(
    service: Service, spool: Path, *, contexts: Sequence[tuple[str, Sequence[str]]] | None = None,
    grant_roles: bool = True,
) -> AsyncIterator[tuple[ClientAssociation, DimseAssociation]]:
    """(our SCU as ``connect`` builds it, the scripted SCP) over the in-memory pair."""
    proposed = list(contexts if contexts is not None else
                    query_retrieve_contexts(["study"], storage_classes=[CT_IMAGE_STORAGE]))  # fmt: skip
    receiving = _storage_to_receive(proposed)
    rq = build_request("SCP", "SCU", proposed, role_selections=scp_role_selections(receiving))
    policy = AcceptorPolicy(ae_title="SCP", supported={uid: SYNTAXES for uid, _ in proposed},
                            accept_scp_role_for=receiving if grant_roles else ())  # fmt: skip
    async with AsyncExitStack() as stack:
        inbox = None
        ours: list[Service] = []
        if receiving:
            inbox, storage = _get_storage(stack, receiving, spool, 1024)  # larger data sets spill to disk
            ours.append(storage)
        registry, theirs = ServiceRegistry(ours), ServiceRegistry([service, Verification()])
        async with running_pair(rq, policy, registry, theirs, timeouts=FAST) as (scu, scp):
            yield ClientAssociation(scu, get_inbox=inbox), scp


def ct_instances(count: int, rows: int = 16) -> list[tuple[str, bytes]]:
    out = []
    for index in range(count):
        dataset = make_dataset(rows=rows, columns=rows, index=index, slices=count)
        out.append((str(dataset.SOPInstanceUID), encode(dataset)))
    return out


# --- C-FIND ------------------------------------------------------------------------------


async def test_find_yields_each_match_and_sends_the_level_and_keys(tmp_path: Path) -> None:
    service = Scripted()
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            found = [m async for m in assoc.find({"PatientID": "P1", "StudyInstanceUID": None})]
    assert [m.StudyInstanceUID for m in found] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    sent = service.identifiers[0]
    assert sent.QueryRetrieveLevel == "STUDY"  # the Study Root model's top level by default
    assert sent.PatientID == "P1" and sent.StudyInstanceUID == ""


async def test_find_does_not_modify_the_callers_dataset(tmp_path: Path) -> None:
    service = Scripted()
    query = Dataset()
    query.StudyInstanceUID = ""
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            assert len([m async for m in assoc.find(query, level="SERIES")]) == 3
    assert "QueryRetrieveLevel" not in query
    assert service.identifiers[0].QueryRetrieveLevel == "SERIES"


@pytest.mark.parametrize("how", ["break", "break-without-aclosing", "cancel-task"])
async def test_leaving_a_find_early_sends_c_cancel_and_the_association_serves_on(tmp_path: Path, how: str) -> None:
    service = Scripted()
    service.matches, service.pause = 1000, 0.01  # would answer for 10 s
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            if how == "break":
                async with aclosing(assoc.find({"StudyInstanceUID": None})) as matches:
                    async for _match in matches:
                        break
            elif how == "break-without-aclosing":  # the generator is closed when collected
                async for _match in assoc.find({"StudyInstanceUID": None}):
                    break
            else:
                first = asyncio.Event()

                async def consume() -> None:
                    async for _match in assoc.find({"StudyInstanceUID": None}):
                        first.set()

                task = asyncio.ensure_future(consume())
                await first.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await service.cancelled.wait()  # the peer's handler was cancelled by our C-CANCEL
            assert service.sent < 1000
            service.matches, service.pause = 2, 0.0
            assert len([m async for m in assoc.find({"StudyInstanceUID": None})]) == 2  # still usable


async def test_a_failure_after_matches_raises_query_failed(tmp_path: Path) -> None:
    service = Scripted()
    service.find_final = S.UNABLE_TO_PROCESS
    got = []
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            with pytest.raises(QueryFailed, match="0xC000") as caught:
                async for match in assoc.find({"StudyInstanceUID": None}):
                    got.append(match)
    assert len(got) == 3 and caught.value.status == 0xC000


async def test_a_malformed_match_is_a_clear_error_and_the_association_serves_on(tmp_path: Path) -> None:
    service = Scripted()
    service.matches, service.pause = 50, 0.01
    service.bad_identifier = b"\x10\x00\x20\x00LO\xff\x7fshort"  # claims 32 KiB, has 5 bytes
    got = []
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            with pytest.raises(MalformedDatasetError, match="identifier"):
                async for match in assoc.find({"StudyInstanceUID": None}):
                    got.append(match)
            await service.cancelled.wait()  # the rest was cancelled, not read to the end
            service.bad_identifier, service.matches = None, 1
            assert len([m async for m in assoc.find({"StudyInstanceUID": None})]) == 1
    assert len(got) == 1


@pytest.mark.parametrize(
    ("query", "options", "error", "message"),
    [
        ({"NoSuchKeyword": "x"}, {}, InvalidQueryError, "unknown DICOM keyword"),
        ({"QueryRetrieveLevel": "SERIES"}, {"level": "STUDY"}, InvalidQueryError, "QueryRetrieveLevel=SERIES"),
        ({"PatientID": "x"}, {"level": "PATIENT"}, UnknownModelError, "no PATIENT level"),
        ({"PatientID": "x"}, {"model": "worklist"}, UnknownModelError, "unknown information model"),
        ({"PatientID": "x"}, {"model": "patient"}, NoPresentationContext, "did not accept"),
    ],
)
async def test_a_bad_query_is_refused_before_anything_is_sent(
    tmp_path: Path, query: dict[str, object], options: dict[str, str], error: type[Exception], message: str
) -> None:
    service = Scripted()
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            with pytest.raises(error, match=message):
                assoc.find(query, **options)  # type: ignore[arg-type]
            assert await assoc.echo() == S.SUCCESS
    assert service.identifiers == []


# --- C-GET -------------------------------------------------------------------------------


async def test_get_yields_instances_arriving_on_the_same_association(tmp_path: Path) -> None:
    service = Scripted()
    service.instances = ct_instances(3, rows=32)  # 2 kB data sets: past the 1 kB threshold, spooled
    progress: list[RetrieveResult] = []
    kept: list[ReceivedInstance] = []
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path / "spool") as (assoc, _):
            retrieval = assoc.get({"StudyInstanceUID": "1.2.3"}, on_progress=progress.append)
            async for instance in retrieval:
                assert instance.spooled_path is not None and instance.spooled_path.exists()
                kept.append(instance)
            paths = [i.save(tmp_path / "out" / f"{i.sop_instance_uid}.dcm") for i in kept]
    assert [i.sop_instance_uid for i in kept] == [uid for uid, _ in service.instances]
    assert all(path.read_bytes().endswith(data) for path, (_, data) in zip(paths, service.instances, strict=True))
    assert retrieval.result is not None and retrieval.result.ok
    assert (retrieval.result.completed, retrieval.result.failed) == (3, 0)
    assert [p.remaining for p in progress] == [2, 1, None]  # two pending responses, then the final one


async def test_get_with_some_failures_ends_in_a_warning_with_the_failed_uids(tmp_path: Path) -> None:
    service = Scripted()
    service.instances = ct_instances(3)
    bad = service.instances[1][0]
    service.corrupt = {bad}
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            retrieval = assoc.get({"StudyInstanceUID": "1.2.3"})
            received = [i.sop_instance_uid async for i in retrieval]
    assert bad not in received and len(received) == 2
    assert service.store_statuses[1] == 0xA900  # our storage refused the mismatching data set
    result = retrieval.result
    assert result is not None and result.status == 0xB000 and not result.ok
    assert (result.completed, result.failed, result.failed_sop_instance_uids) == (2, 1, (bad,))


async def test_get_with_every_sub_operation_failing_raises_with_the_counts(tmp_path: Path) -> None:
    service = Scripted()
    service.instances = ct_instances(2)
    service.corrupt = {uid for uid, _ in service.instances}
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            with pytest.raises(RetrieveFailed, match="C-GET failed: 0 completed, 2 failed") as caught:
                async for _instance in assoc.get({"StudyInstanceUID": "1.2.3"}):
                    pass
    assert caught.value.result.failed == 2 and caught.value.status == 0xA702
    assert len(caught.value.result.failed_sop_instance_uids) == 2


async def test_leaving_a_get_early_cancels_it_and_frees_what_was_not_taken(tmp_path: Path) -> None:
    service = Scripted()
    service.instances = ct_instances(INSTANCES_AHEAD + 30, rows=32)
    service.pause = 0.005
    spool = tmp_path / "spool"
    with anyio.fail_after(10):
        async with client_pair(service, spool) as (assoc, _):
            async with aclosing(aiter(assoc.get({"StudyInstanceUID": "1.2.3"}))) as instances:
                async for instance in instances:
                    instance.close()
                    while len(service.store_statuses) < INSTANCES_AHEAD:  # more wait for us, spooled
                        await asyncio.sleep(0.005)
                    break
            await service.cancelled.wait()
            assert len(service.store_statuses) < len(service.instances)
            # Instances queued for us and never taken are closed: only the spool's spare files stay.
            assert len(list(spool.rglob("*.part"))) <= 2
            service.instances, service.pause = ct_instances(1), 0.0
            assert len([i async for i in assoc.get({"StudyInstanceUID": "1.2.3"})]) == 1  # still usable


async def test_a_peer_aborting_mid_get_ends_the_loop_with_a_clear_error(tmp_path: Path) -> None:
    service = Scripted()
    service.instances = ct_instances(5)
    service.abort_after = 2
    received: list[ReceivedInstance] = []
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            with pytest.raises(AssociationError, match="abort"):
                async for instance in assoc.get({"StudyInstanceUID": "1.2.3"}):
                    received.append(instance)
            with pytest.raises(AssociationError):
                await assoc.echo()  # the association is gone, and says so
    assert len(received) == 2  # what arrived before the abort is the caller's
    for instance in received:
        instance.close()


async def test_a_peer_that_grants_no_scp_role_but_sends_anyway_is_served(tmp_path: Path) -> None:
    """Role selection unanswered or refused: we warn and try; what the peer sends still arrives."""
    service = Scripted()
    service.instances = ct_instances(2)
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path, grant_roles=False) as (assoc, _):
            assert assoc.scp_roles == frozenset()
            retrieval = assoc.get({"StudyInstanceUID": "1.2.3"})
            assert len([i.close() async for i in retrieval]) == 2
    assert retrieval.result is not None and retrieval.result.ok


async def test_a_c_store_without_a_get_waiting_is_refused(tmp_path: Path) -> None:
    service = Scripted()
    (uid, data), = ct_instances(1)
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, scp):
            context = scp.association.context_for(CT_IMAGE_STORAGE)
            assert context is not None
            final = await scp.request_final(context.id, lambda mid: C.CStoreRQ(mid, CT_IMAGE_STORAGE, uid), data)
    assert final.status == S.NOT_AUTHORIZED


async def test_get_without_a_get_context_says_how_to_propose_one(tmp_path: Path) -> None:
    service = Scripted()
    contexts = query_retrieve_contexts(["study"], operations=["find"])
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path, contexts=contexts) as (assoc, _):
            with pytest.raises(ConfigurationError, match="query_retrieve_contexts"):
                assoc.get({"StudyInstanceUID": "1"})


# --- C-MOVE ------------------------------------------------------------------------------


async def test_move_reports_progress_and_returns_the_final_counts(tmp_path: Path) -> None:
    service = Scripted()
    progress: list[RetrieveResult] = []
    with anyio.fail_after(10):
        async with client_pair(service, tmp_path) as (assoc, _):
            result = await assoc.move({"StudyInstanceUID": "1"}, destination_ae="KNOWN", on_progress=progress.append)
            with pytest.raises(RetrieveFailed, match="0xA801") as caught:
                await assoc.move({"StudyInstanceUID": "1"}, destination_ae="ELSEWHERE")
            assert await assoc.echo() == S.SUCCESS
    assert (result.completed, result.failed, result.status) == (3, 0, S.SUCCESS)
    assert [p.completed for p in progress] == [1, 2, 3, 3]
    assert caught.value.result.status == S.MOVE_DESTINATION_UNKNOWN
    assert service.move_destinations == ["KNOWN", "ELSEWHERE"]
