"""Query/Retrieve SCU (PS3.4 annex C): C-FIND, C-MOVE and C-GET over a DIMSE association.

:class:`~aiodicom.dimse.client.ClientAssociation` exposes these as ``find``, ``move``,
``move_to_self`` and ``get``; this module holds the parts that do not depend on how the
association was opened:

- the identifier: a pydicom data set or a mapping of keywords to values, encoded in the
  context's transfer syntax with its Query/Retrieve Level (:func:`encode_query`; the bytes
  are written, and answers read, by :mod:`aiodicom.codec.identifier`, which the SCP uses too);
- :class:`RetrieveResult`, the sub-operation counts and Failed SOP Instance UID List of a
  C-MOVE/C-GET response, and the errors a failure status raises;
- :class:`_Exchange`: one request in flight. A pump task reads its responses into a
  queue the caller consumes, so a caller that stops early (``break``, an exception, task
  cancellation) sends C-CANCEL and the pump reads on up to the final response: the Message
  ID and the window slot are freed and the association stays usable;
- :class:`GetInbox` and :class:`MoveInbox`, which hand instances arriving by C-STORE (on the
  same association for C-GET, on a :class:`~aiodicom.Server` of ours for a C-MOVE to
  ourselves) to the retrieval that asked for them. They are detached
  :class:`~aiodicom.ReceivedInstance` objects: the caller owns them and must ``save`` or
  ``close`` each.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from aiodicom._log import get_logger
from aiodicom.codec import identifier as codec_identifier
from aiodicom.codec.scan import scan_elements, text
from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import DimseAssociation, Response
from aiodicom.dimse.services.models import (
    FAILED_SOP_INSTANCE_UID_LIST,
    QUERY_KEYS,
    InformationModel,
    QueryLevel,
)
from aiodicom.dimse.services.storage import StoreHandler
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.errors import AiodicomError, ConfigurationError, StatusError

if TYPE_CHECKING:
    import pydicom

_log = get_logger("aiodicom.retrieve")

#: What ``find``, ``move`` and ``get`` accept as a query.
Query: TypeAlias = "pydicom.Dataset | Mapping[str, object]"
#: Instances a retrieval holds for a caller that has not taken them yet; a C-STORE beyond
#: this waits (and so does the sender): a slow consumer slows the peer, not our memory.
INSTANCES_AHEAD = 8


class QueryOptions(TypedDict, total=False):
    """Options of ``find``, ``move``, ``move_to_self`` and ``get`` on a client association."""

    #: ``"study"`` (Study Root, the default) or ``"patient"`` (Patient Root).
    model: str | InformationModel
    #: The Query/Retrieve Level; default: the query's own, else the model's top level.
    level: str | QueryLevel | None
    #: The request's priority (``command.Priority``).
    priority: int
    #: Seconds to wait for each response (default: ``Timeouts.dimse``).
    timeout: float | None


class InvalidQueryError(AiodicomError, ValueError):
    """A query that cannot be sent: an unknown keyword, a value its VR cannot hold."""


class QueryFailed(StatusError):
    """A C-FIND ended with a failure status (the matches before it were yielded)."""


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    """The sub-operation counts of a C-MOVE or C-GET response (PS3.4 C.4.2.1.4, C.4.3.1.4).

    ``remaining`` is None when the response does not say (final responses usually).
    ``failed_sop_instance_uids`` is the Failed SOP Instance UID List (0008,0058) a final
    response carries when some sub-operations failed.
    """

    status: S.Status
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    failed_sop_instance_uids: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Everything asked for arrived: success, no sub-operation failed."""
        return self.status.is_success and not self.failed

    def __str__(self) -> str:
        remaining = "" if self.remaining is None else f", {self.remaining} remaining"
        return f"{self.completed} completed, {self.failed} failed, {self.warning} warning{remaining}: {self.status}"


class RetrieveFailed(StatusError):
    """A C-MOVE/C-GET ended with a failure status; ``result`` has its counts."""

    def __init__(self, message: str, result: RetrieveResult) -> None:
        super().__init__(message, int(result.status))
        self.result = result


