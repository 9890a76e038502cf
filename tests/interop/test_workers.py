"""Multi-core receive: ``aiodicom receive --workers 2`` and ``Server(workers=2)``.

Real DCMTK senders into real worker processes on one SO_REUSEPORT port. Every
instance is stored exactly once, SIGTERM with transfers in flight stops every
worker (checked by PID) and leaves only complete files visible, a worker that
dies stops the whole receiver instead of hanging it, and the parent's report
stream sees every instance any worker stored.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from aiodicom.cli.receive import FileWriter
from aiodicom.dimse.server import Server
from aiodicom.dimse.workers import StoredInstance, WorkerPool, reuse_port_supported, serve_server
from aiodicom.errors import ConfigurationError
from aiodicom.synthetic import write_study
from peers import (
    LOCALHOST,
    aiodicom_command,
    dataset_bytes,
    dcmtk,
    free_port,
    peer_env,
    require_dcmtk,
    stop_process,
    wait_for_port,
)

pytestmark = [
    pytest.mark.skipif(not reuse_port_supported(), reason="workers need SO_REUSEPORT balancing (Linux)"),
]

#: Bound for the process-level tests: start, send, stop.
DEADLINE = 60.0


def _children(pid: int) -> list[int]:
    """The PIDs of ``pid``'s child processes (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(word) for word in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return False
    return "State:\tZ" not in status.read_text()  # a zombie has exited


