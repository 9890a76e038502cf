"""A DICOM node: receive per patient, validate on release, process, export, exactly once.

Subclass :class:`Pipeline`, name its inputs, write ``async def process``::

    class MyPipeline(aiodicom.Pipeline):
        ae_title = "MYNODE"
        inputs = {"ct": CT}
        data_directory = "/var/lib/mynode"

        async def process(self, container):
            return aiodicom.FileExport("out/", container.datasets["ct"])

    await MyPipeline().serve()

What happens to an instance, in order:

1. **Receive.** The server streams it to the spool; the few tags routing needs
   (the patient identifier, every input's tags) are collected as its bytes arrive,
   nothing is decoded. ``filter(instance)`` may refuse it. Every input of the
   patient is offered it; one that takes none is refused with a failure status whose
   Error Comment says why (``unroutable="reject"``) or acknowledged and dropped
   (``"accept"``). Kept ones are renamed into ``incoming/<patient>/`` before the
   success response (see :mod:`aiodicom.pipeline.storage`); a quota or a full disk
   answers 0xA700 and touches nothing stored.
2. **Validate.** When an association is released, each patient it sent data for is
   validated once no other open association is still sending for that patient: every
   input's ``validate()``. An aborted association's instances stay and are validated at
   the next release, or after ``complete_after`` quiet seconds.
3. **Process.** A patient that validates becomes a batch (its folder renamed into
   ``batches/``), and later data starts a new one. Batches are processed by
   ``max_concurrent_processes`` tasks in release order, each within
   ``process_timeout``, while receiving goes on. A failure or timeout moves the
   batch to ``quarantine/`` with a JSON record (error, traceback, inputs).
4. **Export.** What ``process`` returns goes to the outbox
   (:mod:`aiodicom.pipeline.export`), which persists it before the journal says
   "submitted"; the batch's data is removed once its export outcome is known.

Everything runs in one event loop; heavy grinders and :func:`aiodicom.offload`
calls run in worker processes. With ``workers=N`` (N > 1) receiving runs in N
processes sharing the port (:class:`~aiodicom.dimse.workers.WorkerPool`): each
worker routes (:meth:`Pipeline._route`, the stateless part: identifier, filter,
every input's required tags and values), stores and answers; it reports each kept
instance and each association's end to this process, the one owner of the
per-patient state, which feeds them to the same state machine (:meth:`Pipeline._admit`,
:meth:`Pipeline._association_ended`). Batches are then cut file by file
(:meth:`PipelineStore.cut_files`): a worker may be adding to the patient's folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiodicom._log import get_logger
from aiodicom.codec.scan import text
from aiodicom.dimse.association import AssociationInfo
from aiodicom.dimse.server import Server
from aiodicom.dimse.status import Status
from aiodicom.dimse.store import ReceivedInstance, StorageError
from aiodicom.dimse.workers import (
    WorkerChannel,
    WorkerMessage,
    WorkerPool,
    serve_until_stopped,
    share,
    usable_workers,
)
from aiodicom.errors import ConfigurationError
from aiodicom.pipeline.inputs import Input, InputFailed, StoredInstance, resolve, tag_number
from aiodicom.pipeline.offload import offload
from aiodicom.pipeline.storage import (
    BatchFolder,
    PipelineStore,
    QuotaExceeded,
    patient_folder_name,
    patient_hash,
    readable,
)

if TYPE_CHECKING:
    from aiodicom._log import LazyLogger
    from aiodicom.pipeline.export import Exporter
    from aiodicom.pipeline.outbox import Outbox

__all__ = ["InputContainer", "Pipeline", "PipelineStatus", "Sender"]

_log = get_logger("aiodicom.pipeline")

#: C-STORE statuses the pipeline answers besides success (Error Comments say which case).
NO_IDENTIFIER = 0xA900
UNROUTABLE = 0xC000
OUT_OF_RESOURCES = 0xA700
#: Errors kept for :meth:`Pipeline.status`.
_LAST_ERRORS = 10
#: Seconds between two measures of the data directory by a worker (quota with workers).
_MEASURE_INTERVAL = 1.0

#: The path of an instance routed but not stored yet.
_NOWHERE = Path()
#: An association: (worker index, its id in that worker); (0, id) in one process.
AssociationKey: TypeAlias = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a batch's data (the association that delivered its last instance)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def of(cls, info: AssociationInfo) -> Sender:
        return cls(info.calling_ae, info.peer_host, info.peer_port)


class InputContainer(Mapping[str, object]):
    """What ``process`` gets: ``container["ct"]`` is the grinder's output for input "ct".

    :attr:`datasets` holds each input's instances (LazyDataset objects; a
    :class:`DynamicInput` gives a dict of lists), :attr:`paths` their files. The files
    belong to the batch: they are removed once its exports are done (or moved to the
    quarantine), so read what you need while ``process`` runs; exporters returned by
    ``process`` may name them (the outbox copies what it sends first).
    """

    def __init__(
        self,
        ground: dict[str, object],
        *,
        datasets: dict[str, object],
        paths: dict[str, list[Path]],
        patient_id: str,
        sender: Sender | None,
        batch_id: str,
    ) -> None:
        self._ground = ground
        #: Each input's instances, as LazyDataset objects.
        self.datasets = datasets
        #: Each input's files (valid while ``process`` runs).
        self.paths = paths
        #: The value of the pipeline's ``patient_identifier_tag``.
        self.patient_id = patient_id
        #: The association that delivered the last instance (None after a restart lost it).
        self.sender = sender
        #: This batch's id, as in the logs and the journal.
        self.batch_id = batch_id

    def __getitem__(self, name: str) -> object:
        return self._ground[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ground)

    def __len__(self) -> int:
        return len(self._ground)


@dataclass(frozen=True)
class PipelineStatus:
    """A snapshot for status pages: what waits, runs, failed, and the last errors."""

    associations: int
    #: Patients with data waiting for validation, and their instances.
    patients_waiting: int
    instances_waiting: int
    #: Batches waiting for a process slot, running process, waiting for their export outcome.
    queued: int
    processing: int
    exporting: int
    #: Batches quarantined by this run.
    failed: int
    counts: dict[str, int]
    last_errors: list[dict[str, object]]
    #: The outbox's own snapshot (pending, exporting, retrying, delivered, dead-lettered).
    outbox: dict[str, object] | None = None
    #: Patients whose inputs are still fetching data (a HistoricInput's priors).
    retrieving: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


@dataclass(eq=False)
class _Patient:
    patient_id: str
    folder: str
    inputs: dict[str, Input]
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: Associations that delivered data for this patient and are still open.
    delivering: set[AssociationKey] = field(default_factory=set)
    #: A release asked for validation while another association was still delivering.
    release_pending: bool = False
    #: Data arrived since the last validation.
    dirty: bool = False
    last_received: float = field(default_factory=time.monotonic)
    last_received_wall: float = field(default_factory=time.time)
    sender: Sender | None = None
    instances: dict[str, StoredInstance] = field(default_factory=dict)

    @property
    def hashed(self) -> str:
        return patient_hash(self.patient_id)


@dataclass(eq=False)
class _Routed:
    """What the stateless part of routing decided for a kept instance."""

    patient_id: str
    stored: StoredInstance
    #: Inputs whose required tags and values it has.
    names: list[str]


@dataclass(eq=False)
class _Batch:
    batch_id: str
    patient_id: str
    folder: Path
    inputs: dict[str, Input]
    sender: Sender | None

    @property
    def hashed(self) -> str:
        return patient_hash(self.patient_id)


class Pipeline:
    """A DICOM node (see the module docstring). Subclass it; set the class attributes.

    Every class attribute below can also be given to the constructor
    (``MyPipeline(port=0, data_directory=tmp)``), which is what tests and the
    ``aiodicom serve`` command do.
    """

    #: Our AE title.
    ae_title: str = "AIODICOM"
    #: Where to listen (127.0.0.1: this machine only; "0.0.0.0": every interface).
    host: str = "127.0.0.1"
    #: TCP port; 0 takes a free one (``await task_group.start(pipeline.serve)`` returns it).
    port: int = 11112
    #: Input name -> :class:`Input` subclass; one instance of each per patient.
    inputs: ClassVar[Mapping[str, type[Input]]] = {}
    #: The tag grouping instances into patients (keyword or int).
    patient_identifier_tag: int | str = "PatientID"
    #: Where acknowledged data, batches, quarantine and the outbox live; None: a private
    #: temporary folder removed at stop (nothing survives a restart).
    data_directory: str | Path | None = None
    #: An instance no input takes: "reject" (a failure status saying why) or "accept"
    #: (acknowledged and dropped, for senders that cannot cope with failures).
    unroutable: Literal["reject", "accept"] = "reject"
    #: Calling AE titles allowed to associate (None: any).
    require_calling_aet: Collection[str] | None = None
    #: Reject associations addressed to another AE title.
    require_called_aet: bool = False
    #: Validate a patient after this many seconds without new data and without an open
    #: association sending for it (senders that abort or never release); None: only on release.
    complete_after: float | None = None
    #: Patients whose last data is older than this are dropped, files included.
    study_expiration_days: float | None = 14.0
    #: Batches processed at once (1: one at a time, in release order).
    max_concurrent_processes: int = 1
    #: Seconds a batch's grinding and ``process`` may take; then it is quarantined.
    process_timeout: float | None = 3600.0
    #: Flush every acknowledged file and journal step to disk before it counts.
    fsync: bool = False
    #: Bytes of instances the data directory may hold (incoming and batches); beyond: 0xA700.
    max_storage_bytes: int | None = None
    #: Accept compressed transfer syntaxes as sent.
    accept_any_transfer_syntax: bool = False
    #: Associations at once.
    max_associations: int = 64
    #: Seconds ``shutdown`` lets associations and batches in progress finish.
    grace: float = 10.0
    #: More :class:`~aiodicom.Server` keyword arguments (timeouts, TLS, limits; ``memory_threshold``
    #: is 0 unless given: data sets stream to the spool as they arrive).
    server_options: ClassVar[Mapping[str, object]] = {}
    #: Receiving processes sharing the port (Linux; elsewhere 1). With N > 1 each worker
    #: routes, stores and answers, and this process keeps the per-patient state; the
    #: class must be importable (``module:Class``) and its settings picklable.
    workers: int = 1
    #: Called first in each receiving worker process (e.g. to configure logging); picklable.
    worker_setup: Callable[[], None] | None = None

    def __init__(self, **settings: object) -> None:
        for name, value in settings.items():
            if name.startswith("_") or not hasattr(type(self), name) or callable(getattr(type(self), name)):
                raise ConfigurationError(f"{type(self).__name__} has no setting {name!r}")
            setattr(self, name, value)
        #: The constructor's settings, which worker processes are built with.
        self._settings = dict(settings)
        self._check()
        self._identifier = tag_number(self.patient_identifier_tag)
        self._routing_tags = frozenset({self._identifier}).union(*(i.routing_tags() for i in self.inputs.values()))
        #: Routing tags whose values are kept per waiting instance (the others only count as present).
        self._value_tags = frozenset({self._identifier}).union(*(i.value_tags() for i in self.inputs.values()))
        #: One blank instance of each input: the stateless routing asks them.
        self._blank = {name: kind() for name, kind in self.inputs.items()}
        #: Some input may claim instances for a patient (a HistoricInput's priors).
        self._claiming = any(kind.may_claim for kind in self.inputs.values())
        #: Inputs whose choice a blank input makes for every patient (not asked again per patient).
        self._stateless = frozenset(name for name, kind in self.inputs.items() if kind.blank_decides())
        #: ``filter`` is overridden (else not called: every instance passes).
        self._filtering = type(self).filter is not Pipeline.filter
        self._patients: dict[str, _Patient] = {}
        self._touched: dict[AssociationKey, set[str]] = {}
        self._queued: deque[_Batch] = deque()
        self._processing: dict[str, _Batch] = {}
        self._exporting: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._errors: deque[dict[str, object]] = deque(maxlen=_LAST_ERRORS)
        self._server: Server | WorkerPool[dict[str, object]] | None = None
        #: In a receiving worker: its line to the owner of the state.
        self._channel: WorkerChannel | None = None
        #: In a receiving worker: association id -> the patients (folders) it was reported sending for.
        self._reported: dict[int, set[str]] = {}
        self._store: PipelineStore | None = None
        self._outbox: Outbox | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[_Batch] | None = None
        self._stopping = False
        self.log = _log.bind(pipeline=type(self).__name__)

    def _check(self) -> None:
        if not self.inputs:
            raise ConfigurationError(f"{type(self).__name__}.inputs is empty: name at least one Input")
        for name, kind in self.inputs.items():
            if not (isinstance(kind, type) and issubclass(kind, Input)):
                raise ConfigurationError(f"input {name!r} must be an Input subclass, not {kind!r}")
            kind.check()
        if self.unroutable not in ("reject", "accept"):
            raise ConfigurationError(f"unroutable must be 'reject' or 'accept', not {self.unroutable!r}")
        if self.max_concurrent_processes < 1:
            raise ConfigurationError("max_concurrent_processes must be at least 1")
        if self.server_options.get("workers", 1) != 1:
            raise ConfigurationError("set the pipeline's workers, not server_options workers")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigurationError(f"workers must be at least 1, not {self.workers!r}")
        stateful = [name for name, kind in self.inputs.items() if _stateful_routing(kind)]
        if self.workers > 1 and stateful:
            raise ConfigurationError(
                f"inputs {', '.join(stateful)} take instances by their first one (enforce_single_series or "
                "enforce_single_study_date): workers cannot decide that alone; use workers=1"
            )

    # --- what users override -------------------------------------------------------------

    def filter(self, instance: ReceivedInstance) -> bool | Awaitable[bool]:
        """Whether to consider ``instance`` at all (may be ``async def``); default: yes.

        Runs before routing; read tags with ``instance.text(tag)`` or ``instance.tags()``
        (cheap for the routing tags), ``instance.read()`` decodes (costly). A refused
        instance is treated as unroutable.
        """
        return True

    async def process(self, container: InputContainer) -> Exporter | Sequence[Exporter] | None:
        """Turn one patient's validated inputs into exports; override it.

        Return an exporter (:class:`~aiodicom.DicomExport`, :class:`~aiodicom.FileExport`
        or your own), a list of them (run concurrently), or None. An exception or the
        ``process_timeout`` quarantines the batch. Offload CPU-heavy work with
        :func:`aiodicom.offload`.
        """
        return None

    # --- lifecycle -----------------------------------------------------------------------

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Receive, process and export until :meth:`shutdown` (or cancellation).

        ``port = await task_group.start(pipeline.serve)`` returns the bound port.
        """
        from aiodicom.pipeline.outbox import Outbox

        store = PipelineStore(self.data_directory, fsync=self.fsync, quota=self.max_storage_bytes)
        send, receive = anyio.create_memory_object_stream[_Batch](math.inf)
        self._send = send
        try:
            store.open()
            self._store = store
            self._outbox = Outbox(None if store.ephemeral else store.outbox, fsync=self.fsync)
            self._server = server = self._make_server(store)
            async with anyio.create_task_group() as group:
                self._task_group = group
                await group.start(self._outbox.run)
                for _ in range(self.max_concurrent_processes):
                    group.start_soon(self._processor, receive.clone())
                await self._restore(store)
                group.start_soon(self._housekeeping)
                port = await group.start(self._run_server)
                self.port = port
                if self._stopping:  # shutdown() came while starting: the server had no stop event yet
                    server.shutdown(self.grace)
                task_status.started(port)
        finally:
            self._task_group = None
            send.close()
            receive.close()
            store.close()
            self.log.info("pipeline_stopped", **self._counts)

    def _make_server(self, store: PipelineStore) -> Server | WorkerPool[dict[str, object]]:
        """One Server, or the pool of receiving workers (``workers`` > 1, where supported)."""
        workers = usable_workers(self.workers)
        if workers == 1:
            hooks = {"on_store": self._on_store, "on_released": self._on_released, "on_aborted": self._on_aborted}
            return Server(self.ae_title, self.host, self.port, **self._server_options(store, hooks))  # type: ignore[arg-type]
        arguments: dict[str, object] = {"kind": type(self), "settings": self._settings, "root": str(store.root),
                                        "workers": workers}  # fmt: skip

        def worker_arguments(port: int) -> dict[str, object]:
            return {**arguments, "port": port}

        return WorkerPool(_pipeline_worker, worker_arguments, host=self.host, port=self.port, workers=workers)

    def _server_options(self, store: PipelineStore, hooks: Mapping[str, object]) -> dict[str, object]:
        return {
            **hooks,
            "accept_any_transfer_syntax": self.accept_any_transfer_syntax,
            "require_called_ae": self.require_called_aet,
            "calling_ae_allowlist": self.require_calling_aet,
            "max_associations": self.max_associations,
            "fsync": self.fsync,
            "spool_dir": store.spool,
            # Every kept instance goes to disk before its answer anyway: stream each one into its
            # spool file as it arrives (as ``aiodicom receive`` does) rather than hold it in memory
            # and write it all between its last byte and the response. A rename keeps it.
            "memory_threshold": 0,
            "routing_tags": self._routing_tags,
            **self.server_options,
        }

    async def _run_server(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        server = self._server
        assert server is not None
        if isinstance(server, WorkerPool):
            await self._run_pool(server, task_status)
        else:
            await server.serve(task_status=task_status)
        await self._drain()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def _drain(self) -> None:
        """After the server stopped: let queued, running and exporting batches finish."""
        with anyio.move_on_after(self.grace):
            while self._queued or self._processing or self._exporting:
                await anyio.sleep(0.05)

    def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; associations and batches in progress get ``grace`` seconds.

        With a data directory, what is left is on disk and resumes at the next start.
        """
        if grace is not None:
            self.grace = grace
        self._stopping = True
        if self._server is not None:
            self._server.shutdown(self.grace)

    def status(self) -> PipelineStatus:
        """A snapshot (see :class:`PipelineStatus`)."""
        outbox = _outbox_status(self._outbox) if self._outbox is not None else None
        return PipelineStatus(
            associations=self._server.active_associations if self._server is not None else 0,
            patients_waiting=len(self._patients),
            instances_waiting=sum(len(p.instances) for p in self._patients.values()),
            queued=len(self._queued),
            processing=len(self._processing),
            exporting=len(self._exporting),
            failed=self._counts["quarantined"],
            counts=dict(self._counts),
            last_errors=list(self._errors),
            outbox=outbox,
            retrieving=sum(any(h.busy for h in p.inputs.values()) for p in self._patients.values()),
        )

    # --- receiving -----------------------------------------------------------------------

    async def _on_store(self, instance: ReceivedInstance) -> Status | None:
        """One process: route, then keep under the patient's lock (the single-X rules need it).

        Keeping never waits, so the lock is only taken when a validation holds it: otherwise
        nothing can interleave anyway, and the instance costs no extra turn of the event loop.
        """
        routed = await self._route(instance)
        if not isinstance(routed, _Routed):
            return routed
        patient = self._patient(routed.patient_id)
        if not patient.lock.locked():
            return self._keep_routed(instance, routed, patient)
        async with patient.lock:
            return self._keep_routed(instance, routed, patient)

    def _keep_routed(self, instance: ReceivedInstance, routed: _Routed, patient: _Patient) -> Status | None:
        """Store a routed instance in its patient's folder and admit it (no await: atomic)."""
        if self._patients.get(patient.folder) is not patient:  # validated meanwhile
            patient = self._patient(routed.patient_id)
        names = _take(patient.inputs, routed.stored, routed.names, self._stateless)
        if not names:
            return self._unroutable(self._no_input())
        previous = patient.instances.get(routed.stored.sop_instance_uid)
        saved = self._save(instance, patient.folder, previous.path if previous is not None else None)
        if isinstance(saved, Status):
            return saved
        routed.stored.path = saved
        self._admit(patient, routed.stored, names, (0, instance.association.id), Sender.of(instance.association))
        return None

    async def _route(self, instance: ReceivedInstance) -> _Routed | Status | None:
        """The stateless part of routing, the same in one process and in every worker.

        The patient identifier, ``filter``, and each input's required tags and values
        (asked of blank inputs). Anything but a :class:`_Routed` is the answer for an
        instance that is not kept (None: unroutable, acknowledged by policy).
        """
        values = instance.tags(self._routing_tags)
        patient_id = _text(values.get(self._identifier))
        if not patient_id:
            self._count("rejected")
            keyword = str(self.patient_identifier_tag)
            self.log.warning("instance_without_identifier", association=instance.association.id, tag=keyword)
            return Status(NO_IDENTIFIER, error_comment=f"no {keyword} (missing or empty): cannot group by patient")
        stored = StoredInstance(instance.sop_instance_uid, _NOWHERE, instance.transfer_syntax, values, instance.size)
        stored.keep_values_of(self._value_tags)
        if self._filtering and not await resolve(self.filter(instance)):
            return self._unroutable("refused by the pipeline's filter")
        names = [name for name, blank in self._blank.items() if blank.accepts(stored)]
        if not names and not self._claiming:  # an input that claims instances decides per patient
            return self._unroutable(self._no_input())
        return _Routed(patient_id, stored, names)

    def _no_input(self) -> str:
        return f"no input takes it (inputs: {', '.join(self.inputs)})"

    def _save(self, instance: ReceivedInstance, folder: str, previous: str | Path | None) -> Path | Status:
        """Store ``instance`` in the patient ``folder`` within the quota (durable before the answer)."""
        store = self._store
        assert store is not None
        try:
            store.reserve(instance.size, previous)
        except QuotaExceeded as exc:
            self.log.warning("storage_quota_reached", association=instance.association.id, quota=store.quota)
            return Status(OUT_OF_RESOURCES, error_comment=str(exc))
        try:
            path = store.save(instance, folder, store.instance_path(folder, instance.sop_instance_uid))
        except (StorageError, OSError) as exc:
            store.release(instance.size)
            reason = _reason(exc)
            self.log.error("store_failed", association=instance.association.id, error=reason)
            return Status(OUT_OF_RESOURCES, error_comment=f"cannot store the instance: {reason}")
        store.settle(instance.size, path)
        return path

    def _admit(
        self, patient: _Patient, stored: StoredInstance, names: Sequence[str], association: AssociationKey, sender: Sender
    ) -> None:
        """A stored instance joins its patient (the state machine's input, under the patient's lock)."""
        first = not patient.instances
        self._keep(patient, stored, names)
        if first:  # e.g. a HistoricInput starts fetching the patient's priors
            for holder in patient.inputs.values():
                holder.first_instance(self, patient.patient_id, stored)
        patient.delivering.add(association)
        patient.sender = sender
        self._touched.setdefault(association, set()).add(patient.folder)
        self._counts["received"] += 1
        if self.log.is_enabled_for(logging.DEBUG):  # the arguments alone cost, per instance
            self.log.debug("instance_received", worker=association[0], association=association[1], patient=patient.hashed,
                           inputs=list(names))  # fmt: skip

    def _unroutable(self, why: str) -> Status | None:
        self._count("unroutable")
        if self.unroutable == "accept":
            self.log.warning("unroutable_accepted", reason=why)
            return None
        self.log.warning("unroutable_rejected", reason=why)
        return Status(UNROUTABLE, error_comment=why)

    def _count(self, name: str) -> None:
        """Count an event; a worker tells the owner of the state, whose counts status() shows."""
        self._counts[name] += 1
        if self._channel is not None:
            self._channel.message({"event": "count", "name": name}, batch=True)

    # --- receiving in worker processes ---------------------------------------------------

    async def _serve_worker(self, root: str, workers: int, channel: WorkerChannel) -> None:
        """A receiving worker: route, store and answer; report kept instances and ends."""
        store = PipelineStore(root, fsync=self.fsync, quota=self.max_storage_bytes)
        store.attach()
        self._store, self._channel = store, channel
        hooks = {"on_store": self._store_in_worker, "on_released": self._report_released, "on_aborted": self._report_aborted}
        options = {**self._server_options(store, hooks), "listen_fd": channel.listen_fd}
        options["max_associations"] = share(self.max_associations, workers)
        server = Server(self.ae_title, self.host, self.port, **options)  # type: ignore[arg-type]
        async with anyio.create_task_group() as group:
            group.start_soon(channel.report_active, lambda: server.active_associations)
            if store.quota is not None:
                group.start_soon(_measure, store)
            await serve_until_stopped(server.serve, server.shutdown, channel)
            group.cancel_scope.cancel()

    async def _store_in_worker(self, instance: ReceivedInstance) -> Status | None:
        routed = await self._route(instance)
        if not isinstance(routed, _Routed):
            return routed
        assert self._store is not None and self._channel is not None
        folder = patient_folder_name(routed.patient_id)
        target = self._store.instance_path(folder, instance.sop_instance_uid)
        saved = self._save(instance, folder, target)  # an earlier copy it replaces, if there (the quota counts it)
        if isinstance(saved, Status):
            return saved
        routed.stored.path = saved
        # The owner validates a patient on a release once no association still sends for
        # it: an association's first instance of a patient goes at once (it names a sender
        # the owner must wait for); the others may wait for a batch, which the
        # association's end, sent at once, takes along ahead of it.
        reported = self._reported.setdefault(instance.association.id, set())
        first = folder not in reported
        reported.add(folder)
        self._channel.message(_stored_message(instance.association, routed), batch=not first)
        return None

    async def _report_released(self, info: AssociationInfo) -> None:
        self._report_end(info, released=True)

    async def _report_aborted(self, info: AssociationInfo) -> None:
        self._report_end(info, released=False)

    def _report_end(self, info: AssociationInfo, *, released: bool) -> None:
        assert self._channel is not None
        self._reported.pop(info.id, None)
        self._channel.message({"event": "ended", "association": info.id, "released": released})

    async def _run_pool(self, pool: WorkerPool[dict[str, object]], task_status: anyio.abc.TaskStatus[int]) -> None:
        """Serve with the pool while feeding its workers' reports to the state machine, in order."""
        messages = pool.messages()
        async with anyio.create_task_group() as readers:
            readers.start_soon(self._read_messages, messages)
            await pool.serve(task_status=task_status)
        # the reader ended with the pool's last message: every report was applied

    async def _read_messages(self, messages: MemoryObjectReceiveStream[WorkerMessage]) -> None:
        """Apply the workers' reports; of those already arrived, stored instances before ends.

        Each worker's reports come in order, but two workers' pipes are read independently:
        an association that another worker has already acknowledged an instance for must
        count as still sending when a release read in the same turn is applied.
        """
        async with messages:
            async for first in messages:
                arrived = [first]
                with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                    while True:
                        arrived.append(messages.receive_nowait())
                arrived.sort(key=lambda message: message.payload.get("event") == "ended")  # stable: order kept
                for message in arrived:
                    await self._apply(message)

    async def _apply(self, message: WorkerMessage) -> None:
        handlers = {"stored": self._worker_stored, "ended": self._worker_ended, "count": self._worker_count}
        handler = handlers.get(str(message.payload.get("event")))
        if handler is None:
            self.log.error("worker_message_unknown", worker=message.worker)
            return
        await handler(message.worker, message.payload)

    async def _worker_stored(self, worker: int, payload: Mapping[str, object]) -> None:
        routed, association, sender = _decode_stored(payload)
        patient = self._patient(routed.patient_id)
        async with patient.lock:
            if self._patients.get(patient.folder) is not patient:
                patient = self._patient(routed.patient_id)
            if not routed.stored.path.exists():  # a later copy of a batch's instance, cut with it
                self.log.debug("instance_already_cut", patient=patient.hashed)
                return
            names = _take(patient.inputs, routed.stored, routed.names, self._stateless)
            self._admit(patient, routed.stored, names, (worker, association), sender)

    async def _worker_ended(self, worker: int, payload: Mapping[str, object]) -> None:
        association = payload.get("association")
        if isinstance(association, int):
            await self._association_ended((worker, association), released=payload.get("released") is True)

    async def _worker_count(self, worker: int, payload: Mapping[str, object]) -> None:
        self._counts[str(payload.get("name"))] += 1

    def _patient(self, patient_id: str) -> _Patient:
        folder = patient_folder_name(patient_id)
        patient = self._patients.get(folder)
        if patient is None:
            patient = _Patient(patient_id, folder, {name: kind() for name, kind in self.inputs.items()})
            self._patients[folder] = patient
        return patient

    @staticmethod
    def _keep(patient: _Patient, stored: StoredInstance, names: Sequence[str]) -> None:
        """Put ``stored`` in the inputs ``names``; a duplicate SOP Instance UID replaces."""
        for holder in patient.inputs.values():
            holder.discard(stored.sop_instance_uid)
        for name in names:
            patient.inputs[name].add(stored)
        patient.instances[stored.sop_instance_uid] = stored
        patient.dirty = True
        patient.last_received = time.monotonic()
        patient.last_received_wall = time.time()

    async def _on_released(self, info: AssociationInfo) -> None:
        await self._association_ended((0, info.id), released=True)

    async def _on_aborted(self, info: AssociationInfo) -> None:
        await self._association_ended((0, info.id), released=False)

    async def _association_ended(self, association: AssociationKey, *, released: bool) -> None:
        """Validate each patient the association sent for, once no other is still sending for it."""
        for folder in self._touched.pop(association, ()):
            patient = self._patients.get(folder)
            if patient is None:
                continue
            patient.delivering.discard(association)
            patient.release_pending = patient.release_pending or released
            if not released:
                self.log.info("association_aborted_data_kept", association=association[1], patient=patient.hashed)
            if patient.release_pending and not patient.delivering:
                await self._validate(patient, reason="released" if released else "other_association_ended")

    # --- for inputs that fetch data themselves (HistoricInput) ----------------------------

    def start_task(self, function: Callable[[], Coroutine[object, object, object]]) -> None:
        """Run ``function()`` in the pipeline's task group (ends with the pipeline)."""
        if self._task_group is None:
            raise RuntimeError("the pipeline is not serving")
        self._task_group.start_soon(function)

    async def store_fetched(self, instance: ReceivedInstance) -> Status | None:
        """Store an instance an input fetched (C-GET) exactly like a received C-STORE.

        Its association counts as delivering for the patient until :meth:`fetch_ended`.
        """
        return await self._on_store(instance)

    async def fetch_ended(self, patient_id: str, *, association_id: int | None, validate: bool) -> None:
        """An input's fetch is over: forget its association; with ``validate`` (a release
        found the input still fetching), validate the patient now, or at the release of
        the last association still delivering for it."""
        key: AssociationKey = (0, association_id if association_id is not None else -1)
        for folder in self._touched.pop(key, ()):
            if (patient := self._patients.get(folder)) is not None:
                patient.delivering.discard(key)
        patient = self._patients.get(patient_folder_name(patient_id))
        if patient is None:
            return
        patient.release_pending = patient.release_pending or validate
        if patient.release_pending and not patient.delivering:
            await self._validate(patient, reason="fetch_ended")

    async def save_input_state(self, patient_id: str, name: str, record: dict[str, object]) -> None:
        """Keep an input's own state in the patient's folder as ``name`` (JSON, atomic); it
        travels with the patient's data and comes back through :meth:`Input.restore`."""
        assert self._store is not None
        await self._store.write_record(self._store.incoming / patient_folder_name(patient_id), record, name)

    def fetch_failed(self, patient_id: str, message: str) -> None:
        """Record an input's failed fetch for :meth:`status` (its caller logs it)."""
        self._counts["fetch_failed"] += 1
        self._error(None, patient_hash(patient_id), message)

    # --- validation ----------------------------------------------------------------------

    async def _validate(self, patient: _Patient, *, reason: str) -> None:
        store = self._store
        assert store is not None
        async with patient.lock:
            if self._patients.get(patient.folder) is not patient:
                return  # already cut
            patient.release_pending = False
            patient.dirty = False
            log = self.log.bind(patient=patient.hashed)
            failed: InputFailed | None = None
            try:
                ready = all([await resolve(holder.validate()) for holder in patient.inputs.values()])
            except InputFailed as exc:  # the input says: quarantine this patient's data
                failed, ready = exc, True
            except Exception as exc:  # noqa: BLE001 - a user's validate() must not end the node
                log.exception("validate_failed")
                self._error(None, patient.hashed, f"validate() raised {exc!r}")
                return
            if not ready:
                log.info("patient_not_ready", reason=reason, instances=len(patient.instances))
                return
            batch_id = _new_batch_id()
            try:
                folder = await self._cut(patient, batch_id)
            except OSError as exc:  # the data stay in incoming/ and validate again later
                log.error("batch_cut_failed", error=exc.strerror or repr(exc))
                self._error(None, patient.hashed, f"cannot start a batch: {exc.strerror or exc!r}")
                patient.dirty = True
                return
            del self._patients[patient.folder]
        for holder in patient.inputs.values():
            holder.moved(folder)
        batch = _Batch(batch_id, patient.patient_id, folder, patient.inputs, patient.sender)
        if failed is not None:
            await self._quarantine(batch, failed, log.bind(batch=batch_id), timed_out=False, step="validate")
            return
        self.log.info("patient_validated", patient=patient.hashed, batch=batch_id, reason=reason, instances=len(patient.instances))
        self._counts["validated"] += 1
        self._enqueue(batch)

    async def _cut(self, patient: _Patient, batch_id: str) -> Path:
        """The patient's instances become a batch: its folder renamed, or with workers (who may be
        adding to that folder meanwhile) exactly the files this process knows of."""
        store = self._store
        assert store is not None
        record = _record("validated", patient.patient_id, patient.sender)
        if isinstance(self._server, WorkerPool):
            return await store.cut_files(patient.folder, batch_id, record, [i.path for i in patient.instances.values()])
        return await store.cut(patient.folder, batch_id, record)

    def _enqueue(self, batch: _Batch) -> None:
        assert self._send is not None
        self._queued.append(batch)
        self._send.send_nowait(batch)

    async def _housekeeping(self) -> None:
        """Quiet-period validation (``complete_after``) and expiry, once a second or so."""
        tick = min(1.0, self.complete_after / 4) if self.complete_after else 1.0
        while True:
            await anyio.sleep(tick)
            now, wall = time.monotonic(), time.time()
            for patient in list(self._patients.values()):
                if self._expired(patient, wall):
                    continue
                quiet = self.complete_after is not None and now - patient.last_received >= self.complete_after
                if quiet and patient.dirty and not patient.delivering:
                    await self._validate(patient, reason="complete_after")

    def _expired(self, patient: _Patient, wall: float) -> bool:
        days = self.study_expiration_days
        busy = patient.delivering or patient.lock.locked()  # sending, or being validated
        if days is None or wall - patient.last_received_wall < days * 86400 or busy:
            return False
        assert self._store is not None
        del self._patients[patient.folder]
        if isinstance(self._server, WorkerPool):  # a worker may be adding to the folder: known files only
            self._store.remove_files([instance.path for instance in patient.instances.values()])
        else:
            self._store.remove_patient(patient.folder)
        self._counts["expired"] += 1
        self.log.info("patient_expired", patient=patient.hashed, instances=len(patient.instances))
        return True

    # --- processing ----------------------------------------------------------------------

    async def _processor(self, receive: MemoryObjectReceiveStream[_Batch]) -> None:
        async with receive:
            async for batch in receive:
                self._queued.remove(batch)
                self._processing[batch.batch_id] = batch
                try:
                    await self._process_batch(batch)
                finally:
                    del self._processing[batch.batch_id]

    async def _process_batch(self, batch: _Batch) -> None:
        log = self.log.bind(batch=batch.batch_id, patient=batch.hashed)
        log.info("processing")
        started = time.monotonic()
        try:
            with anyio.fail_after(self.process_timeout):
                container = await self._container(batch)
                exports = _exports(await self.process(container))
        except Exception as exc:  # noqa: BLE001 - any failure of user code quarantines the batch
            await self._quarantine(batch, exc, log, timed_out=isinstance(exc, TimeoutError))
            return
        self._counts["processed"] += 1
        log.info("processed", seconds=round(time.monotonic() - started, 3), exports=len(exports))
        try:
            await self._hand_over(batch, exports)
        except Exception as exc:  # noqa: BLE001 - the outbox could not take it (disk full...): keep the data
            await self._quarantine(batch, exc, log, timed_out=False, step="export hand-over")

    async def _container(self, batch: _Batch) -> InputContainer:
        ground: dict[str, object] = {}
        for name, holder in batch.inputs.items():
            function, argument = holder.grind_job()
            ground[name] = await offload(function, argument) if holder.grind_offloaded() else function(argument)
        return InputContainer(
            ground,
            datasets={name: holder.datasets_view() for name, holder in batch.inputs.items()},
            paths={name: holder.paths for name, holder in batch.inputs.items()},
            patient_id=batch.patient_id,
            sender=batch.sender,
            batch_id=batch.batch_id,
        )

    async def _hand_over(self, batch: _Batch, exports: list[Exporter]) -> None:
        """Exports to the outbox (durable), journal "submitted", then wait for the outcome."""
        store, outbox = self._store, self._outbox
        assert store is not None and outbox is not None
        if not exports:
            store.finish(batch.folder)
            self.log.info("batch_done", batch=batch.batch_id, patient=batch.hashed, exports=0)
            return
        await outbox.submit(batch.batch_id, exports)
        await store.write_record(batch.folder, _record("submitted", batch.patient_id, batch.sender))
        self._await_export(batch)

    def _await_export(self, batch: _Batch) -> None:
        self._exporting.add(batch.batch_id)
        assert self._task_group is not None
        self._task_group.start_soon(self._export_outcome, batch)

    async def _export_outcome(self, batch: _Batch) -> None:
        store, outbox = self._store, self._outbox
        assert store is not None and outbox is not None
        try:
            outcome = await outbox.wait(batch.batch_id)
        except Exception as exc:  # noqa: BLE001 - the outbox lost the batch: keep its inputs for a human
            self._error(batch.batch_id, batch.hashed, f"export outcome unknown: {exc!r}")
            self.log.error("export_outcome_unknown", batch=batch.batch_id, patient=batch.hashed, error=repr(exc))
            self._exporting.discard(batch.batch_id)
            return
        try:
            self._counts["exported" if outcome.delivered else "dead_lettered"] += 1
            if not outcome.delivered:
                errors = "; ".join(r.error or "" for r in outcome.results if not r.delivered)
                self._error(batch.batch_id, batch.hashed, f"export dead-lettered: {errors}")
            store.finish(batch.folder)
            self.log.info("batch_done", batch=batch.batch_id, patient=batch.hashed, delivered=outcome.delivered)
        finally:
            self._exporting.discard(batch.batch_id)

    async def _quarantine(
        self, batch: _Batch, exc: BaseException, log: LazyLogger, *, timed_out: bool, step: str = "process"
    ) -> None:
        assert self._store is not None
        why = f"{step} timed out after {self.process_timeout:g} s" if timed_out else f"{step}: {type(exc).__name__}: {exc}"
        record: dict[str, object] = {
            "batch_id": batch.batch_id,
            "patient_id": batch.patient_id,
            "sender": asdict(batch.sender) if batch.sender is not None else None,
            "error": why,
            "step": step,
            "timed_out": timed_out,
            "traceback": "".join(traceback.format_exception(exc)),
            "inputs": {name: [p.name for p in holder.paths] for name, holder in batch.inputs.items()},
            "time": time.time(),
        }
        await self._store.quarantine(batch.folder, record)
        self._counts["quarantined"] += 1
        self._error(batch.batch_id, batch.hashed, why)
        log.error("batch_quarantined", step=step, error=why, timed_out=timed_out)

    def _error(self, batch_id: str | None, hashed: str, message: str) -> None:
        self._errors.append({"time": time.time(), "batch": batch_id, "patient": hashed, "error": message})

    # --- restart -------------------------------------------------------------------------

    async def _restore(self, store: PipelineStore) -> None:
        """Reload what a previous run left (see :mod:`aiodicom.pipeline.storage`)."""
        if store.ephemeral:
            return
        incoming, batches = store.restore()
        for files in incoming.values():
            for path in files:
                self._restore_instance(path)
        for found in batches:
            await self._restore_batch(found)
        if incoming or batches:
            self.log.info("restored", patients=len(self._patients), batches=len(batches))

    def _restore_instance(self, path: Path) -> None:
        stored = readable(path, self._routing_tags)
        patient_id = _text(stored.keep_values_of(self._value_tags).tags.get(self._identifier)) if stored else ""
        if stored is None or not patient_id:
            self.log.warning("restore_skipped_file", file=path.name)
            return
        patient = self._patient(patient_id)
        if not patient.instances:  # the first file of this patient: its inputs read their own state
            assert self._store is not None
            for holder in patient.inputs.values():
                holder.restore(self._store.incoming / patient.folder)
        self._keep(patient, stored, _take(patient.inputs, stored, list(patient.inputs)))
        patient.dirty = True
        patient.last_received_wall = path.stat().st_mtime

    async def _restore_batch(self, found: BatchFolder) -> None:
        assert self._outbox is not None
        inputs = {name: kind() for name, kind in self.inputs.items()}
        for holder in inputs.values():
            holder.restore(found.folder)
        patient_id = str(found.record.get("patient_id") or "")
        for path in found.files:
            stored = readable(path, self._routing_tags)
            if stored is None:
                continue
            stored.keep_values_of(self._value_tags)
            patient_id = patient_id or _text(stored.tags.get(self._identifier))
            for name in _take(inputs, stored, list(inputs)):
                inputs[name].add(stored)
        sender = found.record.get("sender")
        batch = _Batch(found.batch_id, patient_id, found.folder, inputs, Sender(**sender) if isinstance(sender, dict) else None)
        submitted = found.record.get("state") == "submitted" or self._outbox.known(found.batch_id)
        self.log.info("batch_resumed", batch=batch.batch_id, patient=batch.hashed, submitted=submitted)
        if submitted:
            self._await_export(batch)
        else:
            self._enqueue(batch)


async def _pipeline_worker(arguments: dict[str, object], channel: WorkerChannel) -> None:
    """A receiving worker of ``Pipeline(workers=N)``: the pipeline class built again from its settings."""
    kind, settings = arguments["kind"], arguments["settings"]
    assert isinstance(kind, type) and issubclass(kind, Pipeline) and isinstance(settings, dict)
    pipeline = kind(**{**settings, "port": arguments["port"]})
    if pipeline.worker_setup is not None:
        pipeline.worker_setup()
    pipeline.log = pipeline.log.bind(worker=channel.index)
    await pipeline._serve_worker(str(arguments["root"]), int(str(arguments["workers"])), channel)


async def _measure(store: PipelineStore) -> None:
    """A worker's view of the data directory's size, for the quota (the others store too)."""
    while True:
        await anyio.sleep(_MEASURE_INTERVAL)
        store.used = store.measure()


def _stateful_routing(kind: type[Input]) -> bool:
    """Whether an input's choice depends on what it already holds (only the owner of the state knows)."""
    alternatives: tuple[type[Input], ...] = getattr(kind, "alternatives", ()) or (kind,)
    return any(a.enforce_single_series or a.enforce_single_study_date for a in alternatives)


def _stored_message(info: AssociationInfo, routed: _Routed) -> dict[str, object]:
    """A worker's report of a kept instance: what the owner of the state needs to route it."""
    stored = routed.stored
    return {
        "event": "stored",
        "association": info.id,
        "sender": [info.calling_ae, info.peer_host, info.peer_port],
        "patient_id": routed.patient_id,
        "inputs": routed.names,
        "path": str(stored.path),
        "sop_instance_uid": stored.sop_instance_uid,
        "transfer_syntax": stored.transfer_syntax,
        "size": stored.size,
        "tags": {str(tag): raw.decode("latin-1") for tag, raw in stored.tags.items()},
    }


def _decode_stored(payload: Mapping[str, object]) -> tuple[_Routed, int, Sender]:
    """The other side of :func:`_stored_message`."""
    tags, sender = payload["tags"], payload["sender"]
    assert isinstance(tags, dict) and isinstance(sender, list)
    ae, host, port = sender
    stored = StoredInstance(
        str(payload["sop_instance_uid"]),
        Path(str(payload["path"])),
        str(payload["transfer_syntax"]),
        {int(tag): str(raw).encode("latin-1") for tag, raw in tags.items()},
        int(str(payload["size"])),
    )
    names = payload["inputs"]
    assert isinstance(names, list)
    routed = _Routed(str(payload["patient_id"]), stored, [str(name) for name in names])
    return routed, int(str(payload["association"])), Sender(str(ae), str(host), int(port))


def _take(
    inputs: Mapping[str, Input], stored: StoredInstance, candidates: Sequence[str], decided: Collection[str] = ()
) -> list[str]:
    """The patient's inputs that take ``stored``: those claiming it as theirs alone (a
    HistoricInput's priors), else the ``candidates`` (the stateless routing's) accepting it;
    those in ``decided`` already did (their answer does not depend on the patient)."""
    claimed = [name for name, holder in inputs.items() if holder.claims(stored)]
    return claimed or [name for name in candidates if name in decided or inputs[name].accepts(stored)]


def _reason(exc: BaseException) -> str:
    """An OS error's reason without its paths (they hold patient folders; senders see this)."""
    while not isinstance(exc, OSError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _text(raw: bytes | None) -> str:
    return text(raw) if raw is not None else ""


def _new_batch_id() -> str:
    """Sortable by creation time, unique across restarts."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"


def _record(state: str, patient_id: str, sender: Sender | None) -> dict[str, object]:
    return {"state": state, "patient_id": patient_id, "sender": asdict(sender) if sender is not None else None, "time": time.time()}


def _exports(result: object) -> list[Exporter]:
    """``process``'s result as a list of exporters; anything else is a failure of process."""
    from aiodicom.pipeline.export import Exporter

    if result is None:
        return []
    items = [result] if isinstance(result, Exporter) else result
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise TypeError(f"process() must return an Exporter, a list of them or None, not {type(result).__name__}")
    for item in items:
        if not isinstance(item, Exporter):
            raise TypeError(f"process() returned {type(item).__name__}, not an Exporter")
    return list(items)


def _outbox_status(outbox: Outbox) -> dict[str, object]:
    """The outbox's snapshot as plain JSON-ready values."""
    status = outbox.status()
    names = ("pending", "exporting", "retrying", "delivered", "dead_lettered", "last_errors")
    return {name: list(value) if isinstance(value := getattr(status, name, None), tuple) else value for name in names}
