"""Exporters: where a pipeline's results go (a DICOM node, a folder, or your own code).

``process()`` returns exporters; the pipeline hands them to its
:class:`~aiodicom.pipeline.outbox.Outbox`, which makes each batch durable, runs its
exporters concurrently, retries what failed and dead-letters what never got
through. An exporter can also be awaited on its own: ``await exporter.export()``.

Data sets are taken as pydicom data sets, Part 10 files (paths, including
:class:`~aiodicom.data.lazy.LazyDataset`) or Part 10 bytes, from a list or a
generator. They are encoded once, into :class:`Instance` records (Part 10 bytes or
a file), so the caller's data sets are never touched again: nothing an exporter
does changes them, and changing them after ``process()`` returned changes nothing
that is exported.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias, cast

import anyio

from aiodicom._log import get_logger
from aiodicom._record import FrozenRecord
from aiodicom.codec.ae import normalize_ae_title
from aiodicom.codec.part10 import FileMeta, encode_file_meta, read_file_meta, transcode
from aiodicom.codec.scan import scan_elements, text
from aiodicom.codec.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.codec.vr import BULK_VRS
from aiodicom.errors import AiodicomError, DicomFileError, MalformedDatasetError
from aiodicom.transport.address import check_port
from aiodicom.transport.association import DEFAULT_TIMEOUTS, Timeouts

if TYPE_CHECKING:
    import pydicom

    from aiodicom.dimse.client import ClientAssociation

log = get_logger("aiodicom.pipeline.export")

#: A JSON value, as exporters persist their settings (:meth:`Exporter.to_record`).
JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"
#: One data set to export: a pydicom data set, a Part 10 file, or Part 10 bytes.
ExportItem: TypeAlias = "pydicom.Dataset | str | os.PathLike[str] | bytes | bytearray | memoryview"
#: What an exporter takes: data sets in a list or a generator, or a single one.
Datasets: TypeAlias = "Iterable[ExportItem] | ExportItem"
#: A destination: an :class:`Address`, ``"CALLED_AE@host:port"``, ``(host, port)``,
#: ``(host, port, called_ae)`` or ``(host, port, called_ae, calling_ae)``.
AddressLike: TypeAlias = "Address | str | tuple[str, int] | tuple[str, int, str] | tuple[str, int, str, str]"

#: The scanner reads the tags a layout names from this much of a file first.
_HEAD = 64 * 1024
#: Files are written and copied in pieces of this size, the event loop served between two.
CHUNK = 1024 * 1024


class ExportError(AiodicomError):
    """An export did not (fully) get through; ``failures`` says which instances and why.

    ``failures`` holds ``(SOP Instance UID, reason)`` pairs; it is empty when the
    exporter failed as a whole (a custom exporter that raised, say).
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


# --- what is exported ---------------------------------------------------------------


