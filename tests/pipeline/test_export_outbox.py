"""The outbox: retries, dead letters and their resend, statuses, custom exporters, restarts.

Destinations are real listeners on 127.0.0.1: DCMTK ``storescp``, or an aiodicom server
answering the statuses a test chooses (``export_helpers.destination``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from pydicom.dataset import Dataset

from aiodicom.errors import MalformedDatasetError
from aiodicom.pipeline.export import Address, DicomExport, Exporter, ExportError, FileExport
from aiodicom.pipeline.outbox import ExportOutcome, Outbox
from peers import LOCALHOST, aiodicom_command, free_port, peer_env, storescp

from .export_helpers import destination, small_datasets, stored_by_uid

pytestmark = pytest.mark.anyio
WAIT = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[Outbox]:
    async with anyio.create_task_group() as group:
        await group.start(outbox.run)
        yield outbox
        group.cancel_scope.cancel()


async def _wait(outbox: Outbox, batch_id: str) -> ExportOutcome:
    with anyio.fail_after(WAIT):
        return await outbox.wait(batch_id)


async def _until(condition: object, what: str) -> None:
    with anyio.fail_after(WAIT):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def _submit_to_nobody(outbox: Outbox, batch_id: str, datasets: list[Dataset], port: int) -> None:
    """Submit a DicomExport to a port where nothing listens yet; return once it waits for a retry."""
    retrying = outbox.status().retrying
    await outbox.submit(batch_id, [DicomExport((LOCALHOST, port, "DEST"), datasets)])
    await _until(lambda: outbox.status().retrying > retrying, "a retry is scheduled")
    assert "cannot connect" in outbox.status().last_errors[-1]


async def test_warnings_count_as_delivered_and_only_failures_are_resent(tmp_path: Path) -> None:
    datasets = small_datasets(5)
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    answers = {uids[0]: lambda seen: 0xB000, uids[1]: lambda seen: 0xA700 if seen == 1 else None,
               uids[2]: lambda seen: 0xA900}  # always refused

    async with destination(lambda uid, seen: answers.get(uid, lambda _s: None)(seen)) as dest:
        outbox = Outbox(tmp_path / "outbox", attempts=3, backoff=0.01)
        async with running(outbox):
            await outbox.submit("b", [DicomExport((LOCALHOST, dest.port, "DEST"), datasets)])
            outcome = await _wait(outbox, "b")

    assert dest.received == {uids[0]: 1, uids[1]: 2, uids[2]: 3, uids[3]: 1, uids[4]: 1}
    assert set(dest.stored) == set(uids) - {uids[2]}
    (result,) = outcome.results
    assert not outcome.delivered and result.attempts == 3 and "0xA900" in (result.error or "")
    dead = Path(result.dead_letter or "")
    record = json.loads((dead / "record.json").read_text())
    assert [p.name for p in dead.glob("*.dcm")] == [f["file"] for f in record["files"]]
    assert list(stored_by_uid(dead)) == [uids[2]]  # only what failed
    assert record["files"][0]["sop_instance_uid"] == uids[2] and "0xA900" in record["files"][0]["reason"]
    assert outbox.status().dead_lettered == 1 and "0xA900" in outbox.status().last_errors[-1]


async def test_with_fsync_every_step_is_flushed_before_it_counts(tmp_path: Path) -> None:
    datasets = small_datasets(3)
    async with destination() as dest:
        outbox = Outbox(tmp_path / "outbox", fsync=True)
        files = FileExport(tmp_path / "files", datasets, fsync=True)
        async with running(outbox):
            await outbox.submit("b", [DicomExport((LOCALHOST, dest.port, "DEST"), datasets), files])
            assert outbox._syncer is not None and outbox._syncer.batches >= 2  # the files, then the rename
            assert (await _wait(outbox, "b")).delivered
    # every acknowledgement, the two "done" notes and the outcome: flushed (some together)
    assert outbox._syncer.batches >= 4
    assert dest.stored == {str(ds.SOPInstanceUID): 1 for ds in datasets}
    assert len(list((tmp_path / "files").iterdir())) == 3


async def test_a_destination_that_comes_back_gets_everything_on_a_later_try(tmp_path: Path) -> None:
    datasets = small_datasets(3)
    port = free_port()
    outbox = Outbox(tmp_path / "outbox", attempts=20, backoff=0.05, max_backoff=0.2)
    async with running(outbox):
        await _submit_to_nobody(outbox, "b", datasets, port)
        async with destination(port=port) as dest:
            outcome = await _wait(outbox, "b")
    assert outcome.delivered and outcome.results[0].attempts >= 2
    assert dest.stored == {str(ds.SOPInstanceUID): 1 for ds in datasets}


async def test_a_restart_resumes_pending_batches_and_drops_half_written_ones(tmp_path: Path) -> None:
    datasets = small_datasets(2)
    port = free_port()
    outbox = Outbox(tmp_path / "outbox", attempts=100, backoff=0.05, max_backoff=0.1)
    async with running(outbox):
        await _submit_to_nobody(outbox, "later", datasets, port)
    half = tmp_path / "outbox" / "pending" / ".tmp-cut-short-0000"  # a submit that never returned
    half.mkdir()
    (half / "batch.json").write_text("{")
    damaged = tmp_path / "outbox" / "pending" / "damaged"  # a batch whose record was damaged
    damaged.mkdir()
    (damaged / "batch.json").write_text('{"version": 1, "batch_id": "damaged", "exp')
    async with destination(port=port) as dest:
        resumed = Outbox(tmp_path / "outbox", attempts=100, backoff=0.05, max_backoff=0.1)
        async with running(resumed):
            assert resumed.known("later") and not half.exists()
            outcome = await _wait(resumed, "later")
    assert outcome.delivered
    set_aside = tmp_path / "outbox" / "unreadable" / "damaged"
    assert (set_aside / "batch.json").exists() and "JSONDecodeError" in (set_aside / "reason.txt").read_text()
    assert "damaged" in resumed.status().last_errors[0]
    assert dest.stored == {str(ds.SOPInstanceUID): 1 for ds in datasets}


@pytest.mark.parametrize("durable", [True, False], ids=["directory", "memory"])
async def test_stopping_and_running_the_same_outbox_again_goes_on_with_its_batches(
    tmp_path: Path, durable: bool
) -> None:
    datasets = small_datasets(2)
    port = free_port()
    outbox = Outbox(tmp_path / "outbox" if durable else None, attempts=100, backoff=0.05, max_backoff=0.1)
    await outbox.submit("early", [DicomExport((LOCALHOST, port, "DEST"), datasets[:1])])  # before run()
    async with running(outbox):
        await _until(lambda: outbox.status().retrying == 1, "the early batch waits for a retry")
        await _submit_to_nobody(outbox, "b", datasets[1:], port)
    async with destination(port=port) as dest, running(outbox):
        outcomes = [await _wait(outbox, batch_id) for batch_id in ("early", "b")]
    assert all(outcome.delivered for outcome in outcomes)
    assert dest.stored == {str(ds.SOPInstanceUID): 1 for ds in datasets}


@pytest.mark.dcmtk("storescp")
async def test_a_dead_letter_is_resent_by_aiodicom_store(tmp_path: Path) -> None:
    datasets = small_datasets(3)
    port = free_port()
    outbox = Outbox(tmp_path / "outbox", attempts=2, backoff=0.01)
    async with running(outbox):
        await outbox.submit("down", [DicomExport(Address(LOCALHOST, port, "DEST", "NODE"), datasets)])
        outcome = await _wait(outbox, "down")
    (result,) = outcome.results
    assert not outcome.delivered and result.attempts == 2
    dead = Path(result.dead_letter or "")
    record = json.loads((dead / "record.json").read_text())
    assert record["destination"] == {"kind": "dicom", "host": LOCALHOST, "port": port,
                                     "called_ae": "DEST", "calling_ae": "NODE"}
    assert record["batch_id"] == "down" and record["attempts"] == 2 and "cannot connect" in record["error"]
    assert not (tmp_path / "outbox" / "pending" / "down").exists()

    received = tmp_path / "received"
    received.mkdir()
    with storescp(port, output_dir=received, aet="DEST"):
        command = shlex.split(record["resend"])
        assert command[0] == "aiodicom"
        sent = subprocess.run(aiodicom_command(*command[1:]), capture_output=True, text=True,
                              env=peer_env(), timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert set(stored_by_uid(received)) == {str(ds.SOPInstanceUID) for ds in datasets}


async def test_without_a_directory_everything_stays_in_memory(tmp_path: Path) -> None:
    datasets = small_datasets(2)
    outbox = Outbox(None, attempts=2, backoff=0.01)
    async with running(outbox):
        await outbox.submit("gone", [DicomExport((LOCALHOST, free_port(), "DEST"), datasets),
                                     FileExport(tmp_path / "files", datasets)])
        outcome = await _wait(outbox, "gone")
    dicom, files = outcome.results
    assert (dicom.delivered, dicom.attempts, dicom.dead_letter) == (False, 2, None)
    assert files.delivered and files.attempts == 1
    assert len(list((tmp_path / "files").iterdir())) == 2
    assert outbox.status().pending == 0 and outbox.status().dead_lettered == 1


async def test_a_batch_id_is_taken_once_and_unknown_ids_are_an_error(tmp_path: Path) -> None:
    first, second = small_datasets(1), small_datasets(1)
    outbox = Outbox(tmp_path / "outbox")
    async with running(outbox):
        await outbox.submit("same", [FileExport(tmp_path / "files", first)])
        await _wait(outbox, "same")
        await outbox.submit("same", [FileExport(tmp_path / "files", second)])
        assert outbox.known("same") and not outbox.known("other")
        with pytest.raises(KeyError):
            await outbox.wait("other")
    twice = Outbox(tmp_path / "twice")  # two submits of one batch at the same time: one batch
    async with running(twice):
        async with anyio.create_task_group() as group:
            for datasets in (first, second):
                group.start_soon(twice.submit, "both", [FileExport(tmp_path / "both", datasets)])
        assert (await _wait(twice, "both")).delivered
    assert len(list((tmp_path / "both").iterdir())) == 1
    again = Outbox(tmp_path / "outbox")  # a restart remembers the outcome
    assert again.known("same")
    async with running(again):
        await again.submit("same", [FileExport(tmp_path / "files", second)])
        assert (await _wait(again, "same")).delivered
    assert list(stored_by_uid(tmp_path / "files")) == [str(first[0].SOPInstanceUID)]


async def test_hostile_batch_ids_stay_inside_the_outbox_and_never_collide(tmp_path: Path) -> None:
    ids = ["../../x", "/etc", "..", "a/b", "a_b", "Åsa", "x" * 300]
    outbox = Outbox(tmp_path / "outbox", attempts=1)
    async with running(outbox):
        for n, batch_id in enumerate(ids):
            await outbox.submit(batch_id, [FileExport(tmp_path / "files" / str(n), small_datasets(1)),
                                           FailingExport()])
        outcomes = [await _wait(outbox, batch_id) for batch_id in ids]
    assert [o.batch_id for o in outcomes] == ids
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all((tmp_path / "outbox").resolve() in p.resolve().parents or (tmp_path / "files") in p.parents
               for p in everything)
    assert len(list((tmp_path / "outbox" / "done").iterdir())) == len(ids)
    assert len(list((tmp_path / "outbox" / "dead").iterdir())) == len(ids)
    restarted = Outbox(tmp_path / "outbox")
    assert all(restarted.known(batch_id) for batch_id in ids)


@pytest.mark.parametrize("durable", [True, False], ids=["directory", "memory"])
async def test_a_bad_data_set_or_a_failing_generator_fails_the_submit_and_leaves_nothing(
    tmp_path: Path, durable: bool
) -> None:
    good = small_datasets(2)

    def failing() -> Iterator[object]:
        yield good[0]
        raise RuntimeError("process() went wrong while yielding")

    outbox = Outbox(tmp_path / "outbox" if durable else None)
    with pytest.raises(MalformedDatasetError, match="not a DICOM Part 10 file"):
        await outbox.submit("bad", [FileExport(tmp_path / "files", [good[0], b"not DICOM"])])
    with pytest.raises(RuntimeError, match="went wrong"):
        await outbox.submit("bad", [FileExport(tmp_path / "files", failing())])  # type: ignore[arg-type]
    assert not outbox.known("bad") and outbox.status().pending == 0
    if durable:
        assert not any((tmp_path / "outbox" / "pending").iterdir())
    async with running(outbox):  # the same id, done right, goes through
        await outbox.submit("bad", [FileExport(tmp_path / "files", good)])
        assert (await _wait(outbox, "bad")).delivered
    assert len(list((tmp_path / "files").iterdir())) == 2


class GatedExport(Exporter):
    """A custom exporter: the first run hangs (until shut down), the next one writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def export(self) -> None:
        started = Path(self.marker + ".started")
        if not started.exists():
            started.touch()
            await anyio.sleep_forever()
        Path(self.marker).write_text("done")


