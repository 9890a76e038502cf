"""A DICOM SCP: listens, negotiates, and runs async handlers for DIMSE requests.

Structured concurrency: :meth:`Server.serve` owns an anyio task group, one task
per established association; shutting down stops accepting, lets associations
finish within a grace period, then aborts the rest. Nothing outlives ``serve``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path

import anyio
import anyio.abc

from aiodicom._log import get_logger
from aiodicom.codec.uids import UNCOMPRESSED_TRANSFER_SYNTAXES
from aiodicom.dimse.association import AssociationInfo, DimseAssociation
from aiodicom.dimse.balance import BalancedListener, seat_for
from aiodicom.dimse.events import ServerObserver
from aiodicom.dimse.services import Service, ServiceRegistry
from aiodicom.dimse.services.storage import Storage, StoreHandler
from aiodicom.dimse.services.verification import EchoHandler, Verification
from aiodicom.dimse.store import GroupSync, SpoolDirectory, SpoolFiles
from aiodicom.dimse.workers import WorkerPool, server_pool, usable_workers
from aiodicom.errors import AssociationError, ConfigurationError, DicomTimeoutError
from aiodicom.transport.address import check_port
from aiodicom.transport.association import DEFAULT_TIMEOUTS, Association, DicomProtocol, Timeouts
from aiodicom.transport.budget import MemoryBudget
from aiodicom.ul import pdu as P
from aiodicom.ul.machine import Role
from aiodicom.ul.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    AcceptedContext,
    AcceptorPolicy,
    negotiate,
)

AssociationHook = Callable[[AssociationInfo], Awaitable[None]]

_log = get_logger("aiodicom.server")
#: Seconds the on_aborted hooks of associations aborted at shutdown get to run.
_HOOK_GRACE = 2.0


class Server:
    """An SCP for C-ECHO and C-STORE (more services build on the same loop).

    Handlers return a status code (``None`` means success), or a
    :class:`~aiodicom.Status` with an ``error_comment`` the peer gets as
    (0000,0902), e.g. ``Status(0xA900, error_comment="no PatientID")``. A store handler
    must have kept the data (e.g. :meth:`ReceivedInstance.save`) before it
    returns success: the sender deletes its copy when it reads that status.
    An exception in a handler answers 0xA700 (out of resources) for C-STORE
    so the sender keeps its data and may retry.

    Before any handler runs, a data set is checked: its element structure
    (walked as it arrives; truncated or garbage: 0xC000) and its SOP Class and
    Instance UIDs against the command's (missing: 0xC000, different: 0xA900).

    :param ae_title: our AE title, answered in A-ASSOCIATE-AC.
    :param host: the address to listen on; 127.0.0.1 by default, so nothing on the network
        reaches a server that was not told to listen there (``"0.0.0.0"``: every interface).
    :param port: the TCP port; 0 takes a free one (``task_group.start(server.serve)`` returns it).
    :param on_store: ``async (ReceivedInstance) -> status | None``, once per C-STORE.
        Without it, storage SOP classes are not accepted.
    :param on_echo: ``async (AssociationInfo) -> status | None`` for C-ECHO (default: success).
    :param on_released: ``async (AssociationInfo) -> None`` after an association was released
        and all its requests handled.
    :param on_aborted: like ``on_released``, after an association ended any other way.
    :param sop_classes: abstract syntaxes to accept (default: Verification, and every storage
        SOP class when ``on_store`` is given).
    :param transfer_syntaxes: transfer syntaxes to accept, in our order of preference.
    :param accept_any_transfer_syntax: also accept syntaxes not listed (compressed data kept as sent).
    :param require_called_ae: reject associations whose called AE title is not ``ae_title``.
    :param calling_ae_allowlist: accept only these calling AE titles (``None``: any).
    :param max_associations: associations at once; the next is rejected as transient, so the
        sender retries later. Connections at once are capped at twice this plus 8.
    :param max_pdu_length: the largest PDU we announce.
    :param max_pdu_cap: the largest PDU we accept from a peer that ignores ``max_pdu_length``
        (default: twice it, at least 1 MiB); larger ones abort the association.
    :param max_operations: requests a peer may have outstanding on one association (the
        asynchronous operations window we grant).
    :param ssl: a server-side ``ssl.SSLContext`` to serve DICOM over TLS.
    :param timeouts: the waits the server bounds (:class:`Timeouts`).
    :param spool_dir: where data sets larger than ``memory_threshold`` are written as they
        arrive (default: ``aiodicom-spool-<uid>`` in the system's temporary folder when it is
        a private folder of ours, else a fresh temporary folder). Several
        processes may share it: each takes its own folder in it, removes the folders of
        processes that are gone (kill -9) at start, and its own at stop, with ``spool_dir``
        itself once empty. On the file system of the archive, :meth:`ReceivedInstance.save`
        is a rename.
    :param memory_threshold: data sets up to this many bytes stay in memory.
    :param backlog: the listening socket's accept queue length.
    :param services: more services to run beside verification and storage (their SOP classes
        are accepted too unless ``sop_classes`` says otherwise).
    :param policy: the negotiation settings as one object; when given, it replaces ``ae_title``,
        ``sop_classes`` (an empty ``supported`` is filled from the services),
        ``transfer_syntaxes``, ``accept_any_transfer_syntax``, ``require_called_ae``,
        ``calling_ae_allowlist``, ``max_pdu_length`` and ``max_operations``.
    :param fsync: flush every file a handler saved with :meth:`ReceivedInstance.save`, and
        its folder, to disk before Success is sent (survives a power loss, not only a
        crash), in batches shared by concurrent associations (:class:`GroupSync`).
    :param routing_tags: top-level tags the store handler reads (``instance.tags(...)``), beyond
        the common ones: collected by the structure walk as each data set arrives, so reading
        them costs no second pass over the bytes (a pipeline's routing keys).
    :param reuse_port: set SO_REUSEPORT on the listener, so other processes can serve the port.
    :param listen_fd: accept on this inherited, already listening socket instead of binding
        ``host:port`` (each worker of a pool accepts on the pool's one socket). The server
        takes the descriptor over and closes it when it stops, so once every process
        holding the socket has stopped, new connections are refused rather than queued.
        A pool's socket comes with its workers' shared connection counts: this server
        then accepts only in its turn (:mod:`aiodicom.dimse.balance`).
    :param workers: processes serving the port (:mod:`aiodicom.dimse.workers`), each with its
        own event loop, accepting on one shared listening socket in turns (a worker
        accepts while no other has fewer open connections: :mod:`aiodicom.dimse.balance`);
        1 on platforms other than Linux. With more than one, every argument goes to the
        workers by pickle (handlers must be importable, module-level; no ``ssl`` context or
        ``observer``) and the caps are split between them: memory evenly, associations and
        connections up to twice a fair share each (:func:`~aiodicom.dimse.workers.share`),
        so the whole receiver holds at most twice ``max_associations``.
    """

    def __init__(
        self,
        ae_title: str = "AIODICOM",
        host: str = "127.0.0.1",
        port: int = 11112,
        *,
        on_store: StoreHandler | None = None,
        on_echo: EchoHandler | None = None,
        on_released: AssociationHook | None = None,
        on_aborted: AssociationHook | None = None,
        sop_classes: Collection[str] | None = None,
        transfer_syntaxes: tuple[str, ...] = UNCOMPRESSED_TRANSFER_SYNTAXES,
        accept_any_transfer_syntax: bool = False,
        require_called_ae: bool = False,
        calling_ae_allowlist: Collection[str] | None = None,
        max_associations: int = 64,
        max_connections: int | None = None,
        max_connections_per_host: int | None = None,
        max_memory: int = 512 * 1024 * 1024,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        max_pdu_cap: int | None = None,
        max_operations: int = 1,
        ssl: _ssl.SSLContext | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        spool_dir: str | Path | None = None,
        memory_threshold: int = 1024 * 1024,
        backlog: int = 128,
        observer: ServerObserver | None = None,
        fsync: bool = False,
        reuse_port: bool = False,
        workers: int = 1,
        services: Sequence[Service] = (),
        policy: AcceptorPolicy | None = None,
        routing_tags: Collection[int] = (),
        listen_fd: int | None = None,
    ) -> None:
        # What each worker process builds its own Server from (workers > 1): every argument.
        self._arguments = {name: value for name, value in locals().items() if name not in ("self", "workers")}
        self.host = host
        #: The port to listen on; once serving, the port actually bound (useful with 0).
        self.port = check_port(port, listening=True)
        self.on_released = on_released
        self.on_aborted = on_aborted
        #: Gets counts and timings (associations, requests, rejections) when set; see aiodicom.metrics.
        self.observer = observer
        self._syncer = GroupSync() if fsync else None
        self.memory_threshold = memory_threshold
        # Lenient with peers exceeding our maximum, within a hard cap.
        max_pdu_length = policy.max_pdu_length if policy is not None else max_pdu_length
        self.max_pdu_cap = max_pdu_cap or max(2 * max_pdu_length, 1024 * 1024)
        if max_memory < 2 * self.max_pdu_cap:
            raise ConfigurationError(
                f"max_memory ({max_memory} bytes) must be at least twice the PDU cap "
                f"({self.max_pdu_cap} bytes)"
            )
        #: PDU buffers and in-memory data sets of all connections, together.
        self.memory = MemoryBudget(max_memory)
        #: The C-STORE service (its spool opens with :meth:`serve`).
        self.storage = Storage(
            on_store,
            memory_threshold=memory_threshold,
            budget=self.memory,
            observer=observer,
            syncer=self._syncer,
            routing_tags=routing_tags,
        )
        #: Every service this server runs; the accepted SOP classes derive from it.
        self.services = ServiceRegistry([Verification(on_echo, observer=observer), self.storage, *services])
        if policy is None:
            policy = AcceptorPolicy(
                ae_title=ae_title,
                supported=dict.fromkeys(
                    self.services.sop_classes if sop_classes is None else sop_classes, transfer_syntaxes
                ),
                accept_any_transfer_syntax=accept_any_transfer_syntax,
                require_called_ae=require_called_ae,
                calling_ae_allowlist=calling_ae_allowlist,
                max_pdu_length=max_pdu_length,
                max_operations_performed=max_operations,
                accept_scp_role_for=self.services.scp_roles,
            )
        elif not policy.supported:
            policy.supported = dict.fromkeys(self.services.sop_classes, transfer_syntaxes)
        #: What this server accepts (:class:`~aiodicom.ul.negotiation.AcceptorPolicy`); the
        #: keyword arguments above build it when none is given.
        self.policy = policy
        #: Our title without insignificant spaces (an invalid one raised InvalidAETitleError).
        self.ae_title = self.policy.ae_title
        self.max_associations = max_associations
        #: Open connections, associated or not (TLS handshakes included).
        self.max_connections = max_connections or max_associations * 2 + 8
        #: Open connections from one peer address: one host cannot take every slot. The
        #: default lets one host use every association (and get A-ASSOCIATE-RJ, not a
        #: reset, beyond them) while leaving as many connections to everyone else.
        self.max_connections_per_host = max_connections_per_host or max_associations + 8
        self._per_host: dict[str, int] = {}
        self.ssl = ssl
        self.timeouts = timeouts
        self.backlog = backlog
        self._spool_base = Path(spool_dir) if spool_dir is not None else None
        #: This server's own spool folder (inside ``spool_dir``) while it serves.
        self.spool_dir: Path | None = None
        self._spool_folder: SpoolDirectory | None = None
        self._spool: SpoolFiles | None = None
        self._connections: set[DicomProtocol] = set()
        self._associations: set[Association] = set()
        #: Association tasks still running (an association, then its hook).
        self._running = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stop: asyncio.Event | None = None
        self._grace = 10.0
        self.log = _log.bind(ae=self.ae_title)
        self.reuse_port = reuse_port
        self.listen_fd = listen_fd
        #: Accepts in turn with the other workers when ``listen_fd`` is a pool's socket.
        self._balanced: BalancedListener | None = None
        #: Processes serving the port (see aiodicom.dimse.workers); 1 on platforms other than Linux.
        self.workers = usable_workers(workers)
        self._pool: WorkerPool[dict[str, object]] | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept associations until :meth:`shutdown` (or cancellation).

        With ``task_group.start(server.serve)`` the bound port is returned once
        the listener is up, so ``port=0`` works.
        """
        if self.workers > 1:  # N processes, each its own Server from the same arguments
            self._pool = server_pool(
                self._arguments, self.workers, memory_floor=2 * self.max_pdu_cap, on_port=self._bound
            )
            await self._pool.serve(task_status=task_status)
            return
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        base = self._spool_base
        self._spool_folder = SpoolDirectory(base) if base is not None else SpoolDirectory.private()
        self.spool_dir = self._spool_folder.open()
        self._spool = SpoolFiles(self.spool_dir)
        self.storage.open(self._spool)
        try:
            listener = await self._listen(loop)
        except OSError:
            self._close_spool()
            raise
        try:
            self.port = listener.sockets[0].getsockname()[1]
            self.log = self.log.bind(port=self.port)
            self.log.info("listening", host=self.host, tls=self.ssl is not None)
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                task_status.started(self.port)
                try:
                    await self._stop.wait()
                finally:
                    listener.close()
                    with anyio.CancelScope(shield=True):
                        await self._drain()
                    task_group.cancel_scope.cancel()
        finally:
            listener.close()
            for protocol in list(self._connections):
                if protocol.transport is not None:
                    protocol.transport.abort()
            self._task_group = None
            self._close_spool()
            self.log.info("stopped")

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> asyncio.Server | BalancedListener:
        if self.listen_fd is not None:
            sock = socket.socket(fileno=self.listen_fd)
            sock.setblocking(False)
            seat = seat_for(self.listen_fd)
            if seat is None:
                return await loop.create_server(self._protocol_factory, sock=sock, backlog=self.backlog)
            sock.listen(self.backlog)
            self._balanced = BalancedListener(sock, seat, self._protocol_factory)
            return self._balanced
        return await loop.create_server(
            self._protocol_factory,
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )

    def _bound(self, port: int) -> None:
        self.port = port

    def _close_spool(self) -> None:
        self.storage.close()
        if self._spool is not None:
            self._spool.close()
        if self._spool_folder is not None:
            self._spool_folder.close()

    async def _drain(self) -> None:
        # Waits for association tasks, not only open associations, so the on_released
        # hooks finish too. The grace is read on every turn: shutdown(0) ends it.
        started = anyio.current_time()
        while self._running and anyio.current_time() - started < self._grace:
            await anyio.sleep(0.05)
        for association in list(self._associations):
            association.log.warning("aborting_at_shutdown")
            association.abort()
        with anyio.move_on_after(_HOOK_GRACE):  # their on_aborted hooks
            while self._running:
                await anyio.sleep(0.05)

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting; associations get ``grace`` seconds to finish, then are aborted.

        Called again while they finish, the new ``grace`` counts from the first call:
        ``shutdown(0)`` aborts the rest at once.
        """
        self._grace = grace
        if self._pool is not None:
            self._pool.shutdown(grace)
        if self._stop is not None:
            self._stop.set()

    @property
    def active_associations(self) -> int:
        """Associations established and not yet ended (for status pages and metrics)."""
        return len(self._associations)

    # --- per connection ---------------------------------------------------------------

    def _protocol_factory(self) -> DicomProtocol:
        return DicomProtocol(
            Role.ACCEPTOR,
            timeouts=self.timeouts,
            command_decoder=self.services.decoder,
            max_pdu_cap=self.max_pdu_cap,
            negotiate=self._negotiate,
            on_established=self._on_established,
            on_closed=self._on_closed,
            admit=self._admit,
            log=self.log,
            budget=self.memory,
            tls=self.ssl,  # the handshake runs once admitted, so it counts as a connection
        )

    def _admit(self, protocol: DicomProtocol) -> bool:
        host = protocol.peer[0]
        from_host = self._per_host.get(host, 0)
        if len(self._connections) >= self.max_connections:
            reason = "connection_limit"
        elif from_host >= self.max_connections_per_host:
            reason = "connection_limit_per_host"
        else:
            self._connections.add(protocol)
            self._per_host[host] = from_host + 1
            return True
        protocol.log.warning("connection_refused", reason=reason)
        if self.observer is not None:
            self.observer.association_rejected(reason)
        return False

    def _on_closed(self, protocol: DicomProtocol) -> None:
        if self._balanced is not None:
            self._balanced.connection_closed(protocol)
        if protocol not in self._connections:
            return
        self._connections.discard(protocol)
        host = protocol.peer[0]
        left = self._per_host.get(host, 1) - 1
        if left > 0:
            self._per_host[host] = left
        else:
            self._per_host.pop(host, None)

    def _negotiate(
        self, rq: P.AssociateRQ
    ) -> tuple[P.AssociateAC | P.AssociateRJ, list[AcceptedContext]]:
        if len(self._associations) >= self.max_associations or self._stop is None or self._stop.is_set():
            answer: tuple[P.AssociateAC | P.AssociateRJ, list[AcceptedContext]] = (
                P.AssociateRJ(
                    P.RJ_TRANSIENT, P.RJ_SOURCE_PRESENTATION, P.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED
                ),
                [],
            )
        else:
            answer = negotiate(rq, self.policy)
        if self.observer is not None and isinstance(answer[0], P.AssociateRJ):
            rj = answer[0]
            self.observer.association_rejected(_REJECTIONS.get((rj.source, rj.reason), "other"))
        return answer

    def _on_established(self, association: Association) -> None:
        self._associations.add(association)
        if self._task_group is None:  # pragma: no cover - listener closed in between
            association.abort()
            return
        self._task_group.start_soon(self._run_counted, association)

    async def _run_counted(self, association: Association) -> None:
        self._running += 1
        try:
            await self._run_association(association)
        finally:
            self._running -= 1

    async def _run_association(self, association: Association) -> None:
        dimse = DimseAssociation(
            association, self.services.handlers, max_operations=self.policy.max_operations_performed
        )
        info = dimse.info
        log = association.log
        released = False
        started = time.monotonic()
        if self.observer is not None:
            self.observer.association_started()
        try:
            await dimse.run()  # every request answered when the peer asks to release
            association.accept_release()
            released = True
            log.info("association_released")
        except DicomTimeoutError as exc:
            log.warning("association_timeout", error=str(exc))
            association.abort()
        except AssociationError as exc:
            log.info("association_ended", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug or hostile input ends this association only
            log.error("association_failed", error=repr(exc))
            association.abort()
        finally:  # also when cancelled at shutdown: the observer's active count never leaks
            self._associations.discard(association)
            if self.observer is not None:
                self.observer.association_ended("released" if released else "aborted", time.monotonic() - started)
        await association.wait_closed()
        hook = self.on_released if released else self.on_aborted
        if hook is not None:
            try:
                await hook(info)
            except Exception:
                log.exception("association_hook_failed")

#: A-ASSOCIATE-RJ (source, reason) -> the word an observer gets.
_REJECTIONS = {
    (P.RJ_SOURCE_PRESENTATION, P.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED): "association_limit",
    (P.RJ_SOURCE_PRESENTATION, P.RJ_PRESENTATION_TEMPORARY_CONGESTION): "congestion",
    (P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED): "called_ae",
    (P.RJ_SOURCE_USER, P.RJ_USER_CALLING_AE_NOT_RECOGNIZED): "calling_ae",
    (P.RJ_SOURCE_USER, P.RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED): "application_context",
    (P.RJ_SOURCE_ACSE, P.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED): "protocol_version",
}
