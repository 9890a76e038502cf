"""Storage failures are answered 0xA700 and leave no file, partial or visible.

The sender deletes its copy when it reads Success, so Success must mean "kept". Each
test breaks one step of keeping an instance on a running server — an unwritable output
or spool folder, a write or rename failing midway, the disk full at spooling, at saving,
at creating a file or a folder — and checks the answer (0xA700, so the sender keeps its
data and may retry), that no file is visible under the output folder and no spool file
holds data, and that the server goes on storing once the problem is gone. A full disk
comes from a small tmpfs (mounting needs root); without root, a ``aiodicom receive``
process under ``RLIMIT_FSIZE`` still fails a write midway for real.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.uids import new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse.command import CStoreRSP
from aiodicom.dimse.store import safe_component
from aiodicom.synthetic import make_dataset
from aiodicom.ul import pdu as P
from peers import free_port, run_peer

from .conftest import (
    CT_CONTEXT,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    RawPeer,
    RunningServer,
    assert_still_serving,
    encode_dataset,
    pdata,
    raw_peer,
    running_server,
    store_rq,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Every instance of these tests belongs to one series, so a replacement lands on the same path.
STUDY, SERIES = new_uid(), new_uid()


@contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` for the duration (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options) or "size=1m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); "
            "test_write_failing_midway_under_rlimit_fsize covers a failing write without root"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def instance(size: int, uid: str | None = None, marker: str = "") -> tuple[str, bytes]:
    """A CT data set of about ``size`` bytes (explicit VR LE), with its instance UID."""
    uid = uid or new_uid()
    side = max(8, int((size / 2) ** 0.5))
    ds = make_dataset(
        rows=side, columns=side, sop_instance_uid=uid, study_uid=STUDY, series_uid=SERIES
    )
    ds.StudyDescription = marker
    return uid, encode_dataset(ds)


async def store(peer: RawPeer, uid: str, data: bytes, message_id: int = 1) -> CStoreRSP:
    """C-STORE over a raw association, the data set in 16 KiB fragments (one PDU each)."""
    await peer.send(pdata((CT_CONTEXT, True, True, store_rq(uid, message_id))))
    step = 16 * 1024
    for start in range(0, len(data), step):
        last = start + step >= len(data)
        await peer.send(pdata((CT_CONTEXT, False, last, data[start : start + step])))
    response: CStoreRSP = await peer.expect_response(CStoreRSP)
    return response


def visible_files(folder: Path) -> list[Path]:
    """Files a user of the output folder would see (the hidden spool folder aside)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and ".incoming" not in p.parts and "spool" not in p.parts
    )


def assert_nothing_kept(running: RunningServer, before: list[Path] | None = None) -> None:
    assert visible_files(running.output_dir) == (before or [])
    assert running.partial_files() == []


async def refused_then_served(running: RunningServer, data_and_uid: tuple[str, bytes]) -> CStoreRSP:
    uid, data = data_and_uid
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(running.port) as peer:
            await peer.associate()
            response = await store(peer, uid, data)
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
    await assert_still_serving(running)
    return response


# --- a full disk at every step ---------------------------------------------------------------


@pytest.mark.parametrize(
    "threshold", [0, 64 * MiB], ids=["spooled-from-the-first-byte", "kept-in-memory"]
)
async def test_disk_full_while_writing_answers_out_of_resources(
    tmp_path: Path, threshold: int
) -> None:
    """Spooling (each fragment written as it arrives) or saving (written once complete)."""
    with tmpfs(tmp_path / "fs", "size=2m"):
        async with running_server(tmp_path / "fs", memory_threshold=threshold) as running:
            response = await refused_then_served(running, instance(3 * MiB))
            assert response.status == S.OUT_OF_RESOURCES
            assert response.error_comment or threshold  # a spool failure says why
            assert_nothing_kept(running)
            # Space is back once the failed instance is gone: the next one is stored.
            small = instance(64 * 1024)
            assert (await refused_then_served(running, small)).status == S.SUCCESS
            [kept] = visible_files(running.output_dir)
            assert kept.read_bytes().endswith(small[1])


