"""Exact accept balancing between the worker processes that share one listening socket.

The workers of a :class:`~aiodicom.dimse.workers.WorkerPool` accept on one inherited
listening socket. Left alone, whichever worker's loop reaches the socket first takes the
next connection: 8 concurrent senders into 2 workers split 4:4 only 8 times in 14 (5:3
four times, 6:2 twice), and one core idled while the other still worked.

Here the workers count their open connections in one small table of shared memory (a
memfd the pool creates before the workers start; each worker writes only its own row,
so no lock is needed), and **a worker accepts only while no other serving worker has
fewer open connections**. Ties accept (whichever gets there first), so at any moment at
least one worker reads the socket: when all workers are equally busy a connection does
not wait for the rule. Connections are counted from ``accept`` to close, not
associations: the count moves at once, before the peer's A-ASSOCIATE-RQ arrives, and a
connection is what an association occupies.

A worker that is ahead stops reading the socket (so it is not woken for connections that
are not its turn) and resumes when

- one of its own connections closes and it is its turn again;
- another worker accepts and its count says this worker's turn has come: that worker
  writes to this one's eventfd (one per worker, created by the pool too);
- or, every ``wait`` seconds while it is paused (5 times a second by default; a worker
  that is not ahead is never paused): it is its turn (a missed wake-up), or a connection
  is waiting and no other worker accepted anything during the last ``wait`` seconds (a
  worker that hangs or died): then it takes that connection out of turn. No connection
  waits longer than about twice ``wait`` because of the balancing.

Costs: nothing per message; per connection a few reads of the table, at most one
eventfd write and, for a paused worker, one wake-up. The shared socket wakes every
worker reading it for each connection, but a worker that is ahead is not reading: 8
concurrent senders cost no lost wake-up in 8 rounds, 64 senders one in 64 connections (one run)
(``missed`` in the pool's ``workers_stopped`` log line). So neither ``EPOLLEXCLUSIVE``
(which asyncio's selector does not offer) nor a ``SO_REUSEPORT`` socket per worker (the
kernel picks the worker by a hash, and a worker that is ahead could not hand the
connection over) would save anything measurable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from aiodicom._log import get_logger

if TYPE_CHECKING:
    from aiodicom.transport.association import DicomProtocol

_log = get_logger("aiodicom.workers")

#: Seconds a paused worker lets a waiting connection wait for the others to make progress.
BALANCE_WAIT = 0.2
#: Connections one wake-up accepts at most before the loop runs other callbacks.
_BATCH = 16
#: Seconds accepting rests after running out of descriptors or memory (as asyncio does).
_ACCEPT_RETRY_DELAY = 1.0
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Column(IntEnum):
    """The counters of one worker's row in the shared table."""

    #: Open connections: accepted and not yet closed.
    CONNECTIONS = 0
    #: Connections accepted since the start.
    ACCEPTED = 1
    #: 1 while the worker serves (reads or may read the socket); 0 before it starts and once it stops.
    SERVING = 2
    #: 1 while it waits for its turn (not reading the socket).
    PAUSED = 3
    #: Wake-ups for a connection another worker took first (the shared socket wakes every reader).
    MISSED = 4
    #: Connections taken while ahead, because the others took none for ``wait`` seconds.
    OUT_OF_TURN = 5


_WIDTH = len(Column)


class LoadTable:
    """One row of :class:`Column` counters per worker, in memory every worker maps.

    Each worker writes only its own row; readers may see a value a moment old, which
    at worst lets a worker accept one connection early (the balance is restored by the
    next accept) and never stops every worker at once.
    """

    def __init__(self, fd: int, workers: int) -> None:
        self.fd = fd
        self.workers = workers
        self._map = mmap.mmap(fd, workers * _WIDTH * 8)
        self._cells = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, workers: int) -> LoadTable:
        """A zeroed table in a fresh memfd (inheritable by ``pass_fds``, no file anywhere)."""
        fd = os.memfd_create("aiodicom-workers", os.MFD_CLOEXEC)
        os.ftruncate(fd, workers * _WIDTH * 8)
        return cls(fd, workers)

    def get(self, worker: int, column: Column) -> int:
        return self._cells[worker * _WIDTH + column]

    def set(self, worker: int, column: Column, value: int) -> None:
        self._cells[worker * _WIDTH + column] = value

    def add(self, worker: int, column: Column, delta: int = 1) -> None:
        self._cells[worker * _WIDTH + column] += delta

    def column(self, column: Column) -> list[int]:
        """``column`` of every worker, in worker order."""
        return [self._cells[worker * _WIDTH + column] for worker in range(self.workers)]

    def least(self) -> int:
        """The fewest open connections of any serving worker (0 when none serves)."""
        cells = self._cells
        counts = [
            cells[row + Column.CONNECTIONS] for row in range(0, self.workers * _WIDTH, _WIDTH) if cells[row + Column.SERVING]
        ]
        return min(counts, default=0)

    def has_turn(self, worker: int) -> bool:
        """Whether ``worker`` may accept: no serving worker has fewer open connections."""
        return self.get(worker, Column.CONNECTIONS) <= self.least()

    def close(self) -> None:
        self._cells.release()
        self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass(frozen=True, slots=True)
