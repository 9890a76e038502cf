"""Pipelines end to end in one event loop, fed by pynetdicom (and DCMTK) senders.

Each test runs a real :class:`aiodicom.Pipeline` on 127.0.0.1 and checks what senders saw
(statuses, Error Comments), what ``process`` got, and what is on disk.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pydicom import dcmread as read_file
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.pipeline import InputContainer
from peers import free_port, run_dcmtk_async, storescp

from .helpers import TEST_TIMEOUT, send_async, series, wait_until, write
from .nodes import CT, PT, total_and_pid

pytestmark = pytest.mark.anyio


class InlineCT(CT):
    """CT ground on the event loop: tiny test series, no worker process to start."""

    grind_in_worker = False


class Recorder(aiodicom.Pipeline):
    """Records what each process call got; ``behaviour`` may make it fail, hang or wait."""

    inputs = {"ct": InlineCT, "pt": PT}
    port = 0

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.calls: list[dict[str, object]] = []
        self.behaviour: Callable[[InputContainer], object] | None = None
        self.gate: anyio.Event | None = None

    async def process(self, container: InputContainer) -> None:
        datasets = container.datasets
        self.calls.append({
            "patient": container.patient_id,
            "ct": sorted(str(ds.SOPInstanceUID) for ds in datasets["ct"]),  # type: ignore[attr-defined]
            "pt": sorted(str(ds.SOPInstanceUID) for ds in datasets["pt"]),  # type: ignore[attr-defined]
            "volume": container["ct"].array.shape,  # type: ignore[attr-defined]
            "sender": container.sender,
        })  # fmt: skip
        if self.gate is not None:
            await self.gate.wait()
        if self.behaviour is not None:
            result = self.behaviour(container)
            if hasattr(result, "__await__"):
                await result  # type: ignore[misc]
        return None


@asynccontextmanager
async def running(pipeline: aiodicom.Pipeline) -> AsyncIterator[int]:
    """Serve ``pipeline``; yield its port; always shut it down (bounded)."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with anyio.create_task_group() as group:
            port = await group.start(pipeline.serve)
            try:
                yield port
            finally:
                pipeline.shutdown(0.5)


def uids(datasets: list[Dataset]) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)


async def test_two_inputs_several_patients_over_concurrent_associations(tmp_path: Path) -> None:
    """Three patients, CT and PT of each on two associations, all six at once (plus a DCMTK
    storescu for a fourth): each patient processed exactly once with its own data."""

    class Offloading(Recorder):
        inputs = {"ct": CT, "pt": PT}  # the numpy grinder in a worker process

    pipeline = Offloading(data_directory=tmp_path / "data")
    patients = {f"PAT{n}": (series(f"PAT{n}", "CT", 3), series(f"PAT{n}", "PT", 2)) for n in range(3)}
    dcmtk_ct, dcmtk_pt = series("DCMTK1", "CT", 3), series("DCMTK1", "PT", 2)
    files = write([*dcmtk_ct, *dcmtk_pt], tmp_path / "dcmtk")
    async with running(pipeline) as port:
        results = []
        async with anyio.create_task_group() as senders:
            for ct, pt in patients.values():
                for part in (ct, pt):
                    senders.start_soon(lambda part=part: _collect(results, send_async(port, part)))
            senders.start_soon(lambda: run_dcmtk_async(["storescu", "-aec", "AIODICOM", "127.0.0.1", str(port),
                                                        *map(str, files)], check=True))  # fmt: skip
        await wait_until(lambda: pipeline.status().counts.get("processed", 0) == 4, what="4 patients processed")
        assert all(code == 0 for sent in results for code, _ in sent.statuses)
        by_patient = {call["patient"]: call for call in pipeline.calls}
        assert len(pipeline.calls) == 4 and set(by_patient) == {*patients, "DCMTK1"}
        for name, (ct, pt) in {**patients, "DCMTK1": (dcmtk_ct, dcmtk_pt)}.items():
            call = by_patient[name]
            assert call["ct"] == uids(ct) and call["pt"] == uids(pt)
            assert call["volume"] == (3, 8, 8)  # the numpy grinder's output, ground in a worker
        await wait_until(lambda: not any((tmp_path / "data" / "batches").iterdir()), what="batches removed")
        status = pipeline.status()
        assert status.patients_waiting == 0 and status.counts["received"] == 20


