"""``aiodicom serve --workers 2``: receiving in two processes, one owner of the pipeline state.

Senders are DCMTK ``storescu`` and pynetdicom; the pipeline is :class:`nodes.JournalNode`
(CT >= 3 and PT >= 2 per patient; ``calls.log`` records each process start and finish).
Which worker gets an association is the kernel's choice (SO_REUSEPORT hashing): the
tests send enough patients, each over several associations, that their associations land
on both workers, and check from the owner's debug log that they did.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from pydicom.dataset import Dataset

from aiodicom.pipeline.storage import patient_hash
from peers import Peer, free_port, require_dcmtk, run_dcmtk_async, run_peer

from .helpers import TEST_TIMEOUT, send, send_async, series, wait_until, write

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT")]

HERE = Path(__file__).parent
#: pynetdicom patients: association A holds its data short of valid while B completes it.
HELD_PATIENTS = 10
#: DCMTK patients: one storescu for the CT, one for the PT, at once.
STORESCU_PATIENTS = 3


@contextmanager
def serving(work: Path) -> Iterator[Peer]:
    """``aiodicom serve nodes:JournalNode --workers 2`` on a free port, data in ``work/data``."""
    port = free_port()
    command = [sys.executable, "-m", "aiodicom", "serve", "nodes:JournalNode", "--port", str(port), "--workers", "2",
               "--data-directory", str(work / "data"), "--grace", "2", "--log-format", "json",
               "--log-level", "debug"]  # fmt: skip
    with run_peer(command, port, env={"PIPE_TEST_DIR": str(work)}, cwd=HERE, ready_timeout=60) as peer:
        yield peer


def records(peer: Peer) -> list[dict[str, object]]:
    found = []
    for line in peer.output().splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


async def worker_pids(peer: Peer) -> list[int]:
    """The workers' PIDs, from the log line the service writes once they all listen."""

    def listening() -> list[dict[str, object]]:
        return [r for r in records(peer) if r.get("event") == "workers_listening"]

    await wait_until(lambda: bool(listening()), what="the workers_listening line")
    (record,) = listening()
    pids = record["pids"]
    assert isinstance(pids, list) and len(pids) == 2
    return [int(pid) for pid in pids]


def finished(work: Path) -> list[str]:
    path = work / "calls.log"
    return [line for line in path.read_text().splitlines() if line.startswith("finish")] if path.exists() else []


def finished_by_patient(work: Path) -> dict[str, list[str]]:
    by_patient: dict[str, list[str]] = defaultdict(list)
    for line in finished(work):
        _, _, patient, *counts = line.split()
        by_patient[patient].append(" ".join(counts))
    return by_patient


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Path]]:
    work = tmp_path_factory.mktemp("workers")
    with serving(work) as peer:
        yield peer, work


async def held_patient(port: int, patient_id: str) -> None:
    """A sends CT x3 + PT x1 and holds while B sends the second PT and releases; then A sends
    one more CT and releases. Validated at B's release (while A is still sending: wrong), the
    batch would lack A's last CT."""
    ct, pt = series(patient_id, "CT", 4), series(patient_id, "PT", 2)
    token = anyio.lowlevel.current_token()
    a_holding, b_released = anyio.Event(), anyio.Event()

    def a_after_each(index: int, status: int) -> None:
        if index == 3:  # A's first four are answered: let B go, wait for its release
            anyio.from_thread.run_sync(a_holding.set, token=token)
            anyio.from_thread.run(b_released.wait, token=token)

    async def association_a() -> None:
        sent = await anyio.to_thread.run_sync(lambda: send(port, [*ct[:3], pt[0], ct[3]], after_each=a_after_each))
        assert [code for code, _ in sent.statuses] == [0] * 5 and sent.ended == "release"

    async with anyio.create_task_group() as group:
        group.start_soon(association_a)
        await a_holding.wait()
        sent_b = await send_async(port, [pt[1]])
        assert sent_b.statuses == [(0, None)] and sent_b.ended == "release"
        b_released.set()


