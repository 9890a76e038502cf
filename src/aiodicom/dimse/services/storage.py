"""The Storage service (C-STORE, PS3.4 annex B): data sets streamed in, a handler decides.

Requests decode into an :class:`~aiodicom.dimse.store.InstanceSink` (memory, then the
spool file past the threshold); before the handler runs, the data set's structure
and its SOP Class and Instance UIDs are checked against the command. The handler
(:data:`StoreHandler`) gets a :class:`~aiodicom.dimse.store.ReceivedInstance` and
returns a status; it owns the instance while it runs and may keep it
(:meth:`~aiodicom.dimse.store.ReceivedInstance.detach`); one neither saved nor kept
is closed here when the handler returns. Either role may register it (a C-GET SCU
receives C-STOREs on its own association).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from aiodicom.codec import uids
from aiodicom.codec.scan import text
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import Request
from aiodicom.dimse.events import ServerObserver
from aiodicom.dimse.services import Service, call_handler
from aiodicom.dimse.store import (
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    GroupSync,
    InstanceSink,
    ReceivedInstance,
    SpoolFiles,
)
from aiodicom.errors import ConfigurationError, DicomFileError, MalformedDatasetError
from aiodicom.transport.association import Association
from aiodicom.transport.budget import MemoryBudget
from aiodicom.ul.negotiation import AcceptedContext

#: ``async (ReceivedInstance) -> status | None``; None is success.
StoreHandler = Callable[[ReceivedInstance], Awaitable[int | None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a C-STORE ends: the status and, for a failure, why (sent as the Error Comment)."""

    status: int
    comment: str | None = None
    offending: tuple[int, ...] | None = None


class Storage(Service):
    """Receives C-STORE requests into ``on_store``.

    Without a handler it registers no SOP class, yet still answers a C-STORE that
    arrives on another context 0x0122 (SOP class not supported). :meth:`open` gives it
    the spool files to write large data sets to before any association.
    """

    def __init__(
        self,
        on_store: StoreHandler | None,
        *,
        sop_classes: Collection[str] = uids.STORAGE_SOP_CLASSES,
        memory_threshold: int = 1024 * 1024,
        budget: MemoryBudget | None = None,
        observer: ServerObserver | None = None,
        syncer: GroupSync | None = None,
        routing_tags: Collection[int] = (),
    ) -> None:
        self.on_store = on_store
        #: Top-level tags collected by the structure walk while each data set arrives, beside
        #: the common ones (:meth:`ReceivedInstance.tags` then reads nothing again).
        self.routing_tags = frozenset(routing_tags)
        self.sop_classes = tuple(sop_classes) if on_store is not None else ()
        self.memory_threshold = memory_threshold
        self.budget = budget
        self.observer = observer
        self.syncer = syncer
        self.spool: SpoolFiles | None = None
        self.handlers = {C.CStoreRQ: self.handle}
        self.sinks = {C.CStoreRQ: self.sink}

    def open(self, spool: SpoolFiles) -> None:
        """Where data sets past the memory threshold are spooled (until :meth:`close`)."""
        self.spool = spool

    def close(self) -> None:
        self.spool = None

    def sink(self, message: C.Message, association: Association, context_id: int) -> InstanceSink:
        """Decode side: the data set streams into memory or the spool as it arrives."""
        assert isinstance(message, C.CStoreRQ)
        if self.spool is None:
            raise ConfigurationError("the storage service has no spool: call open() first")
        return InstanceSink(
            message.affected_sop_class_uid,
            message.affected_sop_instance_uid,
            association.contexts[context_id].transfer_syntax,
            spool=self.spool,
            memory_threshold=self.memory_threshold,
            source_ae=association.calling_ae.strip() or None,
            budget=self.budget,
            extra_tags=self.routing_tags,
        )

    async def handle(self, request: Request) -> None:
        store = request.command
        sink = request.dataset
        assert isinstance(store, C.CStoreRQ) and isinstance(sink, InstanceSink)
        began = time.perf_counter() if self.observer is not None else 0.0
        outcome = await self._store(request, store, sink)
        if self.observer is not None:
            self.observer.request_handled("C-STORE", outcome.status, sink.size, time.perf_counter() - began)
        request.association.info.store_statuses[int(outcome.status)] += 1
        await request.respond(
            C.CStoreRSP(
                store.message_id,
                S.Status(outcome.status),
                store.affected_sop_class_uid,
                store.affected_sop_instance_uid,
                error_comment=outcome.comment,
                offending_element=outcome.offending,
            )
        )
        if self.spool is not None:
            self.spool.refill()  # while the sender prepares its next instance

    async def _store(self, request: Request, store: C.CStoreRQ, sink: InstanceSink) -> Outcome:
        association = request.association
        log = association.log
        refusal = check_received(sink, store, request.context, self.on_store is not None)
        if refusal is not None:
            sink.discard()
            log.warning("store_refused", status=f"0x{refusal.status:04X}", error=refusal.comment)
            return refusal
        assert self.on_store is not None
        instance = ReceivedInstance(
            sink,
            association=association.info,
            move_originator_ae=store.move_originator_ae_title,
            move_originator_message_id=store.move_originator_message_id,
        )
        try:
            code = await call_handler(self.on_store, instance, fallback=S.OUT_OF_RESOURCES, log=log)
            if code == S.SUCCESS and self.syncer is not None and instance.saved_paths:
                try:
                    await self.syncer.sync(instance.saved_paths)
                except OSError as exc:
                    log.error("store_fsync_failed", error=str(exc))
                    return Outcome(S.OUT_OF_RESOURCES, f"cannot make the file durable: {exc.strerror or exc}")
            comment = getattr(code, "error_comment", None)  # a handler's Status may say why
            return Outcome(int(code), C.error_comment(comment) if comment else None)
        finally:
            if not instance.detached:
                instance.close()


