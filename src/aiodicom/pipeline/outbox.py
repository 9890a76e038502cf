"""The outbox: exports made durable, run concurrently, retried, and dead-lettered.

``await outbox.submit(batch_id, exporters)`` returns once the batch is safe: with a
directory, every data set is written as a Part 10 file and a JSON record of the
exporters beside them, and the batch folder is renamed into ``pending/`` in one step,
so a batch is either wholly there or not at all. ``outbox.run`` (started in a task
group) runs each batch's exporters concurrently; an exporter that fails is tried again
after a doubling delay, with only the instances not yet delivered, and after the last
try its instances go to ``dead/<batch>/e<N>/`` with a ``record.json`` naming the
destination and the error, a folder ``aiodicom store`` can resend as it is.

Directory layout (names from :func:`~aiodicom.dimse.store.safe_component`, never raw)::

    pending/<batch>/batch.json     the exporters and their instances
    pending/<batch>/e<N>/*.dcm     exporter N's instances, one Part 10 file each
    pending/<batch>/acks.log       one line per delivered instance, finished or dead exporter
    dead/<batch>/e<N>/             what exporter N never delivered, and record.json
    done/<batch>.json              the outcome, for ``wait()`` after a restart
    unreadable/<batch>/            a pending batch that could not be read back, and reason.txt

Every instance the destination acknowledges is appended to ``acks.log`` before the next
one is sent, so after a crash a resumed batch sends only what had no answer: at most
the instance in flight at the crash is sent twice (C-STORE has no way to ask whether it
arrived; archives keep one copy per SOP Instance UID).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shlex
import shutil
import time
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc

from aiodicom._log import get_logger
from aiodicom._record import FrozenRecord, Record, field
from aiodicom.dimse.store import GroupSync, safe_component
from aiodicom.pipeline.encoding import ExportItem, Instance, encode_dataset, encode_item, write_file
from aiodicom.pipeline.export import Exporter, ExportError, InstanceExporter, JsonValue

log = get_logger("aiodicom.pipeline.outbox")

#: The version of ``batch.json``, ``record.json`` and ``done/*.json``.
RECORD_VERSION = 1
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
#: Outcomes of finished batches kept in memory for :meth:`Outbox.wait`.
_KEEP_OUTCOMES = 10_000

JobState = Literal["pending", "exporting", "retrying", "delivered", "dead"]


class ExportResult(FrozenRecord):
    """How one exporter of a batch ended."""

    destination: str
    delivered: bool
    attempts: int
    instances: int = 0
    error: str | None = None
    #: The dead-letter folder (None when delivered, or without an outbox directory).
    dead_letter: str | None = None


class ExportOutcome(FrozenRecord):
    """How a batch ended: every exporter delivered, or some dead-lettered."""

    batch_id: str
    results: tuple[ExportResult, ...]

    @property
    def delivered(self) -> bool:
        """True when every exporter delivered everything."""
        return all(result.delivered for result in self.results)

    def to_json(self) -> dict[str, JsonValue]:
        return {"version": RECORD_VERSION, "batch_id": self.batch_id, "delivered": self.delivered,
                "results": [{name: getattr(r, name) for name in ExportResult._field_names} for r in self.results]}

    @classmethod
    def from_json(cls, data: dict[str, JsonValue]) -> ExportOutcome:
        results = data["results"]
        assert isinstance(results, list)
        return cls(str(data["batch_id"]), tuple(ExportResult(**r) for r in results))  # type: ignore[arg-type]


class OutboxStatus(FrozenRecord):
    """A snapshot for status pages: what waits, what runs, what failed."""

    #: Batches not finished (some exporter pending, exporting or retrying).
    pending: int
    #: Exporters sending right now.
    exporting: int
    #: Exporters waiting for their next try.
    retrying: int
    #: Batches delivered since start.
    delivered: int
    #: Batches with a dead-lettered exporter since start.
    dead_lettered: int
    #: The last errors, newest last (destination: reason; no PHI).
    last_errors: tuple[str, ...]


class _Job(Record):
    """One exporter of a batch and how far it got."""

    index: int
    exporter: Exporter
    instances: list[Instance] | None  # None: a plain exporter, run as a whole
    acked: set[int] = field(default_factory=set)
    attempts: int = 0
    state: JobState = "pending"
    error: str | None = None
    dead_letter: str | None = None
    #: Why each instance failed on the last try (SOP Instance UID -> reason).
    failures: dict[str, str] = field(default_factory=dict)

    def remaining(self) -> list[Instance]:
        return [i for n, i in enumerate(self.instances or ()) if n not in self.acked]

    def result(self) -> ExportResult:
        return ExportResult(self.exporter.describe(), self.state == "delivered", self.attempts,
                            len(self.instances or ()), self.error, self.dead_letter)


class _Batch(Record):
    batch_id: str
    key: str
    jobs: list[_Job]
    folder: Path | None
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: ExportOutcome | None = None


class Outbox:
    """Durable, retrying delivery of exporters, batch by batch.

    :param directory: where pending batches, dead letters and outcomes live; None keeps
        everything in memory (nothing survives a restart; dead letters are only logged).
    :param attempts: tries per exporter before it is dead-lettered.
    :param backoff: seconds before the second try; doubles after each further failure.
    :param max_backoff: the longest wait between tries.
    :param max_batches: batches exported at once (each runs all its exporters at once).
    :param fsync: make submitted batches and acknowledgements survive power loss too.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        *,
        attempts: int = 5,
        backoff: float = 2.0,
        max_backoff: float = 300.0,
        max_batches: int = 4,
        fsync: bool = False,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.directory = None if directory is None else Path(directory)
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fsync = fsync
        #: Shared flushes (group commit) of what must survive a power loss, when asked for.
        self._syncer = GroupSync() if fsync else None
        self._limit = anyio.Semaphore(max_batches)
        self._batches: dict[str, _Batch] = {}
        self._outcomes: dict[str, ExportOutcome] = {}
        self._resumed = False
        #: Folders submit() is writing right now (the resume must leave them alone).
        self._writing: set[Path] = set()
        self._submitting: dict[str, anyio.Event] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._errors: deque[str] = deque(maxlen=20)
        self._delivered = 0
        self._dead = 0

    # --- public -------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Resume pending batches, then export every batch submitted, until cancelled.

        Cancelled (shutdown), exports in progress stop where they are; with a directory
        they resume, from the first unacknowledged instance, on the next start.
        """
        if self.directory is not None and not self._resumed:
            self._resume(self.directory)
            self._resumed = True
        async with anyio.create_task_group() as group:
            self._group = group
            # Oldest first: resumed, submitted before run(), or cut short by an earlier run().
            for batch in [b for b in self._batches.values() if b.outcome is None]:
                group.start_soon(self._run_batch, batch)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._group = None

    async def submit(self, batch_id: str, exports: Sequence[Exporter]) -> None:
        """Take a batch; return once it is durable (or held in memory without a directory).

        The data sets of each exporter are read here (a generator is consumed) and
        encoded: changing them later changes nothing. A batch id already known (pending,
        delivered or dead-lettered) is ignored, so a caller that crashed after
        submitting can submit the same batch again safely.
        """
        while batch_id in self._submitting:  # the same batch, being written: wait for that
            await self._submitting[batch_id].wait()
        if self.known(batch_id):
            log.info("export_duplicate_batch", batch_id=batch_id)
            return
        key = safe_component(batch_id, "_batch", allowed=_KEY_CHARS)
        self._submitting[batch_id] = written = anyio.Event()
        try:
            if self.directory is None:
                batch = _Batch(batch_id, key, [await self._memory_job(n, e) for n, e in enumerate(exports)], None)
            else:
                batch = await self._write_batch(self.directory, batch_id, key, exports)
        finally:
            del self._submitting[batch_id]
            written.set()
        self._batches[batch_id] = batch
        log.info("export_submitted", batch_id=batch_id, exports=len(batch.jobs))
        if self._group is not None:  # otherwise run() starts it
            self._group.start_soon(self._run_batch, batch)

    def known(self, batch_id: str) -> bool:
        """True when the outbox holds ``batch_id``: pending, delivered or dead-lettered.

        After a crash between :meth:`submit` returning and the caller noting it, the
        caller asks this before producing the batch again (``submit`` ignores it anyway).
        """
        return batch_id in self._batches or self._known_outcome(batch_id) is not None

    async def wait(self, batch_id: str) -> ExportOutcome:
        """Wait until ``batch_id`` is delivered or dead-lettered (also one resumed after a restart)."""
        batch = self._batches.get(batch_id)
        if batch is not None:
            await batch.done.wait()
            assert batch.outcome is not None
            return batch.outcome
        outcome = self._known_outcome(batch_id)
        if outcome is None:
            raise KeyError(f"no batch {batch_id!r} in this outbox")
        return outcome

    def status(self) -> OutboxStatus:
        """Counts of pending, exporting and retrying work, and the last errors."""
        states = [job.state for batch in self._batches.values() for job in batch.jobs]
        return OutboxStatus(len(self._batches), states.count("exporting"), states.count("retrying"),
                            self._delivered, self._dead, tuple(self._errors))

    # --- submitting ------------------------------------------------------------------------

    async def _memory_job(self, index: int, exporter: Exporter) -> _Job:
        if not isinstance(exporter, InstanceExporter):
            return _Job(index, exporter, None)
        instances = []
        for item in exporter.datasets:
            instance = encode_item(item)
            if instance.data is None:  # a file: read now, it may be gone by the time we send
                instance = Instance(instance.sop_class_uid, instance.sop_instance_uid,
                                    instance.transfer_syntax, data=instance.read())
            instances.append(instance)
            await anyio.sleep(0)  # one data set at a time, the loop served in between
        return _Job(index, exporter, instances)

    async def _write_batch(self, directory: Path, batch_id: str, key: str, exports: Sequence[Exporter]) -> _Batch:
        pending = directory / "pending"
        temporary = pending / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir(parents=True)
        self._writing.add(temporary)
        try:
            records: list[JsonValue] = []
            jobs = []
            for index, exporter in enumerate(exports):
                record, job = await self._write_job(temporary, index, exporter)
                records.append(record)
                jobs.append(job)
            batch_record: dict[str, JsonValue] = {
                "version": RECORD_VERSION, "batch_id": batch_id, "submitted": time.time_ns(), "exports": records}
            _write_json(temporary / "batch.json", batch_record)
            await self._sync([p for p in temporary.rglob("*") if p.is_file()])
            final = pending / key
            os.rename(temporary, final)
            await self._sync([final / "batch.json"])  # and pending/, which the rename changed
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        finally:
            self._writing.discard(temporary)
        for job in jobs:
            for n, instance in enumerate(job.instances or ()):
                assert instance.path is not None
                job.instances[n] = _moved(instance, temporary, final)  # type: ignore[index]
        return _Batch(batch_id, key, jobs, final)

    async def _write_job(self, folder: Path, index: int, exporter: Exporter) -> tuple[dict[str, JsonValue], _Job]:
        record: dict[str, JsonValue] = {"class": _class_path(exporter), "settings": exporter.to_record()}
        if not isinstance(exporter, InstanceExporter):
            record["instances"] = None
            return record, _Job(index, exporter, None)
        subfolder = folder / f"e{index}"
        subfolder.mkdir()
        instances, entries = [], []
        for n, item in enumerate(exporter.datasets):
            path = subfolder / f"{n:06d}.dcm"
            instance = await _keep(item, path)
            instances.append(instance)
            entries.append({"file": f"e{index}/{path.name}", "sop_class_uid": instance.sop_class_uid,
                            "sop_instance_uid": instance.sop_instance_uid,
                            "transfer_syntax": instance.transfer_syntax})
        record["instances"] = entries  # type: ignore[assignment]
        return record, _Job(index, exporter, instances)

    # --- exporting ---------------------------------------------------------------------------

    async def _run_batch(self, batch: _Batch) -> None:
        async with self._limit:
            async with anyio.create_task_group() as group:
                for job in batch.jobs:
                    if job.state not in ("delivered", "dead"):
                        group.start_soon(self._run_job, batch, job)
        await self._finish(batch)

    async def _run_job(self, batch: _Batch, job: _Job) -> None:
        index = {id(instance): n for n, instance in enumerate(job.instances or ())}

        async def delivered(instance: Instance) -> None:
            n = index[id(instance)]
            job.acked.add(n)
            await self._note(batch, f"{job.index} {n}")

        while True:
            job.attempts += 1
            job.state = "exporting"
            try:
                if isinstance(job.exporter, InstanceExporter) and job.instances is not None:
                    await job.exporter.deliver(job.remaining(), delivered)
                else:
                    await job.exporter.export()
            except Exception as exc:  # a custom exporter may raise anything: it failed
                if not await self._failed(batch, job, exc):
                    return
                await anyio.sleep(self._delay(job.attempts))
                continue
            job.state, job.error = "delivered", None
            await self._note(batch, f"{job.index} done")
            log.info("export_delivered", batch_id=batch.batch_id, destination=job.exporter.describe(),
                     instances=len(job.instances or ()), attempts=job.attempts)
            return

    def _delay(self, attempts: int) -> float:
        """Doubling backoff, spread by +-20% so that batches failing together retry apart."""
        return min(self.backoff * 2.0 ** (attempts - 1), self.max_backoff) * random.uniform(0.8, 1.2)

    async def _failed(self, batch: _Batch, job: _Job, exc: Exception) -> bool:
        """Record a failed try; dead-letter after the last one. True: try again."""
        job.error = str(exc) or type(exc).__name__
        job.failures = dict(exc.failures) if isinstance(exc, ExportError) else {}
        destination = job.exporter.describe()
        self._errors.append(job.error if job.error.startswith(destination) else f"{destination}: {job.error}")
        await self._note(batch, f"{job.index} failed")
        last = job.attempts >= self.attempts
        log.warning("export_failed", batch_id=batch.batch_id, destination=destination, attempt=job.attempts,
                    attempts=self.attempts, error=job.error, final=last)
        if not last:
            job.state = "retrying"
            return True
        job.state = "dead"
        if batch.folder is not None and self.directory is not None:
            job.dead_letter = str(await self._dead_letter(self.directory, batch, job))
        await self._note(batch, f"{job.index} dead")
        log.error("export_dead_lettered", batch_id=batch.batch_id, destination=destination,
                  instances=len(job.remaining()), dead_letter=job.dead_letter)
        return False

    async def _dead_letter(self, directory: Path, batch: _Batch, job: _Job) -> Path:
        """Link the undelivered instances and a record into ``dead/<batch>/e<N>``, in one rename."""
        dead = directory / "dead"
        target = dead / batch.key / f"e{job.index}"
        if target.exists():
            return target
        temporary = dead / f".tmp-{batch.key}-e{job.index}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir(parents=True)
        files: list[JsonValue] = []
        for instance in job.remaining():
            assert instance.path is not None
            _link_or_copy(instance.path, temporary / instance.path.name)
            files.append({"file": instance.path.name, "sop_instance_uid": instance.sop_instance_uid,
                          "reason": job.failures.get(instance.sop_instance_uid)})
        exporter = job.exporter
        record: dict[str, JsonValue] = {
            "version": RECORD_VERSION, "batch_id": batch.batch_id, "exporter": exporter.describe(),
            "destination": exporter.destination(), "error": job.error, "attempts": job.attempts,
            "files": files, "dead_lettered": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        resend = _resend_command(record["destination"], target)
        if resend:
            record["resend"] = resend
        _write_json(temporary / "record.json", record)
        await self._sync([p for p in temporary.iterdir()])
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(temporary, target)
        await self._sync([target / "record.json"])
        return target

    async def _finish(self, batch: _Batch) -> None:
        outcome = ExportOutcome(batch.batch_id, tuple(job.result() for job in batch.jobs))
        if batch.folder is not None and self.directory is not None:
            done = self.directory / "done"
            done.mkdir(exist_ok=True)
            _write_json(done / f"{batch.key}.json", outcome.to_json())
            await self._sync([done / f"{batch.key}.json"])
            shutil.rmtree(batch.folder, ignore_errors=True)
        batch.outcome = outcome
        self._batches.pop(batch.batch_id, None)
        self._outcomes[batch.batch_id] = outcome
        while len(self._outcomes) > _KEEP_OUTCOMES:
            self._outcomes.pop(next(iter(self._outcomes)))
        if outcome.delivered:
            self._delivered += 1
        else:
            self._dead += 1
        batch.done.set()

    async def _note(self, batch: _Batch, line: str) -> None:
        """Append one line to the batch's ``acks.log`` (before anything else is sent)."""
        if batch.folder is None:
            return
        path = batch.folder / "acks.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
        await self._sync([path])

    async def _sync(self, paths: list[Path]) -> None:
        """With ``fsync``: return once ``paths`` and their folders are on disk (shared flushes)."""
        if self._syncer is not None and paths:
            await self._syncer.sync(paths)

    # --- resuming --------------------------------------------------------------------------

    def _known_outcome(self, batch_id: str) -> ExportOutcome | None:
        outcome = self._outcomes.get(batch_id)
        if outcome is not None or self.directory is None:
            return outcome
        path = self.directory / "done" / f"{safe_component(batch_id, '_batch', allowed=_KEY_CHARS)}.json"
        try:
            return ExportOutcome.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def _resume(self, directory: Path) -> None:
        """Load the batches left pending by the last run, oldest first; remove half-written ones."""
        for leftover in (directory / "pending").glob(".tmp-*"):
            if leftover not in self._writing:
                shutil.rmtree(leftover, ignore_errors=True)
        for leftover in (directory / "dead").glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        loaded = []
        for folder in (directory / "pending").glob("*"):
            if folder.name.startswith(".tmp-"):
                continue
            if (directory / "done" / f"{folder.name}.json").exists():  # finished, not yet removed
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                record = json.loads((folder / "batch.json").read_text())
                loaded.append((record["submitted"], self._load(directory, folder, record)))
            except (OSError, ValueError, LookupError, TypeError, ImportError, AttributeError, ExportError) as exc:
                self._set_aside(directory, folder, exc)
        batches = [batch for _, batch in sorted(loaded, key=lambda pair: pair[0])]
        self._batches = {**{batch.batch_id: batch for batch in batches}, **self._batches}
        if batches:
            log.info("export_resumed", batches=len(batches))

    def _set_aside(self, directory: Path, folder: Path, exc: Exception) -> None:
        """A pending batch that cannot be read back (damaged, or its exporter class is gone):
        moved to ``unreadable/`` with the reason, so the rest resumes and nothing is deleted."""
        reason = f"{type(exc).__name__}: {exc}"
        target = directory / "unreadable" / folder.name
        target.parent.mkdir(exist_ok=True)
        os.rename(folder, target)
        (target / "reason.txt").write_text(reason + "\n")
        self._errors.append(f"pending batch {folder.name} set aside in {target}: {reason}")
        log.error("export_unreadable_batch", folder=str(target), error=reason)

    def _load(self, directory: Path, folder: Path, record: dict[str, object]) -> _Batch:
        notes = _read_notes(folder / "acks.log")
        jobs = []
        exports = record["exports"]
        assert isinstance(exports, list)
        for index, entry in enumerate(exports):
            exporter = _import_class(entry["class"]).from_record(entry["settings"])
            instances = None if entry["instances"] is None else [
                Instance(e["sop_class_uid"], e["sop_instance_uid"], e["transfer_syntax"], path=folder / e["file"])
                for e in entry["instances"]]
            mine = notes.get(index, [])
            job = _Job(index, exporter, instances, {int(n) for n in mine if n.isdigit()}, mine.count("failed"))
            dead = directory / "dead" / folder.name / f"e{index}"
            if "done" in mine:
                job.state = "delivered"
            elif "dead" in mine or dead.exists():
                job.state, job.dead_letter = "dead", str(dead)
            jobs.append(job)
        return _Batch(str(record["batch_id"]), folder.name, jobs, folder)