class BalanceHandles:
    """What a worker needs to take its turn, as inherited descriptors (picklable)."""

    table_fd: int
    #: One eventfd per worker: writing to one wakes that worker to re-check its turn.
    wake_fds: tuple[int, ...]
    wait: float = BALANCE_WAIT

    @property
    def fds(self) -> tuple[int, ...]:
        """The descriptors a worker process must inherit."""
        return (self.table_fd, *self.wake_fds)


class Balance:
    """The pool's side: the shared table and the workers' eventfds, made before the workers start."""

    def __init__(self, workers: int, wait: float = BALANCE_WAIT) -> None:
        self.table = LoadTable.create(workers)
        wake_fds: list[int] = []
        try:
            for _ in range(workers):
                wake_fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        except OSError:
            self.table.close()
            for fd in wake_fds:
                os.close(fd)
            raise
        self.handles = BalanceHandles(self.table.fd, tuple(wake_fds), wait)

    def close(self) -> None:
        for fd in self.handles.wake_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.table.close()


@dataclass(frozen=True, slots=True)
class Seat:
    """One worker's place in a pool's balance: its row and everyone's eventfds."""

    table: LoadTable
    index: int
    wake_fds: tuple[int, ...]
    wait: float


#: In a worker process: the pool's listening descriptor -> (its balance handles, this worker's index).
_INHERITED: dict[int, tuple[BalanceHandles, int]] = {}
_SEATS: dict[int, Seat] = {}


def inherit(listen_fd: int, handles: BalanceHandles, index: int) -> None:
    """Record, in a worker, that the pool's socket ``listen_fd`` is accepted on in turns."""
    _INHERITED[listen_fd] = (handles, index)


def seat_for(listen_fd: int) -> Seat | None:
    """The balance that comes with the inherited socket ``listen_fd`` (None: accept freely)."""
    if listen_fd not in _SEATS:
        inherited = _INHERITED.get(listen_fd)
        if inherited is None:
            return None
        handles, index = inherited
        table = LoadTable(handles.table_fd, len(handles.wake_fds))
        _SEATS[listen_fd] = Seat(table, index, handles.wake_fds, handles.wait)
    return _SEATS[listen_fd]


