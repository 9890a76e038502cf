"""The blocking driver's gathered send: every byte, in order, however the kernel cuts it."""

from __future__ import annotations

import random
import socket
import threading

import pytest

from aiodicom.transport import blocking


def _drain(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(65536):
        into += chunk


@pytest.mark.parametrize("seed", range(6))
def test_send_all_delivers_every_buffer_in_order_through_partial_sends(seed: int) -> None:
    rng = random.Random(seed)
    # many buffers (more than one sendmsg takes), empty ones, views; far more than the send buffer
    count = rng.choice([3, 40, blocking._IOV_MAX + 37])
    buffers: list[bytes | bytearray | memoryview] = []
    for i in range(count):
        data = rng.randbytes(rng.choice([0, 1, 6, 4096, 70_000, 300_000]))
        buffers.append([bytes, bytearray, memoryview][i % 3](data))
    expected = b"".join(bytes(b) for b in buffers)
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender.settimeout(30)
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(receiver, received))
    reader.start()
    try:
        blocking._send_all(sender, buffers)
    finally:
        sender.close()
        reader.join(30)
        receiver.close()
    assert not reader.is_alive()
    assert received == expected


def test_send_all_raises_the_timeout_when_the_peer_takes_nothing() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver:
        sender.settimeout(0.2)
        with pytest.raises(TimeoutError):
            blocking._send_all(sender, [bytes(8 << 20)])
