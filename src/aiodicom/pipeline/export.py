"""Exporters: where a pipeline's results go (a DICOM node, a folder, or your own code).

``process()`` returns exporters; the pipeline hands them to its
:class:`~aiodicom.pipeline.outbox.Outbox`, which makes each batch durable, runs its
exporters concurrently, retries what failed and dead-letters what never got
through. An exporter can also be awaited on its own: ``await exporter.export()``.

Data sets are taken as pydicom data sets, Part 10 files (paths, including
:class:`~aiodicom.data.lazy.LazyDataset`) or Part 10 bytes, from a list or a
generator. They are encoded once (:mod:`aiodicom.pipeline.encoding`), into
:class:`Instance` records (Part 10 bytes or a file), so the caller's data sets are never touched again: nothing an exporter
does changes them, and changing them after ``process()`` returned changes nothing
that is exported.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self, TypeAlias, cast

from aiodicom._log import get_logger
from aiodicom._record import FrozenRecord
from aiodicom.codec.ae import normalize_ae_title
from aiodicom.errors import AiodicomError, DicomFileError, MalformedDatasetError
from aiodicom.pipeline.encoding import CHUNK, ExportItem, Instance, encode_item, write_file
from aiodicom.transport.address import check_port
from aiodicom.transport.association import DEFAULT_TIMEOUTS, Timeouts

if TYPE_CHECKING:
    from aiodicom.dimse.client import ClientAssociation

log = get_logger("aiodicom.pipeline.export")

#: A JSON value, as exporters persist their settings (:meth:`Exporter.to_record`).
JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"
#: What an exporter takes: data sets in a list or a generator, or a single one.
Datasets: TypeAlias = "Iterable[ExportItem] | ExportItem"
#: A destination: an :class:`Address`, ``"CALLED_AE@host:port"``, ``(host, port)``,
#: ``(host, port, called_ae)`` or ``(host, port, called_ae, calling_ae)``.
AddressLike: TypeAlias = "Address | str | tuple[str, int] | tuple[str, int, str] | tuple[str, int, str, str]"



class ExportError(AiodicomError):
    """An export did not (fully) get through; ``failures`` says which instances and why.

    ``failures`` holds ``(SOP Instance UID, reason)`` pairs; it is empty when the
    exporter failed as a whole (a custom exporter that raised, say).
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


# --- exporters ------------------------------------------------------------------------


class Exporter:
    """Base class of exporters: subclass it and write ``async def export(self)``.

    ``export()`` delivers everything or raises (any exception counts as a failure;
    the outbox retries it with backoff, then dead-letters it). Keep it idempotent: a
    retry, or a restart after a crash, runs it again.

    With a durable outbox (a pipeline with a ``data_directory``) a pending exporter
    must survive a restart, so it is saved as its class (which must be importable
    by module and name) and :meth:`to_record`; :meth:`from_record` builds it again.
    The defaults save the instance's attributes and pass them back to ``__init__`` as
    keyword arguments, which fits exporters whose attributes are their arguments.
    """

    async def export(self) -> None:
        """Deliver; raise when it did not all get through."""
        raise NotImplementedError(f"{type(self).__name__} must define async def export(self)")

    def describe(self) -> str:
        """Where it goes, for logs, the status and dead-letter records (no PHI)."""
        return type(self).__name__

    def destination(self) -> dict[str, JsonValue]:
        """Where it goes, for a dead-letter record: enough to deliver it by hand."""
        cls = type(self)
        return {"kind": "custom", "class": f"{cls.__module__}:{cls.__qualname__}", "settings": self.to_record()}

    def to_record(self) -> dict[str, JsonValue]:
        """Settings to persist (JSON); the default: the instance's attributes."""
        values = dict(vars(self)) if hasattr(self, "__dict__") else {}
        try:
            json.dumps(values)
        except (TypeError, ValueError) as exc:
            raise ExportError(
                f"{type(self).__name__} cannot be kept across a restart: its attributes are not JSON "
                f"({exc}); define to_record() and from_record()"
            ) from None
        return values

    @classmethod
    def from_record(cls, record: dict[str, JsonValue]) -> Self:
        """Build the exporter again from :meth:`to_record`'s settings."""
        return cls(**record)