def _start_receiver(output: Path, port: int, *args: str) -> subprocess.Popen[str]:
    """``aiodicom receive`` with unbuffered stdio, the harshest case for its output lines.

    With ``PYTHONUNBUFFERED=1`` a ``print`` is two writes (text, then newline): two
    processes printing to one pipe could merge their lines (a CI failure: 63 of 64).
    """
    process = subprocess.Popen(
        aiodicom_command(
            "receive", "--host", LOCALHOST, "--port", str(port), "--output-dir", str(output), *args
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=peer_env({"PYTHONUNBUFFERED": "1"}),
    )
    try:
        wait_for_port(port, process=process, timeout=30)
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
    except BaseException:
        stop_process(process)  # type: ignore[arg-type]
        raise
    return process


def _workers_of(process: subprocess.Popen[str], count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(pids := _children(process.pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == count, pids
    return pids


def _senders(folders: list[Path], port: int) -> list[subprocess.Popen[bytes]]:
    storescu = dcmtk("storescu")
    assert storescu is not None
    return [
        subprocess.Popen(
            [storescu, "-aec", "AIODICOM", "+sd", "+r", LOCALHOST, str(port), str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=peer_env({"TCP_NODELAY": "1"}),
        )
        for folder in folders
    ]


def _studies(root: Path, count: int, images: int, size: int) -> dict[str, bytes]:
    """``count`` one-series studies; SOP Instance UID -> data set bytes of every file."""
    sent: dict[str, bytes] = {}
    for i in range(count):
        for path in write_study(root / f"{i:03d}", patient_id=f"W{i:03d}", images_per_series=images,
                                rows=size, columns=size, seed=i):  # fmt: skip
            data = dataset_bytes(path)
            sent[_sop_uid(path)] = data
    return sent


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _stored(output: Path) -> list[Path]:
    return sorted(p for p in output.rglob("*.dcm") if ".incoming" not in p.parts)


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"receiver did not stop within {DEADLINE} s:\n{out}\n{err}")
    return process.returncode, out, err


def test_64_concurrent_senders_every_instance_stored_once(tmp_path: Path) -> None:
    require_dcmtk("storescu")
    sent = _studies(tmp_path / "send", 64, images=2, size=16)
    output = tmp_path / "out"
    port = free_port()
    receiver = _start_receiver(output, port, "--workers", "2")  # the default caps
    try:
        workers = _workers_of(receiver, 2)
        senders = _senders(sorted((tmp_path / "send").iterdir()), port)
        codes = [sender.wait(timeout=DEADLINE) for sender in senders]
        assert codes == [0] * 64
        code, out, err = _stop(receiver)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert code == 0, err
    stored = _stored(output)
    names = Counter(path.stem for path in stored)
    assert names == Counter(sent.keys())  # each instance once, none missing, none extra
    for path in stored:
        assert dataset_bytes(path) == sent[path.stem]
    # The parent's total is the sum of what both workers reported: once per instance.
    assert f"stored {len(sent)} instances" in out
    # One whole line per association, none merged with another.
    lines = [line for line in out.splitlines() if "association" in line]
    assert len(lines) == 64, lines
    whole = re.compile(r"association \d+ from STORESCU at [\d.]+:\d+ released after [\d.]+ s: 2 instances, .+, 0 failed")
    assert all(whole.fullmatch(line) for line in lines), lines
    assert not any(_alive(pid) for pid in workers)


def test_the_parent_is_the_only_writer_of_stdout(tmp_path: Path) -> None:
    """Workers do not hold the receiver's stdout: their lines cannot interleave there."""
    port = free_port()
    receiver = _start_receiver(tmp_path / "out", port, "--workers", "2")
    try:
        workers = _workers_of(receiver, 2)
        stdout = os.readlink(f"/proc/{receiver.pid}/fd/1")
        stderr = os.readlink(f"/proc/{receiver.pid}/fd/2")
        assert [os.readlink(f"/proc/{pid}/fd/1") for pid in workers] == [stderr, stderr] != [stdout, stdout]
    finally:
        _stop(receiver)


def _listening_sockets(port: int) -> int:
    """TCP sockets in LISTEN state on ``port`` (Linux /proc/net/tcp)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == "0A")


def test_workers_accept_on_one_shared_socket(tmp_path: Path) -> None:
    """One accept queue for all workers: the free worker takes the next connection.

    With a SO_REUSEPORT socket per worker, the kernel hashed each connection to a
    worker whatever its load (8 senders often went 6:2).
    """
    port = free_port()
    receiver = _start_receiver(tmp_path / "out", port, "--workers", "2")
    try:
        workers = _workers_of(receiver, 2)
        assert _listening_sockets(port) == 1
        inodes = {pid: {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")} for pid in workers}
        assert inodes[workers[0]] & inodes[workers[1]] & {i for i in inodes[workers[0]] if i.startswith("socket:")}
    finally:
        _stop(receiver)


@pytest.mark.anyio
async def test_a_draining_receiver_refuses_new_connections(tmp_path: Path) -> None:
    """After SIGTERM, while an association drains, a new connection is refused, not queued.

    Workers take the shared listening socket over: a copy left open in a worker kept
    the kernel accepting connections that nobody would ever serve.
    """
    import socket

    import aiodicom

    port = free_port()
    receiver = _start_receiver(tmp_path / "out", port, "--workers", "2", "--grace", "30")
    try:
        _workers_of(receiver, 2)
        with anyio.fail_after(DEADLINE):
            async with aiodicom.connect(LOCALHOST, port, called_ae="AIODICOM"):
                receiver.send_signal(signal.SIGTERM)
                with anyio.move_on_after(10):  # each worker closes its listener as it starts draining
                    while _listening_sockets(port):
                        await anyio.sleep(0.02)
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection((LOCALHOST, port), timeout=5).close()
        code, out, _ = _stop(receiver)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert code == 0
    assert "released" in out


def test_sigterm_with_transfers_in_flight_stops_every_worker(tmp_path: Path) -> None:
    require_dcmtk("storescu")
    sent = _studies(tmp_path / "send", 16, images=30, size=128)
    output = tmp_path / "out"
    port = free_port()
    receiver = _start_receiver(output, port, "--workers", "2", "--grace", "0")
    senders: list[subprocess.Popen[bytes]] = []
    try:
        workers = _workers_of(receiver, 2)
        senders = _senders(sorted((tmp_path / "send").iterdir()), port)
        deadline = time.monotonic() + DEADLINE
        while len(_stored(output)) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        code, out, err = _stop(receiver)
        codes = [sender.wait(timeout=DEADLINE) for sender in senders]
    finally:
        for process in (receiver, *senders):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == 0, err
    assert not any(_alive(pid) for pid in workers), "a worker outlived the receiver"
    assert any(c != 0 for c in codes), "the transfers were not in flight at SIGTERM"
    stored = _stored(output)
    assert 20 <= len(stored) < len(sent)
    for path in stored:  # visible files are complete, never half-written
        assert dataset_bytes(path) == sent[path.stem]
    assert not list((output / ".incoming").rglob("*")) if (output / ".incoming").exists() else True
    assert f"stored {len(stored)} instances" in out


def test_a_worker_that_dies_stops_the_receiver(tmp_path: Path) -> None:
    port = free_port()
    receiver = _start_receiver(tmp_path / "out", port, "--workers", "2")
    try:
        workers = _workers_of(receiver, 2)
        os.kill(workers[0], signal.SIGKILL)
        try:
            _, err = receiver.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail("the receiver hung after a worker died")
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 1
    assert f"worker 0 (pid {workers[0]}) exited with code -9" in err
    assert not any(_alive(pid) for pid in workers)


def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of the parent leaves no orphan: each worker sees its control pipe close."""
    port = free_port()
    receiver = _start_receiver(tmp_path / "out", port, "--workers", "2")
    workers = _workers_of(receiver, 2)
    receiver.kill()
    receiver.communicate(timeout=DEADLINE)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "workers outlived their parent"


def test_two_receivers_cannot_share_a_port_by_accident(tmp_path: Path) -> None:
    port = free_port()
    first = _start_receiver(tmp_path / "a", port, "--workers", "2")
    try:
        second = subprocess.run(
            aiodicom_command("receive", "--host", LOCALHOST, "--port", str(port),
                             "--output-dir", str(tmp_path / "b"), "--workers", "2"),  # fmt: skip
            capture_output=True, text=True, timeout=DEADLINE, env=peer_env(),
        )  # fmt: skip
    finally:
        _stop(first)
    assert second.returncode == 1
    assert "cannot listen on" in second.stderr


@pytest.mark.anyio
async def test_pool_reports_every_stored_instance_to_the_parent(tmp_path: Path) -> None:
    """The seam for a pipeline: instances stored in any worker reach one async iterator."""
    require_dcmtk("storescu")
    sent = _studies(tmp_path / "send", 8, images=2, size=16)
    output = tmp_path / "out"
    output.mkdir()

    def arguments(port: int) -> dict[str, object]:
        return {"port": port, "on_store": FileWriter(output), "spool_dir": tmp_path / "spool"}

    pool = WorkerPool(serve_server, arguments, host=LOCALHOST, port=0, workers=2)
    reports: list[StoredInstance] = []

    async def collect() -> None:
        async for stored in pool.stored_instances():
            reports.append(stored)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(collect)
            port = await group.start(pool.serve)
            senders = _senders(sorted((tmp_path / "send").iterdir()), port)
            while any(sender.poll() is None for sender in senders):
                await anyio.sleep(0.05)
            assert [sender.returncode for sender in senders] == [0] * 8
            pool.shutdown(5)
    assert sorted(r.tags["sop_instance_uid"] for r in reports) == sorted(sent)
    assert {r.worker for r in reports} <= {0, 1}
    for report in reports:
        (path,) = report.paths
        assert Path(path).stem == report.tags["sop_instance_uid"]
        assert report.tags["patient_id"].startswith("W")
        assert report.size > 0
    assert pool.instances == len(sent)


@pytest.mark.anyio
async def test_server_workers_need_importable_handlers(tmp_path: Path) -> None:
    async def local_handler(instance: object) -> None:
        return None

    server = Server(port=0, on_store=local_handler, workers=2, spool_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="module-level"), anyio.fail_after(DEADLINE):
        await server.serve()


@pytest.mark.anyio
async def test_server_with_workers_serves_and_stops(tmp_path: Path) -> None:
    require_dcmtk("echoscu")
    server = Server(port=0, on_store=FileWriter(tmp_path), workers=2, spool_dir=tmp_path / "spool")
    echoscu = dcmtk("echoscu")
    assert echoscu is not None
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            port = await group.start(server.serve)
            assert server.port == port
            for _ in range(4):
                result = await anyio.run_process([echoscu, LOCALHOST, str(port)], env=peer_env({"TCP_NODELAY": "1"}))
                assert result.returncode == 0
            server.shutdown(1)


def _connections_per_worker(pids: list[int], port: int) -> list[int]:
    """Established TCP connections to ``port`` that each process holds (Linux /proc).

    Read from the kernel, not from the pool's own counts: the split is measured the same
    way whatever the receiver believes.
    """
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    established = {row[9] for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == "01"}
    counts = []
    for pid in pids:
        links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        counts.append(sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in established))
    return counts


def _echo_pool(tmp_path: Path, balance_wait: float) -> WorkerPool[dict[str, object]]:
    def arguments(port: int) -> dict[str, object]:
        return {"port": port, "spool_dir": tmp_path / "spool"}

    return WorkerPool(serve_server, arguments, host=LOCALHOST, port=0, workers=2, balance_wait=balance_wait)


@pytest.mark.anyio
@pytest.mark.parametrize("held", [8, 9])
async def test_held_associations_are_split_exactly_between_the_workers(tmp_path: Path, held: int) -> None:
    """8 associations opened at once and held: 4 in each worker (9: 5 and 4), every time.

    On one shared socket without shared counts whichever worker got there first took the
    next connection: 8 senders split 5:3 or 6:2 about 4 times in 10. The wait for a stalled
    worker is set far beyond any scheduling delay, so only the counts decide.
    """
    import aiodicom

    pool = _echo_pool(tmp_path, balance_wait=DEADLINE)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            port = await group.start(pool.serve)
            release = anyio.Event()
            established: list[int] = []

            async def hold() -> None:
                async with aiodicom.connect(LOCALHOST, port, called_ae="AIODICOM") as association:
                    await association.echo()
                    established.append(1)
                    await release.wait()

            async with anyio.create_task_group() as clients:
                for _ in range(held):
                    clients.start_soon(hold)
                while len(established) < held:
                    await anyio.sleep(0.02)
                split = _connections_per_worker(pool.pids, port)
                counted = pool.connections()
                release.set()
            pool.shutdown(5)
    assert sorted(split) == [held // 2, held - held // 2], split
    assert counted == split


@pytest.mark.anyio
async def test_a_stalled_worker_does_not_starve_connections(tmp_path: Path) -> None:
    """A worker that is ahead takes waiting connections once the least loaded one stalls.

    The least loaded worker is stopped (SIGSTOP): connections must still be served by
    the other, out of turn, instead of waiting in the queue for a worker that never reads.
    """
    import aiodicom

    pool = _echo_pool(tmp_path, balance_wait=0.1)
    stopped: int | None = None
    try:
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as group:
                port = await group.start(pool.serve)
                async with aiodicom.connect(LOCALHOST, port, called_ae="AIODICOM") as first:
                    await first.echo()
                    idle = pool.connections().index(0)
                    stopped = pool.pids[idle]
                    os.kill(stopped, signal.SIGSTOP)
                    for _ in range(3):  # each one waits for the stalled worker, then is taken
                        async with aiodicom.connect(LOCALHOST, port, called_ae="AIODICOM") as later:
                            await later.echo()
                    os.kill(stopped, signal.SIGCONT)
                    stopped = None
                pool.shutdown(5)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)


def test_caps_are_shared_with_headroom_for_an_uneven_spread() -> None:
    from aiodicom.dimse.workers import share, split

    # 64 senders hashed over 2 workers: each may take all 64, the whole at most 128.
    assert [share(64, n) for n in (1, 2, 4, 8, 200)] == [64, 64, 32, 16, 1]
    assert [split(512, n) for n in (1, 2, 3)] == [512, 256, 171]
