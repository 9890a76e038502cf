"""The durability option: files flushed (in shared batches) before Success, off by default."""

from __future__ import annotations

import asyncio
import errno
import sys
from pathlib import Path

import anyio
import pydicom
import pytest

from aiodicom.codec.uids import new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse import store as store_module
from aiodicom.dimse.client import connect
from aiodicom.dimse.store import GroupSync
from aiodicom.synthetic import make_dataset, write_study
from peers import aiodicom_command, aiodicom_receive

from .conftest import FAST, HOST, SERVER_AE, TEST_TIMEOUT, running_server

pytestmark = pytest.mark.anyio


def _files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index}.bin"
        path.write_bytes(b"x" * 1000)
        paths.append(path)
    return paths


@pytest.mark.parametrize("whole_file_system", [True, False], ids=["syncfs", "per-file"])
async def test_concurrent_requests_share_one_flush(
    tmp_path: Path, whole_file_system: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not whole_file_system:
        monkeypatch.setattr(store_module, "_syncfs", None)
    elif sys.platform.startswith("linux"):
        assert store_module._syncfs is not None
    syncer = GroupSync()
    paths = _files(tmp_path / "a", 5) + _files(tmp_path / "b", 5)
    await asyncio.gather(*(syncer.sync([p]) for p in paths))
    assert syncer.batches == 1
    assert syncer.whole_file_system_batches == (
        1 if whole_file_system and store_module._syncfs else 0
    )
    await syncer.sync(paths[:1])  # alone: per-file, never the whole file system
    assert (syncer.batches, syncer.whole_file_system_batches) == (
        2,
        1 if whole_file_system and store_module._syncfs else 0,
    )


async def test_a_flush_error_reaches_every_waiter(tmp_path: Path) -> None:
    syncer = GroupSync()
    missing = tmp_path / "gone" / "x.dcm"
    results = await asyncio.gather(
        syncer.sync([missing]), syncer.sync([missing]), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)


class FlushRecorder:
    """Wraps GroupSync._flush (still flushing) to note which paths each flush covered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flushed: set[Path] = set()
        real = GroupSync._flush

        def flush(syncer: GroupSync) -> None:
            self.flushed.update(syncer._paths)
            real(syncer)

        monkeypatch.setattr(GroupSync, "_flush", flush)


@pytest.mark.parametrize("fsync", [True, False])
async def test_files_are_flushed_before_success_only_when_asked(
    tmp_path: Path, fsync: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = FlushRecorder(monkeypatch)
    async with running_server(tmp_path, fsync=fsync, max_operations=4) as running:

        async def send(index: int) -> None:
            async with connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST) as assoc:
                for _ in range(3):
                    uid = new_uid()
                    status = await assoc.store(
                        make_dataset(rows=16, columns=16, sop_instance_uid=uid)
                    )
                    assert status == S.SUCCESS
                    [path] = [p for p in running.stored_files() if p.name == f"{uid}.dcm"]
                    # Success was sent: with fsync, the file had been flushed before that.
                    assert (path in recorder.flushed) is fsync

        with anyio.fail_after(TEST_TIMEOUT):
            async with anyio.create_task_group() as group:
                for index in range(4):
                    group.start_soon(send, index)
    assert len(running.stored_files()) == 12
    if fsync:
        syncer = running.server._syncer
        assert syncer is not None and 1 <= syncer.batches <= 12


async def test_a_failed_flush_answers_out_of_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error while flushing (fault injected: a real one needs a failing disk)."""

    def failing(path: Path, flags: int, sync: object) -> None:
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(store_module, "_sync_path", failing)
    async with running_server(tmp_path, fsync=True) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST) as assoc:
                status = await assoc.store(make_dataset(rows=16, columns=16))
    assert status == S.OUT_OF_RESOURCES


async def test_cli_receive_with_fsync(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=3, rows=16, columns=16)
    output = tmp_path / "out"
    with aiodicom_receive(output, aet=SERVER_AE, args=["--fsync"]) as receiver:
        with anyio.fail_after(TEST_TIMEOUT):
            result = await anyio.run_process(
                aiodicom_command("store", HOST, str(receiver.port), str(tmp_path / "src"), "--aec", SERVER_AE,
                                 "--no-progress"),
                check=False,
            )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert receiver.returncode == 0, receiver.output()
    stored = sorted(p for p in output.rglob("*.dcm"))
    assert len(stored) == len(sources)
    assert {pydicom.dcmread(p).SOPInstanceUID for p in stored} == {
        pydicom.dcmread(p).SOPInstanceUID for p in sources
    }


def test_one_file_syncs_its_folder_and_every_folder_above_it_on_that_disk(tmp_path: Path) -> None:
    """New study and series folders must be durable too, not only the file's own entry."""
    import os

    [path] = _files(tmp_path / "study" / "series", 1)
    folders = store_module._folders_up_to_the_mount([path, path])
    assert folders[:3] == [tmp_path / "study" / "series", tmp_path / "study", tmp_path]
    assert len(folders) == len(set(folders))
    last = folders[-1]
    assert last.parent == last or os.stat(last.parent).st_dev != os.stat(path).st_dev
    assert all(os.stat(f).st_dev == os.stat(path).st_dev for f in folders)
