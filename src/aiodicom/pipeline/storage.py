"""Where a pipeline keeps what it acknowledged, and the journal that makes restarts exact.

Layout under the data directory (every name is ours or sanitised, never raw from the wire)::

    incoming/<patient>/<SOPInstanceUID>.dcm    acknowledged, waiting for validation
    batches/<batch id>/<SOPInstanceUID>.dcm    validated: one batch for process()
    batches/<batch id>/batch.json              its journal record: "validated", then "submitted"
    quarantine/<batch id>/...                  a failed or timed-out process: data + record.json
    outbox/                                    the export outbox's own files
    spool/                                     data sets still arriving (the server's spool)

``<patient>`` is a hash of the patient identifier (:func:`patient_folder_name`): no PHI
in paths, nothing a hostile identifier could escape with, and no two patients share a
folder. The SOP Instance UID is made safe by :func:`~aiodicom.dimse.store.safe_component`.

The journal is the file system itself, changed only by atomic renames: an instance is
acknowledged once its file was renamed into ``incoming/`` (by the server's spool,
before the success response); a patient validates when its folder is renamed into
``batches/`` (one rename: the batch holds exactly what was validated); ``batch.json``
is replaced atomically when the batch was handed to the outbox; a finished batch's
folder is removed. After kill -9, :meth:`PipelineStore.restore` reads this back:
incoming folders wait for validation again, batches without "submitted" are
processed, submitted ones wait for their export outcome. With ``fsync`` every step is
flushed before it counts (files, then their folders).

With receiving workers (``Pipeline(workers=N)``) other processes write into
``incoming/<patient>/`` while the owner of the state cuts a batch, so the folder is
not renamed: :meth:`PipelineStore.cut_files` moves the files the owner knows of into
``batches/.cutting-<batch id>/`` (whose record names the patient folder) and renames
that into place; a restart puts the files of an unfinished cut back into ``incoming/``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiodicom.codec.part10 import read_file_meta
from aiodicom.codec.scan import scan_elements
from aiodicom.dimse.store import GroupSync, ReceivedInstance, StorageError, safe_component
from aiodicom.errors import AiodicomError, DicomFileError
from aiodicom.pipeline.inputs import StoredInstance

__all__ = ["BatchFolder", "DataDirectoryInUse", "PipelineStore", "QuotaExceeded"]

RECORD = "batch.json"
#: Prefix of a batch folder being filled file by file (:meth:`PipelineStore.cut_files`).
CUTTING = ".cutting-"
QUARANTINE_RECORD = "record.json"
_HEAD = 64 * 1024


class DataDirectoryInUse(AiodicomError):
    """Another running pipeline holds the data directory (two would corrupt each other's journal)."""


class QuotaExceeded(AiodicomError):
    """Storing an instance would exceed the pipeline's ``max_storage_bytes``."""


@dataclass
class BatchFolder:
    """A batch found on disk at start: its folder, files and journal record."""

    batch_id: str
    folder: Path
    files: list[Path]
    record: dict[str, object]


def patient_folder_name(patient_id: str) -> str:
    """The folder of a patient: a hash of the identifier (no PHI in paths, nothing to escape).

    Logs show the first 12 characters of the same hash (:func:`patient_hash`).
    """
    return _digest(patient_id)[:24]


def patient_hash(patient_id: str) -> str:
    """What logs and status show instead of a patient identifier (no PHI at info level)."""
    return _digest(patient_id)[:12]


@functools.lru_cache(maxsize=128)  # every instance asks; bounded: identifiers come from the wire
def _digest(patient_id: str) -> str:
    return hashlib.sha256(patient_id.encode("utf-8", "surrogateescape")).hexdigest()


def instance_file_name(sop_instance_uid: str) -> str:
    return safe_component(sop_instance_uid, "_unknown-instance") + ".dcm"


def read_stored(path: Path, wanted: frozenset[int]) -> StoredInstance:
    """Rebuild what routing needs of a stored file: its UID, syntax and the wanted tags."""
    meta = read_file_meta(path)
    with open(path, "rb") as handle:
        handle.seek(meta.dataset_offset)
        head = handle.read(_HEAD)
        result = scan_elements(head, meta.transfer_syntax, wanted)
        if not result.complete:
            head += handle.read()
            result = scan_elements(head, meta.transfer_syntax, wanted)
    return StoredInstance(meta.sop_instance_uid, path, meta.transfer_syntax, dict(result.values), path.stat().st_size)


class PipelineStore:
    """The data directory of a pipeline (a private temporary one in memory-only mode)."""

    def __init__(self, root: str | os.PathLike[str] | None, *, fsync: bool = False, quota: int | None = None) -> None:
        #: True when nothing is kept past :meth:`close` (``data_directory=None``).
        self.ephemeral = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="aiodicom-pipeline-"))
        self.incoming = self.root / "incoming"
        self.batches = self.root / "batches"
        self.quarantine_dir = self.root / "quarantine"
        self.spool = self.root / "spool"
        self.outbox = self.root / "outbox"
        self.quota = quota
        #: Bytes of the instances held in ``incoming`` and ``batches``.
        self.used = 0
        self._syncer = GroupSync() if fsync else None
        self._lock_fd = -1
        self._incoming = str(self.incoming)
        #: Patient folders this process made or found (no mkdir per instance); a folder renamed
        #: or removed here leaves the set, one removed behind our back is made again on the miss.
        self._folders: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the layout and take the directory's lock (held until :meth:`close`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataDirectoryInUse(f"{self.root} is used by another running pipeline") from None
        self._lock_fd = fd
        self.attach()

    def attach(self) -> None:
        """Create the layout and measure it, without the lock: a receiving worker's view of
        the directory its pipeline's owner holds."""
        for folder in (self.incoming, self.batches, self.quarantine_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.used = self.measure() if self.quota is not None else 0

    def measure(self) -> int:
        """Bytes of the instances in ``incoming`` and ``batches`` now."""
        return sum(_size(path) for path in self._all_instances())

    def close(self) -> None:
        if self.ephemeral:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # the kernel drops the lock of a killed process too
            self._lock_fd = -1

    def _all_instances(self) -> Iterator[Path]:
        for top in (self.incoming, self.batches):
            yield from top.glob("*/*.dcm")

    # --- receiving ---------------------------------------------------------------------

    def instance_path(self, patient_folder: str, sop_instance_uid: str) -> str:
        """Where an instance of the patient goes in ``incoming`` (text: :meth:`save` makes the
        one ``Path`` of it; every instance comes here, and parsing a path costs)."""
        return f"{self._incoming}/{patient_folder}/{instance_file_name(sop_instance_uid)}"

    def save(self, instance: ReceivedInstance, patient_folder: str, path: str) -> Path:
        """``instance.save(path)`` in its patient's incoming folder, made once, not per instance."""
        made = patient_folder not in self._folders
        if made:
            self._make_folder(patient_folder)
        try:
            return instance.save(path, create_parents=False)
        except StorageError as exc:
            if made or not _missing(exc):
                raise
        self._make_folder(patient_folder)  # removed behind our back: once more
        return instance.save(path, create_parents=False)

    def _make_folder(self, patient_folder: str) -> None:
        os.makedirs(f"{self._incoming}/{patient_folder}", exist_ok=True)
        self._folders.add(patient_folder)

    def reserve(self, size: int, replacing: str | Path | None) -> None:
        """Count ``size`` more bytes (less a file it replaces); raise past the quota."""
        if self.quota is None:  # nothing to enforce: no stat per instance
            return
        freed = _size(replacing) if replacing is not None else 0
        if self.used - freed + size > self.quota:
            raise QuotaExceeded(f"storage quota of {self.quota} bytes reached")
        self.used += size - freed

    def settle(self, reserved: int, path: Path) -> None:
        """Count the stored file's real size (meta included) instead of what was reserved."""
        if self.quota is not None:
            self.used += _size(path) - reserved

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)

    def _release_folder(self, folder: Path) -> None:
        """Stop counting a folder's instances (measured only when there is a quota to keep)."""
        if self.quota is not None:
            self.release(sum(_size(path) for path in folder.glob("*.dcm")))

    # --- batches -----------------------------------------------------------------------

    async def cut(self, patient_folder: str, batch_id: str, record: dict[str, object]) -> Path:
        """Make a patient's incoming folder the batch ``batch_id`` (one atomic rename)."""
        target = self.batches / batch_id
        self._folders.discard(patient_folder)
        os.rename(self.incoming / patient_folder, target)
        await self.write_record(target, record)
        return target

    async def cut_files(self, patient_folder: str, batch_id: str, record: dict[str, object], files: list[Path]) -> Path:
        """Make exactly ``files`` of a patient's incoming folder the batch ``batch_id``.

        Other processes may add to the folder meanwhile (see the module docstring): the
        files are moved into a staging folder, renamed into place once complete. A file
        already gone was replaced by a later copy and moved by an earlier cut.
        """
        staging = self.batches / f"{CUTTING}{batch_id}"
        staging.mkdir()
        await self.write_record(staging, {**record, "patient_folder": patient_folder})
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, staging / path.name)
        target = self.batches / batch_id
        os.rename(staging, target)
        await self.write_record(target, record)
        return target

    async def write_record(self, folder: Path, record: dict[str, object], name: str = RECORD) -> None:
        """Replace ``folder/name`` atomically with ``record`` (flushed with ``fsync``)."""
        target = folder / name
        temporary = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        temporary.write_text(json.dumps(record, indent=1, default=str))
        os.replace(temporary, target)
        if self._syncer is not None:
            await self._syncer.sync([target])

    def finish(self, folder: Path) -> None:
        """A batch is done (exported or nothing to export): its data goes."""
        self._release_folder(folder)
        shutil.rmtree(folder, ignore_errors=True)

    async def quarantine(self, folder: Path, record: dict[str, object]) -> Path:
        """Keep a failed batch's data aside with ``record`` (why, traceback, inputs)."""
        target = self.quarantine_dir / folder.name
        self._release_folder(folder)
        os.rename(folder, target)
        await self.write_record(target, record, QUARANTINE_RECORD)
        return target

    def remove_files(self, files: list[Path]) -> None:
        """Drop some of a patient's incoming files (expired; workers may be adding others)."""
        for path in files:
            if self.quota is not None:
                self.release(_size(path))
            path.unlink(missing_ok=True)

    def remove_patient(self, patient_folder: str) -> None:
        """Drop a patient's incoming data (expired)."""
        folder = self.incoming / patient_folder
        self._folders.discard(patient_folder)
        self._release_folder(folder)
        shutil.rmtree(folder, ignore_errors=True)

    # --- restart -----------------------------------------------------------------------

    def restore(self) -> tuple[dict[str, list[Path]], list[BatchFolder]]:
        """What a previous run left: incoming files by patient folder, and batches."""
        for staging in self.batches.glob(f"{CUTTING}*"):
            self._undo_cut(staging)
        incoming: dict[str, list[Path]] = {}
        for folder in sorted(self.incoming.iterdir()):
            if folder.is_dir():
                _drop_temporaries(folder)
                files = sorted(folder.glob("*.dcm"), key=_mtime)
                if files:
                    incoming[folder.name] = files
                else:
                    shutil.rmtree(folder, ignore_errors=True)
        batches = []
        for folder in sorted(self.batches.iterdir(), key=_mtime):
            if folder.is_dir() and not folder.name.startswith("."):
                _drop_temporaries(folder)
                batches.append(BatchFolder(folder.name, folder, sorted(folder.glob("*.dcm"), key=_mtime), _record(folder)))
        return incoming, batches

    def _undo_cut(self, staging: Path) -> None:
        """A cut interrupted by a crash: its files go back to their patient's incoming folder
        (unless a later copy is there), as if it never started."""
        patient_folder = str(_record(staging).get("patient_folder") or "")
        if not patient_folder or patient_folder != Path(patient_folder).name:
            return  # not ours: left for a human
        home = self.incoming / patient_folder
        home.mkdir(parents=True, exist_ok=True)
        for path in staging.glob("*.dcm"):
            if (home / path.name).exists():
                path.unlink()
            else:
                os.rename(path, home / path.name)
        shutil.rmtree(staging, ignore_errors=True)


def _missing(exc: StorageError) -> bool:
    """A save failed because a folder on the way does not exist (any more)."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.ENOENT


def _record(folder: Path) -> dict[str, object]:
    """The journal record of a batch; a batch renamed just before a crash has none yet."""
    try:
        value = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {"state": "validated"}
    return value if isinstance(value, dict) else {"state": "validated"}


def _drop_temporaries(folder: Path) -> None:
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def _size(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def readable(path: Path, wanted: frozenset[int]) -> StoredInstance | None:
    """:func:`read_stored`, or None for a file that is not DICOM (left for a human)."""
    try:
        return read_stored(path, wanted)
    except (DicomFileError, OSError):
        return None
