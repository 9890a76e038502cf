"""``aiodicom receive`` as an operator sees it: Ctrl-C, one line per association, a live
status on a terminal, logs, timeouts and the operations window.

The receiver runs as its own process (``peers.aiodicom_receive``, or a pseudo-terminal
for the live status); senders are our client, ``aiodicom store`` or DCMTK.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pydicom
import pytest

from aiodicom.dimse.client import connect, contexts_for_files
from aiodicom.errors import AssociationError
from aiodicom.synthetic import write_study
from peers import (
    aiodicom_command,
    aiodicom_receive,
    free_port,
    peer_env,
    stop_process,
    wait_for_port,
)

from .helpers import TEST_TIMEOUT
from .test_cli import aiodicom

pytestmark = pytest.mark.anyio

#: "association 3 from SENDER at 127.0.0.1:40000 released after 0.12 s: 3 instances, 7.4 kB, 0 failed"
ASSOCIATION_LINE = re.compile(
    r"association \d+ from (?P<ae>\S+) at 127\.0\.0\.1:\d+ (?P<end>released|aborted) after "
    r"[\d.]+ s: (?P<stored>\d+) instances, (?P<size>[\d.]+ (?:B|kB|MB)), (?P<failed>\d+) failed"
)


def association_lines(output: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in ASSOCIATION_LINE.finditer(output)]


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {timeout} s")
        await anyio.sleep(0.05)
    return process.returncode


# --- Ctrl-C -------------------------------------------------------------------------------


async def test_first_ctrl_c_finishes_open_associations_then_exits_130(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=3, rows=32, columns=32)
    (contexts,) = contexts_for_files(sources)
    with aiodicom_receive(tmp_path / "out", args=("--grace", "30")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                "127.0.0.1", peer.port, called_ae="AIODICOM", calling_ae="SENDER", contexts=contexts
            ) as assoc:
                assert (await assoc.store(sources[0])).is_success
                peer.process.send_signal(signal.SIGINT)
                await anyio.sleep(0.5)
                assert peer.process.poll() is None, peer.output()
                for source in sources[1:]:  # the open association is served to its end
                    assert (await assoc.store(source)).is_success
            code = await wait_exit(peer.process, 15)
    output = peer.output()
    assert code == 130, output
    assert "Traceback" not in output, output
    assert "Ctrl-C again stops at once" in output, output
    assert association_lines(output) == [
        {"ae": "SENDER", "end": "released", "stored": "3", "size": association_lines(output)[0]["size"],
         "failed": "0"}
    ], output  # fmt: skip
    assert "stored 3 instances" in output, output
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 3


async def test_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out", args=("--grace", "60")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            with pytest.raises(AssociationError):
                async with connect("127.0.0.1", peer.port, called_ae="AIODICOM") as assoc:
                    assert (await assoc.echo()).is_success
                    peer.process.send_signal(signal.SIGINT)
                    await anyio.sleep(0.5)
                    assert peer.process.poll() is None, peer.output()
                    peer.process.send_signal(signal.SIGINT)
                    started = time.monotonic()
                    code = await wait_exit(peer.process, 10)
                    assert time.monotonic() - started < 5  # not the 60 s grace
                    await assoc.echo()  # the receiver aborted this association
    output = peer.output()
    assert code == 130, output
    assert "Traceback" not in output, output
    assert [line["end"] for line in association_lines(output)] == ["aborted"], output


# --- what it tells ------------------------------------------------------------------------


def test_one_line_per_association_with_failures(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=2, rows=32, columns=32)
    out = tmp_path / "out"
    out.mkdir()
    # A file where the study's folder should go: every store of that study fails (0xA700).
    study = pydicom.dcmread(sources[0], stop_before_pixels=True).StudyInstanceUID
    (out / study).write_text("in the way")
    with aiodicom_receive(out) as peer:
        blocked = aiodicom("store", "127.0.0.1", str(peer.port), str(tmp_path / "src"),
                           "--aec", "AIODICOM", "--aet", "BLOCKED", "--no-progress")  # fmt: skip
        (out / study).unlink()
        sent = aiodicom("store", "127.0.0.1", str(peer.port), str(tmp_path / "src"),
                        "--aec", "AIODICOM", "--aet", "SENDER", "--no-progress")  # fmt: skip
    assert blocked.returncode != 0 and sent.returncode == 0, blocked.stderr + sent.stderr
    lines = association_lines(peer.output())
    assert [(x["ae"], x["end"], x["stored"], x["failed"]) for x in lines] == [
        ("BLOCKED", "released", "0", "2"),
        ("SENDER", "released", "2", "0"),
    ], peer.output()
    size = sum(len(pydicom.dcmread(p).PixelData) for p in sources)
    assert lines[0]["size"] == "0 B" and lines[1]["size"].endswith("kB")
    assert float(lines[1]["size"].split()[0]) * 1000 > size


def test_live_count_on_a_terminal_only(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=3, rows=32, columns=32)
    port = free_port()
    master, terminal = pty.openpty()
    process = subprocess.Popen(
        aiodicom_command("receive", "--port", str(port), "--output-dir", str(tmp_path / "out")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=peer_env(),
    )
    os.close(terminal)
    shown = b""
    try:
        wait_for_port(port, process=process)
        sent = aiodicom("store", "127.0.0.1", str(port), str(tmp_path / "src"), "--aec", "AIODICOM")
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 10
        while b"3 instances" not in shown and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                shown += os.read(master, 4096)
    finally:
        stop_process(process)
        os.close(master)
    text = shown.decode()
    assert re.search(r"\r\x1b\[K3 instances, [\d.]+ kB, \d+/s, \d+ associations open", text), text
    # Not a terminal (the other tests): no status line in the output.
    with aiodicom_receive(tmp_path / "out2") as peer:
        aiodicom("store", "127.0.0.1", str(peer.port), str(sources[0]), "--aec", "AIODICOM")
        time.sleep(0.7)
    assert "\r" not in peer.output()


def test_json_logs(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    port = free_port()
    process = subprocess.Popen(
        aiodicom_command("receive", "--port", str(port), "--output-dir", str(tmp_path / "out"),
                         "--log-level", "info", "--log-format", "json"),  # fmt: skip
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=peer_env(),
    )
    try:
        wait_for_port(port, process=process)
        aiodicom("store", "127.0.0.1", str(port), str(sources[0]), "--aec", "AIODICOM")
    finally:
        stop_process(process)
    out, err = process.communicate()
    events = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert events, err
    assert {"level", "event"} <= set(events[0])
    assert "association_released" in {e["event"] for e in events}, err
    assert association_lines(out.decode()), out


# --- options ------------------------------------------------------------------------------


async def test_idle_timeout_option(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out", args=("--idle-timeout", "1")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect("127.0.0.1", peer.port, called_ae="AIODICOM") as assoc:
                assert (await assoc.echo()).is_success
                await anyio.sleep(2.5)
                with pytest.raises(AssociationError):
                    await assoc.echo()
            await anyio.sleep(0.3)
    assert [line["end"] for line in association_lines(peer.output())] == ["aborted"], peer.output()


@pytest.mark.parametrize(("option", "granted"), [((), 1), (("--max-operations", "3"), 3)])
async def test_max_operations_option(tmp_path: Path, option: tuple[str, ...], granted: int) -> None:
    sources = write_study(tmp_path / "src", images_per_series=6, rows=16, columns=16)
    (contexts,) = contexts_for_files(sources)
    with aiodicom_receive(tmp_path / "out", args=option) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                "127.0.0.1", peer.port, called_ae="AIODICOM", contexts=contexts, max_outstanding=8
            ) as assoc:
                assert assoc.max_outstanding == granted
                async for _path, status in assoc.store_files(sources):
                    assert not isinstance(status, Exception) and status.is_success
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 6
