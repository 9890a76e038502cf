"""One DIMSE association for both roles: the only reader, request routing, responses by message ID.

``Server`` and ``connect()`` both wrap a :class:`DimseAssociation`. It owns the
single task that reads the Upper Layer association and routes what arrives:

- a response goes to the pending operation whose Message ID it answers
  (:meth:`DimseAssociation.request` yields pending and final responses, each
  awaited with its own timeout, so a long C-FIND is bounded per answer, not in total);
- a request goes to the handler registered for its command type, in a task of its
  own, at most ``max_operations`` at once (the asynchronous operations window), so a
  C-CANCEL is read while a handler runs and cancels that operation only;
- a handler that raises is answered with a failure status of the request's type.

Either role may send and receive any request: a C-GET SCU receives C-STOREs on its
own association, and a C-GET SCP reads the C-STORE responses.

Built on asyncio, not anyio: ``connect()`` wraps this too, and a one-shot ``aiodicom
echo`` must not import anyio (``tests/test_startup.py``); the server's task group
around associations stays anyio.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import TypeAlias, TypedDict, Unpack

from aiodicom._record import FrozenRecord, Record, field
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.requesting import failure_response as failure_response
from aiodicom.dimse.requesting import message_decoder
from aiodicom.errors import (
    AiodicomError,
    AssociationError,
)
from aiodicom.transport.association import Association, ReleaseRequest, ResponseTimeout
from aiodicom.transport.timeouts import no_response
from aiodicom.ul.assembly import AssembledMessage, BoundedMemorySink, CommandDecoder, DataSink
from aiodicom.ul.events import PEER_RELEASED
from aiodicom.ul.negotiation import AcceptedContext

#: Requests a requestor may have outstanding when the peer granted an unlimited window (0).
UNLIMITED_WINDOW = 64


class AssociationInfo(FrozenRecord):
    """Who sent something, for handlers and logs."""

    #: A number identifying the association in this process's logs.
    id: int
    #: The sender's AE title.
    calling_ae: str
    #: The AE title the sender addressed (may differ from ours unless ``require_called_ae``).
    called_ae: str
    #: The sender's IP address.
    peer_host: str
    #: The sender's TCP port.
    peer_port: int
    #: When the association was established (``time.monotonic()``), for its duration.
    started: float = field(default_factory=time.monotonic, compare=False)
    #: C-STORE status code -> how many times the server answered it on this association,
    #: so an ``on_released``/``on_aborted`` hook can report stored and failed instances.
    store_statuses: Counter[int] = field(default_factory=Counter, compare=False)



class Response(Record):
    """One response to a request we sent, with its data set (a C-FIND match) if any."""

    command: C.Message
    dataset: bytes | None = None

    @property
    def status(self) -> S.Status:
        return self.command.status  # type: ignore[union-attr]


class Request(Record):
    """A request the peer sent us, as a handler sees it.

    The handler answers with :meth:`respond` (pending responses first, the final one
    last); the data set sink, if any, is the handler's to keep or discard.
    """

    association: DimseAssociation
    context: AcceptedContext
    command: C.Message
    dataset: DataSink | None
    #: Set when a response with a final status went out for this request.
    answered: bool = False

    @property
    def message_id(self) -> int:
        return self.command.message_id  # type: ignore[union-attr]

    async def respond(self, response: C.Message, dataset: bytes | None = None) -> None:
        """Send a response (pending or final) on this request's presentation context."""
        status = getattr(response, "status", None)
        if status is None or not status.is_pending:
            self.answered = True
        await self.association.send(self.context.id, response, dataset)


#: ``async (request) -> None``: answers through ``request.respond``.
RequestHandler: TypeAlias = Callable[[Request], Awaitable[None]]
#: Chooses where a request's data set goes, from the command and its context's transfer syntax.
SinkFactory: TypeAlias = Callable[[C.Message, Association, int], DataSink]