#: Called with the counts of each pending response (and of the final one).
ProgressCallback: TypeAlias = Callable[[RetrieveResult], object]


# --- identifiers -----------------------------------------------------------------------


def identifier_dataset(query: Query, level: QueryLevel) -> pydicom.Dataset:
    """The identifier to send: a copy of ``query`` with Query/Retrieve Level set to ``level``.

    A mapping's values are keyword values (``None`` or ``""`` asks for the attribute to be
    returned: universal matching). A data set of the caller's is never modified. A level
    in the query that differs from ``level`` is an error, not a silent choice.
    """
    from pydicom import Dataset
    from pydicom.datadict import tag_for_keyword

    if isinstance(query, Dataset):
        dataset = copy.deepcopy(query)
    else:
        dataset = Dataset()
        for keyword, value in query.items():
            if tag_for_keyword(keyword) is None:
                raise InvalidQueryError(f"unknown DICOM keyword {keyword!r} in the query")
            try:
                setattr(dataset, keyword, "" if value is None else value)
            except (TypeError, ValueError) as exc:
                raise InvalidQueryError(f"cannot set {keyword} to {value!r}: {exc}") from None
    _check_level(dataset.get("QueryRetrieveLevel"), level)
    dataset.QueryRetrieveLevel = level.value
    return dataset


def _check_level(given: object, level: QueryLevel) -> None:
    named = str(given or "").strip().upper()
    if named and named != level.value:
        raise InvalidQueryError(f"the query says QueryRetrieveLevel={named} but level={level.value} was asked")


def encode_query(query: Query, level: QueryLevel, transfer_syntax: str) -> bytes:
    """The identifier of ``query`` at ``level``, encoded for a context in ``transfer_syntax``.

    A mapping of the models' keys (:data:`~aiodicom.dimse.services.models.QUERY_KEYS`) to
    ASCII text, the usual query, is encoded here byte by byte: a retrieve from the command
    line then never imports pydicom. Anything else (a data set, other attributes, numbers,
    sequences, non-ASCII text) goes through pydicom.
    """
    plain = _plain_identifier(query, level, transfer_syntax)
    if plain is not None:
        return plain
    return encode_dataset_identifier(identifier_dataset(query, level), transfer_syntax)


def _plain_identifier(query: Query, level: QueryLevel, transfer_syntax: str) -> bytes | None:
    """``query`` encoded by :mod:`aiodicom.codec.identifier`, or None when it needs pydicom
    (see :func:`encode_query`)."""
    pydicom = sys.modules.get("pydicom")
    if not isinstance(query, Mapping) or (pydicom is not None and isinstance(query, pydicom.Dataset)):
        return None
    if transfer_syntax not in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
        return None
    elements: dict[int, tuple[str, bytes]] = {}
    for keyword, value in query.items():
        key = QUERY_KEYS.get(keyword)
        text = "" if value is None else value
        if key is None or not isinstance(text, str) or not text.isascii() or not text.isprintable():
            return None
        elements[key[0]] = (key[1], text.encode("ascii"))
    _check_level(query.get("QueryRetrieveLevel"), level)
    elements[QUERY_KEYS["QueryRetrieveLevel"][0]] = ("CS", level.value.encode("ascii"))
    try:
        return codec_identifier.encode_identifier(elements, transfer_syntax)
    except codec_identifier.IdentifierEncodingError as exc:
        raise InvalidQueryError(f"cannot encode the query: {exc}") from None


def query_level(query: Query) -> str | None:
    """The Query/Retrieve Level the query itself names, if any."""
    value = query.get("QueryRetrieveLevel")
    return str(value).strip() or None if value is not None else None


def encode_dataset_identifier(dataset: pydicom.Dataset, transfer_syntax: str) -> bytes:
    """A query given as a data set (or beyond the models' ASCII keys), encoded by pydicom."""
    from aiodicom.dimse.client import _encode_dataset

    try:
        return _encode_dataset(dataset, transfer_syntax)
    except AiodicomError as exc:
        raise InvalidQueryError(f"cannot encode the query: {exc}") from None




