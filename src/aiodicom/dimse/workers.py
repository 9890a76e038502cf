"""Multi-core receive: N worker processes share one listening port, each with its own event loop.

One asyncio process decodes PDUs on one core; a receiver with many concurrent
senders needs more. :class:`WorkerPool` runs N copies of a receiver (a
:class:`~aiodicom.dimse.server.Server`, or ``aiodicom receive``) as separate
processes, ``python -m aiodicom.dimse.workers``: a fresh interpreter each (never a
fork of a running event loop, no threads). They accept on one listening socket
that the parent opens and they inherit (:func:`_listen`), in turns: a worker accepts
only while no other has fewer open connections, counted in memory they share
(:mod:`aiodicom.dimse.balance`). Multi-process receive is only offered on Linux,
where it is tested (:func:`usable_workers`).

How the parent and a worker talk:

- **Control: the worker's stdin.** ``stop <grace>`` lines make it shut down its
  server with that grace (a second line with a smaller grace cuts it short, as
  :meth:`Server.shutdown` does). End of file (the parent died, even by kill -9)
  stops it too, so no worker outlives its parent. Workers ignore SIGINT: a Ctrl-C
  reaches the whole process group and the parent decides; SIGTERM sent to a
  worker alone stops that worker gracefully.
- **Reports: a pipe per worker**, one JSON line per event: ``listening`` once the
  port is served, ``line`` for a line of text the parent prints on its stdout,
  ``stored`` for every instance a store handler kept (its saved
  paths, its routing tags). The parent exposes these as
  :meth:`WorkerPool.stored_instances`, an async iterator: the seam for handlers
  that need one place while the instances arrive in N processes. ``message``
  records carry a target's own JSON payloads (:meth:`WorkerChannel.message`, read
  with :meth:`WorkerPool.messages`): a pipeline's workers report what they stored
  for which patient and when each association ended, in order per worker.
- **Output: the parent is the only writer of stdout.** A worker's stdout is the
  parent's stderr; what users read on stdout (``receive``'s association lines)
  travels as ``line`` reports and the parent writes each line in one ``write``.
  Several processes writing lines to one pipe merge them: with
  ``PYTHONUNBUFFERED=1`` a ``print`` is two writes (the text, then the newline),
  and another process's line can land in between.

A worker that exits while the pool serves stops the whole pool: the others drain
within the grace and :meth:`WorkerPool.serve` raises :class:`WorkerError`. A
supervisor (systemd, Kubernetes) restarts the service; restarting one worker in
place would hide a crash loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TextIO, TypeVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiodicom._log import get_logger
from aiodicom.dimse.balance import BALANCE_WAIT, Balance, BalanceHandles, Column, inherit
from aiodicom.dimse.status import Status
from aiodicom.errors import AiodicomError, ConfigurationError

if TYPE_CHECKING:
    from aiodicom.dimse.store import ReceivedInstance

T = TypeVar("T")

_log = get_logger("aiodicom.workers")
#: Environment variable carrying a worker's pickled :class:`_Spec`.
_SPEC_VARIABLE = "AIODICOM_WORKER_SPEC"
#: Seconds a worker gets to start listening.
START_TIMEOUT = 60.0
#: A worker's grace when it is told to stop without one (SIGTERM to it alone, parent gone).
DEFAULT_GRACE = 10.0
#: Seconds past the grace (and the hooks' own grace) before a worker is killed.
KILL_MARGIN = 5.0
#: A worker's stdout: the parent's stderr (fd 2), so the parent is the only writer of its stdout.
_STDERR = 2
#: Accept queue of the pool's shared listening socket (each worker's Server sets its own backlog too).
LISTEN_BACKLOG = 128
#: Seconds a ``stored`` report may wait to be written with the next ones.
REPORT_DELAY = 0.05
#: Routing tags a ``stored`` report carries (what a per-patient or per-study queue keys on).
ROUTING_TAGS = ("patient_id", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid")


class WorkerError(AiodicomError):
    """A worker process failed to start or exited while the pool was serving."""


def reuse_port_supported() -> bool:
    """Whether the kernel balances connections over sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def usable_workers(requested: int) -> int:
    """``requested`` on Linux (where multi-process receive is tested), else 1 (with a warning)."""
    if requested < 1:
        raise ConfigurationError(f"workers must be at least 1, not {requested}")
    if requested > 1 and not reuse_port_supported():
        _log.warning("workers_unsupported", requested=requested, platform=sys.platform)
        return 1
    return requested


