"""C-CANCEL that arrives together with its request (read in the same batch) still gets its answer.

A task cancelled before its first step never runs its body: the operation would go
unanswered (the requestor waits out its timeout) and its slot of the operations window
would never be released. The association delivers such a cancel once the task has
started, so the handler's own cancel path answers 0xFE00 and the window frees.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.identifier import encode_identifier
from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, STUDY_ROOT_FIND
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import Request
from aiodicom.dimse.client import connect
from peers import LOCALHOST

from ..dimse.test_association import (
    FIND,
    FIND_CONTEXT,
    Handlers,
    collect,
    dimse_pair,
    find,
    identifier,
)
from .scp_helpers import MANY, qrscp, write_archive

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


async def test_find_cancelled_by_the_requestor_ends_with_fe00(tmp_path: Path) -> None:
    """Against the qrscp process: C-FIND and C-CANCEL back to back, over MANY matches."""
    archive = write_archive(tmp_path / "archive")
    with qrscp(archive.root, {}) as server, anyio.fail_after(20):
        async with connect(LOCALHOST, server.port, called_ae="QRSCP", contexts=[(STUDY_ROOT_FIND, [EXPLICIT_VR_LITTLE_ENDIAN])]) as client:
            dimse = client.dimse
            query = encode_identifier([(0x00080052, "CS", b"IMAGE"), (0x00100020, "LO", b"P3"), (0x00080018, "UI", b"")],
                                      EXPLICIT_VR_LITTLE_ENDIAN)  # fmt: skip
            mids: list[int] = []

            def make(mid: int) -> C.CFindRQ:
                mids.append(mid)
                return C.CFindRQ(mid, STUDY_ROOT_FIND)

            async def send_then_cancel(context: int, command: bytes) -> None:
                await client.association.send(context, command, query)
                await dimse.cancel(context, mids[0])

            context = client.association.context_for(STUDY_ROOT_FIND)
            assert context is not None
            responses = [r async for r in dimse.request(context.id, make, send=send_then_cancel)]
            assert responses[-1].status == S.CANCEL
            assert len(responses) - 1 < MANY
            # The association goes on.
            again = [r async for r in dimse.request(context.id, lambda mid: C.CFindRQ(mid, STUDY_ROOT_FIND), query)]
            assert [r.status for r in again] == [S.PENDING] * MANY + [S.SUCCESS]
