"""The Retrieve services (C-MOVE and C-GET SCP, PS3.4 C.4.2 and C.4.3): matches sent as C-STOREs.

A :data:`RetrieveHandler` turns the identifier into the instances to send (files on disk,
:class:`StoredInstance`), or a failure status. The service then runs one C-STORE
sub-operation per instance with the SCU code of :class:`~aiodicom.dimse.client.ClientAssociation`
(files streamed from disk, transfer syntaxes converted only where the peer needs it):

- C-MOVE: to the destination AE the request names, looked up in a table of known
  destinations (an unknown one is 0xA801: never an open relay), over a new association,
  each C-STORE carrying the Move Originator AE Title and Message ID;
- C-GET: on the requestor's own association, on the storage contexts for which it took
  the SCP role (Role Selection); an instance of another class fails its sub-operation.

A pending response follows each sub-operation with the counts (remaining, completed,
failed, warning); the final one says success, 0xB000 when some failed or warned (with
the Failed SOP Instance UID List), 0xA702 when all failed, 0xFE00 when cancelled. A
C-CANCEL is honoured after the sub-operation in flight: each runs shielded from the
cancellation, so a data set is never cut in the middle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiodicom.codec import uids
from aiodicom.codec.identifier import Identifier, encode_identifier
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import AssociationInfo, Request
from aiodicom.dimse.client import ClientAssociation, connect, contexts_for_encodings
from aiodicom.dimse.events import ServerObserver
from aiodicom.dimse.services import Service
from aiodicom.dimse.services.models import (
    FAILED_SOP_INSTANCE_UID_LIST,
    MODELS,
    InformationModel,
    model_by_sop_class,
)
from aiodicom.dimse.services.query import identifier_of
from aiodicom.errors import (
    AiodicomError,
    AssociationError,
    DicomTimeoutError,
    MalformedDatasetError,
)
from aiodicom.transport.association import DEFAULT_TIMEOUTS, Timeouts

__all__ = ["MoveDestination", "Retrieve", "RetrieveHandler", "RetrieveRequest", "StoredInstance", "SubOperations"]

#: A UI value longer than this does not fit an explicit VR element: the list is cut there.
_MAX_UID_LIST = 0xFFFE


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance a retrieve sends: its identity and encoding (from an index) and its file."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    path: Path


@dataclass(frozen=True, slots=True)
class MoveDestination:
    """A C-MOVE destination: the AE title a requestor names, and where it listens."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    """A C-MOVE or C-GET as its handler sees it."""

    model: InformationModel
    identifier: Identifier
    association: AssociationInfo
    #: "move" or "get".
    operation: str
    #: The Move Destination AE title (C-MOVE only).
    destination: str | None
    priority: int


#: ``async (request) -> instances to send, or a failure status`` (e.g. 0xA900, 0xC000).
RetrieveHandler = Callable[[RetrieveRequest], Awaitable[Sequence[StoredInstance] | S.Status]]


@dataclass(slots=True)
class SubOperations:
    """The counts of one retrieve, and the instances that failed."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    cancelled: bool = False
    #: Why sub-operations failed as a whole (the destination refused), for the Error Comment.
    comment: str | None = None

    def record(self, item: StoredInstance, outcome: S.Status | None) -> None:
        """Count one sub-operation (``None``: it could not be attempted)."""
        self.remaining -= 1
        if outcome is None or outcome.is_failure or outcome.is_cancel:
            self.failed += 1
            self.failed_uids.append(item.sop_instance_uid)
        elif outcome.is_warning:
            self.warning += 1
        else:
            self.completed += 1

    def fail_rest(self, items: Sequence[StoredInstance]) -> None:
        for item in items:
            self.record(item, None)

    @property
    def final_status(self) -> S.Status:
        if self.cancelled:
            return S.CANCEL
        if self.failed == 0 and self.warning == 0:
            return S.SUCCESS
        if self.completed == 0 and self.warning == 0:
            return S.OUT_OF_RESOURCES_SUB_OPERATIONS  # every sub-operation failed
        return S.SUB_OPERATIONS_COMPLETE_WITH_FAILURES

    def failed_list(self, transfer_syntax: str) -> bytes | None:
        """The Failed SOP Instance UID List as a data set, or None when nothing failed."""
        if not self.failed_uids:
            return None
        value = ""
        for uid in self.failed_uids:
            longer = f"{value}\\{uid}" if value else uid
            if len(longer) > _MAX_UID_LIST:
                break
            value = longer
        return encode_identifier([(FAILED_SOP_INSTANCE_UID_LIST, "UI", value.encode())], transfer_syntax)


