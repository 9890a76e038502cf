"""Receiving C-STORE data sets: streamed to memory or disk, parsed only on demand.

An :class:`InstanceSink` takes the P-DATA fragments of one data set as they
arrive. Small data sets stay in memory (a list of views into the received
PDUs, no copy); once one grows past the memory threshold it spills into a
temporary Part 10 file in the spool directory and every further fragment is
written straight through. The handler then gets a :class:`ReceivedInstance`,
which reads a few top-level tags with the byte scanner and only builds a
pydicom data set when asked.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import itertools
import os
import re
import shutil
import stat
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.codec.part10 import encode_file_meta
from aiodicom.codec.walk import DatasetWalker
from aiodicom.dimse.association import AssociationInfo as AssociationInfo
from aiodicom.errors import AiodicomError, DicomFileError, MalformedDatasetError
from aiodicom.transport.budget import MemoryBudget

if TYPE_CHECKING:
    import pydicom

#: Tags a receiver nearly always wants; scanned together, once.
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018
SOP_CLASS_UID = 0x00080016
_COMMON_TAGS = (SOP_CLASS_UID, SOP_INSTANCE_UID, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)
_COMMON_TAGS_SET = frozenset(_COMMON_TAGS)

#: The default :meth:`ReceivedInstance.save_under` layout, the one ``aiodicom receive`` writes.
DEFAULT_LAYOUT = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
#: Fields a layout may name: top-level text elements, read without decoding the data set.
#: UIDs keep the UID alphabet; anything else may hold letters too.
LAYOUT_FIELDS: dict[str, tuple[int, bool]] = {
    "PatientID": (PATIENT_ID, False),
    "StudyInstanceUID": (STUDY_INSTANCE_UID, True),
    "SeriesInstanceUID": (SERIES_INSTANCE_UID, True),
    "SOPInstanceUID": (SOP_INSTANCE_UID, True),
    "SOPClassUID": (SOP_CLASS_UID, True),
    "AccessionNumber": (0x00080050, False),
    "Modality": (0x00080060, False),
    "StudyDate": (0x00080020, False),
    "StudyID": (0x00200010, False),
    "SeriesNumber": (0x00200011, False),
    "InstanceNumber": (0x00200013, False),
}
_HEAD_BYTES = 64 * 1024
#: A kept fragment of at least this many bytes becomes a bytes object of its own;
#: smaller ones join the trailing buffer, so that empty or one-byte fragments cost
#: their bytes and not a few hundred bytes of objects each.
_MIN_PIECE = 4096
#: In-memory data sets charge the server's memory budget in steps of this size, beyond
#: their first :data:`_UNCHARGED` bytes (small data sets cost no budget bookkeeping).
_BUDGET_STEP = 256 * 1024
_UNCHARGED = 64 * 1024


class StorageError(AiodicomError):
    """A received data set could not be spooled or saved (disk full, permissions...)."""


def _keep(parts: list[bytes | bytearray], data: memoryview) -> None:
    """Append a copy of ``data`` to ``parts`` (see :data:`_MIN_PIECE`).

    A copy, because the fragment's buffer is the transport's to reuse once the sink
    returns (:class:`~aiodicom.ul.assembly.DataSink`).
    """
    n = len(data)
    if n >= _MIN_PIECE:
        parts.append(bytes(data))
    elif n:
        last = parts[-1] if parts else None
        if type(last) is bytearray:
            last += data
        else:
            parts.append(bytearray(data))


def _first_bytes(parts: list[bytes | bytearray], limit: int) -> list[bytes | bytearray]:
    """The parts that hold the first ``limit`` bytes (the last one possibly cut)."""
    kept: list[bytes | bytearray] = []
    size = 0
    for part in parts:
        if size >= limit:
            break
        kept.append(part if size + len(part) <= limit else part[: limit - size])
        size += len(part)
    return kept


def _write_all(fd: int, buffers: Iterable[bytes | bytearray | memoryview], done: int = 0) -> None:
    """Write ``buffers`` whole, of which a caller's first system call wrote ``done`` bytes."""
    pending = [memoryview(b) for b in buffers if len(b)]
    written = done
    while True:
        while written:
            first = pending[0]
            if written >= len(first):
                written -= len(first)
                pending.pop(0)
            else:
                pending[0] = first[written:]
                written = 0
        if not pending:
            return
        written = os.writev(fd, pending[:512])


