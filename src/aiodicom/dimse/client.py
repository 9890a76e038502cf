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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    QUERY_RETRIEVE_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    is_compressed,
    sop_class_name,
)
from aiodicom.dimse import command as C
from aiodicom.dimse.association import DimseAssociation
from aiodicom.dimse.requesting import (
    MAX_CONTEXTS as MAX_CONTEXTS,
)
from aiodicom.dimse.requesting import (
    STREAM_THRESHOLD,
    ContextSpec,
    FileQueue,
    StoreOptions,
    StrPath,
    naming,
    plan_large,
    prepare_file,
    prepare_store,
    store_context,
    store_request,
    verification_context,
)
from aiodicom.dimse.requesting import (
    contexts_for_encodings as contexts_for_encodings,
)
from aiodicom.dimse.requesting import (
    verification_contexts as verification_contexts,
)
from aiodicom.dimse.services import Service, ServiceRegistry
from aiodicom.dimse.status import Status
from aiodicom.errors import (
    AiodicomError,
    ConfigurationError,
    DicomFileError,
    MalformedDatasetError,
    NoPresentationContext,
)
from aiodicom.transport.address import check_port, connect_failed
from aiodicom.transport.association import (
    DEFAULT_TIMEOUTS,
    Association,
    DicomProtocol,
    Timeouts,
)
from aiodicom.transport.timeouts import associate_timed_out, connect_timed_out
from aiodicom.ul.machine import Role
from aiodicom.ul.negotiation import (
    DEFAULT_MAX_PDU_LENGTH,
    AcceptedContext,
    accepted_scp_roles,
    build_request,
    scp_role_selections,
)

if TYPE_CHECKING:
    import pydicom

    from aiodicom.dimse.retrieve import (
        GetInbox,
        MoveInbox,
        ProgressCallback,
        Query,
        QueryOptions,
        Retrieval,
        RetrieveResult,
        _Exchange,
        _Running,
    )

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

#: A path as the caller gives it; each one comes back as it was given.
_P = TypeVar("_P", bound=StrPath)
#: Kept under its old name (tests and callers size their files by it).
_STREAM_THRESHOLD = STREAM_THRESHOLD


def default_contexts() -> list[ContextSpec]:
    """Verification plus common storage classes, uncompressed."""
    syntaxes = list(UNCOMPRESSED_TRANSFER_SYNTAXES[:2])
    contexts = verification_contexts()
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
    from aiodicom.codec.part10 import read_file_meta

    return contexts_for_encodings(
        (meta.sop_class_uid, meta.transfer_syntax) for meta in map(read_file_meta, paths)
    )


def query_retrieve_contexts(
    models: Iterable[str] = ("study", "patient"),
    *,
    operations: Iterable[str] = ("find", "move", "get"),
    storage_classes: Iterable[str] = COMMON_STORAGE_SOP_CLASSES,
    storage_transfer_syntaxes: Sequence[str] = UNCOMPRESSED_TRANSFER_SYNTAXES[:2],
    fill: bool = False,
) -> list[ContextSpec]:
    """Contexts for ``find``/``move``/``get``: Verification, the Query/Retrieve classes of
    ``models`` and, with ``get``, ``storage_classes`` to receive its C-STOREs in.

    With ``get`` among the operations, :func:`connect` proposes the SCP role for those
    storage classes (role selection) and receives their C-STOREs into :meth:`ClientAssociation.get`.
    ``fill`` adds the other storage SOP classes after them, in UID order, as many as fit
    in the 128 contexts of an association (there are about 200: not all of them fit).
    More than 128 contexts in all raise :class:`ValueError` at :func:`connect`: pass fewer
    storage classes (e.g. only the ones the study holds) or open two associations.
    """
    from aiodicom.dimse.services.models import model_by_name  # not for echo or store

    wanted = tuple(dict.fromkeys(operations))
    unknown = set(wanted) - {"find", "move", "get"}
    if unknown:
        raise ConfigurationError(f"unknown Query/Retrieve operation(s): {', '.join(sorted(unknown))}")
    syntaxes = list(UNCOMPRESSED_TRANSFER_SYNTAXES[:2])
    contexts = verification_contexts()
    for name in dict.fromkeys(models):
        model = model_by_name(name)
        contexts.extend((getattr(model, operation), syntaxes) for operation in wanted)
    if "get" in wanted:
        receive = list(dict.fromkeys(storage_classes))
        if fill:
            room = MAX_CONTEXTS - len(contexts) - len(receive)
            chosen = set(receive)
            receive += [uid for uid in STORAGE_SOP_CLASSES if uid not in chosen][: max(room, 0)]
        contexts.extend((uid, list(storage_transfer_syntaxes)) for uid in receive)
    return contexts


