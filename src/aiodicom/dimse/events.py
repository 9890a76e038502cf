"""What a :class:`~aiodicom.dimse.server.Server` reports as it works, for metrics.

A server given an observer (``Server(..., observer=...)``) calls these methods
at the few points where something countable happens; without one, each point
costs a single ``is None`` test. The methods run on the event loop, inline:
they must be quick and must not raise (count, don't do I/O).
:mod:`aiodicom.metrics` implements them with ``prometheus_client``; nothing
here imports it.
"""

from __future__ import annotations

from typing import Protocol


class ServerObserver(Protocol):
    """Receives a server's events. Subclass :class:`NullObserver` to implement only some."""

    def association_rejected(self, reason: str) -> None:
        """A connection or association was turned away (``reason``: a short fixed word)."""

    def association_started(self) -> None:
        """An association was accepted (A-ASSOCIATE-AC sent)."""

    def association_ended(self, outcome: str, duration: float) -> None:
        """An association ended: ``outcome`` is ``"released"`` or ``"aborted"``; seconds since it started."""

    def request_handled(self, command: str, status: int, size: int, handler_seconds: float) -> None:
        """A DIMSE request was answered.

        ``command`` is e.g. ``"C-STORE"``, ``size`` the data set bytes received
        (0 without one), ``handler_seconds`` the time spent in the
        application's handler (0 when there was none).
        """


class NullObserver:
    """Does nothing; a base for observers interested in some events only."""

    def association_rejected(self, reason: str) -> None:
        return None

    def association_started(self) -> None:
        return None

    def association_ended(self, outcome: str, duration: float) -> None:
        return None

    def request_handled(self, command: str, status: int, size: int, handler_seconds: float) -> None:
        return None


__all__ = ["NullObserver", "ServerObserver"]
