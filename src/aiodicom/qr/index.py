"""An SQLite index of stored instances: the attributes the Query/Retrieve models match on.

One table per level (patients, studies, series, instances), each row holding the
attributes of its level by keyword; an instance row keeps its file's path (relative
to the archive folder), size and modification time. The index follows the files:

- an instance stored is indexed at once (:meth:`Index.add`), from the few tags its
  storage already scanned (``codec.scan``, never a full decode); commits are batched
  (at most every :data:`COMMIT_EVERY` rows or :data:`COMMIT_DELAY` seconds), and a crash
  in between loses nothing, since the next start re-reads the folder;
- at start, :meth:`Index.reconcile` walks the folder: files that are new or changed
  (by size and mtime) are scanned and indexed, rows whose file is gone are dropped;
- searches (:meth:`Index.search`) read in batches by row id and yield to the event loop
  between them, so a query over every instance never holds the loop for long.

SQLite runs on the event loop (the project uses no threads): every statement here is
small and indexed, and the loops over many rows give way every batch.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiodicom._log import get_logger
from aiodicom.codec.part10 import read_file_meta
from aiodicom.codec.scan import scan_elements, text
from aiodicom.dimse.services.models import QUERY_KEYS, QueryLevel
from aiodicom.dimse.services.retrieve import StoredInstance
from aiodicom.errors import AiodicomError

__all__ = ["ATTRIBUTES", "SCANNED_TAGS", "ArchiveIndexError", "Attribute", "Index", "ReconcileReport", "attribute"]

_log = get_logger("aiodicom.qr.index")

L = QueryLevel


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute the index answers: its keyword, tag, VR and level.

    ``stored`` attributes are columns scanned from the files; the others (counts,
    ModalitiesInStudy) are computed from the rows below their level when asked for.
    """

    keyword: str
    tag: int
    vr: str
    level: QueryLevel
    stored: bool = True


def _key(keyword: str, level: QueryLevel, stored: bool = True) -> Attribute:
    """An indexed attribute; its tag and VR come from the models' one table (``QUERY_KEYS``)."""
    tag, vr = QUERY_KEYS[keyword]
    return Attribute(keyword, tag, vr, level, stored)


#: Every attribute the index knows, by level (PS3.4 C.6.1.1 and C.6.2.1 required keys and
#: the common optional ones).
ATTRIBUTES: Final[tuple[Attribute, ...]] = (
    _key("PatientID", L.PATIENT),
    _key("PatientName", L.PATIENT),
    _key("PatientBirthDate", L.PATIENT),
    _key("PatientSex", L.PATIENT),
    _key("NumberOfPatientRelatedStudies", L.PATIENT, False),
    _key("NumberOfPatientRelatedSeries", L.PATIENT, False),
    _key("NumberOfPatientRelatedInstances", L.PATIENT, False),
    _key("StudyInstanceUID", L.STUDY),
    _key("StudyDate", L.STUDY),
    _key("StudyTime", L.STUDY),
    _key("AccessionNumber", L.STUDY),
    _key("StudyID", L.STUDY),
    _key("StudyDescription", L.STUDY),
    _key("ReferringPhysicianName", L.STUDY),
    _key("ModalitiesInStudy", L.STUDY, False),
    _key("NumberOfStudyRelatedSeries", L.STUDY, False),
    _key("NumberOfStudyRelatedInstances", L.STUDY, False),
    _key("SeriesInstanceUID", L.SERIES),
    _key("Modality", L.SERIES),
    _key("SeriesNumber", L.SERIES),
    _key("SeriesDescription", L.SERIES),
    _key("NumberOfSeriesRelatedInstances", L.SERIES, False),
    _key("SOPInstanceUID", L.IMAGE),
    _key("SOPClassUID", L.IMAGE),
    _key("InstanceNumber", L.IMAGE),
)
_BY_TAG: Final = {a.tag: a for a in ATTRIBUTES}
_BY_KEYWORD: Final = {a.keyword: a for a in ATTRIBUTES}
#: The tags scanned from each file (what a stored instance must give :meth:`Index.add`).
SCANNED_TAGS: Final = frozenset(a.tag for a in ATTRIBUTES if a.stored)

