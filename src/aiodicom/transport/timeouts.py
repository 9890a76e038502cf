"""How long each network wait may last, and the error that says which one ran out.

Shared by both drivers of the Upper Layer: the asyncio transport
(:mod:`aiodicom.transport.association`) and the blocking one of one-shot commands
(:mod:`aiodicom.transport.blocking`). Here, apart from either, so that the blocking
driver bounds the same waits with the same errors without importing asyncio.
"""

from __future__ import annotations

from aiodicom._record import FrozenRecord
from aiodicom.errors import DicomTimeoutError


class Timeouts(FrozenRecord):
    """Seconds to wait at each stage; ``None`` waits forever (not recommended).

    ``min_rate`` (bytes per second) goes with ``pdu``: together they bound how long a
    PDU or message may take to arrive once it has started.
    """

    #: TCP (and TLS) connection set-up; on a server, the TLS handshake of an accepted connection.
    connect: float | None = 30.0
    #: A-ASSOCIATE and A-RELEASE exchanges.
    acse: float | None = 30.0
    #: Waiting for a DIMSE response, or for the peer to take our data.
    dimse: float | None = 60.0
    #: An established association on which the peer sends nothing.
    network_idle: float | None = 120.0
    #: ARTIM: a connection that sends no A-ASSOCIATE-RQ, or does not close after release/abort.
    artim: float = 30.0
    #: A PDU or DIMSE message in progress: every window of this many seconds must
    #: bring at least ``pdu * min_rate`` bytes, or the association is aborted. This
    #: is what ends peers that trickle bytes to keep an association from being idle.
    pdu: float | None = 30.0
    #: Bytes per second a PDU or message in progress must average (see ``pdu``).
    min_rate: float = 16 * 1024


DEFAULT_TIMEOUTS = Timeouts()


# --- which wait ran out: what a retry needs to know --------------------------------------


class ConnectTimeout(DicomTimeoutError):
    """The connection (TCP, TLS) was not set up in ``Timeouts.connect``: nothing was sent."""


class AssociateTimeout(DicomTimeoutError):
    """An A-ASSOCIATE or A-RELEASE went unanswered in ``Timeouts.acse``.

    At association no request was sent yet; at release every request had its answer.
    """


class ResponseTimeout(DicomTimeoutError):
    """No DIMSE response, or the peer took none of our data, in ``Timeouts.dimse``.

    The association is aborted. A retry must assume the request may have been carried
    out (the peer may have stored the instance and lost only its answer).
    """


class IdleTimeout(DicomTimeoutError):
    """The peer sent nothing for ``Timeouts.network_idle`` on an established association."""




# --- the same words from either driver ------------------------------------------------------


def connect_timed_out(host: str, port: int, seconds: float | None) -> ConnectTimeout:
    return ConnectTimeout(f"connecting to {host}:{port} took longer than {seconds} s")


def associate_timed_out(host: str, port: int, seconds: float | None) -> AssociateTimeout:
    return AssociateTimeout(f"{host}:{port} did not answer A-ASSOCIATE-RQ in {seconds} s")


def release_timed_out() -> AssociateTimeout:
    return AssociateTimeout("peer did not answer A-RELEASE-RQ in time")


def no_response(seconds: float | None) -> ResponseTimeout:
    """No DIMSE response in time (the association is then aborted)."""
    return ResponseTimeout(f"no DIMSE response within {seconds} s")


def no_data_taken(seconds: float | None) -> ResponseTimeout:
    """The peer took none of our data in time."""
    return ResponseTimeout(f"peer took no data for {seconds} s")
