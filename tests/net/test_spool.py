"""Spool leftovers: kill -9 mid-transfer, restart, and clean stops.

``aiodicom receive`` runs as a real process; one is killed with SIGKILL while a data set
is half spooled. The next process on the same output folder removes what the dead one
left, but never the folder of a process that still runs (several may share a spool
folder), and a clean stop leaves no spool folder in the output tree.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.uids import new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse.command import CStoreRSP
from aiodicom.dimse.store import SpoolDirectory
from aiodicom.synthetic import make_dataset
from aiodicom.ul import pdu as P
from peers import Peer, aiodicom_receive

from .conftest import CT_CONTEXT, SERVER_AE, TEST_TIMEOUT, encode_dataset, pdata, raw_peer, store_rq

pytestmark = pytest.mark.anyio


def spool_files(output: Path) -> list[Path]:
    return sorted(p for p in (output / ".incoming").rglob("*.part") if p.stat().st_size > 0)


def owner_folders(output: Path) -> list[Path]:
    spool = output / ".incoming"
    return sorted(p for p in spool.iterdir() if p.is_dir()) if spool.exists() else []


async def half_send_then_kill(receiver: Peer, output: Path) -> list[Path]:
    """Spool half of a 4 MiB data set, SIGKILL the receiver; return what it left."""
    uid = new_uid()
    data = encode_dataset(make_dataset(rows=1448, columns=1448, sop_instance_uid=uid))
    async with raw_peer(receiver.port) as peer:
        await peer.associate()
        await peer.send(pdata((CT_CONTEXT, True, True, store_rq(uid))))
        step = 16 * 1024
        for start in range(0, len(data) // 2, step):
            await peer.send(pdata((CT_CONTEXT, False, False, data[start : start + step])))
        with anyio.fail_after(10):
            while not spool_files(output) or spool_files(output)[0].stat().st_size < len(data) // 4:
                await anyio.sleep(0.02)
        receiver.process.send_signal(signal.SIGKILL)
        receiver.process.wait(timeout=10)
    left = spool_files(output)
    assert left, "the killed receiver left nothing: the test reproduces nothing"
    return left


async def store_one(port: int) -> None:
    uid = new_uid()
    data = encode_dataset(make_dataset(rows=16, columns=16, sop_instance_uid=uid))
    async with raw_peer(port) as peer:
        await peer.associate()
        await peer.send(
            pdata((CT_CONTEXT, True, True, store_rq(uid)), (CT_CONTEXT, False, True, data))
        )
        assert (await peer.expect_response(CStoreRSP)).status == S.SUCCESS
        await peer.send(P.encode(P.ReleaseRQ()))
        assert await peer.expect_pdu() == P.ReleaseRP()


async def test_restart_after_kill_9_removes_the_leftovers(tmp_path: Path) -> None:
    output = tmp_path / "out"
    one = ("--workers", "1")  # kill -9 of a serving process (workers: tests/interop/test_workers.py)
    with anyio.fail_after(TEST_TIMEOUT * 2):
        with aiodicom_receive(output, aet=SERVER_AE, args=one) as first:
            left = await half_send_then_kill(first, output)
        [dead_folder] = owner_folders(output)
        with aiodicom_receive(output, aet=SERVER_AE, args=one) as second:
            for path in left:
                assert not path.exists(), f"{path} survived a restart"
            assert not dead_folder.exists()
            assert len(owner_folders(output)) == 1
            await store_one(second.port)
    assert second.returncode == 0, second.output()
    # A clean stop leaves no spool folder (not even an empty one) in the output tree.
    assert not (output / ".incoming").exists()
    assert len([p for p in output.rglob("*") if p.is_file()]) == 1


async def test_a_live_process_keeps_its_spool_folder(tmp_path: Path) -> None:
    """Three receivers share one output folder; only the dead one's folder is swept."""
    output = tmp_path / "out"
    one = ("--workers", "1")  # one process, one spool folder each
    with anyio.fail_after(TEST_TIMEOUT * 2):
        with aiodicom_receive(output, aet=SERVER_AE, args=one) as living:
            [living_folder] = owner_folders(output)
            with aiodicom_receive(output, aet=SERVER_AE, args=one) as doomed:
                await half_send_then_kill(doomed, output)
            dead = [p for p in owner_folders(output) if p != living_folder]
            assert len(dead) == 1
            with aiodicom_receive(output, aet=SERVER_AE, args=one) as third:
                assert not dead[0].exists()
                assert living_folder.is_dir()  # still locked by its live owner: left alone
                await store_one(living.port)
                await store_one(third.port)
            assert third.returncode == 0, third.output()
            assert (output / ".incoming").is_dir()  # the living one still uses it
    assert living.returncode == 0, living.output()
    assert not (output / ".incoming").exists()