class Meet(Exporter):
    """Finishes only once its partner has started: two of them pass only when run at once."""

    def __init__(self, mine: str, partner: str) -> None:
        self.mine = mine
        self.partner = partner

    async def export(self) -> None:
        Path(self.mine).touch()
        with anyio.fail_after(5):
            while not Path(self.partner).exists():
                await anyio.sleep(0.01)


class FailingExport(Exporter):
    async def export(self) -> None:
        raise RuntimeError("the upload service said no")


async def test_custom_exporters_are_retried_dead_lettered_and_resumed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    outbox = Outbox(tmp_path / "outbox", attempts=2, backoff=0.01)
    async with running(outbox):
        await outbox.submit("custom", [GatedExport(str(marker)), FailingExport()])
        await _until(lambda: Path(f"{marker}.started").exists(), "the first run started")
        await _until(lambda: outbox.status().dead_lettered == 0 and "said no" in "".join(
            outbox.status().last_errors) and outbox.status().retrying == 0 and outbox.status().exporting == 1,
            "the failing exporter was dead-lettered")
    assert not marker.exists()

    resumed = Outbox(tmp_path / "outbox", attempts=2, backoff=0.01)
    async with running(resumed):
        outcome = await _wait(resumed, "custom")
    gated, failing = outcome.results
    assert gated.delivered and marker.read_text() == "done"
    assert not failing.delivered and failing.attempts == 2  # not tried again after the restart
    record = json.loads((Path(failing.dead_letter or "") / "record.json").read_text())
    assert record["destination"]["kind"] == "custom" and "said no" in record["error"]


async def test_the_exporters_of_a_batch_run_at_the_same_time(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    outbox = Outbox(tmp_path / "outbox", attempts=1)
    async with running(outbox):
        await outbox.submit("together", [Meet(a, b), Meet(b, a)])
        outcome = await _wait(outbox, "together")
    assert outcome.delivered, outcome


async def test_an_exporter_that_cannot_be_restored_is_refused_by_a_durable_outbox(tmp_path: Path) -> None:
    class Local(Exporter):
        async def export(self) -> None:
            return None

    with pytest.raises(ExportError, match="top level"):
        await Outbox(tmp_path / "outbox").submit("b", [Local()])
    assert not any((tmp_path / "outbox" / "pending").iterdir())
    memory = Outbox(None)
    async with running(memory):
        await memory.submit("b", [Local()])
        assert (await _wait(memory, "b")).delivered