async def test_disk_full_at_saving_keeps_the_previous_file_whole(tmp_path: Path) -> None:
    """Replacing an instance on a full disk fails, and the stored one stays intact (atomic write)."""
    with tmpfs(tmp_path / "fs", "size=4m"):
        async with running_server(tmp_path / "fs", memory_threshold=64 * MiB) as running:
            uid, original = instance(512 * 1024, marker="ORIGINAL")
            assert (await refused_then_served(running, (uid, original))).status == S.SUCCESS
            [kept] = visible_files(running.output_dir)
            free = shutil.disk_usage(kept).free
            (tmp_path / "fs" / "filler").write_bytes(b"\0" * max(0, free - 256 * 1024))
            _, replacement = instance(512 * 1024, uid=uid, marker="REPLACEMENT")
            response = await refused_then_served(running, (uid, replacement))
            assert response.status == S.OUT_OF_RESOURCES
            assert visible_files(running.output_dir) == [kept]
            assert kept.read_bytes().endswith(original)  # not truncated, not half replaced
            assert running.partial_files() == []


async def test_no_inode_left_for_a_folder_or_a_file(tmp_path: Path) -> None:
    """Creating the study folder (or any file) fails: 0xA700, nothing half made."""
    with tmpfs(tmp_path / "fs", "size=8m", "nr_inodes=64"):
        async with running_server(tmp_path / "fs") as running:
            filler = tmp_path / "fs" / "filler"
            filler.mkdir()
            count = 0
            with pytest.raises(OSError):
                while True:
                    (filler / str(count)).touch()
                    count += 1
            response = await refused_then_served(running, instance(200 * 1024))
            assert response.status == S.OUT_OF_RESOURCES
            assert_nothing_kept(running)
            shutil.rmtree(filler)
            assert (await refused_then_served(running, instance(200 * 1024))).status == S.SUCCESS


# --- unwritable folders -----------------------------------------------------------------------


async def test_unwritable_output_folder_answers_out_of_resources(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "out", "ro", "size=1m"):
        async with running_server(tmp_path) as running:
            response = await refused_then_served(running, instance(100 * 1024))
            assert response.status == S.OUT_OF_RESOURCES
            assert_nothing_kept(running)


@pytest.mark.parametrize("threshold", [0, 64 * MiB], ids=["spooled", "in-memory"])
async def test_spool_folder_gone_answers_out_of_resources(tmp_path: Path, threshold: int) -> None:
    """The spool folder vanishes under a running server (an overzealous cleaner)."""
    async with running_server(tmp_path, memory_threshold=threshold) as running:
        spool = running.server.spool_dir
        assert spool is not None and spool.is_dir()
        shutil.rmtree(spool)
        spool.parent.mkdir(exist_ok=True)
        (spool.parent / spool.name).write_bytes(
            b""
        )  # and something unwritable-as-a-folder in its place
        response = await refused_then_served(running, instance(100 * 1024))
        if threshold:
            # In memory, the save falls back to a temporary file beside the target: stored.
            assert response.status == S.SUCCESS
            assert len(visible_files(running.output_dir)) == 1
        else:
            assert response.status == S.OUT_OF_RESOURCES
            assert visible_files(running.output_dir) == []


# --- a rename that fails -------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0, 64 * MiB], ids=["spooled", "in-memory"])
async def test_rename_failing_answers_out_of_resources(tmp_path: Path, threshold: int) -> None:
    """The final name is taken by a folder: the rename fails, the temporary file goes away."""
    uid, data = instance(100 * 1024)
    async with running_server(tmp_path, memory_threshold=threshold) as running:
        first = await refused_then_served(running, instance(1000))
        assert first.status == S.SUCCESS
        [other] = visible_files(running.output_dir)
        target = (
            running.output_dir
            / safe_component(STUDY, "")
            / safe_component(SERIES, "")
            / f"{uid}.dcm"
        )
        (target / "occupied").mkdir(parents=True)
        response = await refused_then_served(running, (uid, data))
        assert response.status == S.OUT_OF_RESOURCES
        assert target.is_dir() and visible_files(running.output_dir) == [other]
        assert running.partial_files() == []
        leftovers = [p for p in target.parent.iterdir() if p not in (target, other)]
        assert leftovers == []  # no temporary file beside the target either


