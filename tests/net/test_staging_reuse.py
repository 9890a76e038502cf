"""Fragments are views into the transport's read buffer: what a sink keeps, it copies.

The server hands established P-DATA to its sinks as views into the buffer the next
read reuses (no copy of each PDU). These tests send several data sets back to back
in one write, so later PDUs land where earlier ones were, and check every byte a
handler sees afterwards: kept in memory, spilled to disk mid-way, or streamed, over
fragment sizes on both sides of the small-piece and large-PDU boundaries.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from aiodicom.codec.uids import new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse.command import CStoreRSP
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.synthetic import make_dataset
from aiodicom.ul import pdu as P

from .conftest import (
    CT_CONTEXT,
    TEST_TIMEOUT,
    encode_dataset,
    pdata,
    raw_peer,
    running_server,
    store_rq,
)

pytestmark = pytest.mark.anyio

ROWS, COLUMNS = 400, 300
#: Every data set in memory; spilled to disk after its first 20 kB; on disk from its first byte.
THRESHOLDS = [1 << 30, 20_000, 0]
#: Around the 4 KiB small-piece limit, the 32 KiB direct-read limit, and up to most of
#: the 256 KiB staging buffer (a PDU that arrives whole in one read is decoded there).
FRAGMENTS = [999, 4095, 4096, 16_384, 40_000, 131_060, 200_000]


def fragmented(uid: str, data: bytes, step: int, message_id: int) -> bytes:
    """A C-STORE request as PDUs of one PDV each: the command, then ``step``-byte fragments."""
    wire = [pdata((CT_CONTEXT, True, True, store_rq(uid, message_id)))]
    for start in range(0, len(data), step):
        last = start + step >= len(data)
        wire.append(pdata((CT_CONTEXT, False, last, data[start : start + step])))
    return b"".join(wire)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("step", FRAGMENTS)
async def test_kept_bytes_survive_the_next_reads(tmp_path: Path, threshold: int, step: int) -> None:
    seen: dict[str, tuple[bytes, dict[int, bytes]]] = {}

    async def handler(instance: ReceivedInstance) -> int:
        # Columns is not a tag the structure walk collects: it is read from the head.
        seen[instance.sop_instance_uid] = (instance.dataset_bytes(), instance.tags((0x00280011,)))
        return S.SUCCESS

    sent: dict[str, bytes] = {}
    for seed in range(4):
        uid = new_uid()
        dataset = make_dataset(
            rows=ROWS, columns=COLUMNS, seed=seed, index=seed, slices=4, sop_instance_uid=uid
        )
        sent[uid] = encode_dataset(dataset)
    wire = b"".join(
        fragmented(uid, data, step, n + 1) for n, (uid, data) in enumerate(sent.items())
    )

    async with running_server(tmp_path, on_store=handler, memory_threshold=threshold) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(wire)
                for _ in sent:
                    assert (await peer.expect_response(CStoreRSP)).status == S.SUCCESS
                await peer.send(P.encode(P.ReleaseRQ()))
                assert await peer.expect_pdu() == P.ReleaseRP()

    assert set(seen) == set(sent)
    for uid, data in sent.items():
        received, tags = seen[uid]
        assert received == data, f"data set {uid} changed after later reads (threshold {threshold})"
        assert tags == {0x00280011: COLUMNS.to_bytes(2, "little")}