#: Requests a C-CANCEL may cancel (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3).
CANCELLABLE = (C.CFindRQ, C.CGetRQ, C.CMoveRQ)


class RequestOptions(TypedDict, total=False):
    """Options of :meth:`DimseAssociation.request` (see there)."""

    send: Callable[[int, bytes], Awaitable[None]] | None
    timeout: float | None


class _Operation(Record):
    """A request we sent: its responses, queued until :meth:`DimseAssociation.request` takes them."""

    responses: deque[Response | BaseException] = field(default_factory=deque)
    waiter: asyncio.Future[None] | None = None

    def put(self, item: Response | BaseException) -> None:
        self.responses.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def command_decoder(sinks: Mapping[type, SinkFactory]) -> Callable[[Association], CommandDecoder[C.Message]]:
    """The Upper Layer's command decoder for each association: see :func:`message_decoder`."""
    return partial(message_decoder, sinks)


class DimseAssociation:
    """DIMSE over one established association, either role.

    ``handlers`` maps a request type (``C.CStoreRQ``, ``C.CEchoRQ``...) to its handler;
    a request without one is answered 0x0211 (unrecognized operation).
    ``max_operations`` bounds the requests we run at once (what we granted);
    the requests we send at once are bounded by what the peer granted us.
    """

    def __init__(
        self,
        association: Association,
        handlers: Mapping[type, RequestHandler] | None = None,
        *,
        response_timeout: float | None = None,
        max_operations: int = 1,
    ) -> None:
        self.association = association
        self.handlers: Mapping[type, RequestHandler] = handlers or {}
        timeouts = association.timeouts
        self.response_timeout = timeouts.dimse if response_timeout is None else response_timeout
        self.log = association.log
        #: Who the peer is, for handlers and hooks.
        self.info = AssociationInfo(
            association.id, association.calling_ae, association.called_ae, *association.peer
        )
        self._message_ids = itertools.count(1)
        self._pending: dict[int, _Operation] = {}
        #: Requests being handled: by Message ID (what a C-CANCEL names), and every task
        #: (a peer reusing a Message ID in flight must not hide one from release or abort).
        self._running: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancellable: set[int] = set()
        self._cancelled: set[int] = set()
        window = association.response.user_information.async_ops_window
        invoked = window[0] if window else 1
        #: Requests we may have outstanding at once (granted by the peer).
        self.max_outstanding = invoked if invoked > 0 else UNLIMITED_WINDOW
        self._slots = asyncio.Semaphore(self.max_outstanding)
        self._operation_slots = asyncio.Semaphore(max(1, max_operations))
        self._reader: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    # --- reading ----------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the reader in a task of its own (a requestor's use).

        A release the peer asks for (a collision with ours, or a peer that should not)
        is answered, and our outstanding requests fail with :class:`AssociationError`.
        """
        self._reader = asyncio.get_running_loop().create_task(self._read_until_released())
        return self._reader

    async def _read_until_released(self) -> None:
        await self.run()
        self.association.accept_release()
        self._fail_pending(AssociationError(PEER_RELEASED))

    async def run(self) -> ReleaseRequest:
        """Read and route until the peer asks to release; then wait for running operations.

        Raises what ended the association otherwise (abort, idle timeout); pending
        requests of ours fail with it.
        """
        try:
            while True:
                item = await self.association.receive()
                if isinstance(item, ReleaseRequest):
                    await self._finish_operations()
                    return item
                await self._route(item)
        except BaseException as exc:
            self._fail_pending(exc if isinstance(exc, AiodicomError) else AssociationError("association closed"))
            for task in self._tasks:
                task.cancel()
            raise

    async def _route(self, item: AssembledMessage[C.Message]) -> None:
        message = item.command
        if isinstance(message, C.RESPONSE_TYPES):
            self._deliver(message, item.dataset)
        elif isinstance(message, C.CCancelRQ):
            self._cancel(message.message_id_being_responded_to)
        else:
            await self._operation_slots.acquire()
            task = asyncio.get_running_loop().create_task(self._serve(item))
            self._running[message.message_id] = task
            if isinstance(message, CANCELLABLE):
                self._cancellable.add(message.message_id)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _deliver(self, message: C.Message, sink: DataSink | None) -> None:
        data = None
        if isinstance(sink, BoundedMemorySink):
            data = sink.data()
        elif sink is not None:
            sink.discard()
        mid = message.message_id_being_responded_to  # type: ignore[union-attr]
        operation = self._pending.get(mid)
        if operation is None:
            self.log.warning("unexpected_response", command=type(message).__name__, mid=mid)
            return
        operation.put(Response(message, data))

    def _cancel(self, message_id: int) -> None:
        task = self._running.get(message_id)
        if task is None or message_id not in self._cancellable:
            # Already answered, never asked, or a C-STORE/C-ECHO (PS3.7 defines C-CANCEL for
            # C-FIND, C-GET and C-MOVE only): nothing to cancel.
            return
        self.log.info("operation_cancelled", mid=message_id)
        self._cancelled.add(message_id)
        # Not task.cancel() here: a C-CANCEL read in the same batch as its request would
        # cancel a task that has not started, whose body (and so its answer and the release
        # of its window slot) would never run. The task's first step is already scheduled,
        # so a cancel scheduled after it reaches the handler.
        asyncio.get_running_loop().call_soon(task.cancel)

    def cancel_requested(self, message_id: int) -> bool:
        """Whether the peer sent C-CANCEL for its request ``message_id`` (being handled).

        A handler that finishes its step in flight before stopping (a retrieve's
        sub-operation) tells a C-CANCEL apart from an abort or a shutdown with this.
        """
        return message_id in self._cancelled

    async def _serve(self, item: AssembledMessage[C.Message]) -> None:
        message = item.command
        mid: int = message.message_id  # type: ignore[union-attr]
        request = Request(self, self.association.contexts[item.context_id], message, item.dataset)
        try:
            handler = self.handlers.get(type(message))
            if handler is None:
                self.log.warning("unsupported_request", command=type(message).__name__)
                _discard(item.dataset)
                await self._answer_failure(request, S.UNRECOGNIZED_OPERATION, None)
            else:
                await self._run_handler(handler, request)
        except AssociationError:
            pass  # the reader reports the end of the association
        except Exception as exc:  # noqa: BLE001 - an answer that cannot go out ends this association only
            self.log.error("response_failed", error=repr(exc))
            self.association.abort()
        finally:
            if self._running.get(mid) is asyncio.current_task():
                del self._running[mid]
                self._cancelled.discard(mid)
                self._cancellable.discard(mid)
            self._operation_slots.release()

    async def _run_handler(self, handler: RequestHandler, request: Request) -> None:
        mid = request.message_id
        try:
            await handler(request)
        except asyncio.CancelledError:
            if mid not in self._cancelled or self._error is not None:
                raise
            # Cancelled by the peer's C-CANCEL: the final answer says so.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if not request.answered:
                await self._answer_failure(request, S.CANCEL, None)
            return
        except Exception as exc:  # noqa: BLE001 - one request must never take the association down
            log = self.log.error if isinstance(exc, (AiodicomError, OSError)) else self.log.exception
            log("request_failed", command=type(request.command).__name__, error=repr(exc))
            _discard(request.dataset)
            if not request.answered:
                # As for a failing store handler: the sender keeps its data and may retry.
                code = S.OUT_OF_RESOURCES if isinstance(request.command, C.CStoreRQ) else S.PROCESSING_FAILURE
                await self._answer_failure(request, code, f"cannot process: {type(exc).__name__}")
            return
        if not request.answered:
            self.log.error("request_unanswered", command=type(request.command).__name__)
            await self._answer_failure(request, S.PROCESSING_FAILURE, "the handler gave no answer")

    async def _answer_failure(self, request: Request, code: int, comment: str | None) -> None:
        response = failure_response(request.command, code, comment)
        if response is not None:
            await request.respond(response)

    async def _finish_operations(self) -> None:
        """A release waits for the requests being handled: each gets its answer first."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def _fail_pending(self, error: BaseException) -> None:
        self._error = error
        for operation in self._pending.values():
            operation.put(error)

    # --- sending ----------------------------------------------------------------------

    async def send(self, context_id: int, message: C.Message, dataset: bytes | bytearray | memoryview | None = None) -> None:
        """Send one message (request or response) on a presentation context."""
        if dataset is None and isinstance(message, C.RESPONSE_TYPES):
            encoded = C.encode_response(message)  # echoes a peer's values: never raises on them
        else:
            encoded = C.encode_command(message, has_dataset=dataset is not None)
        await self.association.send(context_id, encoded, dataset)

    def next_message_id(self) -> int:
        """A Message ID no request of ours in flight uses."""
        while True:
            mid = next(self._message_ids) & 0xFFFF
            if mid and mid not in self._pending:
                return mid

    async def request(
        self,
        context_id: int,
        make: Callable[[int], C.Message],
        dataset: bytes | bytearray | memoryview | None = None,
        *,
        send: Callable[[int, bytes], Awaitable[None]] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Response]:
        """Send a request and yield its responses, pending ones first, until the final one.

        ``make`` builds the request from its Message ID. ``send`` replaces the plain send
        (e.g. a data set streamed from disk): it gets the context ID and the encoded command.
        Each response is awaited at most ``timeout`` seconds (default: ``Timeouts.dimse``);
        then the association is aborted and :class:`ResponseTimeout` raised.
        """
        wait = self.response_timeout if timeout is None else timeout
        async with self._slots:
            mid = self.next_message_id()
            operation = _Operation()
            self._pending[mid] = operation
            try:
                if self._error is not None:
                    raise self._error
                if send is None:
                    await self.send(context_id, make(mid), dataset)
                else:
                    await send(context_id, C.encode_command(make(mid), has_dataset=True))
                while True:
                    response = await self._next_response(operation, wait)
                    if not response.status.is_pending:
                        break
                    yield response
            finally:
                self._pending.pop(mid, None)
        # The final response goes out once the slot is free: a caller that stops
        # iterating at the final response does not hold the window.
        yield response

    async def request_final(
        self,
        context_id: int,
        make: Callable[[int], C.Message],
        dataset: bytes | bytearray | memoryview | None = None,
        **options: Unpack[RequestOptions],
    ) -> Response:
        """:meth:`request` for single-response services (C-ECHO, C-STORE): the final response."""
        final: Response | None = None
        async for final in self.request(context_id, make, dataset, **options):  # noqa: B007
            pass
        assert final is not None
        return final

    async def _next_response(self, operation: _Operation, timeout: float | None) -> Response:
        while not operation.responses:
            operation.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await operation.waiter
            except TimeoutError:
                self.association.abort()
                raise no_response(timeout) from None
            finally:
                operation.waiter = None
        item = operation.responses.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    async def cancel(self, context_id: int, message_id: int) -> None:
        """Send C-CANCEL for one of our outstanding requests; its final response follows."""
        await self.send(context_id, C.CCancelRQ(message_id))

    # --- ending -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the reader task started by :meth:`start` (after release or abort)."""
        reader = self._reader
        if reader is not None:
            reader.cancel()
            await asyncio.wait((reader,))
            if not reader.cancelled():
                reader.exception()  # retrieved: the caller learnt it from its own request
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))


def _discard(sink: DataSink | None) -> None:
    if sink is not None:
        sink.discard()


__all__ = [
    "AssociationInfo",
    "DimseAssociation",
    "Request",
    "RequestHandler",
    "Response",
    "ResponseTimeout",
    "SinkFactory",
    "command_decoder",
    "failure_response",
]
