"""A worker's report line to its pool: batched messages wait, the others take them along in order."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import anyio
import pytest

from aiodicom.dimse.workers import REPORT_DELAY, WorkerChannel

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def arrived(read_fd: int) -> list[object]:
    try:
        data = os.read(read_fd, 1 << 16)
    except BlockingIOError:
        return []
    return [json.loads(line)["payload"]["n"] for line in data.splitlines()]


async def test_batched_messages_wait_for_the_next_plain_one_and_keep_their_order(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    channel = WorkerChannel(0, write_fd)
    channel.message({"n": 1}, batch=True)
    channel.message({"n": 2}, batch=True)
    assert arrived(read_fd) == []  # the parent is not woken per message
    channel.message({"n": 3})
    assert arrived(read_fd) == [1, 2, 3]
    await anyio.sleep(REPORT_DELAY * 2)
    assert arrived(read_fd) == []  # the timer found nothing left to send


async def test_a_batched_message_alone_goes_within_the_report_delay(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    channel = WorkerChannel(0, write_fd)
    channel.message({"n": 1}, batch=True)
    with anyio.fail_after(REPORT_DELAY * 20):
        while not (got := arrived(read_fd)):
            await anyio.sleep(REPORT_DELAY / 5)
    assert got == [1]
    channel.message({"n": 2}, batch=True)
    channel.flush()  # what a stopping worker does
    assert arrived(read_fd) == [2]