def retrieve_result(response: Response, transfer_syntax: str) -> RetrieveResult:
    """The counts of a C-MOVE/C-GET response, with its Failed SOP Instance UID List if any."""
    command = response.command
    assert isinstance(command, (C.CMoveRSP, C.CGetRSP))
    return RetrieveResult(
        status=command.status,
        completed=command.completed_suboperations or 0,
        failed=command.failed_suboperations or 0,
        warning=command.warning_suboperations or 0,
        remaining=command.remaining_suboperations,
        failed_sop_instance_uids=_failed_uids(response.dataset, transfer_syntax),
    )


def _failed_uids(identifier: bytes | None, transfer_syntax: str) -> tuple[str, ...]:
    if not identifier:
        return ()
    try:
        raw = scan_elements(identifier, transfer_syntax, (FAILED_SOP_INSTANCE_UID_LIST,)).values
    except AiodicomError as exc:
        _log.warning("retrieve_identifier_unreadable", error=str(exc))
        return ()
    listed = raw.get(FAILED_SOP_INSTANCE_UID_LIST)
    return tuple(uid for uid in text(listed).split("\\") if uid.strip(" \0")) if listed else ()


def check_final(result: RetrieveResult, operation: str) -> RetrieveResult:
    """``result`` if the retrieval ended in success, warning or cancel; else raise :class:`RetrieveFailed`."""
    if result.status.is_failure:
        raise RetrieveFailed(f"{operation} failed: {result}", result)
    return result


# --- one request in flight -----------------------------------------------------------------

#: What a retrieval's queue holds: responses, received instances, or the error that ended it.
_Item: TypeAlias = "Response | ReceivedInstance | BaseException"


class _Exchange:
    """One C-FIND/C-MOVE/C-GET in flight: its responses (and instances) in arrival order.

    The pump task reads the responses, so the caller's task never owns the association's
    reading: a caller that leaves early calls :meth:`stop`, which sends C-CANCEL and lets
    the pump read up to the final response (each within the DIMSE timeout; past it the
    association is aborted, as for any response that never comes).
    """

    def __init__(
        self,
        dimse: DimseAssociation,
        context_id: int,
        make: Callable[[int], C.Message],
        identifier: bytes,
        *,
        on_message_id: Callable[[int], None] | None = None,
        timeout: float | None = None,
        pending: bool = True,
    ) -> None:
        self.dimse = dimse
        self.context_id = context_id
        self.message_id: int | None = None
        self.stopping = False
        self._items: asyncio.Queue[_Item] = asyncio.Queue()
        self._held = 0
        self._room = asyncio.Event()
        #: False: pending responses are dropped in the pump (a retrieval nobody watches the
        #: progress of), so the caller's task wakes for instances and the final response only.
        self._pending = pending

        def build(mid: int) -> C.Message:
            self.message_id = mid
            if on_message_id is not None:
                on_message_id(mid)
            return make(mid)

        self._pump = asyncio.get_running_loop().create_task(self._read(build, identifier, timeout))

    async def _read(self, build: Callable[[int], C.Message], identifier: bytes, timeout: float | None) -> None:
        try:
            async for response in self.dimse.request(self.context_id, build, identifier, timeout=timeout):
                if self._pending or not response.status.is_pending:
                    self._items.put_nowait(response)
        except Exception as exc:  # noqa: BLE001 - the caller raises it from its own task
            self._items.put_nowait(exc)

    async def next(self) -> Response | ReceivedInstance:
        """The next response or instance; the error that ended the request is raised."""
        item = await self._items.get()
        if isinstance(item, ReceivedInstance):
            self._held -= 1
            self._room.set()
        elif isinstance(item, BaseException):
            raise item
        return item

    async def deliver(self, instance: ReceivedInstance) -> bool:
        """Queue an instance for the caller (waiting while it holds too many); False once stopped."""
        while self._held >= INSTANCES_AHEAD and not self.stopping:
            self._room.clear()
            await self._room.wait()
        if self.stopping:
            return False
        self._held += 1
        self._items.put_nowait(instance)
        return True

    async def stop(self) -> None:
        """The caller is done: cancel what is still running, free what it did not take."""
        self.stopping = True
        self._room.set()
        try:
            if not self._pump.done():
                if self.message_id is None:  # not sent yet (waiting for a window slot)
                    self._pump.cancel()
                else:
                    try:
                        await self.dimse.cancel(self.context_id, self.message_id)
                    except AiodicomError as exc:
                        _log.info("cancel_not_sent", mid=self.message_id, error=str(exc))
                # Shielded: cancelled again, the caller goes; the pump still ends on its own.
                await asyncio.shield(asyncio.wait((self._pump,)))
        finally:
            self._free()

    def _free(self) -> None:
        while not self._items.empty():
            item = self._items.get_nowait()
            if isinstance(item, ReceivedInstance):
                item.close()