class BalancedListener:
    """Accepts on a shared listening socket, only in this worker's turn (module docstring).

    Hands each accepted socket to ``factory``'s protocol as ``loop.create_server`` would;
    the server calls :meth:`connection_closed` for every protocol that ends.
    """

    def __init__(self, sock: socket.socket, seat: Seat, factory: Callable[[], DicomProtocol]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._seat = seat
        self._table = seat.table
        self._index = seat.index
        self._factory = factory
        self._open: set[DicomProtocol] = set()
        #: Accepted sockets whose protocol is not made yet.
        self._pending = 0
        self._reading = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        #: The other workers' accepted total when the pause timer last looked.
        self._progress = 0
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._tasks: set[asyncio.Task[None]] = set()
        self.log = _log.bind(worker=seat.index)
        table, index = self._table, self._index
        table.set(index, Column.CONNECTIONS, 0)
        table.set(index, Column.SERVING, 1)
        self._loop.add_reader(seat.wake_fds[index], self._on_woken)
        self._resume()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def close(self) -> None:
        """Stop accepting; the other workers, no longer waiting for this one, re-check their turn."""
        if self._closed:
            return
        self._closed = True
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._loop.remove_reader(self._seat.wake_fds[self._index])
        self._cancel_timer()
        self._table.set(self._index, Column.SERVING, 0)
        self._table.set(self._index, Column.PAUSED, 0)
        self._wake_others()
        self._sock.close()

    def connection_closed(self, protocol: DicomProtocol) -> None:
        """Count ``protocol``'s connection as closed; this worker's turn may have come."""
        if protocol not in self._open:
            return
        self._open.discard(protocol)
        self._publish()
        if self._paused and self._table.has_turn(self._index):
            self._resume()

    # --- reading in turn ----------------------------------------------------------------

    @property
    def _paused(self) -> bool:
        return not self._closed and not self._reading

    def _on_readable(self) -> None:
        for attempt in range(_BATCH):
            if not self._table.has_turn(self._index):
                self._pause()
                return
            if not self._accept_one(first=attempt == 0):
                return

    def _accept_one(self, *, first: bool = False) -> bool:
        """Accept one connection; False when none was waiting (or accepting must rest)."""
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            if first:  # another worker, woken by the same connection, took it
                self._table.add(self._index, Column.MISSED)
            return False
        except ConnectionAbortedError:  # the peer gave up while queued: take the next one
            return True
        except OSError as exc:
            self.log.error("accept_failed", error=str(exc))
            if exc.errno in _RESOURCE_ERRORS:
                self._rest()
            return False
        conn.setblocking(False)
        self._pending += 1
        self._publish()
        self._table.add(self._index, Column.ACCEPTED)
        self._wake_others()
        task = self._loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _connect(self, conn: socket.socket) -> None:
        protocol: DicomProtocol | None = None

        def make() -> DicomProtocol:
            nonlocal protocol
            protocol = self._factory()
            self._pending -= 1
            self._open.add(protocol)
            return protocol

        try:
            await self._loop.connect_accepted_socket(make, conn)
        except OSError as exc:
            self.log.info("connection_failed", error=str(exc))
        finally:
            if protocol is None:
                self._pending -= 1
                conn.close()
            elif protocol.transport is None:  # never made: no connection_lost will come
                self._open.discard(protocol)
            self._publish()

    def _publish(self) -> None:
        self._table.set(self._index, Column.CONNECTIONS, len(self._open) + self._pending)

    def _wake_others(self) -> None:
        """Wake each paused worker whose turn it now is (this one accepted, or stopped serving)."""
        table, least = self._table, self._table.least()
        for worker, fd in enumerate(self._seat.wake_fds):
            if worker != self._index and table.get(worker, Column.PAUSED) and table.get(worker, Column.CONNECTIONS) <= least:
                with contextlib.suppress(OSError):
                    os.eventfd_write(fd, 1)

    def _on_woken(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_read(self._seat.wake_fds[self._index])
        if self._paused and self._table.has_turn(self._index):
            self._resume()

    def _resume(self) -> None:
        self._cancel_timer()
        self._table.set(self._index, Column.PAUSED, 0)
        if not self._reading and not self._closed:
            self._reading = True
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._table.set(self._index, Column.PAUSED, 1)
        # Published before this look: a worker accepting meanwhile sees the flag and wakes us.
        if self._table.has_turn(self._index):
            self._resume()
            return
        self._progress = self._others_accepted()
        self._arm(self._seat.wait)

    def _rest(self) -> None:
        """Out of descriptors or memory: stop reading for a while, as asyncio's server does."""
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._arm(_ACCEPT_RETRY_DELAY)

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, self._check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        """The paused worker's timer: its turn came (a missed wake-up), or the others stall."""
        self._timer = None
        if not self._paused:
            return
        if self._table.has_turn(self._index):
            self._resume()
            return
        progress = self._others_accepted()
        if progress == self._progress and self._poll.poll(0) and self._accept_one():
            self._table.add(self._index, Column.OUT_OF_TURN)
            self.log.info("accepted_out_of_turn", waited=self._seat.wait)
        self._progress = self._others_accepted()
        if self._timer is None:  # not resting after a failed accept
            self._arm(self._seat.wait)

    def _others_accepted(self) -> int:
        accepted = self._table.column(Column.ACCEPTED)
        return sum(accepted) - accepted[self._index]
