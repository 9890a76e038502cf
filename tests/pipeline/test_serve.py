"""``aiodicom serve`` as a subprocess: kill -9 during receive and during processing, restart.

After each kill the data directory must hold every instance a sender saw acknowledged;
after the restart each patient is processed to the end exactly once (``calls.log``,
written by :class:`nodes.JournalNode`) and its export delivered once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from peers import Peer, free_port, run_peer, storescp

from .helpers import send_async, series, wait_until

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent


@contextmanager
def serving(work: Path, node: str = "JournalNode", **env: str) -> Iterator[Peer]:
    """``aiodicom serve nodes:<node>`` on a free port, data in ``work/data``."""
    port = free_port()
    command = [sys.executable, "-m", "aiodicom", "serve", f"nodes:{node}", "--port", str(port),
               "--data-directory", str(work / "data"), "--grace", "2", "--log-format", "json"]  # fmt: skip
    with run_peer(command, port, env={"PIPE_TEST_DIR": str(work), **env}, cwd=HERE, ready_timeout=30) as peer:
        yield peer


def calls(work: Path) -> list[str]:
    path = work / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def stored_names(work: Path, area: str) -> set[str]:
    return {path.name for path in (work / "data" / area).glob("*/*.dcm")}


def exported(work: Path) -> list[Path]:
    return sorted((work / "out").glob("*/*.dcm"))


async def test_kill_during_receive_loses_nothing_acknowledged(tmp_path: Path) -> None:
    ct, pt = series("KILLRX", "CT", 3), series("KILLRX", "PT", 2)
    data = [*ct, *pt]
    with serving(tmp_path) as peer:

        def kill_after_third(index: int, status: int) -> None:
            if index == 2:
                os.kill(peer.pid, signal.SIGKILL)

        sent = await send_async(peer.port, data, after_each=kill_after_third)
        peer.process.wait(timeout=10)
    acknowledged = [ds for ds, (code, _) in zip(data, sent.statuses, strict=False) if code == 0]
    assert len(acknowledged) >= 3
    assert {f"{ds.SOPInstanceUID}.dcm" for ds in acknowledged} <= stored_names(tmp_path, "incoming")
    with serving(tmp_path) as peer:
        rest = [ds for ds in data if ds not in acknowledged]
        again = await send_async(peer.port, rest)
        assert all(code == 0 for code, _ in again.statuses)
        await wait_until(lambda: len(exported(tmp_path)) == 3 and not stored_names(tmp_path, "batches"),
                         what=f"processing and export after the restart: {peer.output()}")  # fmt: skip
    finished = [line for line in calls(tmp_path) if line.startswith("finish")]
    assert len(finished) == 1 and finished[0].endswith("KILLRX ct=3 pt=2")
    assert sorted(p.name for p in exported(tmp_path)) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in ct)


async def test_kill_during_processing_processes_once_after_restart(tmp_path: Path) -> None:
    ct, pt = series("KILLPX", "CT", 3), series("KILLPX", "PT", 2)
    (tmp_path / "hold").touch()
    with serving(tmp_path) as peer:
        await send_async(peer.port, [*ct, *pt])
        await wait_until(lambda: any(line.startswith("start") for line in calls(tmp_path)), what="process to start")
        os.kill(peer.pid, signal.SIGKILL)
        peer.process.wait(timeout=10)
    [started] = calls(tmp_path)
    batch_id = started.split()[1]
    assert len(stored_names(tmp_path, "batches")) == 5 and not stored_names(tmp_path, "incoming")
    (tmp_path / "hold").unlink()
    with serving(tmp_path) as peer:
        await wait_until(lambda: len(exported(tmp_path)) == 3 and not stored_names(tmp_path, "batches"),
                         what="the resumed batch processed and exported")  # fmt: skip
    assert peer.returncode == 0 and "stopped (received 0, processed 1" in peer.output()  # SIGTERM drains
    events = [json.loads(line) for line in peer.output().splitlines() if line.startswith("{")]
    resumed = [e for e in events if e.get("event") == "batch_resumed"]
    assert resumed and resumed[0]["batch"] == batch_id and len(resumed[0]["patient"]) == 12  # hashed
    assert "KILLPX" not in peer.output()  # no PHI in the logs at info level
    lines = calls(tmp_path)
    assert [line.split()[:2] for line in lines] == [["start", batch_id], ["start", batch_id], ["finish", batch_id]]
    assert {p.parent.name for p in exported(tmp_path)} == {batch_id}
    assert not stored_names(tmp_path, "incoming") and not list((tmp_path / "data" / "quarantine").iterdir())


def test_serve_reports_a_bad_target_in_one_line(tmp_path: Path) -> None:
    for target, message in (("nodes:Nothing", "not a Pipeline subclass"), ("no_such_module:X", "cannot import"),
                            ("nodes", "expected MODULE:CLASS")):  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "aiodicom", "serve", target, "--port", "0"], cwd=HERE,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr




async def test_kill_while_exports_wait_delivers_once_after_restart(tmp_path: Path) -> None:
    """The destination is down: the batch is submitted (journal "submitted"), then kill -9.
    After the restart the outbox delivers it and process does not run again."""
    ct, pt = series("KILLEX", "CT", 3), series("KILLEX", "PT", 2)
    destination = free_port()
    with serving(tmp_path, "DicomJournalNode", PIPE_EXPORT_PORT=str(destination)) as peer:
        await send_async(peer.port, [*ct, *pt])
        await wait_until(lambda: _journal_states(tmp_path) == ["submitted"], what="the batch submitted")
        os.kill(peer.pid, signal.SIGKILL)
        peer.process.wait(timeout=10)
    received = tmp_path / "received"
    received.mkdir()
    with storescp(destination, output_dir=received), \
            serving(tmp_path, "DicomJournalNode", PIPE_EXPORT_PORT=str(destination)):  # fmt: skip
        await wait_until(lambda: len(list(received.iterdir())) == 3 and not stored_names(tmp_path, "batches"),
                         what="the resumed export delivered")  # fmt: skip
    assert [line.split()[0] for line in calls(tmp_path)] == ["start", "finish"]  # processed once
    assert sorted(p.name.split(".", 1)[1] for p in received.iterdir()) == sorted(str(ds.SOPInstanceUID) for ds in ct)


def _journal_states(work: Path) -> list[str]:
    return [json.loads(path.read_text()).get("state") for path in (work / "data" / "batches").glob("*/batch.json")]


def test_serve_reports_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "aiodicom", "serve", "nodes:JournalNode", "--port", str(port),
                                 "--data-directory", str(tmp_path / "data")], cwd=HERE, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PIPE_TEST_DIR": str(tmp_path)})  # fmt: skip
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