# --- helpers ---------------------------------------------------------------------------------


def _class_path(exporter: Exporter) -> str:
    """``module:qualname`` of the exporter's class, checked to import back to the same class."""
    cls = type(exporter)
    path = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = _import_class(path)
    except (ImportError, AttributeError):
        found = None
    if found is not cls:
        raise ExportError(f"{cls.__qualname__} cannot be kept across a restart: define it at the top "
                          f"level of an importable module (not in __main__ or a function)")
    return path


def _import_class(path: str) -> type[Exporter]:
    module, _, qualname = path.partition(":")
    value: object = importlib.import_module(module)
    for name in qualname.split("."):
        value = getattr(value, name)
    if not (isinstance(value, type) and issubclass(value, Exporter)):
        raise ExportError(f"{path} is not an exporter class")
    return value


def _read_notes(path: Path) -> dict[int, list[str]]:
    notes: dict[int, list[str]] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return notes
    for line in lines:
        index, _, what = line.partition(" ")
        if index.isdigit() and what:  # a torn last line (power loss) is ignored
            notes.setdefault(int(index), []).append(what)
    return notes


def _moved(instance: Instance, old: Path, new: Path) -> Instance:
    assert instance.path is not None
    return Instance(instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax,
                    path=new / instance.path.relative_to(old))


