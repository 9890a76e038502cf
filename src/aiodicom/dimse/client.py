"""The SCU side: ``async with aiodicom.connect(...) as assoc`` and its operations.

A background reader (a :class:`~aiodicom.dimse.association.DimseAssociation`) matches
responses to requests by message ID, so concurrent ``store`` calls pipeline
up to the negotiated asynchronous operations window, and one at a time
otherwise. Every wait has a timeout from :class:`Timeouts`.
"""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.codec.part10 import FileMeta, pad_odd_lengths, read_file_meta, transcode
from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    is_compressed,
    transfer_syntax_name,
)
from aiodicom.codec.walk import walk_dataset, walk_file
from aiodicom.dimse import command as C
from aiodicom.dimse.association import DimseAssociation
from aiodicom.dimse.services import Service, ServiceRegistry
from aiodicom.dimse.status import Status
from aiodicom.errors import (
    AiodicomError,
    AssociationError,
    DicomFileError,
    MalformedDatasetError,
    NoPresentationContext,
)
from aiodicom.transport.address import check_port, describe_os_error
from aiodicom.transport.association import (
    DEFAULT_TIMEOUTS,
    AssociateTimeout,
    Association,
    ConnectTimeout,
    DicomProtocol,
    Timeouts,
)
from aiodicom.ul.machine import Role
from aiodicom.ul.negotiation import DEFAULT_MAX_PDU_LENGTH, build_request

if TYPE_CHECKING:
    import pydicom

#: Data sets up to this size are read whole; larger ones are streamed from disk.
_STREAM_THRESHOLD = 32 * 1024 * 1024

# Common storage SOP classes proposed by default (a file's own class is always
# proposed by ``contexts_for_files``); kept well under the 128-context limit.
COMMON_STORAGE_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.1",  # CR Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
)

ContextSpec = tuple[str, Sequence[str]]


def default_contexts() -> list[ContextSpec]:
    """Verification plus common storage classes, uncompressed."""
    syntaxes = list(UNCOMPRESSED_TRANSFER_SYNTAXES[:2])
    contexts: list[ContextSpec] = [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]
    contexts.extend((uid, syntaxes) for uid in COMMON_STORAGE_SOP_CLASSES)
    return contexts


def contexts_for_files(paths: Iterable[str | os.PathLike[str]]) -> list[list[ContextSpec]]:
    """Presentation contexts to send ``paths``, split into groups of at most 128.

    Files are grouped by SOP class. Every file's own transfer syntax gets a
    context of its own: an SCP picks by its own preference within a context
    (DCMTK and pynetdicom do), so this is what lets the data go untouched.
    Uncompressed and losslessly compressed files add a fallback context
    (explicit and implicit VR little endian) they are converted or
    decompressed for, only when the peer accepts nothing closer; lossy
    compressed files never are. A SOP class's
    contexts stay in one group, so each file belongs to exactly one association.
    """
    return contexts_for_encodings(
        (meta.sop_class_uid, meta.transfer_syntax) for meta in map(read_file_meta, map(Path, paths))
    )


def contexts_for_encodings(encodings: Iterable[tuple[str, str]]) -> list[list[ContextSpec]]:
    """Like :func:`contexts_for_files`, from ``(SOP class, transfer syntax)`` pairs."""
    by_class: dict[str, dict[tuple[str, ...], None]] = {}
    for sop_class, ts in dict.fromkeys(encodings):
        syntaxes = by_class.setdefault(sop_class, {})
        syntaxes[(ts,)] = None
        if not is_compressed(ts) or ts in LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES:
            syntaxes[(EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)] = None
    groups: list[list[ContextSpec]] = [[]]
    for sop_class, syntaxes in by_class.items():
        if groups[-1] and len(groups[-1]) + len(syntaxes) > 127:
            groups.append([])
        groups[-1].extend((sop_class, list(ts)) for ts in syntaxes)
    return [[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]), *group] for group in groups]


#: A message ready to send: (context ID, command factory by message ID, data set,
#: what was changed locally to send it).
_Prepared = tuple[int, Any, "bytes | memoryview", tuple[str, ...]]