# --- a write failing midway in a real process, without root --------------------------------------


async def test_write_failing_midway_under_rlimit_fsize(tmp_path: Path) -> None:
    """``aiodicom receive`` limited to 1 MiB per file: a 2 MiB instance fails as it is written."""
    output = tmp_path / "out"
    port = free_port()
    limit = (
        "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
        "os.execv(sys.executable, [sys.executable, '-m', 'aiodicom', *sys.argv[1:]])"
    )
    command = [sys.executable, "-c", limit, "receive", "--port", str(port), "--aet", SERVER_AE,
               "--output-dir", str(output), "--host", HOST]  # fmt: skip
    with run_peer(command, port) as receiver:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(port) as peer:
                await peer.associate()
                big = instance(2 * MiB)
                response = await store(peer, *big)
                assert response.status == S.OUT_OF_RESOURCES, receiver.output()
                assert visible_files(output) == []
                small = instance(64 * 1024)
                assert (await store(peer, *small, message_id=2)).status == S.SUCCESS
                await peer.send(P.encode(P.ReleaseRQ()))
                assert await peer.expect_pdu() == P.ReleaseRP()
    assert receiver.returncode == 0, receiver.output()
    [kept] = visible_files(output)
    assert kept.read_bytes().endswith(small[1])
    assert "Traceback" not in receiver.output()
    assert not (output / ".incoming").exists()


# --- atomic replacement, and names that never collide -----------------------------------------------


@pytest.mark.parametrize("threshold", [0, 64 * MiB], ids=["spooled", "in-memory"])
async def test_replacing_an_instance_is_atomic(tmp_path: Path, threshold: int) -> None:
    """A reader of the old file keeps reading the old file, whole; the new one is a new inode.

    Writing in place (truncate and rewrite the same file) would change what the
    open descriptor reads and keep the inode.
    """
    uid, original = instance(300 * 1024, marker="ORIGINAL")
    _, replacement = instance(300 * 1024, uid=uid, marker="REPLACEMENT")
    async with running_server(tmp_path, memory_threshold=threshold) as running:
        assert (await refused_then_served(running, (uid, original))).status == S.SUCCESS
        [kept] = visible_files(running.output_dir)
        with open(kept, "rb") as reader:
            inode = os.fstat(reader.fileno()).st_ino
            assert (await refused_then_served(running, (uid, replacement))).status == S.SUCCESS
            assert reader.read().endswith(original)
        assert os.stat(kept).st_ino != inode
        assert kept.read_bytes().endswith(replacement)
        assert visible_files(running.output_dir) == [kept]


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


#: Distinct UIDs that sanitise alike: only a hash of the original tells them apart.
COLLIDING_UIDS = [
    "../../x",
    "..\\..\\x",
    "..//..//x",
    "a/b",
    "a\\b",
    "a b",
    "9" * 50 + "/a",
    "9" * 50 + "/b",
    "1.2.3/4",
    "1.2.3\\4",
    "1.2.3..4/",
    "1.2.3..4\\",
]


async def test_distinct_hostile_uids_give_distinct_files(tmp_path: Path) -> None:
    study, series = "../study", "../series"
    sent: list[bytes] = []
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                for message_id, uid in enumerate(COLLIDING_UIDS, start=1):
                    data = b"".join(
                        (
                            _element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2"),
                            _element(0x0008, 0x0018, b"UI", uid.encode()),
                            _element(0x0020, 0x000D, b"UI", study.encode()),
                            _element(0x0020, 0x000E, b"UI", series.encode()),
                        )
                    )
                    assert (await store(peer, uid, data, message_id)).status == S.SUCCESS, uid
                    sent.append(data)
    files = visible_files(running.output_dir)
    assert len(files) == len(COLLIDING_UIDS)
    contents = sorted(f.read_bytes()[-len(d) :] for f, d in zip(files, sent, strict=True))
    assert len(set(contents)) == len(COLLIDING_UIDS)
