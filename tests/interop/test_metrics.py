"""``aiodicom receive --metrics-port``: Prometheus metrics scraped over HTTP after real exchanges."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import aiodicom
from aiodicom.synthetic import write_study
from peers import aiodicom_command, aiodicom_receive, dataset_bytes, free_port

from .helpers import TEST_TIMEOUT


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_for_metrics(port: int) -> None:
    deadline = time.monotonic() + TEST_TIMEOUT
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiodicom_command(*args), capture_output=True, text=True, timeout=TEST_TIMEOUT)


async def _abort_one(port: int) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with aiodicom.connect("127.0.0.1", port, called_ae="RECV") as assoc:
            (await assoc.echo()).raise_for_status()
            assoc.abort()
            await anyio.sleep(0.2)


def test_receive_exposes_counters_and_histograms(tmp_path: Path) -> None:
    files = write_study(tmp_path / "src", images_per_series=3, rows=16, columns=16)
    metrics_port = free_port()
    with aiodicom_receive(tmp_path / "out", aet="RECV",
                          args=("--require-called-ae", "--metrics-port", str(metrics_port))) as peer:
        wait_for_metrics(metrics_port)
        before = scrape(metrics_port)
        assert before[("aiodicom_associations_active", ())] == 0
        stored = run("store", "127.0.0.1", str(peer.port), str(tmp_path / "src"), "--aec", "RECV")
        assert stored.returncode == 0, stored.stderr
        rejected = run("echo", "127.0.0.1", str(peer.port), "--aec", "SOMEONE-ELSE")
        assert rejected.returncode != 0
        try:
            anyio.run(_abort_one, peer.port)
        except aiodicom.AiodicomError:
            pass
        time.sleep(0.3)  # the server notices the abort
        after = scrape(metrics_port)
        missing = httpx.get(f"http://127.0.0.1:{metrics_port}/other", timeout=5)
    assert missing.status_code == 404
    assert after[("aiodicom_instances_total", (("category", "success"),))] == 3
    assert after[("aiodicom_requests_total", (("category", "success"), ("command", "C-STORE"),
                                               ("status", "0x0000")))] == 3
    assert after[("aiodicom_requests_total", (("category", "success"), ("command", "C-ECHO"),
                                               ("status", "0x0000")))] == 1
    assert after[("aiodicom_received_bytes_total", ())] == sum(len(dataset_bytes(f)) for f in files)
    assert after[("aiodicom_handler_duration_seconds_count", (("command", "C-STORE"),))] == 3
    assert after[("aiodicom_handler_duration_seconds_sum", (("command", "C-STORE"),))] > 0
    assert after[("aiodicom_associations_total", (("outcome", "released"),))] == 1
    assert after[("aiodicom_associations_total", (("outcome", "aborted"),))] == 1
    assert after[("aiodicom_association_duration_seconds_count", ())] == 2
    assert after[("aiodicom_rejections_total", (("reason", "called_ae"),))] == 1
    assert after[("aiodicom_associations_active", ())] == 0


def test_a_server_without_an_observer_never_imports_prometheus() -> None:
    code = (
        "import sys, anyio, aiodicom\n"
        "async def main():\n"
        "    server = aiodicom.Server('A', '127.0.0.1', 0)\n"
        "    async with anyio.create_task_group() as tg:\n"
        "        port = await tg.start(server.serve)\n"
        "        async with aiodicom.connect('127.0.0.1', port, called_ae='A') as assoc:\n"
        "            (await assoc.echo()).raise_for_status()\n"
        "        server.shutdown(1)\n"
        "aiodicom.run(main)\n"
        "assert 'prometheus_client' not in sys.modules and 'aiodicom.metrics' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TEST_TIMEOUT)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [(b"GET /metrics HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK\r\n"), (b"garbage\r\n\r\n", b"HTTP/1.1 404 "),
     (b"GET", b""), (b"X" * 100_000, b"")],
    ids=["http-1.0", "garbage", "cut-short", "huge"],
)
def test_the_metrics_endpoint_survives_odd_clients(request_bytes: bytes, expected: bytes) -> None:
    from aiodicom.metrics import PrometheusObserver

    async def main() -> bytes:
        observer = PrometheusObserver()
        async with anyio.create_task_group() as task_group:
            port = await task_group.start(observer.serve, "127.0.0.1", 0)
            with anyio.fail_after(TEST_TIMEOUT):
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(request_bytes)
                    await stream.send_eof()
                    answer = b""
                    try:
                        while True:
                            answer += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        pass
                # still serving
                response = await anyio.to_thread.run_sync(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics"))
                assert response.status_code == 200
            task_group.cancel_scope.cancel()
        return answer

    answer = anyio.run(main)
    assert answer.startswith(expected) and (answer == b"") == (expected == b"")
