"""What the Upper Layer reports to its user: the PS3.8 service primitives it indicates.

Each event is named after the primitive of PS3.8 section 7 it delivers (A-ASSOCIATE
indication, A-RELEASE confirmation, ...), so no event shares a name with an
exception of :mod:`aiodicom.errors` (``AssociationRejected`` is the exception a
caller sees; :class:`AssociateRejectConfirmation` is what the state machine reports)
or with the items the transport queues for DIMSE.

Plain classes with ``__slots__`` rather than dataclasses: they are created once
per PDU and decorated never, which keeps import time down (``aiodicom echo``
starts in a few tens of milliseconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from aiodicom.ul.pdu import PDV, AssociateAC, AssociateRJ, AssociateRQ

__all__ = [
    "AbortIndication",
    "AssociateAcceptConfirmation",
    "AssociateIndication",
    "AssociateRejectConfirmation",
    "DataIndication",
    "ReleaseConfirmation",
    "ReleaseIndication",
    "TransportClosed",
    "UpperLayerEvent",
]


class _Event:
    """Value semantics (equality, repr) over ``__slots__``, without dataclass decoration."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Event)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({args})"


class AssociateIndication(_Event):
    """A-ASSOCIATE indication (an A-ASSOCIATE-RQ arrived): answer with
    :meth:`~aiodicom.ul.machine.UpperLayer.accept` or ``reject``."""

    __slots__ = ("request",)

    def __init__(self, request: AssociateRQ) -> None:
        self.request = request


class AssociateAcceptConfirmation(_Event):
    """A-ASSOCIATE confirmation, accepted (an A-ASSOCIATE-AC arrived)."""

    __slots__ = ("response",)

    def __init__(self, response: AssociateAC) -> None:
        self.response = response


class AssociateRejectConfirmation(_Event):
    """A-ASSOCIATE confirmation, rejected (an A-ASSOCIATE-RJ arrived)."""

    __slots__ = ("rejection",)

    def __init__(self, rejection: AssociateRJ) -> None:
        self.rejection = rejection


class DataIndication(_Event):
    """P-DATA indication: the PDVs of one P-DATA-TF."""

    __slots__ = ("pdvs",)

    def __init__(self, pdvs: list[PDV]) -> None:
        self.pdvs = pdvs


class ReleaseIndication(_Event):
    """A-RELEASE indication: answer with :meth:`~aiodicom.ul.machine.UpperLayer.release_response`.

    ``collision`` when both sides asked to release at once (PS3.8 9.2.1).
    """

    __slots__ = ("collision",)

    def __init__(self, collision: bool = False) -> None:
        self.collision = collision


class ReleaseConfirmation(_Event):
    """A-RELEASE confirmation: the peer answered our A-RELEASE-RQ."""

    __slots__ = ()


class AbortIndication(_Event):
    """A-ABORT (from the peer) or A-P-ABORT (from the provider) indication: the association is gone."""

    __slots__ = ("source", "reason", "by_peer", "description")

    def __init__(self, source: int, reason: int, by_peer: bool, description: str) -> None:
        self.source = source
        self.reason = reason
        self.by_peer = by_peer
        self.description = description


class TransportClosed(_Event):
    """The transport connection closed; ``expected`` when it ended a release or abort we sent."""

    __slots__ = ("expected",)

    def __init__(self, expected: bool) -> None:
        self.expected = expected


UpperLayerEvent: TypeAlias = (
    AssociateIndication
    | AssociateAcceptConfirmation
    | AssociateRejectConfirmation
    | DataIndication
    | ReleaseIndication
    | ReleaseConfirmation
    | AbortIndication
    | TransportClosed
)