async def _keep(item: ExportItem, path: Path) -> Instance:
    """Write one data set to ``path`` as Part 10, in chunks with the event loop served between.

    A caller's file is copied, never linked: changing it later changes nothing exported.
    """
    if isinstance(item, bytes | bytearray | memoryview | str | os.PathLike):
        found = encode_item(item)
        await write_file(path, found.chunks())
        return Instance(found.sop_class_uid, found.sop_instance_uid, found.transfer_syntax, path=path)
    sop_class, sop_instance, ts, parts = encode_dataset(item)
    await write_file(path, parts)
    return Instance(sop_class, sop_instance, ts, path=path)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_json(path: Path, value: dict[str, JsonValue]) -> None:
    """Write a JSON record under a temporary name, then rename it into place."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temporary, path)


def _resend_command(destination: JsonValue, folder: Path) -> str | None:
    """The ``aiodicom store`` command line that resends a DICOM dead letter."""
    if not isinstance(destination, dict) or destination.get("kind") != "dicom":
        return None
    d = destination
    words = [str(d["host"]), str(d["port"]), str(folder), "--aec", str(d["called_ae"]), "--aet", str(d["calling_ae"])]
    return "aiodicom store " + " ".join(map(shlex.quote, words))


__all__ = ["ExportOutcome", "ExportResult", "Outbox", "OutboxStatus"]
