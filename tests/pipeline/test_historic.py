"""HistoricInput end to end: a pipeline fetching a patient's prior studies from a real archive.

Archives: our own :class:`aiodicom.Archive` behind a :class:`aiodicom.Server` (C-GET), DCMTK
``dcmqrscp`` (C-MOVE to the pipeline itself), a port nobody listens on (connection refused),
and a Server whose C-FIND never answers for one patient (the query times out). Senders are
pynetdicom associations (``helpers.send_async``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.dimse.services.query import FindRequest, Query
from aiodicom.pipeline import InputContainer
from interop.helpers import serving
from peers import dcmqrscp, free_port, require_dcmtk

from .helpers import TEST_TIMEOUT, send_async, series, wait_until, write

pytestmark = pytest.mark.anyio

PATIENT_ID = 0x00100020


class CT(aiodicom.Input):
    required_values = {"Modality": "CT"}

    def validate(self) -> bool:
        return len(self) >= 3


class Node(aiodicom.Pipeline):
    """Records what each process call got (SOP Instance UIDs by input, prior study UIDs)."""

    ae_title = "HISTNODE"
    port = 0

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.calls: list[dict[str, object]] = []

    async def process(self, container: InputContainer) -> None:
        priors: list[Dataset] = container.datasets["priors"]  # type: ignore[assignment]
        current: list[Dataset] = container.datasets["ct"]  # type: ignore[assignment]
        self.calls.append({
            "patient": container.patient_id,
            "ct": sorted(str(ds.SOPInstanceUID) for ds in current),
            "priors": sorted(str(ds.SOPInstanceUID) for ds in priors),
            "prior_studies": sorted({str(ds.StudyInstanceUID) for ds in priors}),
        })  # fmt: skip


def node(archive: str, tmp_path: Path, ct: type[aiodicom.Input] = CT, **options: object) -> Node:
    """A pipeline with a CT input and a HistoricInput on ``archive`` (class options: ``options``)."""
    priors = type("Priors", (aiodicom.HistoricInput,), {"archive": archive, **options})
    pipeline_class = type("HistoricNode", (Node,), {"inputs": {"ct": ct, "priors": priors}})
    return pipeline_class(data_directory=tmp_path / "data")  # type: ignore[no-any-return]


@asynccontextmanager
async def running(server: aiodicom.Server | aiodicom.Pipeline) -> AsyncIterator[int]:
    """Serve a pipeline or a server for the block (bounded); yield its port."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:  # type: ignore[arg-type]
            yield port


def uids(datasets: list[Dataset]) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)


@pytest.fixture
def studies() -> dict[str, list[Dataset]]:
    """Patient HIST1: two prior studies (CT, MR) and the current one (CT) (one instance of it already in
    the archive: it must not be fetched); patient OTHER: a study that is none of HIST1's business."""
    current = series("HIST1", "CT", 3)
    return {
        "current": current,
        "prior_a": series("HIST1", "CT", 2),
        "prior_b": series("HIST1", "MR", 1),  # no input's required_values take MR: claimed all the same
        "archived_current": current[:1],
        "other": series("OTHER", "CT", 2),
    }


def archive_files(studies: dict[str, list[Dataset]], folder: Path) -> list[Path]:
    names = ("prior_a", "prior_b", "archived_current", "other")
    return write([ds for name in names for ds in studies[name]], folder)


async def send_and_check(pipeline: Node, studies: dict[str, list[Dataset]]) -> None:
    """Send HIST1's current study; it must be processed once, with its two priors and nothing else."""
    async with running(pipeline) as port:
        sent = await send_async(port, studies["current"], called_ae="HISTNODE")
        assert [code for code, _ in sent.statuses] == [0, 0, 0]
        await wait_until(lambda: len(pipeline.calls) == 1, what="HIST1 processed")
        await wait_until(lambda: pipeline.status().queued + pipeline.status().processing == 0, what="idle")
        assert_processed_with_priors(pipeline, studies)