async def _collect(results: list[object], coroutine: object) -> None:
    results.append(await coroutine)  # type: ignore[misc]


async def test_validation_waits_for_every_association_delivering_for_the_patient(tmp_path: Path) -> None:
    """A release validates a patient only once no other open association still sends for it."""
    pipeline = Recorder(data_directory=tmp_path / "data")
    a_ct, a_pt = series("A", "CT", 3), series("A", "PT", 2)
    b_ct, b_pt = series("B", "CT", 3), series("B", "PT", 2)
    held, release_held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release_held.wait(TEST_TIMEOUT)

    async with running(pipeline) as port, anyio.create_task_group() as group:
        group.start_soon(lambda: send_async(port, a_pt, before_end=hold))
        await wait_until(held.is_set, what="the PT association to hold")
        await send_async(port, [*a_ct, *b_ct, *b_pt])  # A is complete now, but A's PT association is open
        await wait_until(lambda: [c["patient"] for c in pipeline.calls] == ["B"], what="B processed")
        server = pipeline._server
        assert server is not None
        await wait_until(lambda: server._running == 1, what="the released association's hook")
        assert [c["patient"] for c in pipeline.calls] == ["B"]  # A waits for its PT association
        release_held.set()
        await wait_until(lambda: len(pipeline.calls) == 2, what="A processed")
        assert pipeline.calls[1]["patient"] == "A" and pipeline.calls[1]["pt"] == uids(a_pt)