_ORDER: Final = (L.PATIENT, L.STUDY, L.SERIES, L.IMAGE)
#: level -> (table, its unique key, the column naming its parent row).
_TABLES: Final = {
    L.PATIENT: ("patients", "PatientID", None),
    L.STUDY: ("studies", "StudyInstanceUID", "patient"),
    L.SERIES: ("series", "SeriesInstanceUID", "study"),
    L.IMAGE: ("instances", "SOPInstanceUID", "series"),
}
_COLUMNS: Final = {
    level: tuple(a.keyword for a in ATTRIBUTES if a.level is level and a.stored) for level in _ORDER
}
_IMAGE_EXTRA: Final = ("TransferSyntaxUID", "path", "size", "mtime")

#: Rows inserted before a commit is forced, and the longest a row waits for its commit.
COMMIT_EVERY: Final = 500
COMMIT_DELAY: Final = 0.5
#: Rows read (or files scanned) per step before giving the event loop a turn.
BATCH: Final = 256
#: Bytes of a file read to find its indexed tags (they all precede the pixel data).
_HEAD: Final = 64 * 1024


def attribute(key: str | int) -> Attribute | None:
    """The indexed attribute with this keyword or tag, or None."""
    return _BY_KEYWORD.get(key) if isinstance(key, str) else _BY_TAG.get(key)


class ArchiveIndexError(AiodicomError):
    """The index cannot be opened or written (a corrupt database, a full disk)."""


@dataclass(slots=True)
class ReconcileReport:
    """What :meth:`Index.reconcile` did."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _schema() -> str:
    statements = []
    for level in _ORDER:
        table, unique, parent = _TABLES[level]
        columns = [f"{name} TEXT NOT NULL DEFAULT ''" for name in _COLUMNS[level] if name != unique]
        if parent is not None:
            columns.insert(0, f"{parent} INTEGER NOT NULL")
        if level is L.IMAGE:
            columns += ["TransferSyntaxUID TEXT NOT NULL", "path TEXT NOT NULL", "size INTEGER", "mtime INTEGER"]
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, {unique} TEXT NOT NULL UNIQUE, "
            + ", ".join(columns)
            + ")"
        )
        if parent is not None:
            statements.append(f"CREATE INDEX IF NOT EXISTS {table}_{parent} ON {table}({parent})")
    statements.append("CREATE INDEX IF NOT EXISTS instances_path ON instances(path)")
    return ";\n".join(statements) + ";"


def _upsert(level: QueryLevel) -> str:
    table, unique, parent = _TABLES[level]
    names = ([parent] if parent else []) + list(_COLUMNS[level]) + (list(_IMAGE_EXTRA) if level is L.IMAGE else [])
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != unique)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT({unique}) DO UPDATE SET {updates} RETURNING id"
    )


_UPSERTS: Final = {level: _upsert(level) for level in _ORDER}


def _join(level: QueryLevel) -> tuple[str, list[str]]:
    """``FROM ... JOIN ...`` from the level's table up to the patients, and its columns."""
    tables = _ORDER[: _ORDER.index(level) + 1]
    sql = f"FROM {_TABLES[level][0]}"
    columns = [f"{_TABLES[level][0]}.id"]
    for child, parent in zip(reversed(tables), reversed(tables[:-1]), strict=False):
        child_table, _, link = _TABLES[child]
        sql += f" JOIN {_TABLES[parent][0]} ON {_TABLES[parent][0]}.id = {child_table}.{link}"
    for item in tables:
        columns += [f"{_TABLES[item][0]}.{name}" for name in _COLUMNS[item]]
    return sql, columns


