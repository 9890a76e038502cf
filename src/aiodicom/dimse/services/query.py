"""The Query service (C-FIND SCP, PS3.4 annex C.4.1): an identifier in, pending matches out.

The service decodes the request's identifier (:mod:`aiodicom.codec.identifier`), hands it
to a :data:`FindHandler` and sends what the handler yields: each ``(pending status,
identifier)`` as a pending response, then the final status (success when the handler
just ends). The handler does the matching (:mod:`aiodicom.qr` over stored instances).
A peer's C-CANCEL cancels the operation's task through the association, between two
answers: each answer is written whole before the next await, and the final response
is Cancel (0xFE00). An identifier that cannot be decoded is answered 0xA900 at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiodicom.codec.identifier import Identifier, decode_identifier, encode_identifier
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import AssociationInfo, Request
from aiodicom.dimse.events import ServerObserver
from aiodicom.dimse.services import Service
from aiodicom.dimse.services.models import MODELS, InformationModel, model_by_sop_class
from aiodicom.errors import MalformedDatasetError
from aiodicom.ul.assembly import BoundedMemorySink

__all__ = ["FindHandler", "FindRequest", "Query", "identifier_of"]


@dataclass(frozen=True, slots=True)
class FindRequest:
    """A C-FIND as its handler sees it."""

    #: The information model of the request's SOP class.
    model: InformationModel
    #: The query keys, decoded (tag -> (VR, raw value)).
    identifier: Identifier
    #: Who asks.
    association: AssociationInfo
    priority: int


#: ``(request) -> async iterator of (status, identifier or None)``: pending statuses with a
#: match each, then optionally one final status (a failure, with its Error Comment as a
#: :class:`~aiodicom.Status`); ending without one is success.
FindHandler = Callable[[FindRequest], AsyncIterator[tuple[int, Identifier | list[tuple[int, str, bytes]] | None]]]


def identifier_of(request: Request) -> Identifier:
    """The request's identifier, decoded; a missing or malformed one raises MalformedDatasetError."""
    sink = request.dataset
    if not isinstance(sink, BoundedMemorySink):
        raise MalformedDatasetError("the request carries no identifier", 0)
    return decode_identifier(sink.data(), request.context.transfer_syntax)


class Query(Service):
    """Answers C-FIND for the Patient and Study Root models through ``on_find``."""

    def __init__(self, on_find: FindHandler, *, observer: ServerObserver | None = None) -> None:
        self.on_find = on_find
        self.observer = observer
        self.sop_classes = tuple(model.find for model in MODELS.values())
        self.handlers = {C.CFindRQ: self.handle}

    async def handle(self, request: Request) -> None:
        find = request.command
        assert isinstance(find, C.CFindRQ)
        began = time.perf_counter()
        final = await self._answer(request, find)
        if self.observer is not None:
            self.observer.request_handled("C-FIND", int(final), 0, time.perf_counter() - began)

    async def _answer(self, request: Request, find: C.CFindRQ) -> int:
        def respond(code: int, dataset: bytes | None = None) -> C.CFindRSP:
            status = code if isinstance(code, S.Status) else S.Status(code)
            comment = status.error_comment
            return C.CFindRSP(
                find.message_id, status, find.affected_sop_class_uid,
                error_comment=C.error_comment(comment) if comment else None,
            )  # fmt: skip

        if find.affected_sop_class_uid != request.context.abstract_syntax:
            await request.respond(respond(S.SOP_CLASS_NOT_SUPPORTED))
            return S.SOP_CLASS_NOT_SUPPORTED
        try:
            identifier = identifier_of(request)
        except MalformedDatasetError as exc:
            request.association.log.warning("find_refused", error=str(exc))
            refusal = S.Status(S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error_comment=str(exc))
            await request.respond(respond(refusal))
            return refusal
        query = FindRequest(
            model_by_sop_class(find.affected_sop_class_uid), identifier, request.association.info, find.priority
        )
        syntax = request.context.transfer_syntax
        async for code, answer in self.on_find(query):
            status = S.Status(code) if not isinstance(code, S.Status) else code
            if not status.is_pending:
                await request.respond(respond(status))
                return status
            dataset = encode_identifier(answer or {}, syntax)
            await request.respond(respond(status), dataset)
            # Writing rarely waits on loopback: give the loop a turn per answer, so the
            # reader sees a C-CANCEL and other associations are served meanwhile.
            await asyncio.sleep(0)
        await request.respond(respond(S.SUCCESS))
        return S.SUCCESS