class Retrieve(Service):
    """Answers C-MOVE and C-GET for the Patient and Study Root models through ``on_retrieve``.

    :param on_retrieve: finds the instances to send.
    :param destinations: Move Destination AE title -> where it listens; no other is served.
    :param ae_title: our AE title, as the calling AE of C-MOVE associations.
    :param timeouts: of the associations opened to move destinations.
    """

    def __init__(
        self,
        on_retrieve: RetrieveHandler,
        *,
        destinations: Mapping[str, MoveDestination] | None = None,
        ae_title: str = "AIODICOM",
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        observer: ServerObserver | None = None,
    ) -> None:
        self.on_retrieve = on_retrieve
        self.destinations = {name.strip(): where for name, where in (destinations or {}).items()}
        self.ae_title = ae_title
        self.timeouts = timeouts
        self.observer = observer
        self.sop_classes = tuple(uid for model in MODELS.values() for uid in (model.move, model.get))
        self.handlers = {C.CMoveRQ: self.handle, C.CGetRQ: self.handle}
        self.scp_roles = uids.STORAGE_SOP_CLASSES

    async def handle(self, request: Request) -> None:
        command = request.command
        assert isinstance(command, (C.CMoveRQ, C.CGetRQ))
        began = time.perf_counter()
        operation = "move" if isinstance(command, C.CMoveRQ) else "get"
        code = await self._retrieve(request, command, operation)
        if self.observer is not None:
            self.observer.request_handled(f"C-{operation.upper()}", int(code), 0, time.perf_counter() - began)

    async def _retrieve(self, request: Request, command: C.CMoveRQ | C.CGetRQ, operation: str) -> S.Status:
        log = request.association.log
        if command.affected_sop_class_uid != request.context.abstract_syntax:
            return await self._final(request, command, S.Status(S.SOP_CLASS_NOT_SUPPORTED), None)
        destination: MoveDestination | None = None
        if isinstance(command, C.CMoveRQ):
            destination = self.destinations.get(command.move_destination.strip())
            if destination is None:
                log.warning("move_destination_unknown", destination=command.move_destination)
                comment = f"unknown move destination {command.move_destination.strip()!r}"
                return await self._final(request, command, S.Status(S.MOVE_DESTINATION_UNKNOWN, error_comment=comment), None)
        try:
            identifier = identifier_of(request)
        except MalformedDatasetError as exc:
            log.warning("retrieve_refused", error=str(exc))
            return await self._final(
                request, command, S.Status(S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc)), None
            )
        retrieve = RetrieveRequest(
            model_by_sop_class(command.affected_sop_class_uid),
            identifier,
            request.association.info,
            operation,
            command.move_destination.strip() if isinstance(command, C.CMoveRQ) else None,
            command.priority,
        )
        found = await self.on_retrieve(retrieve)
        if isinstance(found, S.Status):
            return await self._final(request, command, found, None)
        counts = SubOperations(len(found))
        if not found:
            return await self._final(request, command, S.SUCCESS, counts)
        if destination is None:
            await self._get(request, command, found, counts)
        else:
            await self._move(request, command, destination, found, counts)
        final = counts.final_status
        if counts.comment and not final.is_success:
            final = S.Status(final, error_comment=counts.comment)
        return await self._final(request, command, final, counts)

    async def _get(
        self, request: Request, command: C.CMoveRQ | C.CGetRQ, items: Sequence[StoredInstance], counts: SubOperations
    ) -> None:
        """C-GET: C-STOREs on the requestor's association, where it took the SCP role."""
        client = ClientAssociation(request.association)
        accepted = {
            role.sop_class_uid
            for role in client.association.response.user_information.role_selections
            if role.scp_role
        }
        refused = [item for item in items if item.sop_class_uid not in accepted]
        if refused:  # a C-STORE there would break the negotiated roles (PS3.4 C.4.3.3)
            request.association.log.warning("get_without_scp_role", sop_classes=sorted({i.sop_class_uid for i in refused}))
            counts.fail_rest(refused)
        await self._run(request, command, [item for item in items if item.sop_class_uid in accepted], counts, client, None)

    async def _move(
        self,
        request: Request,
        command: C.CMoveRQ | C.CGetRQ,
        destination: MoveDestination,
        items: Sequence[StoredInstance],
        counts: SubOperations,
    ) -> None:
        """C-MOVE: one association to the destination per group of at most 128 contexts."""
        requestor = request.association.info.calling_ae.strip()
        groups = contexts_for_encodings((item.sop_class_uid, item.transfer_syntax) for item in items)
        pending = list(items)
        for contexts in groups:
            classes = {abstract for abstract, _ in contexts}
            batch = [item for item in pending if item.sop_class_uid in classes]
            pending = [item for item in pending if item.sop_class_uid not in classes]
            try:
                async with connect(
                    destination.host, destination.port, called_ae=destination.ae_title,
                    calling_ae=self.ae_title, contexts=contexts, timeouts=self.timeouts,
                ) as client:  # fmt: skip
                    await self._run(request, command, batch, counts, client, requestor)
            except (AssociationError, DicomTimeoutError) as exc:
                request.association.log.warning("move_destination_failed", destination=destination.ae_title, error=str(exc))
                uncounted = counts.remaining - len(pending)  # of this batch
                counts.fail_rest(batch[len(batch) - uncounted :])
                counts.comment = f"{destination.ae_title}: {exc}"
            if counts.cancelled:
                return

    async def _run(
        self,
        request: Request,
        command: C.CMoveRQ | C.CGetRQ,
        items: Sequence[StoredInstance],
        counts: SubOperations,
        client: ClientAssociation,
        originator: str | None,
    ) -> None:
        """One C-STORE per item (the next file read while the peer stores the last), a
        pending response after each; stop after the one in flight on C-CANCEL."""
        dimse = request.association
        stream = client.store_files(
            [item.path for item in items],
            move_originator_ae=originator,
            move_originator_message_id=command.message_id if originator is not None else None,
        )
        current: asyncio.Future[tuple[Path, S.Status | AiodicomError]] | None = None
        index = 0
        try:
            while index < len(items):
                current = asyncio.ensure_future(anext(stream))
                outcome = await asyncio.shield(current)
                current = None
                counts.record(items[index], _status(outcome, items[index], dimse.log))
                index += 1
                if counts.remaining:
                    await request.respond(_response(command, S.PENDING, counts, final=False))
        except asyncio.CancelledError:
            if not dimse.cancel_requested(command.message_id):
                if current is not None:
                    current.cancel()
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if current is not None:  # the sub-operation in flight finishes, then we stop
                counts.record(items[index], _status(await current, items[index], dimse.log))
            counts.cancelled = True
        finally:
            if current is None or current.done():  # else it is still running: the loop finalizes it
                await stream.aclose()

    async def _final(
        self, request: Request, command: C.CMoveRQ | C.CGetRQ, status: S.Status, counts: SubOperations | None
    ) -> S.Status:
        dataset = counts.failed_list(request.context.transfer_syntax) if counts is not None else None
        await request.respond(_response(command, status, counts, final=True), dataset)
        return status