#: Called with each instance once the destination has it (the outbox records it).
Delivered = Callable[[Instance], Awaitable[None] | None]


class InstanceExporter(Exporter):
    """An exporter of data sets, one instance at a time: what the outbox tracks per instance.

    Subclasses implement :meth:`deliver`; the outbox calls it with the instances not
    yet delivered (so a retry or a resumed batch sends only those) and records each one
    ``delivered`` reports. ``datasets`` may be a list or a generator (read once).
    """

    def __init__(self, datasets: Datasets) -> None:
        self.datasets: Iterable[ExportItem] = _as_items(datasets)

    async def export(self) -> None:
        """Encode the data sets and deliver them all; :class:`ExportError` lists what failed."""
        await self.deliver([encode_item(item) for item in self.datasets], _nothing)

    async def deliver(self, instances: Sequence[Instance], delivered: Delivered) -> None:
        """Deliver ``instances``, calling ``delivered`` for each one; raise :class:`ExportError`."""
        raise NotImplementedError

    def settings(self) -> dict[str, JsonValue]:
        """What :meth:`to_record` saves besides the data (subclasses list their options)."""
        return {}

    def to_record(self) -> dict[str, JsonValue]:
        return self.settings()

    @classmethod
    def from_record(cls, record: dict[str, JsonValue]) -> Self:
        return cls(datasets=(), **record)  # type: ignore[arg-type]


def _as_items(datasets: Datasets) -> Iterable[ExportItem]:
    """A lone data set, path or bytes is a batch of one (iterating it would give its
    elements, or the characters of the path)."""
    from pydicom.dataset import Dataset

    if isinstance(datasets, str | bytes | bytearray | memoryview | os.PathLike | Dataset):
        return [datasets]
    return datasets


def _nothing(_instance: Instance) -> None:
    return None


async def _report(delivered: Delivered, instance: Instance) -> None:
    result = delivered(instance)
    if result is not None:
        await result


def _failed(what: str, failures: list[tuple[str, str]], total: int) -> ExportError:
    first = failures[0][1]
    return ExportError(f"{what}: {len(failures)} of {total} instances not delivered (first: {first})", failures)


# --- DICOM ----------------------------------------------------------------------------


