"""``aiodicom store`` reports a peer's abort in its report lines only, wherever it happens.

The reported defect: when a peer aborted while a large file was being streamed, the
one-line error was followed by a 47-line "Future exception was never retrieved"
traceback (the response future of the request being sent was failed by the reader, but
nobody awaited it any more). These tests run the real command line in a subprocess
against peers that abort mid-data-set (DCMTK ``storescp --abort-during``, raw acceptors),
before the response (``--abort-after``), or during release, for small files and for a
file above the client's streaming threshold, and read its stderr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from aiodicom.dimse import command as C
from aiodicom.dimse.client import _STREAM_THRESHOLD
from aiodicom.synthetic import write_large_multiframe, write_study
from aiodicom.ul import pdu as P
from peers import aiodicom_command, peer_env, storescp

from .conftest import HOST, accept_all, raw_acceptor, read_pdu

pytestmark = pytest.mark.anyio

NOISE = ("Traceback", "never retrieved", "Task exception", "Exception ignored")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("client-noise")
    big = write_large_multiframe(folder / "big.dcm", size_bytes=_STREAM_THRESHOLD + 4 * 1024 * 1024)
    assert big.stat().st_size > _STREAM_THRESHOLD  # streamed from disk, not read whole
    small = write_study(folder / "small", images_per_series=3, rows=32, columns=32)
    return {"big": big, "small": small[0].parent}


async def run_store(port: int, path: Path) -> tuple[int, str]:
    command = aiodicom_command(
        "store", HOST, str(port), str(path), "--no-progress", "--timeout", "5", "--dimse-timeout", "5"
    )
    with anyio.fail_after(60):
        result = await anyio.run_process(command, check=False, env=peer_env())
    return result.returncode, result.stderr.decode("utf-8", "replace")


#: How the report may explain it. A peer that aborts while we are still sending and then
#: closes with our data unread makes its kernel answer with a reset, which can overtake
#: the A-ABORT: the client then sees only the connection close. Either is right.
ENDINGS = ("peer aborted the association", "connection closed")
#: What ``aiodicom store`` writes to stderr: one line per file that failed, one when the
#: association stopped early, or one error line when it could not start at all.
REPORT_LINES = ("failed: ", "stopped: ", "aiodicom store: error: ")


def assert_reported_without_noise(code: int, stderr: str, *, expected_code: int = 1) -> None:
    assert code == expected_code, stderr
    assert not any(word in stderr for word in NOISE), stderr
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, stderr  # the failed file, and "stopped:" when others were not sent
    assert all(line.startswith(REPORT_LINES) for line in lines), stderr
    assert any(ending in line for line in lines for ending in ENDINGS), stderr


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("option", "size"),
    [("--abort-during", "big"), ("--abort-after", "big"), ("--abort-during", "small"), ("--abort-after", "small")],
)
async def test_dcmtk_abort_is_reported_without_noise(files: dict[str, Path], option: str, size: str) -> None:
    with storescp(args=(option,)) as peer:
        code, stderr = await run_store(peer.port, files[size])
    assert_reported_without_noise(code, stderr)


# --- raw acceptors aborting at chosen points --------------------------------------------------------

def scripted_acceptor(abort_at: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Accept, then abort (or reset) at ``abort_at``: data, data-reset, response, release.

    Until then it behaves: every complete C-STORE is answered with success.
    """

    def abort(writer: asyncio.StreamWriter) -> None:
        if abort_at.endswith("-reset"):
            writer.transport.abort()  # RST, no A-ABORT
        else:
            writer.write(P.encode(P.Abort()))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        command = b""
        while True:
            pdu = await read_pdu(reader)
            if isinstance(pdu, P.ReleaseRQ):
                if abort_at == "release":
                    abort(writer)
                else:
                    writer.write(P.encode(P.ReleaseRP()))
                await writer.drain()
                return
            assert isinstance(pdu, P.PDataTF), pdu
            for pdv in pdu.pdvs:
                if pdv.is_command:
                    command += bytes(pdv.data)
                    continue
                if abort_at.startswith("data"):
                    abort(writer)
                    return
                if not pdv.is_last:
                    continue
                if abort_at == "response":
                    abort(writer)
                    await writer.drain()
                    return
                rq, _ = C.decode_command(command)
                assert isinstance(rq, C.CStoreRQ), rq
                command = b""
                rsp = C.CStoreRSP(rq.message_id, 0, rq.affected_sop_class_uid, rq.affected_sop_instance_uid)
                payload = C.encode_command(rsp, has_dataset=False)
                writer.write(P.encode(P.PDataTF([P.PDV(pdv.context_id, True, True, payload)])))

    return handle


@pytest.mark.parametrize(
    ("abort_at", "size"),
    [
        ("data", "big"),
        ("data", "small"),
        ("data-reset", "big"),
        ("response", "small"),
        ("response", "big"),
        ("release", "small"),
    ],
)
async def test_raw_abort_is_reported_without_noise(files: dict[str, Path], abort_at: str, size: str) -> None:
    async with raw_acceptor(scripted_acceptor(abort_at)) as port:
        code, stderr = await run_store(port, files[size])
    # An abort during release comes after every file was acknowledged: nothing is lost.
    assert_reported_without_noise(code, stderr, expected_code=0 if abort_at == "release" else 1)


async def test_the_scripted_acceptor_stores_when_nobody_aborts(files: dict[str, Path]) -> None:
    """The control: the same peer without an abort gives exit code 0 and no stderr."""
    async with raw_acceptor(scripted_acceptor("never")) as port:
        code, stderr = await run_store(port, files["small"])
    assert code == 0 and stderr == "", stderr