@dataclass(slots=True)
class _Running:
    """A checked, encoded request, and its exchange once started (at the first iteration)."""

    dimse: DimseAssociation
    context_id: int
    #: The context's transfer syntax: how the responses' identifiers are encoded.
    transfer_syntax: str
    identifier: bytes
    make: Callable[[int], C.Message]
    timeout: float | None = None
    on_message_id: Callable[[int], None] | None = None
    exchange: _Exchange | None = None

    def begin(self, *, pending: bool = True) -> _Exchange:
        """Send the request (in the exchange's pump task); once only. ``pending=False``:
        the caller does not want the pending responses (see :class:`_Exchange`)."""
        if self.exchange is None:
            self.exchange = _Exchange(
                self.dimse, self.context_id, self.make, self.identifier,
                on_message_id=self.on_message_id, timeout=self.timeout, pending=pending,
            )  # fmt: skip
        return self.exchange


async def find_responses(running: _Running) -> AsyncGenerator[pydicom.Dataset, None]:
    """The matches of a C-FIND, decoded; a failure status raises :class:`QueryFailed`.

    Leaving early (``break``, an exception, cancellation) sends C-CANCEL (see :class:`_Exchange`).
    """
    exchange = running.begin()
    try:
        while True:
            response = await exchange.next()
            assert isinstance(response, Response)
            status = response.status
            if not status.is_pending:
                break
            if response.dataset is not None:
                yield codec_identifier.read_identifier(response.dataset, running.transfer_syntax)
    finally:
        await exchange.stop()
    if status.is_failure:
        raise QueryFailed(f"C-FIND failed: {status}", int(status))


def _no_op(_exchange: _Exchange | None) -> None:
    pass


async def retrieve_responses(
    running: _Running,
    operation: str,
    on_progress: ProgressCallback | None,
    *,
    lock: asyncio.Lock | None = None,
    on_begin: Callable[[_Exchange], object] = _no_op,
    on_end: Callable[[_Exchange], object] = _no_op,
) -> AsyncGenerator[ReceivedInstance | RetrieveResult, None]:
    """Instances as they arrive, then the final :class:`RetrieveResult` (failure raises).

    The request is sent at the first iteration (under ``lock``), ``on_begin``/``on_end``
    around it, e.g. to route instances to it. Pending responses go to ``on_progress`` (so
    does the final one); without it they are not even queued for this task: a C-GET's
    hundreds of pending responses then cost no wake-up and no decoding of counts here.
    """
    async with lock if lock is not None else nullcontext():
        exchange = running.begin(pending=on_progress is not None)
        on_begin(exchange)
        try:
            while True:
                item = await exchange.next()
                if isinstance(item, ReceivedInstance):
                    yield item
                    continue
                result = retrieve_result(item, running.transfer_syntax)
                if on_progress is not None:
                    on_progress(result)
                if not result.status.is_pending:
                    break
        finally:
            try:
                await exchange.stop()
            finally:
                on_end(exchange)
    yield check_final(result, operation)