class SpoolFiles:
    """Empty spool files created ahead of need.

    Creating a file is the costliest step of receiving an instance on many
    file systems (an inode, a journal entry). The server refills this pool
    right after it sends a response, while the sender prepares its next
    message, so the receive path itself only takes an open descriptor.
    """

    def __init__(self, directory: Path, spare: int = 2) -> None:
        self.directory = directory
        self.spare = spare
        # Names are plain strings: a Path per instance cost ~25 Python calls for nothing.
        self._ready: list[tuple[int, str]] = []
        # Names: a random prefix once, then a counter (32 hex digits, as _SPOOL_FILE
        # expects). A uuid4 and a pathlib join per file cost ~10x more, per instance.
        self._prefix = os.path.join(directory, f".{os.urandom(8).hex()}")
        self._serial = itertools.count()

    def _create(self) -> tuple[int, str]:
        name = f"{self._prefix}{next(self._serial):016x}.part"
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), name

    def take(self) -> tuple[int, str]:
        """An open, empty spool file and its name."""
        if self._ready:
            return self._ready.pop()
        return self._create()

    def refill(self) -> None:
        try:
            while len(self._ready) < self.spare:
                self._ready.append(self._create())
        except OSError:
            pass  # take() will report the problem when a file is really needed

    def close(self) -> None:
        for fd, path in self._ready:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
        self._ready.clear()