async def storescu_patient(port: int, work: Path, patient_id: str) -> None:
    """Two storescu processes at once: one sends the CT series, the other the PT."""
    async with anyio.create_task_group() as group:
        for modality, count in (("CT", 3), ("PT", 2)):
            files = write(series(patient_id, modality, count), work / "send" / patient_id / modality)
            command = ["storescu", "-aec", "AIODICOM", "127.0.0.1", str(port), *map(str, files)]
            group.start_soon(lambda c=command: run_dcmtk_async(c, check=True, timeout=TEST_TIMEOUT))


async def test_patients_over_many_associations_each_processed_once(served: tuple[Peer, Path]) -> None:
    require_dcmtk("storescu")
    peer, work = served
    held = [f"HELD{i:02d}" for i in range(HELD_PATIENTS)]
    dcmtk = [f"SCU{i:02d}" for i in range(STORESCU_PATIENTS)]
    async with anyio.create_task_group() as group:
        for patient_id in held:
            group.start_soon(held_patient, peer.port, patient_id)
        for patient_id in dcmtk:
            group.start_soon(storescu_patient, peer.port, work, patient_id)
    expected = {**{p: ["ct=4 pt=2"] for p in held}, **{p: ["ct=3 pt=2"] for p in dcmtk}}
    await wait_until(lambda: finished_by_patient(work).keys() >= expected.keys(), what=f"processing: {peer.output()}")
    assert {p: v for p, v in finished_by_patient(work).items() if p in expected} == expected
    # Both workers take associations. Which one accepts is the kernel's choice (the workers
    # share one listening socket; a worker that is awake takes what arrives), so on a busy
    # machine one worker may take a whole burst: probe with more associations until the
    # other one has taken one too (bounded), which shows the pool really serves on both.
    # When a held patient's associations landed on both workers, the exactly-once result
    # above also covered validation waiting for an association in the other worker.
    assert set().union(*workers_of(peer).values()) == {0, 1} or await _other_worker_takes_one(peer)
    assert peer.process.poll() is None


def workers_of(peer: Peer) -> dict[object, set[object]]:
    """Patient hash -> the workers that received its instances, from the debug log."""
    found: dict[object, set[object]] = defaultdict(set)
    for record in records(peer):
        if record.get("event") == "instance_received":
            found[record.get("patient")].add(record.get("worker"))
    return found


async def _other_worker_takes_one(peer: Peer, probes: int = 40) -> bool:
    for index in range(probes):
        patient_id = f"PROBE{index:02d}"
        sent = await send_async(peer.port, series(patient_id, "CT", 1))
        assert sent.statuses == [(0, None)]
        await wait_until(lambda p=patient_id: patient_hash(p) in workers_of(peer), what="the probe's log line")
        if set().union(*workers_of(peer).values()) == {0, 1}:
            return True
    return False


async def test_unroutable_and_identifier_less_statuses_come_from_a_worker(served: tuple[Peer, Path]) -> None:
    peer, work = served
    mr = series("UNROUTED", "MR", 2)
    anonymous = series(None, "CT", 1)
    sent = await send_async(peer.port, [*mr, *anonymous])
    codes = [code for code, _ in sent.statuses]
    assert codes == [0xC000, 0xC000, 0xA900], sent.statuses
    assert all("no input takes it" in (comment or "") for _, comment in sent.statuses[:2])
    assert "PatientID" in (sent.statuses[2][1] or "")
    assert not list((work / "data" / "incoming").glob(f"*/{mr[0].SOPInstanceUID}.dcm"))
    # the worker that answered logged why (its logs reach the service's output)
    await wait_until(lambda: any(r.get("event") == "unroutable_rejected" and "worker" in r for r in records(peer)),
                     what="the worker's log line")  # fmt: skip