class Address(FrozenRecord):
    """A DICOM node: where to connect and which AE titles to use."""

    host: str
    port: int
    called_ae: str = "ANY-SCP"
    calling_ae: str = "AIODICOM"

    @classmethod
    def parse(cls, value: AddressLike) -> Address:
        """An address from any :data:`AddressLike` form, with port and AE titles checked."""
        if isinstance(value, Address):
            parts: tuple[object, ...] = (value.host, value.port, value.called_ae, value.calling_ae)
        elif isinstance(value, str):
            called, at, rest = value.rpartition("@")
            host, colon, port = rest.rpartition(":")
            if not (at and colon and host and port.isdigit()):
                raise ValueError(f"address {value!r} is not CALLED_AE@host:port")
            parts = (host, int(port), called)
        else:
            parts = tuple(value)
            if not 2 <= len(parts) <= 4:
                raise ValueError(f"address {value!r} is not (host, port[, called AE[, calling AE]])")
        address = cls(*parts)  # type: ignore[arg-type]
        if not isinstance(address.host, str) or not address.host:
            raise ValueError(f"address {value!r} has no host")
        check_port(address.port, listening=False)
        normalize_ae_title(address.called_ae, "called AE title")
        normalize_ae_title(address.calling_ae, "calling AE title")
        return address

    def __str__(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"


class DicomExport(InstanceExporter):
    """C-STORE data sets to a DICOM node.

    Each instance is proposed in its own transfer syntax (plus an uncompressed
    fallback unless it is lossy compressed; see
    :func:`~aiodicom.dimse.client.contexts_for_encodings`), so it arrives as it was
    encoded. A success or warning status (e.g. 0xB000, coercion) counts as
    delivered; a failure status, or no answer, does not.

    :param address: the destination (:data:`AddressLike`).
    :param datasets: data sets, Part 10 files or bytes; a list or a generator.
    :param timeouts: the association's waits (:class:`~aiodicom.Timeouts`).
    """

    def __init__(
        self, address: AddressLike, datasets: Datasets = (), *, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        super().__init__(datasets)
        self.address = Address.parse(address)
        self.timeouts = timeouts

    def describe(self) -> str:
        return f"DICOM {self.address}"

    def settings(self) -> dict[str, JsonValue]:
        a = self.address
        return {
            "address": [a.host, a.port, a.called_ae, a.calling_ae],
            "timeouts": {name: getattr(self.timeouts, name) for name in _TIMEOUT_FIELDS},
        }

    @classmethod
    def from_record(cls, record: dict[str, JsonValue]) -> Self:
        host, port, called, calling = cast(list[object], record["address"])
        timeouts = Timeouts(**cast(dict[str, float], record.get("timeouts") or {}))
        return cls((str(host), cast(int, port), str(called), str(calling)), timeouts=timeouts)

    def destination(self) -> dict[str, JsonValue]:
        """The dead-letter record's destination: what ``aiodicom store`` needs to resend."""
        a = self.address
        return {"kind": "dicom", "host": a.host, "port": a.port, "called_ae": a.called_ae, "calling_ae": a.calling_ae}

    async def deliver(self, instances: Sequence[Instance], delivered: Delivered) -> None:
        from aiodicom.dimse.client import contexts_for_encodings

        failures: list[tuple[str, str]] = []
        encodings = {(i.sop_class_uid, i.transfer_syntax): None for i in instances}
        for group in contexts_for_encodings(encodings) if instances else []:
            classes = {abstract for abstract, _ in group}
            batch = [i for i in instances if i.sop_class_uid in classes]
            failures += await self._send(group, batch, delivered)
        if failures:
            raise _failed(self.describe(), failures, len(instances))

    async def _send(self, contexts: Sequence[tuple[str, Sequence[str]]], batch: list[Instance],
                    delivered: Delivered) -> list[tuple[str, str]]:
        """Send one association's worth; every instance not delivered comes back with why."""
        from aiodicom.dimse.client import connect

        failures: list[tuple[str, str]] = []
        done = 0
        a = self.address
        try:
            async with connect(a.host, a.port, called_ae=a.called_ae, calling_ae=a.calling_ae,
                               contexts=contexts, timeouts=self.timeouts) as assoc:
                for instance in batch:
                    reason = await _store_one(assoc, instance)
                    done += 1
                    if reason is None:
                        await _report(delivered, instance)
                    else:
                        failures.append((instance.sop_instance_uid, reason))
        except AiodicomError as exc:
            # The association failed: the one in flight had no answer, the rest were not sent.
            failures += [(i.sop_instance_uid, str(exc) or type(exc).__name__) for i in batch[done:]]
        return failures


_TIMEOUT_FIELDS = ("connect", "acse", "dimse", "network_idle", "artim", "pdu", "min_rate")


async def _store_one(assoc: ClientAssociation, instance: Instance) -> str | None:
    """C-STORE one instance: None when delivered (success or warning), else why not.

    A problem with this instance alone (unreadable, malformed, no context for it) is its
    reason and the association goes on; one of the association is raised.
    """
    from aiodicom.errors import NoPresentationContext

    try:
        status = await assoc.store(instance.source())
    except (MalformedDatasetError, DicomFileError, NoPresentationContext) as exc:
        return str(exc)
    except OSError as exc:
        if isinstance(exc, AiodicomError):  # a timeout is also an OSError: the association's
            raise
        return _reason(exc)
    if status.is_success or status.is_warning:
        if status.is_warning:
            log.debug("export_warning", sop_instance_uid=instance.sop_instance_uid, status=f"0x{int(status):04X}")
        return None
    comment = f": {status.error_comment}" if status.error_comment else ""
    return f"0x{int(status):04X} ({status.description}){comment}"


# --- files ----------------------------------------------------------------------------

#: What :class:`FileExport` does when the file it would write exists with other content.
OnConflict = Literal["keep-both", "replace", "fail"]


class FileExport(InstanceExporter):
    """Write data sets as Part 10 files into a folder.

    Names come from ``layout`` (default ``{SOPInstanceUID}.dcm``; the fields of
    :data:`~aiodicom.dimse.store.LAYOUT_FIELDS`), each value made a safe path
    component, never a raw wire value. Each file is written under a temporary name
    and linked into place, so a reader never sees half a file and an existing file
    is never replaced by surprise: a file with the same content counts as delivered
    (a retried export is harmless); one with other content is kept, and the new one
    gets a numbered name (``on_conflict="keep-both"``), replaces it (``"replace"``)
    or fails (``"fail"``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        datasets: Datasets = (),
        *,
        layout: str = "{SOPInstanceUID}.dcm",
        on_conflict: OnConflict = "keep-both",
        fsync: bool = False,
    ) -> None:
        from aiodicom.dimse.store import GroupSync, layout_path

        super().__init__(datasets)
        self.directory = Path(directory)
        named: list[int] = []  # the tags the layout names, found by building it once
        layout_path(self.directory, layout, lambda tag: named.append(tag))  # unknown fields fail here
        self._tags = tuple(named)
        if on_conflict not in _CONFLICTS:
            raise ValueError(f"on_conflict must be one of {', '.join(_CONFLICTS)}, not {on_conflict!r}")
        self.layout = layout
        self.on_conflict: OnConflict = on_conflict
        self.fsync = fsync
        self._syncer = GroupSync() if fsync else None

    def describe(self) -> str:
        return f"folder {self.directory}"

    def settings(self) -> dict[str, JsonValue]:
        return {"directory": str(self.directory), "layout": self.layout, "on_conflict": self.on_conflict,
                "fsync": self.fsync}

    def destination(self) -> dict[str, JsonValue]:
        return {"kind": "folder", "directory": str(self.directory.resolve())}

    async def deliver(self, instances: Sequence[Instance], delivered: Delivered) -> None:
        from aiodicom.dimse.store import layout_path

        failures: list[tuple[str, str]] = []
        for instance in instances:
            try:
                values = instance.texts(self._tags)
                await self._write(layout_path(self.directory, self.layout, values.get), instance)
            except (AiodicomError, OSError) as exc:
                failures.append((instance.sop_instance_uid, _reason(exc)))
                continue
            await _report(delivered, instance)
        if failures:
            raise _failed(self.describe(), failures, len(instances))

    async def _write(self, target: Path, instance: Instance) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            await write_file(temporary, instance.chunks())
            if self._syncer is not None:
                await self._syncer.sync([temporary])
            written = _CONFLICTS[self.on_conflict](temporary, target)
            if self._syncer is not None:
                await self._syncer.sync([written])  # the new name, in its folder
            return written
        finally:
            if temporary.exists():
                temporary.unlink()


def _same(a: Path, b: Path) -> bool:
    """True when both files hold the same bytes (compared piece by piece)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as one, open(b, "rb") as other:
            while chunk := one.read(CHUNK):
                if chunk != other.read(len(chunk)):
                    return False
        return True
    except OSError:
        return False


def _link(temporary: Path, target: Path) -> bool:
    """Link ``temporary`` to ``target`` unless ``target`` exists (atomically: no clobber)."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        return False
    return True


def _keep_both(temporary: Path, target: Path) -> Path:
    for n in range(1, 10_000):
        candidate = target if n == 1 else target.with_name(f"{target.stem}_{n}{target.suffix}")
        if _same(candidate, temporary) or _link(temporary, candidate):
            return candidate
    raise ExportError("10000 files of its name with other content already exist")


def _replace(temporary: Path, target: Path) -> Path:
    os.replace(temporary, target)
    return target


def _fail(temporary: Path, target: Path) -> Path:
    if _same(target, temporary) or _link(temporary, target):
        return target
    raise ExportError("a file of its name already exists with other content")


_CONFLICTS: dict[str, Callable[[Path, Path], Path]] = {
    "keep-both": _keep_both,
    "replace": _replace,
    "fail": _fail,
}


def _reason(exc: BaseException) -> str:
    """Why, without the file's path: a layout may put patient IDs in it, and reasons are logged."""
    if isinstance(exc, OSError) and not isinstance(exc, AiodicomError):
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return str(exc) or type(exc).__name__


__all__ = [
    "Address",
    "AddressLike",
    "Datasets",
    "DicomExport",
    "ExportError",
    "ExportItem",
    "Exporter",
    "FileExport",
    "Instance",
    "InstanceExporter",
    "JsonValue",
]