def _identity(sink: InstanceSink, request: C.CStoreRQ) -> Outcome | None:
    """The data set must carry the SOP Class and Instance UIDs its command names.

    Otherwise a sender's bug (or a hostile one) would have one instance stored,
    and acknowledged, under another's name, replacing it. A missing UID means
    the data set cannot be understood (0xC000); another one, empty included,
    that it does not match (0xA900): what DCMTK's storescp answers (tested).
    """
    tags = sink.common_tags or {}
    for tag, name, expected in (
        (SOP_CLASS_UID, "SOP Class UID", request.affected_sop_class_uid),
        (SOP_INSTANCE_UID, "SOP Instance UID", request.affected_sop_instance_uid),
    ):
        raw = tags.get(tag)
        label = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if raw is None:
            return Outcome(S.CANNOT_UNDERSTAND, f"data set lacks {label} {name}", (tag,))
        if text(raw) != expected:
            return Outcome(S.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{label} {name} differs from the command", (tag,))
    return None


def check_received(
    sink: InstanceSink, request: C.CStoreRQ, context: AcceptedContext, storing: bool
) -> Outcome | None:
    """Why a received data set is refused before any handler sees it, or None."""
    if not storing or context.abstract_syntax != request.affected_sop_class_uid:
        return Outcome(S.SOP_CLASS_NOT_SUPPORTED)
    error = sink.error
    if error is not None:
        if isinstance(error, MalformedDatasetError):
            return Outcome(S.CANNOT_UNDERSTAND, f"malformed data set: {error}")
        if isinstance(error, DicomFileError):
            return Outcome(S.CANNOT_UNDERSTAND, str(error))
        # Disk full or unwritable spool: the sender keeps its data and may retry.
        return Outcome(S.OUT_OF_RESOURCES, f"cannot spool the data set: {error}")
    return _identity(sink, request)


__all__ = ["Outcome", "Storage", "StoreHandler", "check_received"]
