"""The Verification service (C-ECHO, PS3.4 annex A): is the peer there and speaking DICOM?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiodicom.codec.uids import VERIFICATION_SOP_CLASS
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import AssociationInfo, Request
from aiodicom.dimse.events import ServerObserver
from aiodicom.dimse.services import Service, call_handler

#: ``async (AssociationInfo) -> status | None``; None is success.
EchoHandler = Callable[[AssociationInfo], Awaitable[int | None]]


class Verification(Service):
    """Answers C-ECHO: success, or what ``on_echo`` returns."""

    sop_classes = (VERIFICATION_SOP_CLASS,)

    def __init__(self, on_echo: EchoHandler | None = None, *, observer: ServerObserver | None = None) -> None:
        self.on_echo = on_echo
        self.observer = observer
        self.handlers = {C.CEchoRQ: self.handle}

    async def handle(self, request: Request) -> None:
        echo = request.command
        assert isinstance(echo, C.CEchoRQ)
        code: int = S.SUCCESS
        if echo.affected_sop_class_uid != request.context.abstract_syntax:
            code = S.SOP_CLASS_NOT_SUPPORTED
        elif self.on_echo is not None:
            association = request.association
            code = await call_handler(self.on_echo, association.info, fallback=S.PROCESSING_FAILURE, log=association.log)
        if self.observer is not None:
            self.observer.request_handled("C-ECHO", code, 0, 0.0)
        await request.respond(C.CEchoRSP(echo.message_id, S.Status(code), echo.affected_sop_class_uid))


__all__ = ["EchoHandler", "Verification"]
