"""Large data set fragments over plain TCP go from the socket to the spool file by splice(2).

A P-DATA PDU of one PDV that continues a data set bound for a spool file streams: the
bytes the structure walk only steps over (pixel data) move socket -> pipe -> file inside
the kernel. Whatever the PDU sizes and however the bytes are cut on the wire, on either
event loop, what is stored is exactly what was sent; a wrong PDU in the middle of such a
data set is refused as on the general path; a peer that stops inside a streamed PDV, or
whose data set ends inside its pixel data, leaves nothing stored; TLS never splices.
Meanwhile the server serves other clients.
"""

from __future__ import annotations

import errno
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiodicom
from aiodicom.codec.uids import new_uid
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.synthetic import make_dataset
from aiodicom.ul import pdu as P

from .conftest import (
    BOTH_LOOPS,
    CT_CONTEXT,
    ECHO_CONTEXT,
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    RawPeer,
    RunningServer,
    assert_still_serving,
    encode_dataset,
    pdu,
    raw_pdv,
    raw_peer,
    running_server,
    store_rq,
    tls_contexts,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not hasattr(os, "splice"), reason="splice(2) is Linux only"),
]

KIB = 1024
PROVIDER = P.AbortSource.SERVICE_PROVIDER


class SpliceSpy:
    """Counts the bytes ``os.splice`` moves into regular files (the real call does the work)."""

    def __init__(self) -> None:
        self.real = os.splice
        self.into_files = 0

    def __call__(self, src: int, dst: int, count: int, *args: Any, **kwargs: Any) -> int:
        moved = self.real(src, dst, count, *args, **kwargs)
        if stat.S_ISREG(os.fstat(dst).st_mode):
            self.into_files += moved
        return moved


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> SpliceSpy:
    spy = SpliceSpy()
    monkeypatch.setattr(os, "splice", spy)
    return spy


def ct(uid: str, rows: int = 512) -> bytes:
    """A CT data set (``rows`` x 512 x 16 bit: 512 KiB of pixel data at 512 rows), as it travels."""
    return encode_dataset(make_dataset(rows=rows, columns=512, sop_instance_uid=uid))


def data_pdus(data: bytes, size: int, context: int = CT_CONTEXT) -> list[bytes]:
    """``data`` as P-DATA-TF PDUs of one PDV each, ``size`` bytes of data per PDV."""
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return [
        P.encode(P.PDataTF([P.PDV(context, False, i == len(chunks) - 1, chunk)]))
        for i, chunk in enumerate(chunks)
    ]


def cuts(wire: bytes, how: str, rng: random.Random) -> Iterator[bytes]:
    """The bytes as the peer writes them: whole, in 1000-byte writes, or cut anywhere."""
    if how == "whole":
        yield wire
        return
    pos = 0
    while pos < len(wire):
        step = 1000 if how == "1000-bytes" else rng.choice((1, 5, 6, 11, 12, 13, 700, 4096, 9000, 70000))
        yield wire[pos : pos + step]
        pos += step


def command_pdu(uid: str, message_id: int) -> bytes:
    command = store_rq(uid, message_id)
    return pdu(P.PDUType.P_DATA_TF, raw_pdv(len(command) + 2, CT_CONTEXT, 3, command))


async def store(peer: RawPeer, uid: str, data: bytes, message_id: int, pdu_size: int, how: str) -> C.CStoreRSP:
    wire = command_pdu(uid, message_id) + b"".join(data_pdus(data, pdu_size))
    for piece in cuts(wire, how, random.Random(message_id)):
        await peer.send(piece)
    return await peer.expect_response(C.CStoreRSP)


def stored_dataset(running: RunningServer, uid: str) -> bytes:
    [path] = [p for p in running.stored_files() if p.name == f"{uid}.dcm"]
    return path.read_bytes()