def share(total: int, workers: int) -> int:
    """One worker's share of a count cap (associations, connections): twice its fair share.

    Workers accept in turns (:mod:`aiodicom.dimse.balance`), so each holds about its fair
    share of the connections; but a worker takes connections out of turn while another
    stalls, and a connection counts before its association does. Each worker takes up
    to ``2 * total / workers`` (rounded up, never more than ``total``): 64 concurrent
    senders still all get in, and the whole receiver holds at most twice the cap.
    """
    return min(total, max(1, math.ceil(2 * total / workers)))


def split(total: int, workers: int) -> int:
    """One worker's share of a budget (memory): ``total / workers``, rounded up."""
    return max(1, math.ceil(total / workers))


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """An instance a worker's store handler kept, as reported to the parent."""

    worker: int
    #: Where the handler saved it (:attr:`ReceivedInstance.saved_paths`).
    paths: tuple[str, ...]
    size: int
    #: :data:`ROUTING_TAGS` that the data set has.
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerMessage:
    """A payload a worker's target sent with :meth:`WorkerChannel.message`."""

    worker: int
    payload: dict[str, object]


WorkerTarget = Callable[[T, "WorkerChannel"], Coroutine[object, object, None]]


@dataclass(frozen=True, slots=True)
class _Spec(Generic[T]):
    target: WorkerTarget[T]
    argument: T
    index: int
    report_fd: int
    listen_fd: int
    balance: BalanceHandles


def check_picklable(target: object, argument: object) -> None:
    """Everything a worker gets must reach it by pickle: handlers are module-level and importable.

    A lambda, a closure, a bound method of a local object or a function defined in
    the ``__main__`` script cannot be imported by a fresh interpreter.
    """
    for value in _callables(argument):
        if getattr(value, "__module__", None) == "__main__":
            raise ConfigurationError(
                f"with workers > 1, {getattr(value, '__qualname__', value)!r} must be importable: "
                "define it in a module, not in the __main__ script"
            )
    try:
        pickle.dumps((target, argument))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigurationError(
            "with workers > 1 every server argument is sent to the worker processes and must be "
            f"picklable; handlers must be module-level functions or instances of module-level "
            f"classes: {exc}"
        ) from None


def _callables(argument: object) -> list[object]:
    values = argument.values() if isinstance(argument, Mapping) else vars(argument).values()
    return [value for value in values if callable(value)]


# --- the worker side ----------------------------------------------------------------


