"""C-ECHO and C-STORE over a blocking socket, for one-shot commands (no asyncio).

``aiodicom echo`` and ``aiodicom store`` run here unless asked for what only the
asyncio client does (``-v`` logs): importing asyncio would cost more than the whole
exchange with a local peer (issue 8, start-up). Everything a request is made of comes
from the same sans-I/O functions as :func:`aiodicom.connect`'s
(:mod:`aiodicom.dimse.requesting`, :mod:`aiodicom.dimse.command`), and the Upper
Layer from :mod:`aiodicom.transport.blocking`; the statuses, errors and timeouts are
the same. One request at a time, each next file read while the peer stores the last,
as :meth:`aiodicom.ClientAssociation.store_files` does.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.requesting import (
    ContextSpec,
    FileQueue,
    RequestFactory,
    StoreOptions,
    StrPath,
    failure_response,
    message_decoder,
    plan_large,
    verification_context,
)
from aiodicom.errors import AiodicomError, DicomFileError, NoPresentationContext
from aiodicom.transport.address import check_port
from aiodicom.transport.blocking import BlockingAssociation, associate
from aiodicom.transport.timeouts import DEFAULT_TIMEOUTS, Timeouts, no_response
from aiodicom.ul.negotiation import DEFAULT_MAX_PDU_LENGTH, AcceptedContext, build_request

if TYPE_CHECKING:
    import ssl

_P = TypeVar("_P", bound=StrPath)


class BlockingClient:
    """C-ECHO and C-STORE on an association of :func:`connect_blocking`."""

    def __init__(self, association: BlockingAssociation) -> None:
        self.association = association
        self._message_ids = itertools.count(1)

    def echo(self) -> S.Status:
        """C-ECHO: is the peer there and speaking DICOM?"""
        context = verification_context(self.association.contexts.values())
        return self._final(self._send(context.id, C.CEchoRQ)).status  # type: ignore[union-attr]

    def store_files(
        self, paths: Iterable[_P], *, priority: int = C.Priority.MEDIUM
    ) -> Iterator[tuple[_P, S.Status | AiodicomError]]:
        """C-STORE files in order: ``(path, status)``, or ``(path, error)`` for a file not sent
        (see :meth:`aiodicom.ClientAssociation.store_files`); errors of the association raise."""
        contexts = list(self.association.contexts.values())
        options = StoreOptions(priority)
        files = FileQueue(paths, contexts, options)
        for path, current in files:
            if isinstance(current, AiodicomError):
                yield path, current
                continue
            if current is None:  # too large to read whole: streamed from disk
                outcome: S.Status | AiodicomError
                try:
                    outcome = self._store_large(path, contexts, options)
                except (DicomFileError, NoPresentationContext) as exc:
                    outcome = exc  # this file only; the association goes on
                yield path, outcome
                continue
            context_id, make, payload, changes = current
            mid = self._send(context_id, make, payload)
            files.prepare_ahead()  # while the peer stores this one
            yield path, self._final(mid).status.with_local_changes(changes)  # type: ignore[union-attr]

    def _store_large(self, path: StrPath, contexts: list[AcceptedContext], options: StoreOptions) -> S.Status:
        context_id, make, converted, offset, length = plan_large(path, contexts, options)
        if converted is not None:
            return self._final(self._send(context_id, make, converted)).status  # type: ignore[union-attr]
        mid = self._next_message_id()
        with open(path, "rb") as handle:
            handle.seek(offset)
            command = C.encode_command(make(mid), has_dataset=True)
            self.association.send_streamed(context_id, command, handle.read, length)
        return self._final(mid).status  # type: ignore[union-attr]

    # --- one request, its final response ----------------------------------------------------

    def _next_message_id(self) -> int:
        while True:
            mid = next(self._message_ids) & 0xFFFF
            if mid:
                return mid

    def _send(
        self, context_id: int, make: RequestFactory, dataset: bytes | memoryview | None = None
    ) -> int:
        mid = self._next_message_id()
        self.association.send(context_id, C.encode_command(make(mid), has_dataset=dataset is not None), dataset)
        return mid

    def _final(self, mid: int) -> C.Message:
        """The final response to request ``mid``, within ``Timeouts.dimse`` (then abort)."""
        seconds = self.association.timeouts.dimse
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            try:
                item = self.association.receive(deadline)
            except TimeoutError:
                self.association.abort()
                raise no_response(seconds) from None
            message = item.command
            if item.dataset is not None:
                item.dataset.discard()  # C-ECHO and C-STORE responses carry none worth keeping
            if isinstance(message, C.RESPONSE_TYPES):
                if message.message_id_being_responded_to == mid and not message.status.is_pending:
                    return message
            elif not isinstance(message, C.CCancelRQ):
                self._refuse(item.context_id, message)

    def _refuse(self, context_id: int, request: C.Message) -> None:
        """A request the peer sent us: we serve none here (0x0211, as :func:`aiodicom.connect` does)."""
        response = failure_response(request, S.UNRECOGNIZED_OPERATION, None)
        if response is not None:
            self.association.send(context_id, C.encode_response(response))


@contextmanager
def connect_blocking(
    host: str,
    port: int,
    *,
    called_ae: str = "ANY-SCP",
    calling_ae: str = "AIODICOM",
    contexts: Sequence[ContextSpec],
    ssl: ssl.SSLContext | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
) -> Iterator[BlockingClient]:
    """Open an association, yield it, release it on exit (abort on error), as
    :func:`aiodicom.connect` does, with the same A-ASSOCIATE-RQ and errors."""
    check_port(port, listening=False)
    rq = build_request(called_ae, calling_ae, list(contexts), max_pdu_length=max_pdu_length)
    association = associate(host, port, rq, partial(message_decoder, {}), timeouts=timeouts, ssl_context=ssl)
    try:
        yield BlockingClient(association)
    except BaseException:
        association.abort()
        raise
    else:
        association.poll()
        if association.is_open:
            association.release()
    finally:
        association.close()
