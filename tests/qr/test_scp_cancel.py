"""C-CANCEL that arrives together with its request (read in the same batch) still gets its answer.

A task cancelled before its first step never runs its body: the operation would go
unanswered (the requestor waits out its timeout) and its slot of the operations window
would never be released. The association delivers such a cancel once the task has
started, so the handler's own cancel path answers 0xFE00 and the window frees.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import Request

from ..dimse.test_association import FIND, FIND_CONTEXT, Handlers, collect, dimse_pair, find, identifier

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_cancel_sent_right_behind_its_request_is_answered_and_frees_the_window() -> None:
    async def handler(request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ) and request.dataset is not None
        if request.dataset.data() == identifier("SLOW"):  # type: ignore[attr-defined]
            await asyncio.sleep(30)  # until cancelled
        await request.respond(C.CFindRSP(rq.message_id, S.SUCCESS, FIND))

    with anyio.fail_after(10):
        async with dimse_pair([Handlers(find=handler)]) as (scu, _):
            mids: list[int] = []

            def make(mid: int) -> C.CFindRQ:
                mids.append(mid)
                return find(mid)

            async def send_then_cancel(context: int, command: bytes) -> None:
                await scu.association.send(context, command, identifier("SLOW"))
                await scu.cancel(context, mids[0])

            responses = [r async for r in scu.request(FIND_CONTEXT, make, send=send_then_cancel)]
            assert [r.status for r in responses] == [S.CANCEL]
            # The operations window (1) is free again: the next request is served.
            again = await collect(scu, FIND_CONTEXT, find, identifier("FAST"))
            assert [r.status for r in again] == [S.SUCCESS]