async def test_abort_mid_study_keeps_data_and_the_next_release_validates(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data")
    ct, pt = series("ABORT", "CT", 3), series("ABORT", "PT", 2)
    async with running(pipeline) as port:
        sent = await send_async(port, [*ct[:2], *pt], end="abort")
        assert [code for code, _ in sent.statuses] == [0, 0, 0, 0]
        await wait_until(lambda: pipeline.status().associations == 0, what="the abort")
        assert pipeline.calls == [] and pipeline.status().instances_waiting == 4
        assert len(list((tmp_path / "data" / "incoming").glob("*/*.dcm"))) == 4  # acknowledged = on disk
        [waiting] = pipeline._patients.values()
        pixel_data = [i.tags[0x7FE00010] for i in waiting.instances.values() if 0x7FE00010 in i.tags]
        assert pixel_data == [b""] * 4  # PixelData counts as present; its bytes are not kept while waiting
        await send_async(port, ct[2:])
        await wait_until(lambda: len(pipeline.calls) == 1, what="processing after the release")
        assert pipeline.calls[0]["ct"] == uids(ct) and pipeline.calls[0]["pt"] == uids(pt)


async def test_complete_after_validates_what_an_aborted_association_sent(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=None, complete_after=0.2)
    ct, pt = series("QUIET", "CT", 3), series("QUIET", "PT", 2)
    async with running(pipeline) as port:
        await send_async(port, [*ct, *pt], end="abort")
        await wait_until(lambda: len(pipeline.calls) == 1, what="quiet-period validation")
        assert pipeline.calls[0]["ct"] == uids(ct)


async def test_unroutable_and_identifier_less_instances_fail_with_a_reason(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data")
    mr = series("P1", "MR", 1)
    no_id = series(None, "CT", 1)
    empty_id = series("", "CT", 1)
    empty_id[0].PatientID = ""
    good = series("P1", "CT", 1)
    async with running(pipeline) as port:
        sent = await send_async(port, [*mr, *no_id, *empty_id, *good])
    codes = [code for code, _ in sent.statuses]
    comments = [comment or "" for _, comment in sent.statuses]
    assert codes == [0xC000, 0xA900, 0xA900, 0x0000]
    assert "no input takes it" in comments[0] and "ct, pt" in comments[0]
    assert "PatientID" in comments[1] and "PatientID" in comments[2]
    stored = list((tmp_path / "data").rglob("*.dcm"))
    assert [p.name for p in stored] == [f"{good[0].SOPInstanceUID}.dcm"]
    assert pipeline.status().counts["unroutable"] == 1 and pipeline.status().counts["rejected"] == 2


async def test_dcmtk_sender_sees_the_unroutable_failure(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=None)
    files = write(series("P1", "MR", 1), tmp_path / "mr")
    async with running(pipeline) as port:
        result = await run_dcmtk_async(["storescu", "-d", "-aec", "AIODICOM", "127.0.0.1", str(port), str(files[0])])
    output = result.stdout + result.stderr
    assert "DIMSE Status                  : 0xc000" in output and "[no input takes it (inputs: ct, pt)]" in output, output


async def test_unroutable_accept_policy_acknowledges_and_drops(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data", unroutable="accept")
    async with running(pipeline) as port:
        sent = await send_async(port, series("P1", "MR", 2))
    assert [code for code, _ in sent.statuses] == [0, 0]
    assert not list((tmp_path / "data").rglob("*.dcm"))


@pytest.mark.parametrize("how", ["raises", "times_out"])
async def test_failed_process_is_quarantined_with_a_record(tmp_path: Path, how: str) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data", process_timeout=1.0 if how == "times_out" else TEST_TIMEOUT)

    async def fail(container: InputContainer) -> None:
        if how == "raises":
            raise ValueError("segmentation exploded")
        await anyio.sleep_forever()

    pipeline.behaviour = fail
    ct, pt = series("BAD", "CT", 3), series("BAD", "PT", 2)
    async with running(pipeline) as port:
        await send_async(port, [*ct, *pt])
        await wait_until(lambda: pipeline.status().failed == 1, what="the quarantine")
        status = pipeline.status()
        assert status.processing == 0 and "BAD" not in json.dumps(status.last_errors)  # hashed, no PHI
    [folder] = list((tmp_path / "data" / "quarantine").iterdir())
    record = json.loads((folder / "record.json").read_text())
    assert record["timed_out"] is (how == "times_out")
    assert ("ValueError" in record["traceback"]) is (how == "raises")
    assert sorted(record["inputs"]["ct"]) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in ct)
    assert sorted(p.name for p in folder.glob("*.dcm")) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in [*ct, *pt])
    assert not list((tmp_path / "data" / "batches").iterdir())


async def test_storage_quota_answers_out_of_resources_and_keeps_what_is_stored(tmp_path: Path) -> None:
    ct = series("FULL", "CT", 3)
    size = len(write(ct[:1], tmp_path / "probe")[0].read_bytes())
    pipeline = Recorder(data_directory=tmp_path / "data", max_storage_bytes=int(size * 2.5))
    async with running(pipeline) as port:
        sent = await send_async(port, [*ct, ct[0]])
    codes = [code for code, _ in sent.statuses]
    assert codes == [0, 0, 0xA700, 0]  # a duplicate replaces: it needs no more room
    assert "quota" in (sent.statuses[2][1] or "")
    kept = sorted(p.name for p in (tmp_path / "data" / "incoming").glob("*/*.dcm"))
    assert kept == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in ct[:2])


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
async def test_hostile_patient_ids_never_escape_or_collide(tmp_path: Path) -> None:
    class Any1(aiodicom.Input):
        def validate(self) -> bool:
            return len(self) >= 1

    class Everything(aiodicom.Pipeline):
        inputs = {"any": Any1}
        port = 0

    seen: list[str] = []

    async def record(container: InputContainer) -> None:
        seen.append(container.patient_id)

    pipeline = Everything(data_directory=tmp_path / "node" / "data")
    pipeline.process = record  # type: ignore[method-assign]
    hostile = ["../../x", "..", "a/b", "/etc", "x" * 64, "x" * 80, "x" * 79 + "y", "Ærø\\ü", "CON", "_plain", "a b", "%s\0"]
    datasets = []
    for patient in hostile:
        [ds] = series("P", "CT", 1)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientID = patient
        datasets.append(ds)
    async with running(pipeline) as port:
        sent = await send_async(port, datasets)
        assert [code for code, _ in sent.statuses] == [0] * len(hostile)
        await wait_until(lambda: len(seen) == len(hostile), what="every patient processed")
    assert sorted(seen) == sorted(p.rstrip(" \0") for p in hostile)  # one batch per patient: no collision
    root = (tmp_path / "node" / "data").resolve()
    outside = [p for p in tmp_path.rglob("*") if root not in p.resolve().parents and p.resolve() != root
               and p not in (tmp_path / "node",)]  # fmt: skip
    assert outside == []


