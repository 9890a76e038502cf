"""DIMSE services: each one a module that says what it registers and how it answers.

A :class:`Service` names the SOP classes it serves, the request types it handles
(:data:`~aiodicom.dimse.association.RequestHandler` per command type) and where the
data sets of those requests go (:data:`~aiodicom.dimse.association.SinkFactory`).
A :class:`ServiceRegistry` merges services for one association: the accepted SOP
classes derive from it, and so do the command decoder and the request handlers.

- :mod:`aiodicom.dimse.services.verification`: C-ECHO;
- :mod:`aiodicom.dimse.services.storage`: C-STORE (a handler returns a status).

- :mod:`aiodicom.dimse.services.query`: C-FIND (a handler yields (status, identifier) pairs);
- :mod:`aiodicom.dimse.services.retrieve`: C-MOVE and C-GET (a handler names the instances,
  the service runs the C-STORE sub-operations), cancelled through the association's
  C-CANCEL routing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from aiodicom.dimse import status as S
from aiodicom.dimse.association import RequestHandler, SinkFactory, command_decoder
from aiodicom.errors import AiodicomError, ConfigurationError
from aiodicom.transport.association import Association
from aiodicom.ul.assembly import CommandDecoder

T = TypeVar("T")


class Service:
    """What one DIMSE service registers; subclasses fill the three tables."""

    #: Abstract syntaxes this service serves (what an acceptor accepts for it).
    sop_classes: tuple[str, ...] = ()
    #: Request type -> its handler.
    handlers: Mapping[type, RequestHandler] = {}
    #: Request type -> where its data set goes (default: a bounded in-memory sink).
    sinks: Mapping[type, SinkFactory] = {}
    #: SOP classes for which a requestor may take the SCP role (Role Selection), e.g. the
    #: storage classes a C-GET sends on the requestor's own association.
    scp_roles: tuple[str, ...] = ()


class ServiceRegistry:
    """The services of one side: accepted SOP classes, handlers and sinks, merged.

    Two services handling the same request type is a configuration error.
    """

    def __init__(self, services: Iterable[Service] = ()) -> None:
        self.services = tuple(services)
        handlers: dict[type, RequestHandler] = {}
        sinks: dict[type, SinkFactory] = {}
        for service in self.services:
            for kind in service.handlers:
                if kind in handlers:
                    raise ConfigurationError(f"two services handle {kind.__name__}")
            handlers.update(service.handlers)
            sinks.update(service.sinks)
        self.handlers: Mapping[type, RequestHandler] = handlers
        self.sinks: Mapping[type, SinkFactory] = sinks
        #: Every SOP class a registered service serves, in registration order.
        self.sop_classes: tuple[str, ...] = tuple(
            dict.fromkeys(uid for service in self.services for uid in service.sop_classes)
        )
        #: SOP classes for which a requestor may take the SCP role, from every service.
        self.scp_roles: tuple[str, ...] = tuple(
            dict.fromkeys(uid for service in self.services for uid in service.scp_roles)
        )
        self._decoder = command_decoder(sinks)

    def decoder(self, association: Association) -> CommandDecoder[object]:
        """The Upper Layer's command decoder for ``association`` (data sets to the services' sinks)."""
        return self._decoder(association)


async def call_handler(
    handler: Callable[[T], Awaitable[int | None]], argument: T, *, fallback: int, log: object
) -> int:
    """Run an application handler: its status (``None`` is success), or ``fallback`` if it raised.

    A :class:`~aiodicom.Status` keeps its error comment. Expected failures (disk full, an
    unwritable folder) log one line; anything else logs its traceback.
    """
    try:
        code = await handler(argument)
    except (AiodicomError, OSError) as exc:
        log.error("handler_failed", error=str(exc))  # type: ignore[attr-defined]
        return fallback
    except Exception:
        log.exception("handler_failed")  # type: ignore[attr-defined]
        return fallback
    if code is None:
        return S.SUCCESS
    return code if isinstance(code, S.Status) else int(code)


__all__ = ["Service", "ServiceRegistry", "call_handler"]
