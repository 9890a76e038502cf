"""The peer harness itself: it starts real peers, they talk, and it stops exactly them.

Every network test trusts ``tests/peers.py``; these tests prove it against DCMTK and
pynetdicom before aiodicom is in the loop, so a failure here is a harness problem.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from peers import (
    LOCALHOST,
    PeerError,
    aiodicom_receive,
    compress_jpeg_lossless,
    compress_rle,
    dataset_bytes,
    dcmqrscp,
    dcmtk,
    free_port,
    pynetdicom_storescp,
    run_dcmtk,
    run_dcmtk_async,
    run_peer,
    run_pynetdicom,
    storescp,
)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _by_sop_instance(paths: list[Path]) -> dict[str, Path]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind((LOCALHOST, port))


def test_run_peer_reports_a_peer_that_dies_before_listening() -> None:
    port = free_port()
    command = [sys.executable, "-c", "print('cannot start'); raise SystemExit(3)"]
    with pytest.raises(PeerError, match="cannot start"):
        with run_peer(command, port):
            pass


def test_run_peer_kills_a_peer_that_ignores_sigterm() -> None:
    port = free_port()
    script = (
        "import signal, socket, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"s = socket.create_server(('{LOCALHOST}', {port}))\n"
        "time.sleep(60)\n"
    )
    script = "print('ignoring SIGTERM', flush=True)\n" + script
    with run_peer([sys.executable, "-c", script], port, grace=0.5) as peer:
        assert peer.returncode is None
    assert peer.returncode == -9
    assert not _accepts(port)
    assert peer.output() == "ignoring SIGTERM\n"  # kept after the stop


@pytest.mark.dcmtk
def test_echoscu_to_storescp_then_storescp_is_gone() -> None:
    with storescp(aet="HARNESS") as peer:
        result = run_dcmtk(["echoscu", "-aec", "HARNESS", LOCALHOST, str(peer.port)])
        assert result.returncode == 0, result.stderr
        assert peer.returncode is None
    # storescp has no SIGTERM handler: it dies of the signal, and we reaped it.
    assert peer.returncode is not None
    assert not _accepts(peer.port)


@pytest.mark.dcmtk
def test_storescp_options_reach_the_peer() -> None:
    """Options go before the port, where DCMTK reads them: ``--refuse`` makes echo fail."""
    with storescp(aet="RIGHT", args=("--refuse",)) as peer:
        result = run_dcmtk(["echoscu", "-aec", "RIGHT", LOCALHOST, str(peer.port)])
    assert result.returncode != 0


@pytest.mark.dcmtk
def test_storescu_to_storescp_stores_the_data_set_byte_for_byte(
    synthetic_study: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "received"
    out.mkdir()
    study_dir = synthetic_study[0].parent
    with storescp(output_dir=out, aet="STORE", args=("+B",)) as peer:
        run_dcmtk(
            ["storescu", "-aec", "STORE", "+sd", "+r", LOCALHOST, str(peer.port), str(study_dir)],
            check=True,
        )
    received = _by_sop_instance(sorted(out.iterdir()))
    sent = _by_sop_instance(synthetic_study)
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


@pytest.mark.dcmtk
def test_pynetdicom_storescp_receives_from_storescu(
    synthetic_study: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "received"
    out.mkdir()
    study_dir = synthetic_study[0].parent
    with pynetdicom_storescp(output_dir=out, aet="PYNET") as peer:
        run_dcmtk(
            ["storescu", "-aec", "PYNET", "+sd", "+r", LOCALHOST, str(peer.port), str(study_dir)],
            check=True,
        )
    received = _by_sop_instance(sorted(out.iterdir()))
    sent = _by_sop_instance(synthetic_study)
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


@pytest.mark.dcmtk
def test_dcmqrscp_answers_a_study_query(synthetic_study: list[Path], tmp_path: Path) -> None:
    study_uid = pydicom.dcmread(synthetic_study[0], stop_before_pixels=True).StudyInstanceUID
    with dcmqrscp(tmp_path / "db", aet="QRSCP", files=synthetic_study) as peer:
        result = run_dcmtk(
            [
                "findscu", "-S", "-aec", "QRSCP",
                "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                LOCALHOST, str(peer.port),
            ],
            check=True,
        )  # fmt: skip
    assert study_uid in result.stdout + result.stderr


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("compress", "transfer_syntax"),
    [(compress_jpeg_lossless, "1.2.840.10008.1.2.4.70"), (compress_rle, "1.2.840.10008.1.2.5")],
)
def test_compression_helpers_are_lossless(
    synthetic_study: list[Path], tmp_path: Path, compress: object, transfer_syntax: str
) -> None:
    assert callable(compress)
    source = synthetic_study[2]
    packed = compress(source, tmp_path / "packed.dcm")
    meta = pydicom.dcmread(packed, stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == transfer_syntax
    # Decode with DCMTK (pydicom may lack the codec plugins) and compare the pixels.
    decoder = "dcmdjpeg" if transfer_syntax.startswith("1.2.840.10008.1.2.4") else "dcmdrle"
    unpacked = tmp_path / "unpacked.dcm"
    run_dcmtk([decoder, str(packed), str(unpacked)], check=True)
    assert (pydicom.dcmread(unpacked).pixel_array == pydicom.dcmread(source).pixel_array).all()


@pytest.mark.dcmtk
def test_pynetdicom_storescu_to_storescp(synthetic_study: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "received"
    out.mkdir()
    with storescp(output_dir=out, aet="STORE", args=("+B",)) as peer:
        result = run_pynetdicom(
            "storescu",
            [LOCALHOST, str(peer.port), str(synthetic_study[0].parent), "-r", "-aec", "STORE"],
        )
    # Its storescu exits 0 even when stores fail: what arrived is the real check.
    assert result.returncode == 0, result.stderr
    received = _by_sop_instance(sorted(out.iterdir()))
    sent = _by_sop_instance(synthetic_study)
    assert received.keys() == sent.keys()
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path)


@pytest.mark.dcmtk
def test_aiodicom_receive_runs_as_a_peer_and_exits_cleanly_on_sigterm(
    synthetic_study: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "received"
    with aiodicom_receive(out, aet="AIODICOM") as peer:
        run_dcmtk(
            ["storescu", "-aec", "AIODICOM", "+sd", "+r", LOCALHOST, str(peer.port),
             str(synthetic_study[0].parent)],
            check=True,
        )  # fmt: skip
    assert peer.returncode == 0, peer.output()
    received = _by_sop_instance([p for p in out.rglob("*.dcm")])
    assert received.keys() == _by_sop_instance(synthetic_study).keys()


def test_dcmtk_tools_are_never_pynetdicoms_same_named_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom installs ``storescu`` & co. into the venv's bin/, first on ./dev's PATH."""
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "storescu"
    script.write_text("#!/usr/bin/python3\nfrom pynetdicom.apps.storescu.storescu import main\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    dcmtk.cache_clear()
    try:
        found = dcmtk("storescu")
        assert found != str(script)
        monkeypatch.setenv("AIODICOM_DCMTK_BIN", str(fake))
        dcmtk.cache_clear()
        assert dcmtk("storescu") is None
        with pytest.raises(PeerError, match="not installed"):
            run_dcmtk(["storescu", "--version"])
    finally:
        dcmtk.cache_clear()


@pytest.mark.dcmtk
def test_run_dcmtk_runs_the_real_dcmtk() -> None:
    result = run_dcmtk(["storescu", "--version"], check=True)
    assert "dcmtk" in (result.stdout + result.stderr).lower()


@pytest.mark.dcmtk
def test_run_dcmtk_async_lets_the_event_loop_serve_meanwhile() -> None:
    """echoscu reaches a TCP listener running in the same event loop as the await."""

    async def scenario() -> tuple[subprocess.CompletedProcess[str], int]:
        connections = 0

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.read(6)  # the A-ASSOCIATE-RQ header; then hang up
            writer.close()

        server = await asyncio.start_server(accept, LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await run_dcmtk_async(["echoscu", LOCALHOST, str(port)], timeout=30)
        return result, connections

    result, connections = asyncio.run(scenario())
    assert connections == 1
    assert result.returncode != 0  # no association, but it did connect to us


@pytest.mark.dcmtk
def test_run_dcmtk_async_kills_a_tool_that_overruns(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(subprocess.TimeoutExpired):
        # storescp never exits by itself: a stand-in for a hung client tool.
        asyncio.run(run_dcmtk_async(["storescp", "--ignore", str(port)], timeout=0.5))
    assert _accepts(port) is False


# --- the "DCMTK required" switch ----------------------------------------------------------------

#: One test per way a test depends on DCMTK: the bare marker, a marker naming its tools,
#: and a fixture that needs a tool.
_DCMTK_DEPENDENT = (
    "tests/test_peers_harness.py::test_run_dcmtk_runs_the_real_dcmtk",
    "tests/codec/test_part10.py::test_dcmdump_check_can_fail",
    "tests/factory/test_pdf_validate.py::test_pdf_parses_cleanly",
)


@pytest.mark.parametrize("required", [True, False], ids=["switch-on", "switch-off"])
def test_missing_dcmtk_fails_under_the_switch_and_skips_otherwise(tmp_path: Path, required: bool) -> None:
    """Where DCMTK is required (./dev, CI), a DCMTK-dependent test never skips silently."""
    empty = tmp_path / "no-dcmtk"
    empty.mkdir()
    env = {**os.environ, "AIODICOM_DCMTK_BIN": str(empty)}
    env.pop("AIODICOM_REQUIRE_DCMTK", None)
    if required:
        env["AIODICOM_REQUIRE_DCMTK"] = "1"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *_DCMTK_DEPENDENT],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1]
    if required:
        # Failed in set-up, which pytest counts as errors: either way the run fails.
        assert result.returncode == 1 and f"{len(_DCMTK_DEPENDENT)} errors" in summary, result.stdout
        assert "skipped" not in summary, result.stdout
        assert result.stdout.count("AIODICOM_REQUIRE_DCMTK=1 requires it, but DCMTK is not installed") >= len(_DCMTK_DEPENDENT)
    else:
        assert result.returncode == 0 and f"{len(_DCMTK_DEPENDENT)} skipped" in summary, result.stdout
        assert "DCMTK is not installed (missing " in result.stdout