async def test_duplicate_sop_instance_replaces_the_earlier_copy(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data")
    ct, pt = series("DUP", "CT", 3), series("DUP", "PT", 2)
    async with running(pipeline) as port:
        await send_async(port, [ct[0], ct[0], ct[1], *pt], end="abort")
        await send_async(port, [ct[1], ct[2]])
        await wait_until(lambda: len(pipeline.calls) == 1, what="processing")
    assert pipeline.calls[0]["ct"] == uids(ct)


async def test_one_process_at_a_time_in_order_while_receiving_goes_on(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data", max_concurrent_processes=1)
    pipeline.gate = anyio.Event()
    first, second = ("ONE", *(series("ONE", m, n) for m, n in (("CT", 3), ("PT", 2)))), \
        ("TWO", *(series("TWO", m, n) for m, n in (("CT", 3), ("PT", 2))))  # fmt: skip
    async with running(pipeline) as port:
        await send_async(port, [*first[1], *first[2]])
        await wait_until(lambda: len(pipeline.calls) == 1, what="the first process")
        sent = await send_async(port, [*second[1], *second[2]])  # received while ONE is processed
        assert [code for code, _ in sent.statuses] == [0] * 5
        await wait_until(lambda: pipeline.status().queued == 1, what="TWO queued")
        assert pipeline.status().processing == 1 and len(pipeline.calls) == 1
        pipeline.gate.set()
        await wait_until(lambda: len(pipeline.calls) == 2, what="the second process")
    assert [c["patient"] for c in pipeline.calls] == ["ONE", "TWO"]


async def test_offload_runs_in_another_process(tmp_path: Path) -> None:
    results: list[tuple[float, int]] = []

    async def heavy(container: InputContainer) -> None:
        results.append(await aiodicom.offload(total_and_pid, container["ct"]))

    pipeline = Recorder(data_directory=None)
    pipeline.behaviour = heavy
    ct, pt = series("OFF", "CT", 3), series("OFF", "PT", 2)
    expected = float(sum(int(ds.pixel_array.astype("int64").sum()) * 1.0 + ds.RescaleIntercept * 64 for ds in ct))
    async with running(pipeline) as port:
        await send_async(port, [*ct, *pt])
        await wait_until(lambda: bool(results), what="the offloaded call")
    total, pid = results[0]
    assert pid != os.getpid() and total == pytest.approx(expected)


async def test_restart_resumes_waiting_patients_from_the_data_directory(tmp_path: Path) -> None:
    ct, pt = series("LATE", "CT", 3), series("LATE", "PT", 2)
    first = Recorder(data_directory=tmp_path / "data")
    async with running(first) as port:
        await send_async(port, [*ct[:2], *pt])
    second = Recorder(data_directory=tmp_path / "data")
    async with running(second) as port:
        assert second.status().instances_waiting == 4
        await send_async(port, ct[2:])
        await wait_until(lambda: len(second.calls) == 1, what="processing after the restart")
    assert first.calls == [] and second.calls[0]["ct"] == uids(ct) and second.calls[0]["pt"] == uids(pt)


async def test_stale_patients_expire_with_their_files(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data", study_expiration_days=0.1 / 86400)
    async with running(pipeline) as port:
        await send_async(port, series("OLD", "CT", 2), end="abort")
        await wait_until(lambda: pipeline.status().counts.get("expired") == 1, what="the expiry")
        assert pipeline.status().patients_waiting == 0
    assert not list((tmp_path / "data").rglob("*.dcm")) and pipeline.calls == []


async def test_fsync_pipeline_journals_and_processes(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=tmp_path / "data", fsync=True)
    pipeline.gate = anyio.Event()
    ct, pt = series("SYNC", "CT", 3), series("SYNC", "PT", 2)
    async with running(pipeline) as port:
        await send_async(port, [*ct, *pt])
        await wait_until(lambda: len(pipeline.calls) == 1, what="processing")
        [batch] = list((tmp_path / "data" / "batches").iterdir())
        record = json.loads((batch / "batch.json").read_text())
        assert record["state"] == "validated" and record["patient_id"] == "SYNC"
        assert record["sender"]["ae_title"] == "PYNETDICOM"
        pipeline.gate.set()
        await wait_until(lambda: not batch.exists(), what="the finished batch removed")


async def test_a_failed_write_answers_out_of_resources_without_paths_and_keeps_the_rest(tmp_path: Path) -> None:
    from aiodicom.pipeline.storage import patient_folder_name

    pipeline = Recorder(data_directory=tmp_path / "data")
    kept, blocked = series("KEPT", "CT", 1), series("BLOCKED", "CT", 1)
    async with running(pipeline) as port:
        assert [c for c, _ in (await send_async(port, kept)).statuses] == [0]
        (tmp_path / "data" / "incoming" / patient_folder_name("BLOCKED")).write_text("in the way")  # mkdir fails
        sent = await send_async(port, blocked)
    [(code, comment)] = sent.statuses
    assert code == 0xA700 and comment and comment.startswith("cannot store the instance")
    assert str(tmp_path) not in comment and "BLOCKED" not in comment
    assert [p.name for p in (tmp_path / "data" / "incoming").glob("*/*.dcm")] == [f"{kept[0].SOPInstanceUID}.dcm"]


async def test_dicom_export_to_storescp_after_processing(tmp_path: Path) -> None:
    """process returns a DicomExport: the CT arrives at DCMTK storescp once, the batch is removed."""
    out = tmp_path / "storescp"
    out.mkdir()
    with storescp(output_dir=out) as peer:

        async def export(container: InputContainer) -> aiodicom.Exporter:
            return aiodicom.DicomExport(("127.0.0.1", peer.port, "STORESCP"), container.datasets["ct"])  # type: ignore[arg-type]

        class Exporting(Recorder):
            async def process(self, container: InputContainer) -> aiodicom.Exporter:  # type: ignore[override]
                await super().process(container)
                return await export(container)

        pipeline = Exporting(data_directory=tmp_path / "data")
        ct, pt = series("EXP", "CT", 3), series("EXP", "PT", 2)
        async with running(pipeline) as port:
            await send_async(port, [*ct, *pt])
            await wait_until(lambda: pipeline.status().counts.get("exported") == 1, what="the export")
            assert not list((tmp_path / "data" / "batches").iterdir())
    received = sorted(str(read_file(path).SOPInstanceUID) for path in out.iterdir())
    assert received == uids(ct)


async def test_dynamic_and_either_inputs_and_filter_end_to_end(tmp_path: Path) -> None:
    class Series(aiodicom.DynamicInput):
        required_values = {"Modality": "CT"}

        def validate(self) -> bool:
            return len(self.groups()) >= 2

    class Pet(aiodicom.Input):
        required_values = {"Modality": "PT", "SeriesDescription": "*AC*"}

    class AnyPet(aiodicom.Input):
        required_values = {"Modality": "PT"}

    got: list[InputContainer] = []
    pet_uids: list[str] = []

    class Node(aiodicom.Pipeline):
        inputs = {"ct": Series, "pet": Pet | AnyPet}
        port = 0

        def filter(self, instance: aiodicom.ReceivedInstance) -> bool:
            return instance.text(0x00080060) != "PT" or instance.sop_instance_uid != refused

        async def process(self, container: InputContainer) -> None:  # the files exist while it runs
            got.append(container)
            pet_uids.extend(str(ds.SOPInstanceUID) for ds in container.datasets["pet"])  # type: ignore[attr-defined]

    first, second, pet = series("DYN", "CT", 2), series("DYN", "CT", 1), series("DYN", "PT", 2)
    refused = str(pet[1].SOPInstanceUID)
    pipeline = Node(data_directory=None)
    async with running(pipeline) as port:
        sent = await send_async(port, [*first, *second, *pet])
        await wait_until(lambda: len(got) == 1, what="processing")
    assert [code for code, _ in sent.statuses] == [0, 0, 0, 0, 0xC000]
    assert "filter" in (sent.statuses[4][1] or "")
    ground = got[0]["ct"]
    assert isinstance(ground, list) is False and isinstance(ground, dict)
    assert {key: len(value) for key, value in ground.items()} == {  # list_grinder per series
        str(first[0].SeriesInstanceUID): 2, str(second[0].SeriesInstanceUID): 1}
    assert pet_uids == [str(pet[0].SOPInstanceUID)]


async def test_a_data_directory_serves_one_pipeline_at_a_time(tmp_path: Path) -> None:
    from aiodicom.pipeline.storage import DataDirectoryInUse

    first = Recorder(data_directory=tmp_path / "data")
    async with running(first):
        with pytest.raises(DataDirectoryInUse):
            await Recorder(data_directory=tmp_path / "data").serve()
    async with running(Recorder(data_directory=tmp_path / "data")):  # released at stop
        pass


async def test_a_batch_the_outbox_holds_is_not_processed_again(tmp_path: Path) -> None:
    """The crash window between the outbox taking a batch and the journal saying "submitted":
    the restarted pipeline asks the outbox and only waits for the export."""
    destination = free_port()

    class Sending(Recorder):
        async def process(self, container: InputContainer) -> aiodicom.Exporter:  # type: ignore[override]
            await super().process(container)
            return aiodicom.DicomExport(("127.0.0.1", destination, "STORESCP"), container.datasets["ct"])  # type: ignore[arg-type]

    first = Sending(data_directory=tmp_path / "data")
    ct, pt = series("WINDOW", "CT", 3), series("WINDOW", "PT", 2)
    async with running(first) as port:
        await send_async(port, [*ct, *pt])
        await wait_until(lambda: _states(tmp_path) == ["submitted"], what="the batch submitted")
    [record_file] = (tmp_path / "data" / "batches").glob("*/batch.json")
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "state": "validated"}))  # the journal write never happened
    out = tmp_path / "received"
    out.mkdir()
    second = Sending(data_directory=tmp_path / "data")
    with storescp(destination, output_dir=out):
        async with running(second):
            await wait_until(lambda: len(list(out.iterdir())) == 3 and not record_file.exists(), what="the export")
    assert len(first.calls) == 1 and second.calls == []


def _states(work: Path) -> list[str]:
    return [json.loads(p.read_text())["state"] for p in (work / "data" / "batches").glob("*/batch.json")]


async def test_require_calling_aet_rejects_other_senders(tmp_path: Path) -> None:
    pipeline = Recorder(data_directory=None, require_calling_aet=["MODALITY1"])
    async with running(pipeline) as port:
        refused = await send_async(port, series("P", "CT", 1), calling_ae="INTRUDER")
        allowed = await send_async(port, series("P", "CT", 1), calling_ae="MODALITY1")
    assert refused.ended == "rejected" and refused.statuses == []
    assert [code for code, _ in allowed.statuses] == [0]