class WorkerChannel:
    """A worker's line to its parent: reports out, stop requests in.

    ``stored`` reports are batched: written at most :data:`REPORT_DELAY` seconds
    after the first one waits, so the parent wakes once per batch rather than once
    per instance (a wake-up per instance cost the parent ~10% of the workers' CPU on
    two cores). Every other report flushes the batch first and goes at once, so
    reports keep their order; the batch is flushed when the worker stops.
    """

    def __init__(self, index: int, report_fd: int, listen_fd: int | None = None) -> None:
        self.index = index
        self._report_fd = report_fd
        #: The pool's listening socket, inherited: every worker accepts on it.
        self.listen_fd = listen_fd
        self.log = _log.bind(worker=index, pid=os.getpid())
        self._batch: list[bytes] = []
        self._flush_timer: asyncio.TimerHandle | None = None

    def _send(self, record: dict[str, object], *, batch: bool = False) -> None:
        self._batch.append(json.dumps(record).encode() + b"\n")
        if not batch:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(REPORT_DELAY, self.flush)

    def flush(self) -> None:
        """Write the waiting reports now."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        data, self._batch = b"".join(self._batch), []
        # A pipe the parent drains at once: a blocking write never waits long. A report
        # that cannot be sent (parent gone) must not fail a store already kept.
        try:
            while data:
                data = data[os.write(self._report_fd, data) :]
        except OSError as exc:
            self.log.error("worker_report_failed", error=str(exc))

    def message(self, payload: Mapping[str, object], *, batch: bool = False) -> None:
        """Send ``payload`` (JSON-ready) to the parent's :meth:`WorkerPool.messages` readers.

        Messages of one worker arrive in the order they were sent. With ``batch``, it
        may wait up to :data:`REPORT_DELAY` seconds for others (the next message sent
        without ``batch`` takes it along), so that the parent wakes once per batch.
        """
        self._send({"event": "message", "payload": payload}, batch=batch)

    def listening(self, port: int) -> None:
        """Tell the parent this worker serves ``port``."""
        self._send({"event": "listening", "port": port})

    def say(self, text: str) -> None:
        """Have the parent write ``text`` as one line on its stdout (workers never write there)."""
        self._send({"event": "line", "text": text})

    def stored(self, instance: ReceivedInstance) -> None:
        """Report an instance the handler kept (its paths and routing tags)."""
        tags = {name: value for name in ROUTING_TAGS if (value := getattr(instance, name, None))}
        self._send(
            {"event": "stored", "paths": [str(path) for path in instance.saved_paths], "size": instance.size, "tags": tags},
            batch=True,
        )

    async def report_active(self, active: Callable[[], int], interval: float = 0.5) -> None:
        """Report ``active()`` (open associations) every ``interval`` seconds, for status lines."""
        while True:
            self._send({"event": "active", "associations": active()})
            await anyio.sleep(interval)

    def reporting(
        self, handler: Callable[[ReceivedInstance], Awaitable[int | None]]
    ) -> Callable[[ReceivedInstance], Awaitable[int | None]]:
        """``handler``, reporting each instance it answered with success or a warning."""

        async def on_store(instance: ReceivedInstance) -> int | None:
            code = await handler(instance)
            status = code if isinstance(code, Status) else Status(code or 0)
            if status.is_success or status.is_warning:
                self.stored(instance)
            return code

        return on_store

    async def forward_stops(self, shutdown: Callable[[float], None]) -> None:
        """Call ``shutdown(grace)`` for every stop request, until cancelled.

        Requests: ``stop <grace>`` lines on stdin; end of file (the parent is gone) and
        SIGTERM (sent to this worker alone) with :data:`DEFAULT_GRACE`.
        """
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(self._read_control, shutdown)
            watchers.start_soon(self._watch_sigterm, shutdown)

    async def _read_control(self, shutdown: Callable[[float], None]) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            words = line.split()
            if len(words) == 2 and words[0] == b"stop":
                shutdown(float(words[1]))
        self.log.info("worker_parent_gone")
        shutdown(DEFAULT_GRACE)

    async def _watch_sigterm(self, shutdown: Callable[[float], None]) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                shutdown(DEFAULT_GRACE)


def _worker_main() -> None:
    """Entry point of a worker process (``python -m aiodicom.dimse.workers``)."""
    from aiodicom.runner import run

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards what a Ctrl-C means
    encoded = os.environ.pop(_SPEC_VARIABLE, None)
    if encoded is None:
        sys.exit("aiodicom.dimse.workers is started by WorkerPool, not by hand")
    spec: _Spec[object] = pickle.loads(base64.b64decode(encoded))  # noqa: S301 - from our parent
    channel = WorkerChannel(spec.index, spec.report_fd, spec.listen_fd)
    inherit(spec.listen_fd, spec.balance, spec.index)  # a Server given listen_fd accepts in turn
    try:
        run(spec.target, spec.argument, channel)
    except AiodicomError as exc:  # a configuration the parent did not catch: one line
        sys.exit(f"aiodicom worker {spec.index}: error: {exc}")
    finally:
        channel.flush()


async def serve_server(arguments: dict[str, object], channel: WorkerChannel) -> None:
    """A worker's target for ``Server(..., workers=N)``: one ``Server`` on the shared port."""
    from aiodicom.dimse.server import Server

    on_store = arguments.get("on_store")
    if on_store is not None:
        arguments = {**arguments, "on_store": channel.reporting(on_store)}  # type: ignore[arg-type]
    server = Server(**{**arguments, "listen_fd": channel.listen_fd})  # type: ignore[arg-type]
    await serve_until_stopped(server.serve, server.shutdown, channel)