class ClientAssociation:
    """An association we requested. Obtain one with :func:`connect`.

    Its operations are built on :class:`~aiodicom.dimse.association.DimseAssociation`
    (``dimse``), which reads the association and also serves requests the peer sends
    us (e.g. the C-STOREs of a C-GET) with the handlers given to :func:`connect`.
    """

    def __init__(self, dimse: DimseAssociation, *, get_inbox: GetInbox | None = None) -> None:
        self.dimse = dimse
        self._association = dimse.association
        self.timeouts = dimse.association.timeouts
        #: Requests we may have in flight at once (the window the peer granted).
        self.max_outstanding = dimse.max_outstanding
        self.log = dimse.log
        #: Storage SOP classes the peer agreed we receive as SCP (role selection, for C-GET).
        self.scp_roles = accepted_scp_roles(self._association.request, self._association.response)
        self._get_inbox = get_inbox

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
        context = verification_context(self._contexts())
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
        contexts = self._contexts()
        options = StoreOptions(priority, move_originator_ae, move_originator_message_id)
        if isinstance(source, (bytes, bytearray, memoryview)):
            prepared = prepare_store(bytes(source), contexts, options)
        elif isinstance(source, (str, os.PathLike)):
            path = source
            try:
                from_file = prepare_file(path, contexts, options)
                if from_file is None:
                    return await self._store_large(path, options)
            except MalformedDatasetError as exc:
                raise naming(path, exc) from None
            prepared = from_file
        else:
            return await self._store_dataset(source, options)
        context_id, rq_factory, payload, changes = prepared
        status = (await self.dimse.request_final(context_id, rq_factory, payload)).status
        return status.with_local_changes(changes)

    async def store_files(
        self,
        paths: Iterable[_P],
        *,
        priority: int = C.Priority.MEDIUM,
        move_originator_ae: str | None = None,
        move_originator_message_id: int | None = None,
    ) -> AsyncGenerator[tuple[_P, Status | AiodicomError], None]:
        """C-STORE files in order, reading each next file while the peer answers the last.

        The Move Originator fields go on every request when given (the sub-operations of
        a C-MOVE we serve).

        Yields ``(path, status)`` with each path as given, or ``(path, error)`` for a file
        that was not sent, and the association goes on: :class:`~aiodicom.errors.MalformedDatasetError`
        for a file that is not DICOM or whose data set is cut short or garbage
        (checked before any byte of it is sent), :class:`~aiodicom.errors.DicomFileError`
        for an unreadable one, :class:`~aiodicom.errors.NoPresentationContext`
        when the peer accepted nothing that fits. ``status.local_changes`` says
        what was repaired or decompressed to send a file, ``status.error_comment``
        what the peer said. Errors of the association itself (abort, timeout)
        are raised.
        """
        options = StoreOptions(priority, move_originator_ae, move_originator_message_id)
        files = FileQueue(paths, self._contexts(), options)
        for path, current in files:
            if isinstance(current, AiodicomError):
                yield path, current
                continue
            if current is None:  # too large to read whole: streamed from disk
                outcome: Status | AiodicomError
                try:
                    outcome = await self._store_large(path, options)
                except (DicomFileError, NoPresentationContext) as exc:
                    outcome = exc  # this file only; the association goes on
                yield path, outcome
                continue
            context_id, make, payload, changes = current

            async def send_then_read_next(context: int, command: bytes) -> None:
                await self._association.send(context, command, payload)  # noqa: B023 - awaited at once
                files.prepare_ahead()  # while the peer stores this one

            response = await self.dimse.request_final(context_id, make, send=send_then_read_next)
            yield path, response.status.with_local_changes(changes)

    def _contexts(self) -> list[AcceptedContext]:
        return list(self._association.contexts.values())

    async def _store_large(self, path: StrPath, options: StoreOptions) -> Status:
        context_id, rq_factory, converted, offset, length = plan_large(path, self._contexts(), options)
        if converted is not None:
            return (await self.dimse.request_final(context_id, rq_factory, converted)).status
        return await self._store_streamed(context_id, rq_factory, path, offset, length)

    async def _store_dataset(self, dataset: pydicom.Dataset, options: StoreOptions) -> Status:
        sop_class = str(dataset.SOPClassUID)
        sop_instance = str(dataset.SOPInstanceUID)
        meta = getattr(dataset, "file_meta", None)
        own_ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
        context = store_context(self._contexts(), sop_class, own_ts or EXPLICIT_VR_LITTLE_ENDIAN)
        if own_ts is not None and is_compressed(own_ts) and context.transfer_syntax != own_ts:
            raise NoPresentationContext(
                f"the data set is encoded in {own_ts}, which the peer did not accept for {sop_class}"
            )
        payload = _encode_dataset(dataset, context.transfer_syntax)
        rq_factory = store_request(sop_class, sop_instance, options)
        return (await self.dimse.request_final(context.id, rq_factory, payload)).status

    async def _store_streamed(self, context_id: int, rq_factory: Any, path: StrPath, offset: int, length: int) -> Status:
        with open(path, "rb") as handle:
            handle.seek(offset)

            async def send(context: int, command: bytes) -> None:
                await self._association.send_streamed(context, command, handle.read, length)

            return (await self.dimse.request_final(context_id, rq_factory, send=send)).status

    # --- query/retrieve ------------------------------------------------------------------

    def find(self, query: Query, **options: Unpack[QueryOptions]) -> AsyncGenerator[pydicom.Dataset, None]:
        """C-FIND: ``async for identifier in assoc.find(query, level="STUDY")``, one per match.

        ``query`` is a pydicom data set or a mapping of keywords to values (``None`` or
        ``""``: return this attribute). Options (:class:`~aiodicom.dimse.retrieve.QueryOptions`):
        ``model`` is ``"study"`` (Study Root, the default) or ``"patient"`` (Patient Root);
        ``level`` defaults to the query's own QueryRetrieveLevel, else the model's top
        level; ``priority``; ``timeout`` bounds each response (default: ``Timeouts.dimse``).
        Leaving the loop early or cancelling the task sends C-CANCEL and reads up to the
        final response, so the association stays usable (``contextlib.aclosing`` makes that
        happen before the next statement rather than when the generator is collected). A
        failure status raises :class:`~aiodicom.dimse.retrieve.QueryFailed` after the
        matches before it. Bad queries and a missing presentation context raise here,
        before anything is sent.
        """
        from aiodicom.dimse.retrieve import find_responses

        return find_responses(self._query("find", query, C.CFindRQ, options))

    async def move(
        self,
        query: Query,
        *,
        destination_ae: str,
        on_progress: ProgressCallback | None = None,
        **options: Unpack[QueryOptions],
    ) -> RetrieveResult:
        """C-MOVE the matches of ``query`` to ``destination_ae``; the final counts.

        ``on_progress`` gets a :class:`~aiodicom.dimse.retrieve.RetrieveResult` for each
        pending response and the final one. Success or warning (0xB000: some sub-operations
        failed; see ``failed`` and ``failed_sop_instance_uids``) and cancel return the
        result; a failure status (0xA801 unknown destination, 0xA702 all failed, ...) raises
        :class:`~aiodicom.dimse.retrieve.RetrieveFailed`, whose ``result`` has the counts.
        Cancelling the task sends C-CANCEL and reads up to the final response. Options as
        for :meth:`find`.
        """
        from aiodicom.dimse.retrieve import retrieve_responses

        running = self._query("move", query, self._move_rq(destination_ae), options)
        final: Any = None
        async for final in retrieve_responses(running, "C-MOVE", on_progress):  # noqa: B007
            pass  # no instances come on this association: only the final result
        result: RetrieveResult = final
        return result

    def move_to_self(
        self,
        query: Query,
        *,
        inbox: MoveInbox,
        on_progress: ProgressCallback | None = None,
        **options: Unpack[QueryOptions],
    ) -> Retrieval:
        """C-MOVE to a :class:`~aiodicom.Server` of ours whose ``on_store`` is ``inbox.on_store``.

        ``async for instance in assoc.move_to_self(query, inbox=inbox)`` yields each instance
        as the server receives it (streamed to its spool like any C-STORE); they are the
        caller's to ``save`` or ``close``. The peer must know ``inbox.ae_title`` as a move
        destination. :attr:`~aiodicom.dimse.retrieve.Retrieval.result` has the final counts.
        """
        from aiodicom.dimse.retrieve import Retrieval, retrieve_responses

        originator = self._association.calling_ae.strip()
        running = self._query("move", query, self._move_rq(inbox.ae_title), options)

        def register(mid: int) -> None:
            assert running.exchange is not None
            inbox.register(originator, mid, running.exchange)

        running.on_message_id = register
        return Retrieval(partial(retrieve_responses, running, "C-MOVE", on_progress, on_end=inbox.unregister))

    def get(
        self, query: Query, *, on_progress: ProgressCallback | None = None, **options: Unpack[QueryOptions]
    ) -> Retrieval:
        """C-GET: ``async for instance in assoc.get(query)`` yields the instances as they arrive.

        They come by C-STORE on this association, into the same streaming storage as a
        server's (memory, then the spool file), for the storage classes :func:`connect`
        proposed and the peer accepted us as SCP for (see :func:`query_retrieve_contexts`).
        Each :class:`~aiodicom.ReceivedInstance` is the caller's: ``save`` or ``close`` it
        inside the ``connect`` block. One C-GET at a time per association (its C-STOREs do
        not say which C-GET they serve). Counts, errors, cancel and options as for
        :meth:`move`; :attr:`~aiodicom.dimse.retrieve.Retrieval.result` has the final counts.
        """
        from aiodicom.dimse.retrieve import Retrieval, retrieve_responses

        inbox = self._get_inbox
        if inbox is None:
            raise ConfigurationError(
                "this association receives no C-GET instances: propose a GET context "
                "(contexts=query_retrieve_contexts()) and register no C-STORE service of your own"
            )
        if not self.scp_roles:
            # Some SCPs never answer role selection yet send the C-STOREs: try, and let the counts tell.
            self.log.warning("get_without_scp_role", detail="the peer granted us the storage SCP role for no class")
        running = self._query("get", query, C.CGetRQ, options)

        def route(exchange: _Exchange | None) -> None:
            inbox.current = exchange

        return Retrieval(partial(retrieve_responses, running, "C-GET", on_progress,
                                 lock=inbox.lock, on_begin=route, on_end=lambda _: route(None)))  # fmt: skip

    def _move_rq(self, destination_ae: str) -> Callable[[int, str, int], C.Message]:
        from aiodicom.codec.ae import normalize_ae_title

        destination = normalize_ae_title(destination_ae, "move destination AE title")
        return lambda mid, uid, priority: C.CMoveRQ(mid, uid, destination, priority)

    def _query(
        self, operation: str, query: Query, make: Callable[[int, str, int], C.Message], options: QueryOptions
    ) -> _Running:
        """Check and encode a query now, so errors come before anything is sent.

        ``make(message ID, SOP class, priority)`` builds the request.
        """
        from aiodicom.dimse.retrieve import _Running, encode_query, query_level
        from aiodicom.dimse.services.models import model_by_name

        information_model = model_by_name(options.get("model", "study"))
        level = options.get("level")
        priority = options.get("priority", C.Priority.MEDIUM)
        sop_class: str = getattr(information_model, operation)
        context = self._association.context_for(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
        if context is None:
            raise NoPresentationContext(
                f"the peer did not accept {sop_class_name(sop_class)}: propose it "
                "(connect(..., contexts=query_retrieve_contexts()))"
            )
        asked = level if level is not None else query_level(query) or information_model.levels[0]
        identifier = encode_query(query, information_model.level(asked), context.transfer_syntax)
        return _Running(self.dimse, context.id, context.transfer_syntax, identifier,
                        lambda mid: make(mid, sop_class, priority), options.get("timeout"))  # fmt: skip

    # --- ending ------------------------------------------------------------------------

    async def release(self) -> None:
        """Release the association now (``connect`` does it when its block ends)."""
        await self.dimse.close()  # the reader stops before A-RELEASE is read
        await self._association.release()

    def abort(self) -> None:
        """Abort the association at once (A-ABORT); outstanding requests fail."""
        self._association.abort()


def _encode_dataset(dataset: pydicom.Dataset, transfer_syntax: str) -> bytes:
    """Encode a data set (without file meta) in an uncompressed transfer syntax."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from aiodicom.codec.part10 import transcode

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
    spool_dir: str | os.PathLike[str] | None = None,
    memory_threshold: int = 1024 * 1024,
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
    :param spool_dir: with a C-GET context proposed, where received data sets larger than
        ``memory_threshold`` are written as they arrive (default: the private spool folder,
        as for :class:`~aiodicom.Server`); on the file system of their destination, saving
        them is a rename. It is removed when the association ends.
    :param memory_threshold: C-GET data sets up to this many bytes stay in memory.
    :raises AssociationRejected: the peer rejected the association.
    :raises AssociationError: the connection failed or the association was aborted.
    :raises DicomTimeoutError: connecting or negotiating took longer than ``timeouts`` allow.
    """
    check_port(port, listening=False)
    proposed = list(contexts) if contexts is not None else default_contexts()
    storage_classes = _storage_to_receive(proposed)
    rq = build_request(
        called_ae,
        calling_ae,
        proposed,
        max_pdu_length=max_pdu_length,
        async_ops_window=(max_outstanding, 1) if max_outstanding else None,
        role_selections=scp_role_selections(storage_classes),
    )
    async with AsyncExitStack() as stack:
        get_inbox = None
        if storage_classes and not any(C.CStoreRQ in service.handlers for service in services):
            get_inbox, storage = _get_storage(stack, storage_classes, spool_dir, memory_threshold)
            services = [*services, storage]
        registry = ServiceRegistry(services)
        async with _open(host, port, rq, registry, ssl, timeouts, get_inbox) as client:
            yield client


def _storage_to_receive(contexts: Sequence[ContextSpec]) -> tuple[str, ...]:
    """With a C-GET context proposed: the storage classes proposed, to receive its C-STOREs."""
    if not any(uid in QUERY_RETRIEVE_SOP_CLASSES for uid, _ in contexts):
        return ()  # no Query/Retrieve at all (echo, store): the models need not be imported
    from aiodicom.dimse.services.models import MODELS

    get_classes = {model.get for model in MODELS.values()}
    if not any(uid in get_classes for uid, _ in contexts):
        return ()
    storage = frozenset(STORAGE_SOP_CLASSES)
    return tuple(dict.fromkeys(uid for uid, _ in contexts if uid in storage))


def _get_storage(
    stack: AsyncExitStack, sop_classes: Sequence[str], spool_dir: str | os.PathLike[str] | None, threshold: int
) -> tuple[GetInbox, Service]:
    """The C-STORE service of a C-GET SCU, its spool open until ``stack`` closes."""
    from pathlib import Path

    from aiodicom.dimse.retrieve import GetInbox
    from aiodicom.dimse.services.storage import Storage
    from aiodicom.dimse.store import SpoolDirectory, SpoolFiles

    folder = SpoolDirectory(Path(spool_dir)) if spool_dir is not None else SpoolDirectory.private()
    spool = SpoolFiles(folder.open())
    stack.callback(folder.close)
    stack.callback(spool.close)
    inbox = GetInbox()
    storage = Storage(inbox.on_store, sop_classes=sop_classes, memory_threshold=threshold)
    storage.open(spool)
    stack.callback(storage.close)
    return inbox, storage


@asynccontextmanager
async def _open(
    host: str,
    port: int,
    rq: Any,
    registry: ServiceRegistry,
    ssl: _ssl.SSLContext | None,
    timeouts: Timeouts,
    get_inbox: GetInbox | None,
) -> AsyncIterator[ClientAssociation]:
    """Connect, negotiate ``rq``, run the reader; release on exit (abort on error)."""
    loop = asyncio.get_running_loop()

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
        raise connect_timed_out(host, port, timeouts.connect) from None
    except OSError as exc:
        raise connect_failed(host, port, exc) from exc
    try:
        async with asyncio.timeout(timeouts.acse):
            association = await protocol.established
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise associate_timed_out(host, port, timeouts.acse) from None
    dimse = DimseAssociation(association, registry.handlers)
    client = ClientAssociation(dimse, get_inbox=get_inbox)
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
    "query_retrieve_contexts",
    "verification_contexts",
]