class Index:
    """The SQLite index of one archive folder (``root``); see the module's docstring."""

    def __init__(self, root: str | os.PathLike[str], database: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.database = Path(database) if database is not None else self.root / ".aiodicom-index.sqlite"
        try:
            self._db = sqlite3.connect(self.database, isolation_level=None, check_same_thread=True)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_schema())
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise ArchiveIndexError(f"cannot open the index {self.database}: {exc}") from None
        self._uncommitted = 0
        self._commit_handle: asyncio.TimerHandle | None = None
        #: The last row written at each level and its id: the instances of one series
        #: arrive together, so their parents' rows are written once, not per instance.
        self._last: dict[QueryLevel, tuple[tuple[str | int, ...], int]] = {}

    # --- writing -------------------------------------------------------------------------

    def add(self, path: Path, tags: Mapping[int, bytes], transfer_syntax: str, size: int, mtime: int) -> None:
        """Index one stored instance from its raw tag values (at least SOP Instance UID)."""
        values = {a.keyword: text(tags[a.tag]) if a.tag in tags else "" for a in ATTRIBUTES if a.stored}
        if not values["SOPInstanceUID"]:
            raise ArchiveIndexError(f"{path} has no SOP Instance UID")
        relative = os.path.relpath(path, self.root) if path.is_absolute() else str(path)
        parent: int | None = None
        try:
            for level in _ORDER:
                row: list[str | int] = [values[name] for name in _COLUMNS[level]]
                if parent is not None:
                    row.insert(0, parent)
                if level is L.IMAGE:
                    row += [transfer_syntax, relative, size, mtime]
                key = tuple(row)
                last = self._last.get(level)
                if last is not None and last[0] == key:  # the same patient/study/series as before
                    parent = last[1]
                    continue
                parent = int(self._db.execute(_UPSERTS[level], row).fetchone()[0])
                self._last[level] = (key, parent)
        except sqlite3.Error as exc:
            raise ArchiveIndexError(f"cannot index {path}: {exc}") from None
        self._uncommitted += 1
        self._schedule_commit()

    def add_file(self, path: Path) -> bool:
        """Scan a Part 10 file's head and index it; False when it is not a usable instance."""
        try:
            meta = read_file_meta(path)
            with open(path, "rb") as handle:
                handle.seek(meta.dataset_offset)
                head = handle.read(_HEAD)
                stat = os.fstat(handle.fileno())
            found = scan_elements(head, meta.transfer_syntax, SCANNED_TAGS).values
        except (AiodicomError, OSError) as exc:
            _log.debug("index_skipped", path=str(path), error=str(exc))
            return False
        if 0x00080018 not in found:
            found[0x00080018] = meta.sop_instance_uid.encode()
        if 0x00080016 not in found:
            found[0x00080016] = meta.sop_class_uid.encode()
        self.add(path, found, meta.transfer_syntax, stat.st_size, stat.st_mtime_ns)
        return True

    def _schedule_commit(self) -> None:
        if self._uncommitted >= COMMIT_EVERY:
            self.commit()
            return
        if self._commit_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a script): commit() or close() does it
            self._commit_handle = loop.call_later(COMMIT_DELAY, self.commit)

    def commit(self) -> None:
        """Make the rows written so far durable (as far as WAL with synchronous=NORMAL goes)."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        if self._uncommitted:
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            self._uncommitted = 0

    def close(self) -> None:
        self.commit()
        self._db.execute("COMMIT")
        self._db.close()

    async def reconcile(self) -> ReconcileReport:
        """Bring the index in step with the folder: new or changed files in, vanished ones out."""
        began = time.perf_counter()
        report = ReconcileReport()
        known = {
            path: (size, mtime)
            for path, size, mtime in self._db.execute("SELECT path, size, mtime FROM instances")
        }
        seen: set[str] = set()
        for count, entry in enumerate(_files(self.root), 1):
            relative = os.path.relpath(entry.path, self.root)
            seen.add(relative)
            stat = entry.stat()
            if known.get(relative) == (stat.st_size, stat.st_mtime_ns):
                report.unchanged += 1
            elif self.add_file(Path(entry.path)):
                report.indexed += 1
            else:
                report.skipped += 1
            if count % BATCH == 0:
                await asyncio.sleep(0)
        gone = [path for path in known if path not in seen]
        for start in range(0, len(gone), BATCH):
            chunk = gone[start : start + BATCH]
            self._db.execute(f"DELETE FROM instances WHERE path IN ({','.join('?' * len(chunk))})", chunk)
            report.removed += len(chunk)
        self._prune()
        self.commit()
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        report.seconds = time.perf_counter() - began
        _log.info("index_reconciled", indexed=report.indexed, unchanged=report.unchanged,
                  removed=report.removed, skipped=report.skipped, seconds=round(report.seconds, 3))
        return report

    def _prune(self) -> None:
        """Drop series, studies and patients left without instances."""
        self._last.clear()
        for level in (L.SERIES, L.STUDY, L.PATIENT):
            table = _TABLES[level][0]
            child_table, _, link = _TABLES[_ORDER[_ORDER.index(level) + 1]]
            self._db.execute(f"DELETE FROM {table} WHERE id NOT IN (SELECT {link} FROM {child_table})")
        self._uncommitted += 1

    # --- reading -------------------------------------------------------------------------

    async def search(
        self, level: QueryLevel, exact: Mapping[str, Iterable[str]] | None = None, *, batch: int = BATCH
    ) -> AsyncIterator[tuple[int, dict[str, str]]]:
        """Every row at ``level`` with the attributes of its level and those above.

        ``exact`` narrows by stored columns (keyword -> allowed values), e.g. a UID list;
        the caller applies the full matching rules to what comes out. Rows are read
        ``batch`` at a time by row id, with a turn of the event loop in between.
        """
        sql, columns = _join(level)
        names = [column.split(".")[1] for column in columns[1:]]
        conditions, arguments = [], []
        for keyword, values in (exact or {}).items():
            found = attribute(keyword)
            assert found is not None and found.stored
            allowed = list(values)
            conditions.append(f"{_TABLES[found.level][0]}.{keyword} IN ({','.join('?' * len(allowed))})")
            arguments += allowed
        table = _TABLES[level][0]
        where = " AND ".join([f"{table}.id > ?", *conditions])
        statement = f"SELECT {', '.join(columns)} {sql} WHERE {where} ORDER BY {table}.id LIMIT {int(batch)}"
        last = 0
        while True:
            rows = self._db.execute(statement, [last, *arguments]).fetchall()
            for row in rows:
                yield row[0], dict(zip(names, row[1:], strict=True))
            if len(rows) < batch:
                return
            last = rows[-1][0]
            await asyncio.sleep(0)

    def computed(self, row_id: int, keyword: str) -> str:
        """A computed attribute (a count, ModalitiesInStudy) of one row at its own level."""
        query = _COMPUTED[keyword]
        values = [str(value) for (value,) in self._db.execute(query, (row_id,)) if value not in (None, "")]
        return "\\".join(values)

    def instances(self, level: QueryLevel, row_id: int) -> list[StoredInstance]:
        """The instances below (or at) one row of ``level``, in series and instance order."""
        path = _ORDER[_ORDER.index(level) :]
        sql = "SELECT instances.SOPClassUID, instances.SOPInstanceUID, instances.TransferSyntaxUID, instances.path FROM instances"
        for child, parent in zip(reversed(path), reversed(path[:-1]), strict=False):
            child_table, _, link = _TABLES[child]
            sql += f" JOIN {_TABLES[parent][0]} ON {_TABLES[parent][0]}.id = {child_table}.{link}"
        sql += f" WHERE {_TABLES[level][0]}.id = ? ORDER BY instances.series, CAST(instances.InstanceNumber AS INTEGER), instances.id"
        return [
            StoredInstance(sop_class, sop_instance, ts, self.root / relative)
            for sop_class, sop_instance, ts, relative in self._db.execute(sql, (row_id,))
        ]

    def count(self) -> int:
        """Instances indexed."""
        return int(self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def forget(self, paths: Iterable[Path]) -> None:
        """Drop the rows of files that turned out to be gone (a retrieve found them missing)."""
        self._last.clear()
        relative = [str(p.resolve().relative_to(self.root)) for p in paths]
        for start in range(0, len(relative), BATCH):
            chunk = relative[start : start + BATCH]
            self._db.execute(f"DELETE FROM instances WHERE path IN ({','.join('?' * len(chunk))})", chunk)
        self._uncommitted += 1
        self._schedule_commit()


_INSTANCES_OF_STUDY: Final = "FROM instances JOIN series ON series.id = instances.series WHERE series.study = ?"
_COMPUTED: Final[dict[str, str]] = {
    "NumberOfPatientRelatedStudies": "SELECT COUNT(*) FROM studies WHERE patient = ?",
    "NumberOfPatientRelatedSeries": "SELECT COUNT(*) FROM series JOIN studies ON studies.id = series.study WHERE studies.patient = ?",
    "NumberOfPatientRelatedInstances": "SELECT COUNT(*) FROM instances JOIN series ON series.id = instances.series "
    "JOIN studies ON studies.id = series.study WHERE studies.patient = ?",
    "ModalitiesInStudy": "SELECT DISTINCT Modality FROM series WHERE study = ? ORDER BY Modality",
    "NumberOfStudyRelatedSeries": "SELECT COUNT(*) FROM series WHERE study = ?",
    "NumberOfStudyRelatedInstances": f"SELECT COUNT(*) {_INSTANCES_OF_STUDY}",
    "NumberOfSeriesRelatedInstances": "SELECT COUNT(*) FROM instances WHERE series = ?",
}


def _files(root: Path) -> Iterator[os.DirEntry[str]]:
    """Every regular file under ``root``, skipping dot folders and files (the spool, the index)."""
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        yield entry
        except OSError as exc:
            _log.warning("index_folder_unreadable", error=str(exc))