def server_pool(
    arguments: dict[str, object],
    workers: int,
    *,
    memory_floor: int,
    on_port: Callable[[int], None] | None = None,
) -> WorkerPool[dict[str, object]]:
    """The pool behind ``Server(..., workers=N)``: each worker a Server from ``arguments``.

    Caps are split between the workers: ``max_memory`` evenly (never below
    ``memory_floor``, twice the PDU cap), ``max_associations`` and
    ``max_connections`` with headroom for an uneven spread (:func:`share`).
    """
    shares: dict[str, object] = {"max_memory": max(split(_count(arguments, "max_memory"), workers), memory_floor)}
    for name in ("max_associations", "max_connections"):
        if arguments.get(name) is not None:
            shares[name] = share(_count(arguments, name), workers)

    def worker_arguments(port: int) -> dict[str, object]:
        return {**arguments, **shares, "port": port}

    host = arguments.get("host")
    return WorkerPool(
        serve_server, worker_arguments, host=str(host), port=_count(arguments, "port"), workers=workers,
        on_port=on_port,
    )  # fmt: skip


def _count(arguments: dict[str, object], name: str) -> int:
    value = arguments[name]
    assert isinstance(value, int)
    return value


class _Serve(Protocol):
    def __call__(self, *, task_status: anyio.abc.TaskStatus[int]) -> Awaitable[None]: ...


async def serve_until_stopped(serve: _Serve, shutdown: Callable[[float], None], channel: WorkerChannel) -> None:
    """Run ``serve`` (``Server.serve``-like), tell the parent its port, forward stop requests.

    Returns when ``serve`` does.
    """
    async with anyio.create_task_group() as group:

        async def serve_then_stop(*, task_status: anyio.abc.TaskStatus[int]) -> None:
            await serve(task_status=task_status)
            group.cancel_scope.cancel()

        channel.listening(await group.start(serve_then_stop))
        await channel.forward_stops(shutdown)


# --- the parent side ----------------------------------------------------------------


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    listening: anyio.Event = field(default_factory=anyio.Event)
    #: Set once every report the worker wrote has been read (its pipe reached end of file).
    reports_read: anyio.Event = field(default_factory=anyio.Event)
    #: Open associations, as last reported.
    active: int = 0