class SpoolDirectory:
    """This process's own folder inside a spool folder that several processes may share.

    A server takes ``<base>/<pid>-<random>/`` and holds an ``flock`` on its
    ``lock`` file for as long as it runs; the kernel drops that lock when the
    process dies, however it dies. So at start, a sibling folder whose lock
    can be taken belongs to a process that is gone (kill -9, power loss) and is
    removed with its partial files, while folders of live processes are left
    alone. The folder is prepared under a hidden name and renamed into place
    with its lock already held, so no sweeper ever sees it unlocked. At a clean
    stop the folder is removed, and the base folder too once nothing else is in
    it, so no empty spool folder is left in a user's output tree.
    """

    #: A hidden folder this old is a set-up that never finished.
    STALE_SETUP_SECONDS = 3600.0

    def __init__(self, base: Path) -> None:
        self.base = base
        self.path: Path | None = None
        self._lock_fd = -1

    @classmethod
    def private(cls) -> SpoolDirectory:
        """The default spool: ``aiodicom-spool-<uid>`` in the temporary folder, if it is ours.

        Shared by this user's processes (so one sweeps what another left), and
        used only when it is a real folder owned by us that nobody else may
        write to or read: in a shared ``/tmp`` another user could have made it
        first. Otherwise a fresh private folder is used.
        """
        base = Path(tempfile.gettempdir()) / f"aiodicom-spool-{os.getuid()}"
        try:
            base.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(base)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
                return cls(base)
        except OSError:
            pass
        return cls(Path(tempfile.mkdtemp(prefix="aiodicom-spool-")))

    def open(self) -> Path:
        """Create and lock our folder, sweep stale ones; return our folder."""
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for _attempt in range(5):  # another process may remove an empty base meanwhile
            self.base.mkdir(parents=True, exist_ok=True)
            setup = self.base / f".setup-{name}"
            try:
                setup.mkdir()
                break
            except FileNotFoundError:
                continue
        else:
            raise StorageError(f"cannot create a spool folder in {self.base}")
        fd = os.open(setup / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd
        self.path = self.base / name
        os.rename(setup, self.path)
        self.sweep()
        return self.path

    def sweep(self) -> list[Path]:
        """Remove what processes that are gone left behind; return what was removed."""
        removed: list[Path] = []
        try:
            entries = list(os.scandir(self.base))
        except OSError:
            return removed
        for entry in entries:
            path = Path(entry.path)
            if path == self.path:
                continue
            # Only names we make are ever touched: a spool_dir pointed at a folder that
            # holds other things (even the archive itself) loses nothing else.
            if entry.is_dir(follow_symlinks=False):
                if _OWNER_FOLDER.fullmatch(entry.name):
                    stale = _unlocked(path)
                elif _SETUP_FOLDER.fullmatch(entry.name):
                    stale = self._setup_is_stale(entry)
                else:
                    continue
                if stale:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            elif _SPOOL_FILE.fullmatch(entry.name):  # a loose file from the single-folder layout
                try:
                    os.unlink(path)
                    removed.append(path)
                except OSError:
                    pass
        return removed

    def _setup_is_stale(self, entry: os.DirEntry[str]) -> bool:
        try:
            return time.time() - entry.stat(follow_symlinks=False).st_mtime > self.STALE_SETUP_SECONDS
        except OSError:
            return False

    def close(self) -> None:
        """Remove our folder (and the base folder when it is left empty)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        try:
            self.base.rmdir()
        except OSError:
            pass  # not empty: another process's folder, or files someone put there


_OWNER_FOLDER = re.compile(r"[0-9]+-[0-9a-f]{8}")
_SETUP_FOLDER = re.compile(r"\.setup-[0-9]+-[0-9a-f]{8}")
_SPOOL_FILE = re.compile(r"\.[0-9a-f]{32}\.part")


def _unlocked(folder: Path) -> bool:
    """True when nobody holds the lock of a spool folder (its process is gone)."""
    try:
        fd = os.open(folder / "lock", os.O_RDWR)
    except FileNotFoundError:
        return True  # its lock file is gone: nothing can still be using it
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the lock we may have taken
    return True


class GroupSync:
    """Makes saved files durable before they are acknowledged, in shared batches.

    With durability asked for, an association that saved files waits here
    before it answers Success. Requests are gathered for one turn of the event
    loop, so associations finishing at about the same time share one flush
    (group commit). A batch of one file costs an ``fdatasync`` of the file and
    an ``fsync`` of its folder and of those above it on the same file system
    (which makes the rename, and folders just created, durable). A larger batch
    costs one ``syncfs`` per file system where the kernel has it (Linux): one
    journal commit for the whole batch instead of one per file, measured at a
    fraction of the per-file cost from 8 files on (docs/benchmarks.md).
    The calls run on the event loop, no threads: while a batch flushes, the
    next one gathers, so the cost per file falls as load rises.
    """

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._waiters: list[asyncio.Future[None]] = []
        #: Flushes done so far, and how many of them used ``syncfs``.
        self.batches = 0
        self.whole_file_system_batches = 0

    async def sync(self, paths: Iterable[Path]) -> None:
        """Return once every path (and its folder entry) is on disk; raise OSError if not."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if not self._waiters:
            loop.call_soon(self._flush)
        self._paths.extend(paths)
        self._waiters.append(waiter)
        await waiter

    def _flush(self) -> None:
        paths, waiters = list(dict.fromkeys(self._paths)), self._waiters
        self._paths, self._waiters = [], []
        self.batches += 1
        try:
            if len(paths) > 1 and _syncfs is not None:
                self.whole_file_system_batches += 1
                for folder in _one_folder_per_device(paths):
                    _sync_path(folder, _DIRECTORY, _syncfs)
            else:
                for path in paths:
                    _sync_path(path, os.O_RDONLY, _datasync)
                for folder in _folders_up_to_the_mount(paths):
                    _sync_path(folder, _DIRECTORY, os.fsync)
        except OSError as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(OSError(exc.errno, exc.strerror, exc.filename))
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_datasync = getattr(os, "fdatasync", os.fsync)


def _folders_up_to_the_mount(paths: list[Path]) -> list[Path]:
    """Each file's folder and every folder above it on the same file system, once.

    A handler may have just created the study and series folders: their entries
    in their own parents must reach the disk too. Folders with nothing new cost
    little to ``fsync``.
    """
    folders: dict[Path, None] = {}
    for path in paths:
        folder = path.parent.absolute()
        device = os.stat(folder).st_dev
        while folder not in folders:
            folders[folder] = None
            parent = folder.parent
            if parent == folder or os.stat(parent).st_dev != device:
                break
            folder = parent
    return list(folders)


def _one_folder_per_device(paths: list[Path]) -> list[Path]:
    folders: dict[int, Path] = {}
    for path in paths:
        folders.setdefault(os.stat(path.parent).st_dev, path.parent)
    return list(folders.values())


def _load_syncfs() -> Callable[[int], None] | None:
    """Linux ``syncfs(2)`` (flush one whole file system), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None

    def syncfs(fd: int) -> None:
        if function(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


_syncfs = _load_syncfs()


def _sync_path(path: Path, flags: int, sync: Callable[[int], None]) -> None:
    fd = os.open(path, flags)
    try:
        sync(fd)
    finally:
        os.close(fd)


class InstanceSink:
    """Collects one C-STORE data set (see the module docstring)."""

    __slots__ = (
        "sop_class_uid",
        "sop_instance_uid",
        "transfer_syntax",
        "source_ae",
        "_spool",
        "_threshold",
        "_budget",
        "_reserved",
        "_parts",
        "_head",
        "size",
        "_fd",
        "path",
        "error",
        "complete",
        "meta",
        "common_tags",
        "wanted",
        "_walker",
        "_unwritten",
    )

    def __init__(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        *,
        spool: SpoolFiles,
        memory_threshold: int,
        source_ae: str | None = None,
        budget: MemoryBudget | None = None,
        extra_tags: frozenset[int] = frozenset(),
    ) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax = transfer_syntax
        self.source_ae = source_ae
        self._spool = spool
        self._threshold = memory_threshold
        self._budget = budget
        #: Bytes charged to the budget for the in-memory fragments.
        self._reserved = 0
        #: The data set while it is in memory.
        self._parts: list[bytes | bytearray] = []
        #: Its first 64 KiB, kept when it spilled to disk from memory (so routing reads
        #: no file); a data set spooled from its first byte keeps none.
        self._head: list[bytes | bytearray] = []
        self.size = 0
        self._fd = -1
        #: The spool file's name once the data set spilled to disk.
        self.path: str | None = None
        self.error: Exception | None = None
        self.complete = False
        #: The routing tags (patient, study, series, SOP, and ``extra_tags``) found by the
        #: structure walk, complete once the data set is (tags absent from it are absent).
        self.common_tags: dict[int, bytes] | None = None
        #: The tags the walk collects (values cut at 64 KiB).
        self.wanted = _COMMON_TAGS_SET | extra_tags
        # Checks the element structure fragment by fragment, so a truncated or
        # garbage data set is refused without reading anything back from disk.
        self._walker = DatasetWalker(transfer_syntax, self.wanted)
        # Built up front: UIDs a Part 10 file cannot hold (empty, > 64 chars) are
        # found before any byte is kept, and the data set is drained and refused.
        try:
            self.meta = encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, source_ae=source_ae)
        except DicomFileError as exc:
            self.meta = b""
            self.error = exc
        #: Bytes for the spool file ahead of the next fragment (the meta, once).
        self._unwritten = b""
        if memory_threshold <= 0 and self.error is None:
            # Spooled from the first byte anyway: open the file now, so every fragment,
            # the first included, goes straight to it, and no head is kept in memory.
            try:
                self._fd, self.path = spool.take()
                self._unwritten = self.meta
            except OSError as exc:
                self._fail(exc)

    def _meta(self) -> bytes:
        return self.meta

    def write(self, data: memoryview) -> None:
        if self.error is not None:
            return  # keep draining the association; the handler reports the failure
        try:
            self._walker.feed(data)
        except MalformedDatasetError as exc:
            self._fail(exc)
            return
        n = len(data)
        self.size += n
        fd = self._fd
        if fd >= 0:
            try:
                unwritten = self._unwritten
                if unwritten:
                    # The file meta and the first fragment in one call; the loop only
                    # when the kernel took less (the usual case costs no list of views).
                    buffers = (unwritten, data)
                    written = os.writev(fd, buffers)
                    if written != len(unwritten) + n:
                        _write_all(fd, buffers, written)
                    self._unwritten = b""
                    return
                written = os.write(fd, data)
                if written != n:
                    _write_all(fd, (data,), written)
            except OSError as exc:
                self._fail(exc)
            return
        _keep(self._parts, data)
        if self.size > self._threshold:
            self._spill()
        elif self.size > self._reserved + _UNCHARGED and self._budget is not None:
            if self._budget.take(_BUDGET_STEP):
                self._reserved += _BUDGET_STEP
            else:
                self._spill()  # the server holds all it may: this one goes to disk now

    def _spill(self) -> None:
        try:
            self._fd, self.path = self._spool.take()
            _write_all(self._fd, [self._meta(), *self._parts])
        except OSError as exc:
            self._fail(exc)
        self._head = _first_bytes(self._parts, _HEAD_BYTES)
        self._drop_parts()

    def _drop_parts(self) -> None:
        self._parts = []
        if self._reserved:
            assert self._budget is not None
            self._budget.give(self._reserved)
            self._reserved = 0

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        self._drop_parts()
        self._close_fd()
        self._unlink()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            finally:
                self._fd = -1

    def _unlink(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None

    def finish(self) -> None:
        self.complete = True
        if self._unwritten and self.error is None:  # no fragment came: the meta still goes
            try:
                _write_all(self._fd, (self._unwritten,))
            except OSError as exc:
                self._fail(exc)
            self._unwritten = b""
        self._close_fd()
        if self.error is not None:
            return
        try:
            self._walker.finish()
        except MalformedDatasetError as exc:
            self._fail(exc)
            return
        self.common_tags = self._walker.values

    def discard(self) -> None:
        self._close_fd()
        self._unlink()
        self._drop_parts()

    def head(self) -> bytes | bytearray | None:
        """The data set's first bytes (64 KiB or more when it has them), or None when
        only its file has them."""
        parts = self._parts if self.path is None else self._head
        if not parts:
            return None if self.size and self.path is not None else b""
        if len(parts) == 1:
            return parts[0]
        return b"".join(_first_bytes(parts, _HEAD_BYTES))

    def memory_parts(self) -> list[bytes | bytearray]:
        return self._parts


class ReceivedInstance:
    """One received data set, as a C-STORE handler sees it.

    The bytes are exactly what the sender sent, in :attr:`transfer_syntax`.
    Ownership is explicit: :meth:`save` moves the bytes into place; a handler that
    neither saved nor :meth:`detach`-ed it leaves it to the storage service, which
    calls :meth:`close` when the handler returns. Nothing is deleted behind a holder's back.
    """

    def __init__(
        self,
        sink: InstanceSink,
        *,
        association: AssociationInfo,
        move_originator_ae: str | None = None,
        move_originator_message_id: int | None = None,
    ) -> None:
        self._sink = sink
        #: Who sent it.
        self.association = association
        #: Affected SOP Class UID of the C-STORE request.
        self.sop_class_uid = sink.sop_class_uid
        #: Affected SOP Instance UID of the C-STORE request (a wire value, never a path).
        self.sop_instance_uid = sink.sop_instance_uid
        #: The transfer syntax the data set was sent in (and is saved in).
        self.transfer_syntax = sink.transfer_syntax
        #: For an instance sent by a C-MOVE: the AE title that asked for the move.
        self.move_originator_ae = move_originator_ae
        #: For an instance sent by a C-MOVE: the message ID of that C-MOVE request.
        self.move_originator_message_id = move_originator_message_id
        self._tags: dict[int, bytes] | None = None
        self._detached = False
        self._saved_to: Path | None = None
        #: Every path :meth:`save` wrote, in order (what the durability option syncs).
        self.saved_paths: list[Path] = []

    @property
    def size(self) -> int:
        """Size of the data set in bytes (without file meta)."""
        return self._sink.size

    @property
    def spooled_path(self) -> Path | None:
        """The temporary Part 10 file holding the data set, if it spilled to disk."""
        path = self._sink.path
        return None if path is None else Path(path)

    # --- reading ---------------------------------------------------------------------

    def dataset_bytes(self) -> bytes:
        """The data set bytes as received (reads the spool file if it spilled)."""
        if self._saved_to is not None or self._sink.path is not None:
            path = self._saved_to or self._sink.path
            assert path is not None
            with open(path, "rb") as handle:
                data = handle.read()
            return data[len(data) - self.size :]
        return b"".join(self._sink.memory_parts())

    def part10_bytes(self) -> bytes:
        """A complete Part 10 file (preamble, meta, data set)."""
        return self._sink._meta() + self.dataset_bytes()

    def tags(self, tags: Collection[int]) -> dict[int, bytes]:
        """Raw values of top-level elements, read without decoding the data set.

        Tags the structure walk collected as the data set arrived (the common ones and
        the server's ``routing_tags``) cost nothing more: no byte is read again.
        """
        from aiodicom.codec.scan import scan_elements

        walked = self._sink.common_tags
        if walked is not None and self._sink.wanted.issuperset(tags):
            return {tag: walked[tag] for tag in tags if tag in walked}
        result = scan_elements(self._head(), self.transfer_syntax, tags)
        if result.complete:
            return dict(result.values)
        result = scan_elements(self.dataset_bytes(), self.transfer_syntax, tags)
        return dict(result.values)

    def _head(self) -> bytes | bytearray | memoryview:
        """The data set's first bytes: kept in memory, or read from its file."""
        head = self._sink.head()
        if head is not None:
            return head
        path = self._saved_to or self._sink.path
        if path is None:
            return b""
        with open(path, "rb") as handle:
            handle.seek(len(self._sink.meta))
            return handle.read(_HEAD_BYTES)

    def text(self, tag: int) -> str | None:
        """A top-level string value (UIDs, IDs) without decoding the data set."""
        from aiodicom.codec.scan import text

        if self._tags is None:
            common = self._sink.common_tags
            self._tags = dict(common) if common is not None else self.tags(_COMMON_TAGS)
        if tag not in self._tags and tag not in self._sink.wanted:
            self._tags.update(self.tags((tag,)))
        raw = self._tags.get(tag)
        return None if raw is None else text(raw)

    @property
    def patient_id(self) -> str | None:
        """Patient ID (0010,0020), scanned from the first bytes; a wire value, never a path."""
        return self.text(PATIENT_ID)

    @property
    def study_instance_uid(self) -> str | None:
        """Study Instance UID (0020,000D), scanned from the first bytes."""
        return self.text(STUDY_INSTANCE_UID)

    @property
    def series_instance_uid(self) -> str | None:
        """Series Instance UID (0020,000E), scanned from the first bytes."""
        return self.text(SERIES_INSTANCE_UID)

    def read(self, *, stop_before_pixels: bool = True) -> pydicom.Dataset:
        """Decode with pydicom (off the hot path): headers only unless asked."""
        import io

        import pydicom

        try:
            return pydicom.dcmread(io.BytesIO(self.part10_bytes()), stop_before_pixels=stop_before_pixels)
        except Exception as exc:  # pydicom raises many types for bad data
            raise DicomFileError(f"cannot decode received data set: {exc}") from exc

    # --- keeping ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, create_parents: bool = True) -> Path:
        """Store the instance as a Part 10 file at ``path``, atomically.

        A spooled instance is renamed into place (no copy when the spool
        directory is on the same file system); an in-memory one is written to a
        temporary name beside ``path`` and renamed. Either way a reader never
        sees a half-written file.
        """
        # A Path is kept as it is (immutable): building one parses every component again.
        target = path if isinstance(path, Path) else Path(path)
        if create_parents:
            target.parent.mkdir(parents=True, exist_ok=True)
        sink = self._sink
        if self._saved_to is not None:
            data = self.part10_bytes()
            _atomic_write(target, [data])
            self.saved_paths.append(target)
            return target
        if sink.path is not None:
            try:
                os.replace(sink.path, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another file system: copy instead
                    raise StorageError(f"cannot move received instance to {target}: {exc}") from exc
                with open(sink.path, "rb") as handle:
                    _atomic_write(target, [handle.read()])
                os.unlink(sink.path)
            sink.path = None
        else:
            # Through a pre-created spool file: no file creation on this path.
            _atomic_write(target, [sink.meta, *sink.memory_parts()], sink._spool)
        self._saved_to = target
        self.saved_paths.append(target)
        return target

    def save_under(self, root: str | os.PathLike[str], layout: str = DEFAULT_LAYOUT) -> Path:
        """Save atomically under ``root`` at a path built from the instance's own values.

        ``layout`` is a relative path whose ``{Field}`` parts (see
        :data:`LAYOUT_FIELDS`, e.g. ``"{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm"``)
        are filled with sanitised values: each one is a single path component
        made of letters, digits, ``.``, ``_`` and ``-`` (UIDs: digits and dots),
        never ``.``/``..``, empty or a Windows device name, at most 64 characters;
        a value that had to be changed gets a hash of the original, so two
        different wire values never land on the same name. The layout's own
        text is the application's and is trusted, but the result must still
        stay under ``root`` (:class:`StorageError` otherwise).
        """
        return self.save(layout_path(root, layout, self.text))

    # --- ownership ---------------------------------------------------------------------

    @property
    def detached(self) -> bool:
        """True once a handler took ownership with :meth:`detach`."""
        return self._detached

    def detach(self) -> ReceivedInstance:
        """Take ownership: the service will not clean this instance up when the handler returns.

        For handlers that keep instances beyond their call (a per-patient queue that
        processes a study once complete). The holder must :meth:`save` or :meth:`close`
        it later, and before the server stops (its spool folder goes with it); an
        in-memory instance keeps its share of the server's memory budget until then.
        Returns the instance itself, usable as a context manager that closes it.
        """
        self._detached = True
        return self

    def close(self) -> None:
        """Release what is held: the spool file, or the in-memory bytes and their budget.

        A saved instance's file is the archive's and stays. Idempotent. The storage
        service calls this when a handler returns without :meth:`detach`.
        """
        self._sink.discard()

    def __enter__(self) -> ReceivedInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _atomic_write(target: Path, buffers: list[Any], spool: SpoolFiles | None = None) -> None:
    """Write ``buffers`` to a temporary file (a spare spool file if given), then rename."""
    fd = -1
    temporary: str | Path = target
    if spool is not None:
        try:
            fd, temporary = spool.take()
        except OSError:
            fd = -1
    try:
        if fd < 0:
            temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, buffers)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError as exc:
        if temporary != target:
            try:
                os.unlink(temporary)
            except OSError:
                pass
        if spool is not None and exc.errno == errno.EXDEV:  # spool on another file system
            _atomic_write(target, buffers)
            return
        raise StorageError(f"cannot write {target}: {exc}") from exc


_SAFE = frozenset("0123456789.")
_TEXT_SAFE = frozenset(string.ascii_letters + string.digits + "._-")
#: Names Windows reserves for devices, with or without an extension ("NUL.txt").
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)


def _plain(value: str, allowed: frozenset[str]) -> bool:
    """True when ``value`` can be a path component as it is, on any file system."""
    return (
        0 < len(value) <= 64
        and allowed.issuperset(value)  # 4x faster than a generator over the characters
        and value.strip(".") != ""
        and not value.endswith(".")  # Windows drops trailing dots: "a." and "a" would collide
        and value.split(".", 1)[0].upper() not in _WINDOWS_RESERVED
    )


def safe_component(value: str | None, fallback: str, *, allowed: frozenset[str] = _SAFE) -> str:
    """A wire value (a UID by default) made safe as one path component.

    UIDs are digits and dots; anything else from the wire (``..``, ``/``, NUL)
    is replaced so that no received value can name a path outside the
    configured folder. A replaced value is ``_`` + the cleaned text + ``_`` +
    a short hash of the original, so two different values never land on the
    same name: a value kept as it is never starts with ``_`` (UIDs cannot,
    and text that does is hashed too).
    """
    if not value:
        return fallback
    stripped = value.strip(" \0")
    if _plain(stripped, allowed) and not (allowed is not _SAFE and stripped.startswith("_")):
        return stripped
    cleaned = "".join(ch if ch in allowed else "_" for ch in stripped)[:48].lstrip(".")
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"_{cleaned}_{digest}"


def layout_path(root: str | os.PathLike[str], layout: str, text: Callable[[int], str | None]) -> Path:
    """The path under ``root`` that ``layout`` names for an instance whose tags ``text`` reads.

    Every ``{Field}`` becomes a :func:`safe_component` of the instance's own value (see
    :meth:`ReceivedInstance.save_under`); shared by everything that files instances by
    their values, so a wire value is made safe in one place only.
    """
    base = Path(root)
    parts = []
    for literal, name in _parse_layout(layout):
        parts.append(literal)
        if name is not None:
            tag, uid = LAYOUT_FIELDS[name]
            parts.append(safe_component(text(tag), f"_unknown-{name}", allowed=_SAFE if uid else _TEXT_SAFE))
    relative = "".join(parts)
    if os.path.isabs(relative) or ".." in Path(relative).parts:
        raise StorageError(f"layout {layout!r} leads outside {base}")
    return base / relative


@functools.lru_cache(maxsize=32)
def _parse_layout(layout: str) -> list[tuple[str, str | None]]:
    """``(literal text, field name or None)`` pairs; unknown fields and formats are refused."""
    parsed = []
    for literal, name, spec, conversion in string.Formatter().parse(layout):
        if name is not None and (name not in LAYOUT_FIELDS or spec or conversion):
            raise ValueError(
                f"layout field {{{name}}} is not one of {', '.join(LAYOUT_FIELDS)} (no format specs)"
            )
        parsed.append((literal, name))
    return parsed
