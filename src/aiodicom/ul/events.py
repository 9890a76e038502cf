"""What the Upper Layer reports to its user: the PS3.8 service primitives it indicates.

Each event is named after the primitive of PS3.8 section 7 it delivers (A-ASSOCIATE
indication, A-RELEASE confirmation, ...), so no event shares a name with an
exception of :mod:`aiodicom.errors` (``AssociationRejected`` is the exception a
caller sees; :class:`AssociateRejectConfirmation` is what the state machine reports)
or with the items the transport queues for DIMSE.

Records (:mod:`aiodicom._record`) rather than dataclasses, which keeps import time
down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from aiodicom._record import Record

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


class AssociateIndication(Record):
    """A-ASSOCIATE indication (an A-ASSOCIATE-RQ arrived): answer with
    :meth:`~aiodicom.ul.machine.UpperLayer.accept` or ``reject``."""

    request: AssociateRQ


class AssociateAcceptConfirmation(Record):
    """A-ASSOCIATE confirmation, accepted (an A-ASSOCIATE-AC arrived)."""

    response: AssociateAC


class AssociateRejectConfirmation(Record):
    """A-ASSOCIATE confirmation, rejected (an A-ASSOCIATE-RJ arrived)."""

    rejection: AssociateRJ


class DataIndication(Record):
    """P-DATA indication: the PDVs of one P-DATA-TF."""

    pdvs: list[PDV]


class ReleaseIndication(Record):
    """A-RELEASE indication: answer with :meth:`~aiodicom.ul.machine.UpperLayer.release_response`.

    ``collision`` when both sides asked to release at once (PS3.8 9.2.1).
    """

    collision: bool = False


class ReleaseConfirmation(Record):
    """A-RELEASE confirmation: the peer answered our A-RELEASE-RQ."""


class AbortIndication(Record):
    """A-ABORT (from the peer) or A-P-ABORT (from the provider) indication: the association is gone."""

    source: int
    reason: int
    by_peer: bool
    description: str


class TransportClosed(Record):
    """The transport connection closed; ``expected`` when it ended a release or abort we sent."""

    expected: bool


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