class Instance(FrozenRecord):
    """One encoded instance ready to export: Part 10 ``data`` in memory, or a ``path``.

    The outbox writes every instance of a batch as a file of its own before the
    batch counts as submitted, so exporters it runs get instances with a ``path``.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes | None = None
    path: Path | None = None

    def source(self) -> bytes | Path:
        """What :meth:`ClientAssociation.store <aiodicom.ClientAssociation.store>` takes."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path

    def read(self) -> bytes:
        """The Part 10 bytes (read from the file when there is one)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The Part 10 bytes in pieces of at most :data:`CHUNK` (the file is read piece by piece)."""
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), CHUNK):
                yield view[start : start + CHUNK]
            return
        assert self.path is not None
        with open(self.path, "rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk

    def texts(self, tags: Iterable[int]) -> dict[int, str]:
        """Top-level text values (UIDs, IDs), scanned without decoding the data set."""
        wanted = tuple(tags)
        head = self.data if self.data is not None else _read_head(self.path)
        meta = read_file_meta(head)
        result = scan_elements(memoryview(head)[meta.dataset_offset :], self.transfer_syntax, wanted)
        if not result.complete and self.data is None:
            result = scan_elements(memoryview(self.read())[meta.dataset_offset :], self.transfer_syntax, wanted)
        return {tag: text(raw) for tag, raw in result.values.items()}


def _read_head(path: Path | None) -> bytes:
    assert path is not None
    with open(path, "rb") as handle:
        return handle.read(_HEAD)


def encode_item(item: ExportItem) -> Instance:
    """Encode one data set into an :class:`Instance` (Part 10 bytes; a file stays a file).

    A pydicom data set is encoded in its own transfer syntax (``file_meta``), explicit
    VR little endian when it has none, without modifying it. Something that is not
    DICOM raises :class:`~aiodicom.errors.MalformedDatasetError` naming it.
    """
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
        meta = _checked_meta(data, "Part 10 bytes")
        return Instance(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax, data=data)
    if isinstance(item, str | os.PathLike):
        path = Path(os.fspath(item))
        meta = _checked_meta(path, str(path))
        return Instance(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax, path=path)
    return _encode_dataset(item)


def _checked_meta(source: bytes | Path, what: str) -> FileMeta:
    try:
        return read_file_meta(source)
    except MalformedDatasetError as exc:
        raise MalformedDatasetError(f"{what}: {exc}") from None
    except DicomFileError as exc:
        raise MalformedDatasetError(f"{what} is not a DICOM Part 10 file: {exc}") from None
    except OSError as exc:
        raise DicomFileError(f"cannot read {what}: {exc.strerror or exc}") from None


#: How each transfer syntax's data set is written: (little endian, implicit VR); the
#: rest (compressed syntaxes) are explicit VR little endian with encapsulated pixels.
_LAYOUTS = {
    IMPLICIT_VR_LITTLE_ENDIAN: (True, True),
    EXPLICIT_VR_BIG_ENDIAN: (False, False),
}
#: Top-level binary values at least this long are not copied while encoding: they are
#: handed on as they are, and written to disk in chunks with the event loop served between.
LARGE_VALUE = 1 << 20
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_EXPLICIT_HEADER = struct.Struct("<HH2s2xI")
_IMPLICIT_HEADER = struct.Struct("<HHI")

#: A data set encoded as Part 10: its identity and the buffers that make the file, in order.
Encoded: TypeAlias = "tuple[str, str, str, list[bytes | memoryview]]"


def encode_dataset(dataset: pydicom.Dataset) -> Encoded:
    """Encode a pydicom data set as Part 10 buffers, without modifying it.

    In its own transfer syntax (``file_meta``), explicit VR little endian when it has
    none. Large binary values (pixel data) are not copied: each is one buffer of its
    own, so encoding a 1 GB instance costs the header's time, not a gigabyte of copies
    on the event loop. Something that cannot be encoded raises
    :class:`~aiodicom.errors.MalformedDatasetError`.
    """
    sop_class, sop_instance = _uid(dataset, 0x00080016), _uid(dataset, 0x00080018)
    if not (sop_class and sop_instance):
        raise MalformedDatasetError("a data set to export has no SOP Class UID or no SOP Instance UID")
    meta = getattr(dataset, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else EXPLICIT_VR_LITTLE_ENDIAN
    try:
        parts: list[bytes | memoryview] = [encode_file_meta(sop_class, sop_instance, ts)]
        if ts in (EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN):
            body = _write(dataset, ts)
            parts.append(transcode(body, EXPLICIT_VR_LITTLE_ENDIAN, ts) if ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
                         else body)
        else:
            parts += _split(dataset, ts)
    except DicomFileError as exc:
        raise MalformedDatasetError(f"cannot export data set {sop_instance!r}: {exc}") from None
    except Exception as exc:  # pydicom raises many types for values it cannot encode
        raise MalformedDatasetError(f"cannot encode data set {sop_instance}: {exc}") from exc
    return sop_class, sop_instance, ts, parts


def _write(dataset: pydicom.Dataset, ts: str, encoding: str | list[str] | None = None) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    little, implicit = _LAYOUTS.get(ts, (True, False))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = little, implicit
    # A copy: pydicom caches encoded values in the elements it writes (person names).
    if encoding is None:
        write_dataset(buffer, copy.deepcopy(dataset))
    else:
        write_dataset(buffer, copy.deepcopy(dataset), encoding)
    return buffer.getvalue()


def _split(dataset: pydicom.Dataset, ts: str) -> list[bytes | memoryview]:
    """Little endian data sets: runs of small elements encoded by pydicom, large values as they are."""
    from pydicom.dataset import Dataset

    implicit = _LAYOUTS.get(ts, (True, False))[1]
    encoding = _character_sets(dataset)
    parts: list[bytes | memoryview] = []

    def new_run() -> Dataset:
        run = Dataset()
        # Raw elements in a later run decode with the data set's character set, not the default.
        run._parent_encoding = encoding
        return run

    run = new_run()
    for tag in sorted(dataset.keys()):  # insertion order is not tag order; the file's is
        element = dataset.get_item(tag)  # raw elements stay raw: reading converts nothing
        value = _large_value(element)
        if value is None:
            run[tag] = element
            continue
        if len(run):
            parts.append(_write(run, ts, encoding))
            run = new_run()
        parts += _large_element(int(tag), element, value, implicit)
    if len(run):
        parts.append(_write(run, ts, encoding))
    return parts


def _uid(dataset: pydicom.Dataset, tag: int) -> str:
    """A top-level UID, read without converting the element (attribute access would)."""
    value = getattr(dataset.get_item(tag), "value", None)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return "" if value is None else str(value).strip(" \0")


def _character_sets(dataset: pydicom.Dataset) -> list[str]:
    """Specific Character Set (0008,0005), read without converting anything in ``dataset``."""
    element = dataset.get_item(0x00080005)
    value = getattr(element, "value", None)
    if value is None:
        return ["iso8859"]  # pydicom's default
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").split("\\")
    from pydicom.charset import convert_encodings

    terms = [str(term).strip() for term in ([value] if isinstance(value, str) else value)]
    return convert_encodings(terms)  # Python's codec names, as pydicom keeps them


def _large_value(element: Any) -> memoryview | None:
    vr, value = getattr(element, "VR", None), getattr(element, "value", None)
    if vr in BULK_VRS and isinstance(value, bytes | bytearray | memoryview) and len(value) >= LARGE_VALUE:
        return memoryview(value).cast("B")
    return None


def _large_element(tag: int, element: Any, value: memoryview, implicit: bool) -> list[bytes | memoryview]:
    undefined = bool(getattr(element, "is_undefined_length", False))
    length = 0xFFFFFFFF if undefined else len(value) + len(value) % 2
    if implicit:
        header = _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length)
    else:
        header = _EXPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, str(element.VR).encode(), length)
    tail = _SEQUENCE_DELIMITER if undefined else b"\0" * (len(value) % 2)
    return [header, value, tail] if tail else [header, value]


def _encode_dataset(dataset: pydicom.Dataset) -> Instance:
    sop_class, sop_instance, ts, parts = encode_dataset(dataset)
    return Instance(sop_class, sop_instance, ts, data=b"".join(parts))


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


async def write_file(path: Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Create ``path`` (never an existing file) from ``chunks``, serving the event loop between two."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), CHUNK):
                part = view[start : start + CHUNK]
                while part:
                    part = part[os.write(fd, part) :]
                await anyio.sleep(0)
    finally:
        os.close(fd)


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
    "DicomExport",
    "ExportError",
    "ExportItem",
    "Datasets",
    "Exporter",
    "FileExport",
    "Instance",
    "InstanceExporter",
    "encode_dataset",
    "encode_item",
    "write_file",
]