def _status(outcome: tuple[Path, S.Status | AiodicomError], item: StoredInstance, log: object) -> S.Status | None:
    """A sub-operation's status; a file that could not be sent (unreadable, no context) is None."""
    result = outcome[1]
    if isinstance(result, AiodicomError):
        log.warning("suboperation_failed", sop_instance=item.sop_instance_uid, error=str(result))  # type: ignore[attr-defined]
        return None
    return result


def _response(
    command: C.CMoveRQ | C.CGetRQ, status: S.Status, counts: SubOperations | None, *, final: bool
) -> C.CMoveRSP | C.CGetRSP:
    kind = C.CMoveRSP if isinstance(command, C.CMoveRQ) else C.CGetRSP
    comment = status.error_comment
    if counts is None:
        return kind(command.message_id, status, command.affected_sop_class_uid,
                    error_comment=C.error_comment(comment) if comment else None)  # fmt: skip
    keep_remaining = not final or status.is_cancel
    return kind(
        command.message_id,
        status,
        command.affected_sop_class_uid,
        remaining_suboperations=min(counts.remaining, 0xFFFF) if keep_remaining else None,
        completed_suboperations=min(counts.completed, 0xFFFF),
        failed_suboperations=min(counts.failed, 0xFFFF),
        warning_suboperations=min(counts.warning, 0xFFFF),
        error_comment=C.error_comment(comment) if comment else None,
    )
