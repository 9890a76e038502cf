"""Many short associations leave no memory behind, even before the collector runs (issue 6).

The soak benchmark saw a receiver's RSS climb by 50+ MiB over 10,000 associations at 64
at a time. Nothing leaked: a closed connection's protocol sits in reference cycles that
only the cyclic garbage collector breaks, and until it ran each one kept its 256 KiB read
buffer, so hundreds of dead buffers set the allocator's high-water mark. These tests
run associations in this process (client and server: both roles use the same protocol)
with tracemalloc and check both halves: nothing per association survives a collection,
and, with the collector off, a closed association keeps no large buffer.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import aiodicom

from .conftest import FAST, HOST, SERVER_AE, running_server

pytestmark = pytest.mark.anyio

#: Associations measured, and how many run at a time (bounded: well under a second each).
ASSOCIATIONS = 120
AT_A_TIME = 12
#: The Python objects of one dead association, both sides (negotiated contexts, protocol,
#: tasks, machine), measure about 45 KiB; its read buffers were 2 x 256 KiB more.
DEAD_BYTES_PER_ASSOCIATION = 128 * 1024
#: After a collection nothing per association may remain (caches fill in the warm-up).
KEPT_BYTES_PER_ASSOCIATION = 1024


@pytest.fixture
def traced() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        if started:
            tracemalloc.stop()


async def _echoes(port: int, count: int) -> None:
    limiter = anyio.CapacityLimiter(AT_A_TIME)

    async def one() -> None:
        async with limiter:
            async with aiodicom.connect(HOST, port, called_ae=SERVER_AE, timeouts=FAST) as assoc:
                assert (await assoc.echo()).is_success

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)


async def test_closed_associations_hold_no_buffers_and_nothing_survives_collection(
    tmp_path: Path, traced: None
) -> None:
    with anyio.fail_after(60):
        async with running_server(tmp_path) as running:
            await _echoes(running.port, 2 * AT_A_TIME)  # warm-up: imports, caches, pools
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            await _echoes(running.port, ASSOCIATIONS)
            await anyio.sleep(0.2)  # the server side sees its connections close
            dead = tracemalloc.get_traced_memory()[0] - before
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
            # The server still serves after all this.
            await _echoes(running.port, 1)
    assert dead < ASSOCIATIONS * DEAD_BYTES_PER_ASSOCIATION, (
        f"{dead / ASSOCIATIONS / 1024:.0f} KiB per closed association before collection"
    )
    assert kept < ASSOCIATIONS * KEPT_BYTES_PER_ASSOCIATION, (
        f"{kept / ASSOCIATIONS:.0f} bytes per association survive a collection"
    )