def assert_processed_with_priors(pipeline: Node, studies: dict[str, list[Dataset]]) -> None:
    assert len(pipeline.calls) == 1
    call = pipeline.calls[0]
    assert call["patient"] == "HIST1"
    assert call["ct"] == uids(studies["current"])  # the priors are CT too, yet only the HistoricInput got them
    assert call["priors"] == uids(studies["prior_a"] + studies["prior_b"])
    assert call["prior_studies"] == sorted({str(studies[n][0].StudyInstanceUID) for n in ("prior_a", "prior_b")})
    status = pipeline.status()
    assert status.counts["validated"] == 1 and status.failed == 0 and not status.last_errors
    assert status.retrieving == 0


async def test_priors_fetched_by_c_get_from_our_archive(tmp_path: Path, studies: dict[str, list[Dataset]]) -> None:
    archive_files(studies, tmp_path / "archive")
    async with aiodicom.Archive(tmp_path / "archive") as archive:
        server = aiodicom.Server("ARCHIVE", port=0, on_store=archive.store, services=archive.services(ae_title="ARCHIVE"))
        async with running(server) as archive_port:
            await send_and_check(node(f"ARCHIVE@127.0.0.1:{archive_port}", tmp_path, method="get"), studies)


@pytest.mark.dcmtk("dcmqrscp", "dcmqridx")
async def test_priors_fetched_by_c_move_from_dcmqrscp(tmp_path: Path, studies: dict[str, list[Dataset]]) -> None:
    """dcmqrscp moves the priors to the pipeline's own AE (its port fixed before dcmqrscp starts)."""
    require_dcmtk("dcmqrscp", "dcmqridx")
    files = archive_files(studies, tmp_path / "files")
    node_port = free_port()
    with dcmqrscp(tmp_path / "db", files=files, destinations={"HISTNODE": ("127.0.0.1", node_port)}) as peer:
        pipeline = node(f"QRSCP@127.0.0.1:{peer.port}", tmp_path, method="move")
        pipeline.port = node_port
        await send_and_check(pipeline, studies)


@pytest.mark.parametrize("method", ["get", "move"])
async def test_archive_down_quarantines_the_patient(tmp_path: Path, method: str) -> None:
    """Nobody listens on the archive's port: the patient ends quarantined with the reason, at
    once; no hang, and the error is in status() and the quarantine record."""
    pipeline = node(f"ARCHIVE@127.0.0.1:{free_port()}", tmp_path, method=method)
    current = series("DOWN1", "CT", 3)
    async with running(pipeline) as port:
        sent = await send_async(port, current, called_ae="HISTNODE")
        assert [code for code, _ in sent.statuses] == [0, 0, 0]  # acknowledged data is kept, not refused
        await wait_until(lambda: pipeline.status().failed == 1, what="DOWN1 quarantined")
        status = pipeline.status()
        assert pipeline.calls == [] and status.counts["fetch_failed"] == 1 and status.retrieving == 0
        errors = " | ".join(str(e["error"]) for e in status.last_errors)
        assert "cannot connect" in errors and "prior studies not fetched" in errors
        assert "DOWN1" not in errors  # the patient is hashed
    [record_file] = (tmp_path / "data" / "quarantine").glob("*/record.json")
    record = json.loads(record_file.read_text())
    assert record["step"] == "validate" and "cannot connect" in record["error"]
    assert len(record["inputs"]["ct"]) == 3 and record["inputs"]["priors"] == []
    assert len(list(record_file.parent.glob("*.dcm"))) == 3  # the acknowledged instances are kept