class Retrieval:
    """A C-GET or C-MOVE to ourselves: ``async for instance in retrieval`` yields what arrives.

    Each :class:`~aiodicom.ReceivedInstance` is the caller's: ``save`` or ``close`` it (within
    the ``connect`` block for a C-GET: the spool folder goes with the association). After
    the loop, :attr:`result` holds the final counts; a failure status raises
    :class:`RetrieveFailed` from the loop. Leaving the loop early sends C-CANCEL.
    """

    def __init__(self, start: Callable[[], AsyncGenerator[ReceivedInstance | RetrieveResult, None]]) -> None:
        self._start = start
        self._started = False
        #: The final counts, once the loop has ended.
        self.result: RetrieveResult | None = None

    def __aiter__(self) -> AsyncGenerator[ReceivedInstance, None]:
        if self._started:
            raise ConfigurationError("a retrieval can be iterated once")
        self._started = True
        return self._instances()

    async def _instances(self) -> AsyncGenerator[ReceivedInstance, None]:
        items = self._start()
        try:
            async for item in items:
                if isinstance(item, RetrieveResult):
                    self.result = item
                else:
                    yield item
        finally:
            await items.aclose()


# --- where retrieved instances arrive ------------------------------------------------------


class GetInbox:
    """The C-STORE handler of a C-GET SCU: instances go to the one C-GET running.

    C-STORE sub-operations of a C-GET do not name the request they serve, so one C-GET at a
    time per association (:attr:`lock`). A C-STORE with no C-GET waiting for it is refused.
    """

    def __init__(self) -> None:
        self.current: _Exchange | None = None
        self.lock = asyncio.Lock()

    async def on_store(self, instance: ReceivedInstance) -> int:
        return await _hand_over(self.current, instance, "C-GET")


class MoveInbox:
    """The store handler to give a :class:`~aiodicom.Server` that receives our own C-MOVEs.

    Instances are matched to the C-MOVE that caused them by Move Originator AE Title and
    Message ID (PS3.7 9.3.1.1); a peer that leaves them out is matched when one move is
    waiting. Others go to ``fallback`` (a store handler, e.g. one that writes files), or are
    refused (0x0124) when there is none: this inbox is no open door.
    """

    def __init__(self, ae_title: str, fallback: StoreHandler | None = None) -> None:
        #: The AE title of the Server this inbox serves (the C-MOVE destination).
        self.ae_title = ae_title.strip()
        self.fallback = fallback
        self._waiting: dict[tuple[str, int], _Exchange] = {}

    def register(self, originator_ae: str, message_id: int, exchange: _Exchange) -> None:
        key = (originator_ae.strip(), message_id)
        if key in self._waiting:
            raise ConfigurationError(
                f"two C-MOVEs from {key[0]} with message ID {message_id} wait in one inbox"
            )
        self._waiting[key] = exchange

    def unregister(self, exchange: _Exchange) -> None:
        for key in [key for key, value in self._waiting.items() if value is exchange]:
            del self._waiting[key]

    def _match(self, instance: ReceivedInstance) -> _Exchange | None:
        ae, mid = instance.move_originator_ae, instance.move_originator_message_id
        if ae is not None and mid is not None:
            return self._waiting.get((ae.strip(), mid))
        waiting = list(self._waiting.values())
        return waiting[0] if len(waiting) == 1 else None

    async def on_store(self, instance: ReceivedInstance) -> int | None:
        exchange = self._match(instance)
        if exchange is None and self.fallback is not None:
            return await self.fallback(instance)
        return await _hand_over(exchange, instance, "C-MOVE")


async def _hand_over(exchange: _Exchange | None, instance: ReceivedInstance, what: str) -> int:
    if exchange is None:
        return S.Status(S.NOT_AUTHORIZED, error_comment=f"no {what} of ours is waiting for this instance")
    instance.detach()
    if not await exchange.deliver(instance):
        instance.close()
        return S.Status(S.OUT_OF_RESOURCES, error_comment=f"the {what} was cancelled")
    return S.SUCCESS


__all__ = [
    "INSTANCES_AHEAD",
    "GetInbox",
    "InvalidQueryError",
    "MoveInbox",
    "ProgressCallback",
    "Query",
    "QueryFailed",
    "QueryOptions",
    "Retrieval",
    "RetrieveFailed",
    "RetrieveResult",
    "check_final",
    "encode_dataset_identifier",
    "encode_query",
    "find_responses",
    "identifier_dataset",
    "query_level",
    "retrieve_responses",
    "retrieve_result",
]
