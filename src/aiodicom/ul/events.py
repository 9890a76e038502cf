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
from aiodicom.errors import AssociationAborted, AssociationError, AssociationRejected

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
    "event_error",
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


#: Why an association that ends without a release or an abort PDU failed.
CLOSED_BEFORE_RELEASE = "connection closed before the association was released"
#: Why our outstanding requests failed when the peer released the association first.
PEER_RELEASED = "the peer released the association"


def event_error(event: UpperLayerEvent) -> AssociationError | None:
    """The error a user of the association sees for ``event``, if it ends the association.

    One mapping for both drivers (asyncio and blocking), so a command says the same
    whichever carried its bytes.
    """
    if isinstance(event, AssociateRejectConfirmation):
        return rejection_error(event)
    if isinstance(event, AbortIndication):
        return abort_error(event)
    return None


def rejection_error(event: AssociateRejectConfirmation) -> AssociationRejected:
    rejection = event.rejection
    return AssociationRejected(rejection.result, rejection.source, rejection.reason)


def abort_error(event: AbortIndication) -> AssociationAborted:
    return AssociationAborted(event.description, event.source, event.reason)


def invalid_accept(problem: Exception) -> AssociationAborted:
    """An A-ASSOCIATE-AC whose contexts do not answer our request (the requestor aborts)."""
    return AssociationAborted(f"invalid A-ASSOCIATE-AC: {problem}")