@BOTH_LOOPS
@pytest.mark.parametrize("how", ["whole", "1000-bytes", "anywhere"])
@pytest.mark.parametrize("pdu_size", [16 * KIB, 64 * KIB, 200 * KIB])
async def test_large_pdvs_are_spliced_and_stored_exactly(
    tmp_path: Path, spliced: SpliceSpy, pdu_size: int, how: str
) -> None:
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT * 2):
            async with aiodicom.connect(
                HOST, running.port, called_ae=SERVER_AE, calling_ae="GOOD", timeouts=FAST
            ) as good:
                async with raw_peer(running.port) as peer:
                    await peer.associate()
                    sent = {}
                    for message_id in (1, 2):
                        uid = new_uid()
                        sent[uid] = ct(uid, rows=512 if message_id == 1 else 300)
                        response = await store(peer, uid, sent[uid], message_id, pdu_size, how)
                        assert response.status == S.SUCCESS, response
                        assert (await good.echo()).is_success  # served meanwhile
                    await peer.send(P.encode(P.ReleaseRQ()))
                    assert await peer.expect_pdu() == P.ReleaseRP()
        for uid, data in sent.items():
            assert stored_dataset(running, uid).endswith(data)
        assert running.partial_files() == []
        # Much of the pixel data never passed through the process (not all: the heads,
        # and each PDV's last 4 KiB, are read as usual).
        assert spliced.into_files > sum(len(d) for d in sent.values()) // 4


@BOTH_LOOPS
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_our_client_over_tcp_and_tls_stores_exactly(tmp_path: Path, spliced: SpliceSpy, tls: bool) -> None:
    """Our own client sends 16 KiB PDUs (the server's maximum); over TLS nothing is spliced."""
    server_tls, client_tls = tls_contexts()
    uid = new_uid()
    dataset = make_dataset(rows=512, columns=512, sop_instance_uid=uid)
    data = encode_dataset(dataset)
    async with running_server(tmp_path, ssl=server_tls if tls else None) as running:
        with anyio.fail_after(TEST_TIMEOUT * 2):
            async with aiodicom.connect(
                HOST, running.port, called_ae=SERVER_AE, calling_ae="SCU", timeouts=FAST,
                ssl=client_tls if tls else None,
            ) as client:  # fmt: skip
                assert (await client.store(dataset)).is_success
    assert stored_dataset(running, uid).endswith(data)
    assert running.partial_files() == []
    if tls:
        assert spliced.into_files == 0
    else:
        assert spliced.into_files > len(data) // 2


#: A PDU of one 64 KiB PDV sent where the next streamed fragment was due: (its PDV length
#: field beyond the honest one, context, control byte, bytes after the PDV) and the abort
#: reason it earns.
BROKEN: dict[str, tuple[tuple[int, int, int, bytes], int]] = {
    "pdv-longer-than-pdu": ((100, CT_CONTEXT, 0, b""), P.REASON_INVALID_PARAMETER),
    "other-context": ((0, ECHO_CONTEXT, 0, b""), P.REASON_UNEXPECTED_PARAMETER),
    "command-fragment": ((0, CT_CONTEXT, 1, b""), P.REASON_UNEXPECTED_PARAMETER),
    "reserved-bits": ((0, CT_CONTEXT, 0x80, b""), P.REASON_INVALID_PARAMETER),
    "second-pdv-empty": ((0, CT_CONTEXT, 0, raw_pdv(0, CT_CONTEXT, 0)), P.REASON_INVALID_PARAMETER),
    "even-context": ((0, 2, 0, b""), P.REASON_INVALID_PARAMETER),
}


def broken_pdu(extra_length: int, context: int, control: int, after: bytes) -> bytes:
    body = bytes(64 * KIB)
    return pdu(P.PDUType.P_DATA_TF, raw_pdv(len(body) + 2 + extra_length, context, control, body) + after)


@BOTH_LOOPS
@pytest.mark.parametrize("case", list(BROKEN))
async def test_a_broken_pdu_inside_a_streamed_data_set_is_aborted(tmp_path: Path, case: str) -> None:
    fields, reason = BROKEN[case]
    broken = broken_pdu(*fields)
    uid = new_uid()
    first, second, *_ = data_pdus(ct(uid), 64 * KIB)
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(command_pdu(uid, 1))
                await peer.send(first + second)  # the head, then a streamed fragment
                await peer.send(broken)
                await peer.expect_abort(PROVIDER, reason)
        await assert_still_serving(running)
        assert running.stored_files() == []
        assert running.partial_files() == []