async def test_archive_down_with_on_failure_validate_processes_without_priors(tmp_path: Path) -> None:
    pipeline = node(f"ARCHIVE@127.0.0.1:{free_port()}", tmp_path, on_failure="validate")
    current = series("DOWN2", "CT", 3)
    async with running(pipeline) as port:
        await send_async(port, current, called_ae="HISTNODE")
        await wait_until(lambda: len(pipeline.calls) == 1, what="DOWN2 processed")
        assert pipeline.calls[0]["ct"] == uids(current) and pipeline.calls[0]["priors"] == []
        status = pipeline.status()
        assert status.failed == 0 and status.counts["fetch_failed"] == 1
        assert any("cannot connect" in str(e["error"]) for e in status.last_errors)


class HangingArchive:
    """A C-FIND SCP that never answers for patients SLOW* (until ``end`` is set), and finds
    nothing for anyone else."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.end = anyio.Event()
        #: Hanging queries now, and the most at once.
        self.active = self.peak = 0

    async def find(self, request: FindRequest) -> AsyncIterator[tuple[int, None]]:
        patient = request.identifier.get(PATIENT_ID, ("", b""))[1].decode().strip()
        if patient.startswith("SLOW"):
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.entered.set()
            try:
                await self.end.wait()
            finally:
                self.active -= 1
        return
        yield  # an async generator that yields nothing: no match


@asynccontextmanager
async def slow_archive_node(tmp_path: Path, first: str, **options: object) -> AsyncIterator[tuple[HangingArchive, Node, int]]:
    """A pipeline on a :class:`HangingArchive`, patient ``first`` sent and its query hanging."""
    hanging = HangingArchive()
    server = aiodicom.Server("ARCHIVE", port=0, services=[Query(hanging.find)])
    try:
        async with running(server) as archive_port:
            pipeline = node(f"ARCHIVE@127.0.0.1:{archive_port}", tmp_path, **options)
            async with running(pipeline) as port:
                await send_async(port, series(first, "CT", 3), called_ae="HISTNODE")
                with anyio.fail_after(TEST_TIMEOUT):
                    await hanging.entered.wait()
                yield hanging, pipeline, port
    finally:
        hanging.end.set()


async def test_a_query_timing_out_fails_that_patient_and_others_are_served(tmp_path: Path) -> None:
    """SLOW's C-FIND never comes back: SLOW's retrieval times out and SLOW is quarantined with
    "timed out"; FAST, arriving while SLOW's query hangs, is processed all the same."""
    async with slow_archive_node(tmp_path, "SLOW", retrieval_timeout=3.0) as (_hanging, pipeline, port):
        await send_async(port, series("FAST", "CT", 3), called_ae="HISTNODE")
        await wait_until(lambda: pipeline.status().failed == 1, what="SLOW quarantined")
        await wait_until(lambda: len(pipeline.calls) == 1, what="FAST processed")
        assert [call["patient"] for call in pipeline.calls] == ["FAST"]
        status = pipeline.status()
        assert status.counts["fetch_failed"] == 1 and status.retrieving == 0
        assert any("timed out after 3 s" in str(e["error"]) for e in status.last_errors)


async def test_a_release_while_fetching_waits_for_the_fetch_and_other_patients_go_on(tmp_path: Path) -> None:
    """While SLOW's query hangs (no timeout reached), FAST is processed and SLOW is reported as
    retrieving; once the archive answers (no priors), SLOW is processed once, without priors."""
    async with slow_archive_node(tmp_path, "SLOW", retrieval_timeout=TEST_TIMEOUT) as (hanging, pipeline, port):
        await send_async(port, series("FAST", "CT", 3), called_ae="HISTNODE")
        await wait_until(lambda: len(pipeline.calls) == 1, what="FAST processed")
        assert pipeline.calls[0]["patient"] == "FAST"
        assert pipeline.status().retrieving == 1  # SLOW released, validation deferred
        hanging.end.set()
        await wait_until(lambda: len(pipeline.calls) == 2, what="SLOW processed after its fetch")
        assert pipeline.calls[1]["patient"] == "SLOW" and pipeline.calls[1]["priors"] == []
        assert pipeline.status().counts["validated"] == 2


