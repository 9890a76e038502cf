"""Two DIMSE associations running back to back in memory: the requestor and the acceptor.

Shared by the DIMSE and query/retrieve tests, which differ only in what they negotiate and
which services each side registers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiodicom.dimse.association import DimseAssociation
from aiodicom.dimse.services import ServiceRegistry
from aiodicom.transport.association import Timeouts
from aiodicom.transport.memory import memory_pair
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import AcceptorPolicy


@asynccontextmanager
async def running_pair(
    rq: P.AssociateRQ,
    policy: AcceptorPolicy,
    requestor: ServiceRegistry,
    acceptor: ServiceRegistry,
    *,
    timeouts: Timeouts,
    window: int = 1,
) -> AsyncIterator[tuple[DimseAssociation, DimseAssociation]]:
    """(requestor, acceptor), each reading in its own task; closed and stopped on exit."""
    left, right = await memory_pair(
        rq,
        policy,
        requestor_decoder=requestor.decoder,
        acceptor_decoder=acceptor.decoder,
        timeouts=timeouts,
    )
    scu = DimseAssociation(left, requestor.handlers, max_operations=window)
    scp = DimseAssociation(right, acceptor.handlers, max_operations=window)
    scu.start()
    serving = asyncio.ensure_future(scp.run())
    try:
        yield scu, scp
    finally:
        await scu.close()
        if left.is_open:
            left.abort()
        serving.cancel()
        await asyncio.wait((serving,))