@BOTH_LOOPS
async def test_a_data_set_ending_inside_its_streamed_pixel_data_is_refused(
    tmp_path: Path, spliced: SpliceSpy
) -> None:
    uid = new_uid()
    whole = ct(uid)
    data = whole[: -100 * KIB]  # the last PDV ends 100 KiB short of the pixel data's length
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                response = await store(peer, uid, data, 1, 64 * KIB, "whole")
                assert response.status == S.CANNOT_UNDERSTAND
                assert response.error_comment and "malformed" in response.error_comment
                # The association goes on: the whole data set is then stored.
                response = await store(peer, uid, whole, 2, 64 * KIB, "whole")
                assert response.status == S.SUCCESS
        await assert_still_serving(running)
        assert stored_dataset(running, uid).endswith(whole)
        assert running.partial_files() == []
        assert spliced.into_files > 0


@BOTH_LOOPS
@pytest.mark.parametrize("then", ["closes", "falls-silent"])
async def test_a_peer_stopping_inside_a_streamed_pdv_leaves_nothing(tmp_path: Path, then: str) -> None:
    """Gone, or silent until the idle timeout's A-ABORT, after which what it sends is not kept."""
    uid = new_uid()
    pdus = data_pdus(ct(uid), 200 * KIB)
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(command_pdu(uid, 1))
                await peer.send(pdus[0] + pdus[1][: 100 * KIB])  # stops halfway through a PDV
                if then == "falls-silent":
                    await peer.expect_abort(P.AbortSource.SERVICE_USER, P.REASON_NOT_SPECIFIED)
                    try:
                        await peer.send(pdus[1][100 * KIB :] + b"".join(pdus[2:]))
                    except ConnectionError:
                        pass  # the server may already have closed
                    await peer.expect_closed()
        await assert_still_serving(running)
        assert running.stored_files() == []
        assert running.partial_files() == []


class RefusingFiles(SpliceSpy):
    """A file system that refuses splice(2) into its files (with ``code``), or fails writes."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code
        self.refused = 0

    def __call__(self, src: int, dst: int, count: int, *args: Any, **kwargs: Any) -> int:
        if stat.S_ISREG(os.fstat(dst).st_mode) and self.refused < 1:
            self.refused += 1
            raise OSError(self.code, os.strerror(self.code))
        return super().__call__(src, dst, count, *args, **kwargs)


@BOTH_LOOPS
async def test_a_file_system_refusing_splice_gets_the_bytes_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL from splice into the file: those bytes are copied, the connection reads as usual."""
    spy = RefusingFiles(errno.EINVAL)
    monkeypatch.setattr(os, "splice", spy)
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                sent = {}
                for message_id in (1, 2):
                    uid = new_uid()
                    sent[uid] = ct(uid)
                    response = await store(peer, uid, sent[uid], message_id, 64 * KIB, "whole")
                    assert response.status == S.SUCCESS, response
        await assert_still_serving(running)
    assert spy.refused == 1
    for uid, data in sent.items():
        assert stored_dataset(running, uid).endswith(data)
    assert running.partial_files() == []


@BOTH_LOOPS
async def test_a_write_failing_inside_a_splice_refuses_that_instance_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while splicing into the spool: 0xA700, nothing stored, and the next instance is
    stored exactly (the pipe held nothing of the failed one)."""
    spy = RefusingFiles(errno.ENOSPC)
    monkeypatch.setattr(os, "splice", spy)
    first, second = new_uid(), new_uid()
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                response = await store(peer, first, ct(first), 1, 64 * KIB, "whole")
                assert response.status == S.OUT_OF_RESOURCES, response
                data = ct(second)
                response = await store(peer, second, data, 2, 64 * KIB, "whole")
                assert response.status == S.SUCCESS, response
        await assert_still_serving(running)
    assert spy.refused == 1
    [stored] = running.stored_files()
    assert stored.name == f"{second}.dcm" and stored.read_bytes().endswith(data)
    assert running.partial_files() == []
    assert spy.into_files > 0