class ClientAssociation:
    """An association we requested. Obtain one with :func:`connect`.

    Its operations are built on :class:`~aiodicom.dimse.association.DimseAssociation`
    (``dimse``), which reads the association and also serves requests the peer sends
    us (e.g. the C-STOREs of a C-GET) with the handlers given to :func:`connect`.
    """

    def __init__(self, dimse: DimseAssociation) -> None:
        self.dimse = dimse
        self._association = dimse.association
        self.timeouts = dimse.association.timeouts
        #: Requests we may have in flight at once (the window the peer granted).
        self.max_outstanding = dimse.max_outstanding
        self.log = dimse.log

    # --- information -------------------------------------------------------------

    @property
    def association(self) -> Association:
        """The underlying Upper Layer association (AE titles, peer address, contexts)."""
        return self._association

    @property
    def accepted_contexts(self) -> list[tuple[int, str, str]]:
        """``(context ID, abstract syntax, transfer syntax)`` for each context the peer accepted."""
        return [(c.id, c.abstract_syntax, c.transfer_syntax) for c in self._association.contexts.values()]

    # --- operations ------------------------------------------------------------------

    async def echo(self) -> Status:
        """C-ECHO: is the peer there and speaking DICOM?"""
        context = self._association.context_for(VERIFICATION_SOP_CLASS)
        if context is None:
            raise NoPresentationContext("the peer did not accept the Verification SOP class")
        return (await self.dimse.request_final(context.id, C.CEchoRQ)).status

    async def store(
        self,
        source: str | os.PathLike[str] | bytes | pydicom.Dataset,
        *,
        priority: int = C.Priority.MEDIUM,
        move_originator_ae: str | None = None,
        move_originator_message_id: int | None = None,
    ) -> Status:
        """C-STORE one instance from a file path, Part 10 bytes, or a pydicom data set.

        The data set is sent as encoded when the peer accepted its transfer
        syntax, and converted between uncompressed transfer syntaxes otherwise.
        Returns the peer's status (check ``status.is_success`` or call
        ``raise_for_status``); a caller's data set is never modified. A path
        or bytes that are not DICOM, or whose data set is cut short or garbage,
        raise :class:`~aiodicom.errors.MalformedDatasetError` before anything
        is sent.
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            prepared = self._prepare(bytes(source), priority, move_originator_ae, move_originator_message_id)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            try:
                from_file = self._prepare_file(path, priority, move_originator_ae, move_originator_message_id)
                if from_file is None:
                    return await self._store_large(path, priority, move_originator_ae, move_originator_message_id)
            except MalformedDatasetError as exc:
                raise _naming(path, exc) from None
            prepared = from_file
        else:
            return await self._store_dataset(source, priority, move_originator_ae, move_originator_message_id)
        context_id, rq_factory, payload, changes = prepared
        status = (await self.dimse.request_final(context_id, rq_factory, payload)).status
        return status.with_local_changes(changes)

    async def store_files(
        self, paths: Iterable[str | os.PathLike[str]], *, priority: int = C.Priority.MEDIUM
    ) -> AsyncGenerator[tuple[Path, Status | AiodicomError], None]:
        """C-STORE files in order, reading each next file while the peer answers the last.

        Yields ``(path, status)``, or ``(path, error)`` for a file that was not
        sent, and the association goes on: :class:`~aiodicom.errors.MalformedDatasetError`
        for a file that is not DICOM or whose data set is cut short or garbage
        (checked before any byte of it is sent), :class:`~aiodicom.errors.DicomFileError`
        for an unreadable one, :class:`~aiodicom.errors.NoPresentationContext`
        when the peer accepted nothing that fits. ``status.local_changes`` says
        what was repaired or decompressed to send a file, ``status.error_comment``
        what the peer said. Errors of the association itself (abort, timeout)
        are raised.
        """
        queue = [Path(p) for p in paths]

        def prepare(index: int) -> _Prepared | None | AiodicomError:
            if index >= len(queue):
                return None
            try:
                return self._prepare_file(queue[index], priority, None, None)
            except AiodicomError as exc:
                return exc
            except OSError as exc:
                return DicomFileError(f"cannot read {queue[index]}: {exc.strerror or exc}")

        upcoming = prepare(0)
        for index, path in enumerate(queue):
            current = upcoming
            if isinstance(current, AiodicomError):
                upcoming = prepare(index + 1)
                yield path, current
                continue
            if current is None:  # too large to read whole: streamed from disk
                outcome: Status | AiodicomError
                try:
                    outcome = await self._store_large(path, priority, None, None)
                except (DicomFileError, NoPresentationContext) as exc:
                    outcome = exc  # this file only; the association goes on
                upcoming = prepare(index + 1)
                yield path, outcome
                continue
            context_id, make, payload, changes = current

            async def send_then_read_next(context: int, command: bytes, index: int = index) -> None:
                nonlocal upcoming
                await self._association.send(context, command, payload)  # noqa: B023 - awaited at once
                upcoming = prepare(index + 1)  # while the peer stores this one

            response = await self.dimse.request_final(context_id, make, send=send_then_read_next)
            yield path, response.status.with_local_changes(changes)

    def _prepare_file(
        self,
        path: Path,
        priority: int,
        move_originator_ae: str | None,
        move_originator_message_id: int | None,
    ) -> _Prepared | None:
        """Read a file once and get its message ready; None when it must be streamed.

        A file that is not DICOM, or whose data set is cut short or garbage,
        raises :class:`~aiodicom.errors.MalformedDatasetError` naming the file:
        nothing of it goes on the wire, so a peer never acknowledges half a file.
        """
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > _STREAM_THRESHOLD:
                return None
            data = handle.read()
        return self._prepare(data, priority, move_originator_ae, move_originator_message_id)

    def _prepare(
        self,
        data: bytes,
        priority: int,
        move_originator_ae: str | None,
        move_originator_message_id: int | None,
    ) -> _Prepared:
        meta = _checked_meta(data)
        context = self._context_for(meta.sop_class_uid, meta.transfer_syntax)
        rq_factory = self._store_rq(
            meta.sop_class_uid, meta.sop_instance_uid, priority, move_originator_ae, move_originator_message_id
        )
        payload: bytes | memoryview = memoryview(data)[meta.dataset_offset :]
        walk_dataset(payload, meta.transfer_syntax)
        payload, changes = _repair(payload, meta.transfer_syntax)
        if context.transfer_syntax != meta.transfer_syntax:
            payload = transcode(bytes(payload), meta.transfer_syntax, context.transfer_syntax)
            if is_compressed(meta.transfer_syntax):
                changes += (f"decompressed from {transfer_syntax_name(meta.transfer_syntax)}",)
        return context.id, rq_factory, payload, changes

    async def _store_large(
        self,
        path: Path,
        priority: int,
        move_originator_ae: str | None,
        move_originator_message_id: int | None,
    ) -> Status:
        meta = _checked_meta(path)
        walk_file(path, meta.dataset_offset, meta.transfer_syntax)
        dataset_length = path.stat().st_size - meta.dataset_offset
        context = self._context_for(meta.sop_class_uid, meta.transfer_syntax)
        rq_factory = self._store_rq(
            meta.sop_class_uid, meta.sop_instance_uid, priority, move_originator_ae, move_originator_message_id
        )
        if context.transfer_syntax != meta.transfer_syntax:
            raw = _read_range(path, meta.dataset_offset, dataset_length)
            converted = transcode(raw, meta.transfer_syntax, context.transfer_syntax)
            return (await self.dimse.request_final(context.id, rq_factory, converted)).status
        return await self._store_streamed(context.id, rq_factory, path, meta.dataset_offset, dataset_length)

    async def _store_dataset(
        self,
        dataset: pydicom.Dataset,
        priority: int,
        move_originator_ae: str | None,
        move_originator_message_id: int | None,
    ) -> Status:
        sop_class = str(dataset.SOPClassUID)
        sop_instance = str(dataset.SOPInstanceUID)
        meta = getattr(dataset, "file_meta", None)
        own_ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
        context = self._context_for(sop_class, own_ts or EXPLICIT_VR_LITTLE_ENDIAN)
        if own_ts is not None and is_compressed(own_ts) and context.transfer_syntax != own_ts:
            raise NoPresentationContext(
                f"the data set is encoded in {own_ts}, which the peer did not accept for {sop_class}"
            )
        payload = _encode_dataset(dataset, context.transfer_syntax)
        rq_factory = self._store_rq(sop_class, sop_instance, priority, move_originator_ae, move_originator_message_id)
        return (await self.dimse.request_final(context.id, rq_factory, payload)).status

    def _store_rq(
        self,
        sop_class: str,
        sop_instance: str,
        priority: int,
        move_originator_ae: str | None,
        move_originator_message_id: int | None,
    ) -> Any:
        def make(mid: int) -> C.CStoreRQ:
            return C.CStoreRQ(mid, sop_class, sop_instance, priority, move_originator_ae, move_originator_message_id)

        return make

    def _context_for(self, sop_class: str, transfer_syntax: str) -> Any:
        association = self._association
        exact = association.context_for(sop_class, (transfer_syntax,))
        if exact is not None and exact.transfer_syntax == transfer_syntax:
            return exact
        if is_compressed(transfer_syntax) and transfer_syntax not in LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES:
            raise NoPresentationContext(
                f"the peer accepted no presentation context for {sop_class} in "
                f"{transfer_syntax_name(transfer_syntax)}, which is lossy and is never decompressed"
            )
        fallback = association.context_for(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
        if fallback is None or is_compressed(fallback.transfer_syntax):
            what = f" in {transfer_syntax_name(transfer_syntax)} or any uncompressed syntax" if is_compressed(
                transfer_syntax) else ""
            raise NoPresentationContext(f"the peer accepted no presentation context for SOP class {sop_class}{what}")
        return fallback

    async def _store_streamed(self, context_id: int, rq_factory: Any, path: Path, offset: int, length: int) -> Status:
        with open(path, "rb") as handle:
            handle.seek(offset)

            async def send(context: int, command: bytes) -> None:
                await self._association.send_streamed(context, command, handle.read, length)

            return (await self.dimse.request_final(context_id, rq_factory, send=send)).status

    # --- ending ------------------------------------------------------------------------

    async def release(self) -> None:
        """Release the association now (``connect`` does it when its block ends)."""
        await self.dimse.close()  # the reader stops before A-RELEASE is read
        await self._association.release()

    def abort(self) -> None:
        """Abort the association at once (A-ABORT); outstanding requests fail."""
        self._association.abort()


def _repair(payload: bytes | memoryview, transfer_syntax: str) -> tuple[bytes | memoryview, tuple[str, ...]]:
    """Pad odd-length values (PS3.5 7.1.1) before sending, as DCMTK does; say so."""
    payload, padded = pad_odd_lengths(payload, transfer_syntax)
    if not padded:
        return payload, ()
    tags = ", ".join(f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in padded)
    return payload, (f"padded odd-length {tags}",)


def _checked_meta(source: bytes | Path) -> FileMeta:
    """The file meta of something we are about to send; not DICOM at all is malformed too."""
    try:
        return read_file_meta(source)
    except MalformedDatasetError:
        raise
    except DicomFileError as exc:
        raise MalformedDatasetError(f"not a DICOM file: {exc}") from None


def _naming(path: Path, error: MalformedDatasetError) -> MalformedDatasetError:
    """``error`` with the file named, for a caller of ``store(path)`` (store_files yields the path)."""
    if str(path) in str(error):
        return error
    return MalformedDatasetError(f"{path}: {error}", error.offset)


def _read_range(path: Path | None, offset: int, length: int) -> bytes:
    assert path is not None
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise DicomFileError(f"{path} changed while being read")
    return data


def _encode_dataset(dataset: pydicom.Dataset, transfer_syntax: str) -> bytes:
    """Encode a data set (without file meta) in an uncompressed transfer syntax."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    if is_compressed(transfer_syntax):
        raise NoPresentationContext(f"cannot encode a data set in compressed {transfer_syntax}")
    buffer = DicomBytesIO()
    buffer.is_little_endian = transfer_syntax != "1.2.840.10008.1.2.2"
    buffer.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    try:
        write_dataset(buffer, dataset)
    except Exception as exc:
        raise DicomFileError(f"cannot encode the data set: {exc}") from exc
    data = buffer.getvalue()
    if transfer_syntax == "1.2.840.10008.1.2.1.99":
        return transcode(data, EXPLICIT_VR_LITTLE_ENDIAN, transfer_syntax)
    return data


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    called_ae: str = "ANY-SCP",
    calling_ae: str = "AIODICOM",
    contexts: Sequence[ContextSpec] | None = None,
    ssl: _ssl.SSLContext | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
    max_outstanding: int | None = None,
    services: Sequence[Service] = (),
) -> AsyncIterator[ClientAssociation]:
    """Open an association, yield it, release it on exit (abort on error).

    ``contexts`` are ``(abstract syntax, [transfer syntaxes])`` pairs; by
    default Verification and common storage classes. ``max_outstanding``
    proposes an asynchronous operations window (pipelined requests).

    :param host: the peer's host name or address (also the name its TLS certificate must match).
    :param port: the peer's TCP port.
    :param called_ae: the peer's AE title.
    :param calling_ae: ours.
    :param contexts: presentation contexts to propose, e.g. from :func:`contexts_for_files`.
    :param ssl: a client-side ``ssl.SSLContext`` for DICOM over TLS.
    :param timeouts: the waits this association bounds (:class:`Timeouts`).
    :param max_pdu_length: the largest PDU we announce for the peer to send us.
    :param max_outstanding: requests to have in flight at once, if the peer grants it.
    :param services: services whose requests the peer may send us on this association
        (e.g. :func:`~aiodicom.dimse.services.storage.storage` for the C-STOREs of a C-GET);
        others are answered 0x0211 (unrecognized operation).
    :raises AssociationRejected: the peer rejected the association.
    :raises AssociationError: the connection failed or the association was aborted.
    :raises DicomTimeoutError: connecting or negotiating took longer than ``timeouts`` allow.
    """
    check_port(port, listening=False)
    rq = build_request(
        called_ae,
        calling_ae,
        contexts if contexts is not None else default_contexts(),
        max_pdu_length=max_pdu_length,
        async_ops_window=(max_outstanding, 1) if max_outstanding else None,
    )
    loop = asyncio.get_running_loop()
    registry = ServiceRegistry(services)

    def factory() -> DicomProtocol:
        protocol = DicomProtocol(Role.REQUESTOR, timeouts=timeouts, command_decoder=registry.decoder)
        protocol.propose(rq)
        return protocol

    try:
        async with asyncio.timeout(timeouts.connect):
            _transport, protocol = await loop.create_connection(
                factory, host, port, ssl=ssl, server_hostname=host if ssl is not None else None
            )
    except TimeoutError:
        raise ConnectTimeout(f"connecting to {host}:{port} took longer than {timeouts.connect} s") from None
    except OSError as exc:
        raise AssociationError(f"cannot connect to {host}:{port}: {describe_os_error(exc)}") from exc
    try:
        async with asyncio.timeout(timeouts.acse):
            association = await protocol.established
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise AssociateTimeout(f"{host}:{port} did not answer A-ASSOCIATE-RQ in {timeouts.acse} s") from None
    dimse = DimseAssociation(association, registry.handlers)
    client = ClientAssociation(dimse)
    # A plain asyncio task rather than an anyio task group: a one-shot ``aiodicom echo``
    # then never imports anyio, and the caller's exception comes back as it was raised.
    dimse.start()
    try:
        yield client
    except BaseException:
        association.abort()
        raise
    else:
        if association.is_open:
            await association.release()
    finally:
        await dimse.close()


__all__ = [
    "ClientAssociation",
    "connect",
    "contexts_for_encodings",
    "contexts_for_files",
    "default_contexts",
]