async def test_max_concurrent_bounds_the_retrievals_running_at_once(tmp_path: Path) -> None:
    """With max_concurrent=1, SLOW2's query waits until SLOW1's is done; then both are processed."""
    async with slow_archive_node(tmp_path, "SLOW1", max_concurrent=1) as (hanging, pipeline, port):
        await send_async(port, series("SLOW2", "CT", 3), called_ae="HISTNODE")
        assert pipeline.status().retrieving == 2
        with anyio.move_on_after(1.0):  # a second query would arrive at once without the bound
            await wait_until(lambda: hanging.peak > 1, what="a second query")
        assert hanging.peak == 1
        hanging.end.set()
        await wait_until(lambda: len(pipeline.calls) == 2, what="both processed")
        assert sorted(call["patient"] for call in pipeline.calls) == ["SLOW1", "SLOW2"]


class FourCT(CT):
    def validate(self) -> bool:
        return len(self) >= 4


async def test_after_a_restart_fetched_priors_stay_with_the_historic_input(
    tmp_path: Path, studies: dict[str, list[Dataset]]
) -> None:
    """Priors fetched, the pipeline stopped before the patient validated (3 of 4 CT images):
    after a restart on the same data directory the priors (CT too) still belong to the
    HistoricInput, not to the CT input, and are not fetched again."""
    current = [*studies["current"], *series("HIST1", "CT", 1, study_uid=str(studies["current"][0].StudyInstanceUID))]
    archive_files(studies, tmp_path / "archive")
    async with aiodicom.Archive(tmp_path / "archive") as archive:
        server = aiodicom.Server("ARCHIVE", port=0, on_store=archive.store, services=archive.services(ae_title="ARCHIVE"))
        async with running(server) as archive_port:
            first = node(f"ARCHIVE@127.0.0.1:{archive_port}", tmp_path, ct=FourCT)
            async with running(first) as port:
                await send_async(port, current[:3], called_ae="HISTNODE")
                await wait_until(lambda: first.status().counts.get("received", 0) == 6, what="3 + 3 priors stored")
                await wait_until(lambda: first.status().retrieving == 0, what="the retrieval to end")
            second = node(f"ARCHIVE@127.0.0.1:{archive_port}", tmp_path, ct=FourCT)
            async with running(second) as port:
                await send_async(port, current[3:], called_ae="HISTNODE")
                await wait_until(lambda: len(second.calls) == 1, what="HIST1 processed after the restart")
                call = second.calls[0]
                assert call["ct"] == uids(current)
                assert call["priors"] == uids(studies["prior_a"] + studies["prior_b"])
                assert second.status().counts.get("received") == 1  # nothing fetched twice


async def test_a_retrieval_interrupted_by_a_restart_fails_that_patient(tmp_path: Path) -> None:
    """The pipeline stops while SLOW's query hangs: after the restart SLOW's retrieval counts
    as failed (quarantined, with the reason), not as done without priors."""
    hanging = HangingArchive()
    server = aiodicom.Server("ARCHIVE", port=0, services=[Query(hanging.find)])
    try:
        async with running(server) as archive_port:
            first = node(f"ARCHIVE@127.0.0.1:{archive_port}", tmp_path, ct=FourCT)
            async with running(first) as port:
                await send_async(port, series("SLOW", "CT", 3, study_uid="1.2.3.4"), called_ae="HISTNODE")
                with anyio.fail_after(TEST_TIMEOUT):
                    await hanging.entered.wait()
            second = node(f"ARCHIVE@127.0.0.1:{archive_port}", tmp_path, ct=FourCT)
            async with running(second) as port:
                await send_async(port, series("SLOW", "CT", 1, study_uid="1.2.3.4"), called_ae="HISTNODE")
                await wait_until(lambda: second.status().failed == 1, what="SLOW quarantined")
                assert second.calls == []
        [record_file] = (tmp_path / "data" / "quarantine").glob("*/record.json")
        assert "interrupted by a restart" in json.loads(record_file.read_text())["error"]
    finally:
        hanging.end.set()