class WorkerPool(Generic[T]):
    """Run ``target(argument, channel)`` in ``workers`` processes sharing ``host:port``.

    ``target`` serves the inherited listening socket ``channel.listen_fd`` and calls
    ``channel.listening``; the parent opens that socket before the workers start,
    which makes ``port=0`` work: every worker gets the number the parent drew
    (``argument(port)`` builds each worker's argument;
    ``on_port(port)`` is called with it before the workers start). ``on_line(text)``
    gets each line a worker sends with :meth:`WorkerChannel.say` (default: written to stdout).
    The workers accept in turns (:mod:`aiodicom.dimse.balance`); a worker that is ahead
    takes a waiting connection anyway once the others accepted nothing for ``balance_wait``
    seconds.
    """

    def __init__(
        self,
        target: WorkerTarget[T],
        argument: Callable[[int], T],
        *,
        host: str,
        port: int,
        workers: int,
        on_port: Callable[[int], None] | None = None,
        on_line: Callable[[str], None] | None = None,
        balance_wait: float = BALANCE_WAIT,
    ) -> None:
        self._on_port = on_port
        #: Seconds a worker ahead lets a connection wait for stalled others (aiodicom.dimse.balance).
        self._balance_wait = balance_wait
        self._balance: Balance | None = None
        self._on_line = on_line or write_line
        #: The argument of each worker, from the port the parent reserved.
        self._argument = argument
        self.target = target
        self.host = host
        self.port = port
        self.workers = workers
        self._workers: list[_Worker] = []
        self._stop = anyio.Event()
        self._grace = 10.0
        self._subscribers: list[MemoryObjectSendStream[StoredInstance]] = []
        self._readers: list[MemoryObjectSendStream[WorkerMessage]] = []
        #: Instances and bytes the workers reported stored.
        self.instances = 0
        self.bytes = 0
        #: Set when a worker ended the pool (exited or failed to start).
        self.failure: WorkerError | None = None

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop every worker: each drains its associations within ``grace`` seconds.

        Called again, ``shutdown(0)`` aborts what is left at once.
        """
        self._grace = min(grace, self._grace) if self._stop.is_set() else grace
        self._stop.set()
        for worker in self._workers:
            _tell(worker, f"stop {grace}\n")

    def stored_instances(self) -> AsyncIterator[StoredInstance]:
        """Every instance stored by any worker from now on, until the pool stops."""
        send, receive = anyio.create_memory_object_stream[StoredInstance](math.inf)
        self._subscribers.append(send)
        return _iterate(receive)

    def messages(self) -> MemoryObjectReceiveStream[WorkerMessage]:
        """Every :meth:`WorkerChannel.message` of any worker from now on, until the pool stops.

        Subscribe before :meth:`serve`; the stream ends after the last worker's last
        message was read, so a reader sees everything the workers sent (``receive_nowait``
        takes what has already arrived, e.g. to apply it as one batch).
        """
        send, receive = anyio.create_memory_object_stream[WorkerMessage](math.inf)
        self._readers.append(send)
        return receive

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, serve until :meth:`shutdown`, stop them all.

        :raises WorkerError: a worker could not start, or exited while serving.
        """
        listener = _listen(self.host, self.port)
        try:
            self._balance = balance = Balance(self.workers, self._balance_wait)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        if self._on_port is not None:
            self._on_port(self.port)
        log = _log.bind(port=self.port, workers=self.workers)
        try:
            argument = self._argument(self.port)
            check_picklable(self.target, argument)
            async with anyio.create_task_group() as group:
                for index in range(self.workers):
                    worker = await self._spawn(group, index, argument, listener.fileno())
                    self._workers.append(worker)
                    group.start_soon(self._watch_exit, worker)
                await self._wait_listening()
                listener.close()  # the workers hold it: once they all stop, connections are refused
                if self.failure is None:
                    log.info("workers_listening", pids=[w.process.pid for w in self._workers])
                    task_status.started(self.port)
                    await self._stop.wait()
                    if self.failure is None:
                        self.shutdown(self._grace)  # tells workers started after the first call
                with anyio.CancelScope(shield=True):
                    await self._wait_all(self._grace + KILL_MARGIN)
                    await self._read_all_reports()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._kill_all()
            listener.close()
            for subscriber in self._subscribers:
                subscriber.close()
            for reader in self._readers:
                reader.close()
            log.info("workers_stopped", instances=self.instances, **self._balance_report())
            balance.close()
            self._balance = None
        if self.failure is not None:
            raise self.failure

    async def _spawn(self, group: anyio.abc.TaskGroup, index: int, argument: T, listen_fd: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        assert self._balance is not None
        handles = self._balance.handles
        spec = _Spec(self.target, argument, index, write_fd, listen_fd, handles)
        env = {**os.environ, _SPEC_VARIABLE: base64.b64encode(pickle.dumps(spec)).decode()}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiodicom.dimse.workers",
                stdin=asyncio.subprocess.PIPE, stdout=_STDERR, pass_fds=(write_fd, listen_fd, *handles.fds), env=env,
            )  # fmt: skip
        finally:
            os.close(write_fd)
        worker = _Worker(index, process)
        group.start_soon(self._read_reports, worker, read_fd)
        return worker

    async def _read_reports(self, worker: _Worker, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while line := await reader.readline():
                self._on_report(worker, json.loads(line))
        finally:
            transport.close()
            worker.reports_read.set()

    async def _read_all_reports(self) -> None:
        """Wait until the reports of exited workers are read: their last lines and counts too."""
        with anyio.move_on_after(KILL_MARGIN):
            for worker in self._workers:
                if worker.process.returncode is not None:
                    await worker.reports_read.wait()

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, in worker order (once started)."""
        return [worker.process.pid for worker in self._workers]

    def connections(self) -> list[int]:
        """Open connections of each worker now, in worker order (the counts they balance on)."""
        return self._balance.table.column(Column.CONNECTIONS) if self._balance is not None else []

    def _balance_report(self) -> dict[str, list[int]]:
        """Per worker: connections accepted, wake-ups another worker won, out-of-turn accepts."""
        if self._balance is None:
            return {}
        table = self._balance.table
        return {
            "accepted": table.column(Column.ACCEPTED),
            "missed": table.column(Column.MISSED),
            "out_of_turn": table.column(Column.OUT_OF_TURN),
        }

    @property
    def active_associations(self) -> int:
        """Open associations in every worker, as last reported (workers report it for status lines)."""
        return sum(worker.active for worker in self._workers)

    def _on_report(self, worker: _Worker, record: dict[str, object]) -> None:
        handle = self._REPORTS.get(str(record.get("event")), WorkerPool._on_stored)
        handle(self, worker, record)

    def _on_listening(self, worker: _Worker, record: dict[str, object]) -> None:
        worker.listening.set()

    def _on_active(self, worker: _Worker, record: dict[str, object]) -> None:
        count = record.get("associations")
        worker.active = count if isinstance(count, int) else 0

    def _on_said(self, worker: _Worker, record: dict[str, object]) -> None:
        self._on_line(str(record.get("text", "")))

    def _on_message(self, worker: _Worker, record: dict[str, object]) -> None:
        payload = record.get("payload")
        message = WorkerMessage(worker.index, payload if isinstance(payload, dict) else {})
        for reader in self._readers:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                reader.send_nowait(message)

    def _on_stored(self, worker: _Worker, record: dict[str, object]) -> None:
        paths = record.get("paths")
        size = record.get("size")
        tags = record.get("tags")
        stored = StoredInstance(
            worker.index,
            tuple(str(p) for p in paths) if isinstance(paths, list) else (),
            size if isinstance(size, int) else 0,
            {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
        )
        self.instances += 1
        self.bytes += stored.size
        for subscriber in self._subscribers:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                subscriber.send_nowait(stored)

    _REPORTS: Mapping[str, Callable[[WorkerPool[T], _Worker, dict[str, object]], None]] = {
        "listening": _on_listening,
        "active": _on_active,
        "line": _on_said,
        "message": _on_message,
        "stored": _on_stored,
    }

    async def _wait_listening(self) -> None:
        with anyio.move_on_after(START_TIMEOUT) as scope:
            for worker in self._workers:
                while not worker.listening.is_set() and self.failure is None:
                    with anyio.move_on_after(0.05):
                        await worker.listening.wait()
        if scope.cancelled_caught and self.failure is None:
            self._fail(WorkerError(f"workers did not start listening within {START_TIMEOUT:g} s"))

    async def _watch_exit(self, worker: _Worker) -> None:
        code = await worker.process.wait()
        if not self._stop.is_set():
            what = "failed to start" if not worker.listening.is_set() else "exited"
            self._fail(WorkerError(f"worker {worker.index} (pid {worker.process.pid}) {what} with code {code}"))

    def _fail(self, error: WorkerError) -> None:
        _log.error("worker_failed", error=str(error))
        self.failure = error
        self.shutdown(self._grace)

    async def _wait_all(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            for worker in self._workers:
                await worker.process.wait()

    async def _kill_all(self) -> None:
        if any(worker.process.returncode is None for worker in self._workers):  # cancelled: stop now
            self.shutdown(0)
            await self._wait_all(KILL_MARGIN)
        for worker in self._workers:
            if worker.process.returncode is None:
                _log.warning("worker_killed", worker=worker.index, pid=worker.process.pid)
                worker.process.kill()
        for worker in self._workers:
            with anyio.move_on_after(KILL_MARGIN):
                await worker.process.wait()


def write_line(text: str, out: TextIO | None = None) -> None:
    """Write ``text`` and a newline to ``out`` (stdout) in one ``write``, then flush.

    ``print`` makes two writes (the text, then the end) when the stream is unbuffered
    (``PYTHONUNBUFFERED=1``), so another process writing to the same pipe can put its
    line between them.
    """
    out = out or sys.stdout
    out.write(text + "\n")
    out.flush()


def _tell(worker: _Worker, line: str) -> None:
    stdin = worker.process.stdin
    if stdin is None or stdin.is_closing() or worker.process.returncode is not None:
        return
    with contextlib.suppress(OSError, RuntimeError):
        stdin.write(line.encode())


async def _iterate(receive: anyio.abc.ObjectReceiveStream[T]) -> AsyncIterator[T]:
    async with receive:
        async for item in receive:
            yield item


def _listen(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """The pool's listening socket on ``host:port``, which every worker inherits and accepts on.

    One accept queue for all workers, not one per worker (SO_REUSEPORT): the kernel
    hashed each connection to a worker whatever its load, so 8 senders often went 6:2
    or 7:1 and one core did most of the work, and a worker cannot hand a connection
    hashed to it over to another. On one shared socket the workers take turns
    (:mod:`aiodicom.dimse.balance`). Without SO_REUSEPORT, a port another process
    serves is "address already in use".
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


if __name__ == "__main__":
    _worker_main()