async def test_worker_killed_stops_the_service_and_a_restart_recovers(tmp_path: Path) -> None:
    done_ct, done_pt = series("DONE", "CT", 3), series("DONE", "PT", 2)
    ct, pt = series("KILLW", "CT", 3), series("KILLW", "PT", 2)
    with serving(tmp_path) as peer:
        pids = await worker_pids(peer)
        assert (await send_async(peer.port, [*done_ct, *done_pt])).statuses == [(0, None)] * 5
        await wait_until(lambda: "DONE" in finished_by_patient(tmp_path), what="the first patient's processing")

        def kill_a_worker(index: int, status: int) -> None:
            if index == 1:
                os.kill(pids[0], signal.SIGKILL)

        sent = await send_async(peer.port, [*ct, pt[0]], after_each=kill_a_worker)
        code = await anyio.to_thread.run_sync(lambda: peer.process.wait(timeout=TEST_TIMEOUT))
        assert code != 0
        assert not alive(pids[1]), "the other worker outlived the service"
        assert "worker 0" in peer.output()
    acknowledged = [ds for ds, (status, _) in zip([*ct, pt[0]], sent.statuses, strict=False) if status == 0]
    assert len(acknowledged) >= 2
    on_disk = {p.name for p in (tmp_path / "data" / "incoming").glob("*/*.dcm")}
    assert {f"{ds.SOPInstanceUID}.dcm" for ds in acknowledged} <= on_disk
    with serving(tmp_path) as peer:
        rest: list[Dataset] = [ds for ds in [*ct, *pt] if ds not in acknowledged]
        assert all(status == 0 for status, _ in (await send_async(peer.port, rest)).statuses)
        await wait_until(lambda: "KILLW" in finished_by_patient(tmp_path), what=f"after the restart: {peer.output()}")
    assert finished_by_patient(tmp_path) == {"DONE": ["ct=3 pt=2"], "KILLW": ["ct=3 pt=2"]}
    assert not list((tmp_path / "data" / "batches").iterdir())


async def test_a_cut_takes_known_files_only_and_an_interrupted_one_is_undone(tmp_path: Path) -> None:
    """With workers a batch takes exactly the files the owner knows (a worker may have just
    added another); kill -9 while ``.cutting-<id>`` was filling leaves it to be undone at
    restart: every file back in incoming, a later copy already there winning."""
    from aiodicom.pipeline.storage import CUTTING, PipelineStore, patient_folder_name

    store = PipelineStore(tmp_path / "data")
    store.open()
    folder = patient_folder_name("CUT")
    known = write(series("CUT", "CT", 3), store.incoming / folder)
    (late,) = write(series("CUT", "CT", 1), store.incoming / folder)  # stored, not yet reported
    batch = await store.cut_files(folder, "B1", {"state": "validated", "patient_id": "CUT"}, known)
    assert sorted(p.name for p in batch.glob("*.dcm")) == sorted(p.name for p in known)
    assert [p.name for p in (store.incoming / folder).iterdir()] == [late.name]
    # the state a crash leaves in the middle of the next cut: two files moved, one not
    staging = store.batches / f"{CUTTING}B2"
    staging.mkdir()
    (staging / "batch.json").write_text(json.dumps({"state": "validated", "patient_folder": folder}))
    again = write(series("CUT", "CT", 3), store.incoming / folder)
    for path in again[:2]:
        path.rename(staging / path.name)
    newer = b"later copy"
    (store.incoming / folder / again[0].name).write_bytes(newer)  # a worker stored it again meanwhile
    store.close()
    restarted = PipelineStore(tmp_path / "data")
    restarted.open()
    incoming, batches = restarted.restore()
    assert [b.batch_id for b in batches] == ["B1"]
    assert not staging.exists()
    assert sorted(p.name for p in incoming[folder]) == sorted(p.name for p in [late, *again])
    assert (restarted.incoming / folder / again[0].name).read_bytes() == newer
    restarted.close()


async def test_quota_and_calling_aet_in_workers(tmp_path: Path) -> None:
    """In-process owner, two worker processes: each worker enforces the quota (0xA700) and
    the calling AE allow list (association rejected)."""
    from .nodes import JournalNode

    pipeline = JournalNode(port=0, workers=2, data_directory=tmp_path / "data", max_storage_bytes=1, grace=2,
                           require_calling_aet=["PYNETDICOM"])  # fmt: skip
    async with anyio.create_task_group() as group:
        port = await group.start(pipeline.serve)
        sent = await send_async(port, series("QUOTA", "CT", 2))
        strangers = [await send_async(port, series("QUOTA", "CT", 1), calling_ae="STRANGER") for _ in range(4)]
        pipeline.shutdown()
    assert [s.ended for s in strangers] == ["rejected"] * 4
    assert [code for code, _ in sent.statuses] == [0xA700, 0xA700]
    assert all("quota" in (comment or "") for _, comment in sent.statuses)
    assert not list((tmp_path / "data" / "incoming").glob("*/*.dcm"))
    assert pipeline.status().counts.get("received", 0) == 0