def test_sweeping_touches_only_what_spools_make(tmp_path: Path) -> None:
    """Stale set-ups (old), dead owners and loose spool files go; everything else stays."""
    base = tmp_path / "spool"
    fresh = base / ".setup-123-0000aaaa"
    old = base / ".setup-456-0000bbbb"
    dead = base / "789-0000cccc"
    for folder in (fresh, old, dead):
        folder.mkdir(parents=True)
        (folder / "lock").touch()
    hour_ago = time.time() - 2 * SpoolDirectory.STALE_SETUP_SECONDS
    os.utime(old, (hour_ago, hour_ago))
    loose = base / f".{'ab' * 16}.part"
    loose.write_bytes(b"x" * 10)
    # A spool_dir pointed at a folder with other things in it: none of them may go.
    others = [base / "1.2.3", base / "study", base / "notes.part", base / "42-not-hex"]
    for other in others:
        other.mkdir() if other.suffix != ".part" else other.write_bytes(b"keep")
    spool = SpoolDirectory(base)
    mine = spool.open()
    assert mine.is_dir() and (mine / "lock").exists()
    assert fresh.exists() and not old.exists() and not dead.exists() and not loose.exists()
    assert all(other.exists() for other in others)
    spool.close()
    assert not mine.exists() and base.exists()  # not empty: the base folder stays


def test_the_default_spool_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per user, mode 0700; one that others could write (made first in a shared /tmp) is not used."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"aiodicom-spool-{os.getuid()}"
    spool = SpoolDirectory.private()
    assert spool.base == shared and (shared.stat().st_mode & 0o777) == 0o700
    shared.chmod(0o777)  # as if someone else had prepared it for us
    fallback = SpoolDirectory.private()
    assert fallback.base != shared and fallback.base.parent == tmp_path
    assert (fallback.base.stat().st_mode & 0o077) == 0
    shared.rmdir()
    shared.symlink_to(fallback.base)  # a symlink, even to a private folder, is not used either
    assert SpoolDirectory.private().base not in (shared, fallback.base)


@pytest.mark.parametrize("threshold", [0, 4 * 1024 * 1024], ids=["spooled-from-the-first-byte", "in-memory"])
async def test_a_handler_reads_tags_the_walk_did_not_collect_before_and_after_saving(
    tmp_path: Path, threshold: int
) -> None:
    """A data set spooled from its first byte keeps no head in memory: tags the structure
    walk did not collect are read from its file, where it is before and after ``save``."""
    import aiodicom
    from aiodicom.dimse.store import ReceivedInstance

    from .conftest import FAST, HOST, running_server

    seen: list[tuple[object, ...]] = []

    async def handler(instance: ReceivedInstance) -> int:
        before = (instance.text(0x00080060), instance.tags((0x00280010, 0x00280011)))
        instance.save(tmp_path / "kept" / f"{instance.sop_instance_uid}.dcm")
        after = (instance.text(0x00200013), instance.tags((0x00280010,)))
        seen.append((before, after, instance.spooled_path))
        return 0

    dataset = make_dataset(rows=512, columns=256, index=6, slices=9)
    async with running_server(tmp_path, on_store=handler, memory_threshold=threshold) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with aiodicom.connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST) as client:
                assert (await client.store(dataset)).is_success
    rows, columns = (512).to_bytes(2, "little"), (256).to_bytes(2, "little")
    [(before, after, spooled)] = seen
    assert before == ("CT", {0x00280010: rows, 0x00280011: columns})
    assert after == (str(dataset.InstanceNumber), {0x00280010: rows})
    assert spooled is None  # moved into place by save


@pytest.mark.parametrize("done", range(13))
def test_a_write_the_kernel_cut_short_is_finished_from_where_it_stopped(tmp_path: Path, done: int) -> None:
    """A spool write that the kernel took only part of (after the file meta and the first
    fragment went in one call) goes on from that byte, across empty and split buffers."""
    from aiodicom.dimse.store import _write_all

    whole = b"abcdefghijkl"
    path = tmp_path / "spool.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, whole[:done])  # what the first, short call wrote
        _write_all(fd, (b"abcde", b"", bytearray(b"fghij"), memoryview(b"kl")), done)
    finally:
        os.close(fd)
    assert path.read_bytes() == whole
