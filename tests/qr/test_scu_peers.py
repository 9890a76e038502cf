"""Our Query/Retrieve SCU against DCMTK ``dcmqrscp`` and Orthanc: find, move, move to self, get,
cancel, failures.

Each peer runs once per module, serving two small synthetic patients (indexed with
``dcmqridx``; uploaded to Orthanc through its REST API, ``POST /instances``). Its move
destinations are our receivers in this process (on ports fixed before it starts):
``RECEIVER`` keeps what arrives (refusing the UIDs a test names), ``SELF`` is the
:class:`MoveInbox` of a move to ourselves, ``REFUSER`` rejects every association.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from aiodicom.dimse import status as S
from aiodicom.dimse.client import COMMON_STORAGE_SOP_CLASSES, connect, query_retrieve_contexts
from aiodicom.dimse.retrieve import INSTANCES_AHEAD, MoveInbox, RetrieveFailed, RetrieveResult
from aiodicom.dimse.server import Server
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.errors import AssociationError
from aiodicom.synthetic import write_study
from peers import dcmqrscp, free_port, require_dcmtk
from qr.helpers import TIMEOUTS, Receiver, Study, make_studies, saved_uids, serving
from qr.orthanc import orthanc

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Archive:
    name: str
    port: int
    aet: str
    studies: list[Study]
    ports: dict[str, int]


@pytest.fixture(scope="module", params=["dcmqrscp", "orthanc"])
def archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp(request.param)
    studies = make_studies(root / "data")
    ports = {name: free_port() for name in ("RECEIVER", "SELF", "REFUSER")}
    files = [f for study in studies for f in study.files]
    if request.param == "dcmqrscp":
        require_dcmtk("dcmqrscp", "dcmqridx")
        destinations = {name: ("127.0.0.1", port) for name, port in ports.items()}
        with dcmqrscp(root / "db", files=files, destinations=destinations) as peer:
            yield Archive("dcmqrscp", peer.port, "QRSCP", studies, ports)
    else:
        modalities = {name: (name, "127.0.0.1", port) for name, port in ports.items()}
        with orthanc(root / "orthanc", modalities=modalities) as server:
            server.upload(files)
            yield Archive("orthanc", server.port, server.aet, studies, ports)


def assoc(archive: Archive):  # noqa: ANN201 - the connect() context manager
    return connect("127.0.0.1", archive.port, called_ae=archive.aet, calling_ae="QRSCU",
                   contexts=query_retrieve_contexts(), timeouts=TIMEOUTS)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "level"), [("patient", "PATIENT"), ("study", "STUDY"), ("study", "SERIES"), ("patient", "IMAGE")]
)
async def test_find_at_every_level(archive: Archive, model: str, level: str) -> None:
    first = archive.studies[0]
    query: dict[str, object] = {
        "PATIENT": {"PatientID": None, "PatientName": None},
        "STUDY": {"StudyInstanceUID": None, "PatientID": None},
        "SERIES": {"StudyInstanceUID": first.study_uid, "SeriesInstanceUID": None},
        "IMAGE": {"PatientID": first.patient_id, "StudyInstanceUID": first.study_uid,
                  "SeriesInstanceUID": first.series_uids[0], "SOPInstanceUID": None},
    }[level]  # fmt: skip
    expected = {
        "PATIENT": ("PatientID", {s.patient_id for s in archive.studies}),
        "STUDY": ("StudyInstanceUID", {s.study_uid for s in archive.studies}),
        "SERIES": ("SeriesInstanceUID", set(first.series_uids)),
        "IMAGE": ("SOPInstanceUID", set(first.sop_uids[:3])),
    }[level]
    with anyio.fail_after(30):
        async with assoc(archive) as a:
            found = [m async for m in a.find(query, model=model, level=level)]
    assert {str(getattr(m, expected[0])) for m in found} == expected[1]
    assert all(m.QueryRetrieveLevel == level for m in found)


async def test_find_cancelled_after_the_first_match_leaves_the_association_usable(archive: Archive) -> None:
    first = archive.studies[0]
    image_query = {"StudyInstanceUID": first.study_uid, "SeriesInstanceUID": first.series_uids[0],
                   "SOPInstanceUID": None}  # fmt: skip
    with anyio.fail_after(30):
        async with assoc(archive) as a:
            async with aclosing(a.find(image_query, level="IMAGE")) as matches:
                async for _match in matches:
                    break
            assert await a.echo() == S.SUCCESS
            assert len([m async for m in a.find(image_query, level="IMAGE")]) == 3


async def test_move_to_our_receiver(archive: Archive, tmp_path: Path) -> None:
    study = archive.studies[0]
    receiver = Receiver(tmp_path)
    progress: list[RetrieveResult] = []
    server = Server("RECEIVER", port=archive.ports["RECEIVER"], on_store=receiver, spool_dir=tmp_path / "spool")
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            result = await a.move({"StudyInstanceUID": study.study_uid}, destination_ae="RECEIVER",
                                  on_progress=progress.append)  # fmt: skip
    assert result.ok and (result.completed, result.failed) == (6, 0)
    assert saved_uids(tmp_path) == set(study.sop_uids)
    assert progress[-1] == result and len(progress) >= 2  # pending responses came first
    assert {ae for ae, _mid in receiver.originators} == {"QRSCU"}  # Move Originator AE Title


async def test_move_to_self_yields_instances_as_they_arrive(archive: Archive, tmp_path: Path) -> None:
    study = archive.studies[1]
    inbox = MoveInbox("SELF")
    server = Server("SELF", port=archive.ports["SELF"], on_store=inbox.on_store, spool_dir=tmp_path / "spool",
                    memory_threshold=0)  # fmt: skip
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            retrieval = a.move_to_self({"PatientID": study.patient_id}, inbox=inbox, model="patient", level="PATIENT")
            async for instance in retrieval:
                assert instance.move_originator_ae == "QRSCU"
                instance.save(tmp_path / "out" / f"{instance.sop_instance_uid}.dcm")
    assert retrieval.result is not None and retrieval.result.completed == 2
    assert saved_uids(tmp_path / "out") == set(study.sop_uids)


@pytest.mark.parametrize("fill", [False, True], ids=["common-classes", "128-contexts"])
async def test_get_receives_on_the_same_association(archive: Archive, tmp_path: Path, fill: bool) -> None:
    study = archive.studies[0]
    contexts = query_retrieve_contexts(fill=fill)
    assert len(contexts) == (128 if fill else 33)
    with anyio.fail_after(30):
        async with connect("127.0.0.1", archive.port, called_ae=archive.aet, contexts=contexts,
                           timeouts=TIMEOUTS) as a:  # fmt: skip
            # The SCP role for the common classes, and no more than the storage classes proposed.
            assert set(COMMON_STORAGE_SOP_CLASSES) <= a.scp_roles <= {uid for uid, _ in contexts[7:]}
            assert len(a.scp_roles) > (100 if fill else 25)
            retrieval = a.get({"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": study.series_uids[1]},
                              level="SERIES")  # fmt: skip
            async for instance in retrieval:
                instance.save(tmp_path / f"{instance.sop_instance_uid}.dcm")
            assert await a.echo() == S.SUCCESS
    assert retrieval.result is not None and retrieval.result.ok and retrieval.result.completed == 3
    assert saved_uids(tmp_path) == set(study.sop_uids[3:])


@pytest.mark.parametrize("operation", ["get", "move-to-self"])
async def test_leaving_a_retrieve_early_leaves_the_association_usable(
    archive: Archive, tmp_path: Path, operation: str
) -> None:
    study = archive.studies[0]
    inbox = MoveInbox("SELF")
    server = Server("SELF", port=archive.ports["SELF"], on_store=inbox.on_store, spool_dir=tmp_path / "spool")
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            query = {"StudyInstanceUID": study.study_uid}
            retrieval = a.get(query) if operation == "get" else a.move_to_self(query, inbox=inbox)
            async with aclosing(aiter(retrieval)) as instances:
                async for instance in instances:
                    instance.close()
                    break
            assert await a.echo() == S.SUCCESS
            again = [m async for m in a.find({"StudyInstanceUID": study.study_uid})]
            assert len(again) == 1


#: What each peer answers a C-MOVE to an AE title it does not know: DCMTK the standard's
#: 0xA801, Orthanc (1.10) 0xC000 "unable to process". Either way a clear failure.
UNKNOWN_DESTINATION = {"dcmqrscp": S.MOVE_DESTINATION_UNKNOWN, "orthanc": S.UNABLE_TO_PROCESS}


async def test_unknown_destination_is_a_clear_failure(archive: Archive) -> None:
    expected = UNKNOWN_DESTINATION[archive.name]
    with anyio.fail_after(30):
        async with assoc(archive) as a:
            with pytest.raises(RetrieveFailed, match=f"C-MOVE failed: .*0x{int(expected):04X}") as caught:
                await a.move({"StudyInstanceUID": archive.studies[0].study_uid}, destination_ae="NOWHERE")
            assert await a.echo() == S.SUCCESS
    assert caught.value.result.status == expected and caught.value.status == expected


async def test_a_destination_refusing_the_association_fails_the_move(archive: Archive, tmp_path: Path) -> None:
    server = Server("REFUSER", port=archive.ports["REFUSER"], on_store=Receiver(tmp_path),
                    calling_ae_allowlist=["NOBODY"], spool_dir=tmp_path / "spool")  # fmt: skip
    study = archive.studies[1]
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            with pytest.raises(RetrieveFailed, match="C-MOVE failed") as caught:
                await a.move({"StudyInstanceUID": study.study_uid}, destination_ae="REFUSER")
            assert await a.echo() == S.SUCCESS
    result = caught.value.result
    assert result.status.is_failure and result.completed == 0
    assert not list(tmp_path.rglob("*.dcm"))


async def test_sub_operations_refused_by_the_destination(archive: Archive, tmp_path: Path) -> None:
    """DCMTK goes on and ends in 0xB000 with the counts and the failed UIDs; Orthanc (1.10)
    stops its move job at the first refusal and fails the whole C-MOVE (0xC000)."""
    study = archive.studies[0]
    refused = set(study.sop_uids[:2])
    server = Server("RECEIVER", port=archive.ports["RECEIVER"], on_store=Receiver(tmp_path, refuse=refused),
                    spool_dir=tmp_path / "spool")  # fmt: skip
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            if archive.name == "orthanc":
                with pytest.raises(RetrieveFailed, match="C-MOVE failed") as caught:
                    await a.move({"StudyInstanceUID": study.study_uid}, destination_ae="RECEIVER")
                assert caught.value.result.status == S.UNABLE_TO_PROCESS
                return
            result = await a.move({"StudyInstanceUID": study.study_uid}, destination_ae="RECEIVER")
    assert result.status == S.SUB_OPERATIONS_COMPLETE_WITH_FAILURES and not result.ok
    assert (result.completed, result.failed) == (4, 2)
    assert set(result.failed_sop_instance_uids) == refused
    assert saved_uids(tmp_path) == set(study.sop_uids) - refused


async def test_cancelling_a_move_mid_way_leaves_the_association_usable(archive: Archive, tmp_path: Path) -> None:
    """The task awaiting ``move`` is cancelled while the destination holds the first sub-operation:
    C-CANCEL goes out, the final response is read, and the association serves on."""
    study = archive.studies[0]
    receiver = Receiver(tmp_path)
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(instance: ReceivedInstance) -> int:
        arrived.set()
        await release.wait()
        return await receiver(instance)

    server = Server("RECEIVER", port=archive.ports["RECEIVER"], on_store=slow, spool_dir=tmp_path / "spool")
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            moving = asyncio.ensure_future(a.move({"StudyInstanceUID": study.study_uid}, destination_ae="RECEIVER"))
            await arrived.wait()
            moving.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await moving
            assert await a.echo() == S.SUCCESS
            assert len([m async for m in a.find({"StudyInstanceUID": None})]) == 2
    if archive.name == "dcmqrscp":  # DCMTK honours C-CANCEL between sub-operations
        assert len(receiver.received) < len(study.sop_uids)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.dcmtk("dcmqrscp", "dcmqridx")
async def test_a_peer_dying_mid_get_ends_the_loop_with_a_clear_error(tmp_path: Path) -> None:
    """dcmqrscp serves each association in a child process; killing that child (ours: a child of
    the dcmqrscp we started) after the first instance drops the connection mid C-GET. The
    peer cannot be done by then: we hold the loop, so at most INSTANCES_AHEAD more arrive."""
    count = INSTANCES_AHEAD + 4
    files = write_study(tmp_path / "data", images_per_series=count, rows=16, columns=16)
    received: list[ReceivedInstance] = []
    with dcmqrscp(tmp_path / "db", files=files) as peer:
        with anyio.fail_after(30):
            async with connect("127.0.0.1", peer.port, called_ae="QRSCP", contexts=query_retrieve_contexts(),
                               timeouts=TIMEOUTS) as a:  # fmt: skip
                with pytest.raises(AssociationError) as caught:
                    async for instance in a.get({"PatientID": "AIODEMO01"}, model="patient", level="PATIENT"):
                        received.append(instance)
                        for child in _children(peer.pid):
                            os.kill(child, signal.SIGKILL)
    assert 1 <= len(received) < count
    assert "abort" in str(caught.value).lower() or "closed" in str(caught.value).lower(), caught.value
    for instance in received:
        instance.close()


async def test_instances_no_move_of_ours_waits_for_go_to_the_fallback(archive: Archive, tmp_path: Path) -> None:
    """A plain C-MOVE to the AE of a MoveInbox: nothing waits for it, so the fallback handler stores it."""
    study = archive.studies[1]
    fallback = Receiver(tmp_path / "fallback")
    inbox = MoveInbox("SELF", fallback=fallback)
    server = Server("SELF", port=archive.ports["SELF"], on_store=inbox.on_store, spool_dir=tmp_path / "spool")
    with anyio.fail_after(30):
        async with serving(server), assoc(archive) as a:
            result = await a.move({"StudyInstanceUID": study.study_uid}, destination_ae="SELF")
    assert result.ok and result.completed == 2
    assert set(fallback.received) == set(study.sop_uids)
