"""The ``aiodicom`` command line as users run it: separate processes, real peers.

``aiodicom receive`` runs as a process too (``peers.aiodicom_receive``), stopped with
SIGTERM; errors must be one line on stderr and never a traceback.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pydicom
import pytest

from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_SOP_CLASSES,
)
from aiodicom.dimse.client import connect, contexts_for_files
from aiodicom.errors import AiodicomError
from aiodicom.synthetic import make_dataset, write_study
from peers import (
    aiodicom_command,
    aiodicom_receive,
    compress_jpeg_lossless,
    dataset_bytes,
    dcmtk,
    free_port,
    peer_env,
    pynetdicom_storescp,
    run_dcmtk,
    storescp,
)

from .helpers import TEST_TIMEOUT, assert_dcmdump_clean, files_by_uid, sop_instance_uid


def aiodicom(*args: str, timeout: float = TEST_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        aiodicom_command(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def expected_path(root: Path, source: Path) -> Path:
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    return root / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


# --- echo -----------------------------------------------------------------------------------


def test_echo_receive(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out") as peer:
        result = aiodicom("echo", "127.0.0.1", str(peer.port), "--aec", "AIODICOM")
    assert result.returncode == 0, result.stderr
    assert "C-ECHO 127.0.0.1" in result.stdout and "(AIODICOM)" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.dcmtk
def test_echo_dcmtk(tmp_path: Path) -> None:
    with storescp() as peer:
        result = aiodicom("echo", "127.0.0.1", str(peer.port), "--aec", "STORESCP")
    assert result.returncode == 0, result.stderr


# --- store ----------------------------------------------------------------------------------


@pytest.mark.dcmtk
def test_store_files_and_folders_recursive_to_receive(tmp_path: Path) -> None:
    nested = write_study(tmp_path / "src" / "deep" / "er", images_per_series=3, rows=32, columns=32)
    loose = write_study(tmp_path / "loose", images_per_series=1, rows=32, columns=32)
    out = tmp_path / "out"
    with aiodicom_receive(out) as peer:
        result = aiodicom(
            "store", "127.0.0.1", str(peer.port), str(tmp_path / "src"), str(loose[0]),
            "--aec", "AIODICOM", "--no-progress",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 4 of 4 files" in result.stdout
    assert peer.returncode == 0, peer.output()
    for source in nested + loose:
        stored = expected_path(out, source)
        assert dataset_bytes(stored) == dataset_bytes(source)
        assert_dcmdump_clean(stored)
    # Nothing else (no spool leftovers outside the hidden spool folder).
    assert len(files_by_uid(out)) == 4


@pytest.mark.dcmtk
def test_store_to_dcmtk_storescp(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=3, rows=64, columns=64)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B",)) as peer:
        result = aiodicom(
            "store", "127.0.0.1", str(peer.port), str(tmp_path / "src"), "--aec", "STORESCP"
        )
    assert result.returncode == 0, result.stdout + result.stderr
    received = files_by_uid(out)
    assert set(received) == {sop_instance_uid(p) for p in sources}
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)


def test_store_to_pynetdicom_storescp(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=3, rows=64, columns=64)
    out = tmp_path / "out"
    out.mkdir()
    with pynetdicom_storescp(output_dir=out) as peer:
        result = aiodicom(
            "store", "127.0.0.1", str(peer.port), str(tmp_path / "src"), "--aec", "STORESCP"
        )
    # pynetdicom's storescp writes each file before it answers the C-STORE.
    assert result.returncode == 0, result.stdout + result.stderr
    received = files_by_uid(out)
    assert set(received) == {sop_instance_uid(p) for p in sources}, peer.output()
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
def test_store_more_than_128_contexts_uses_several_associations(tmp_path: Path) -> None:
    """65 SOP classes x 2 transfer syntaxes = 130 combinations: more than one association."""
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i, sop_class in enumerate(STORAGE_SOP_CLASSES[:65]):
        for ts in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
            ds = make_dataset(rows=8, columns=8, transfer_syntax=ts)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
            path = src / f"{i}-{ts}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            paths.append(path)
    assert len(contexts_for_files(paths)) > 1
    out = tmp_path / "out"
    out.mkdir()
    # -pm: accept SOP classes this DCMTK version does not know; -v: log each association.
    with storescp(output_dir=out, args=("+B", "-pm", "-v")) as peer:
        result = aiodicom("store", "127.0.0.1", str(peer.port), str(src), "--aec", "STORESCP")
        log = peer.output()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 130 of 130 files" in result.stdout
    associations = log.count("Association Received")
    assert associations >= 2, log
    received = files_by_uid(out)
    assert set(received) == {sop_instance_uid(p) for p in paths}
    for path in paths:
        assert dataset_bytes(received[sop_instance_uid(path)]) == dataset_bytes(path)


def test_store_unreachable_host(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    result = aiodicom("store", "127.0.0.1", str(free_port()), str(sources[0]), "--timeout", "5")
    line = assert_one_line_error(result)
    assert "cannot connect to 127.0.0.1" in line


def test_echo_unreachable_host() -> None:
    line = assert_one_line_error(aiodicom("echo", "127.0.0.1", str(free_port())))
    assert "cannot connect" in line


def test_store_non_dicom_file(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not DICOM\n")
    with aiodicom_receive(tmp_path / "out") as peer:
        result = aiodicom("store", "127.0.0.1", str(peer.port), str(junk), "--aec", "AIODICOM")
    line = assert_one_line_error(result)
    assert "notes.txt" in line


def test_store_missing_path(tmp_path: Path) -> None:
    result = aiodicom("store", "127.0.0.1", "104", str(tmp_path / "nope"))
    line = assert_one_line_error(result)
    assert "no such file or folder" in line


def test_store_refused_association(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    with aiodicom_receive(tmp_path / "out", args=("--require-called-ae",)) as peer:
        result = aiodicom(
            "store", "127.0.0.1", str(peer.port), str(sources[0]), "--aec", "SOMEONE-ELSE"
        )
    line = assert_one_line_error(result)
    assert "reject" in line.lower(), line
    assert files_by_uid(tmp_path / "out") == {}


def test_echo_refused_calling_ae(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out", args=("--allow", "FRIEND")) as peer:
        refused = aiodicom("echo", "127.0.0.1", str(peer.port), "--aet", "STRANGER")
        allowed = aiodicom("echo", "127.0.0.1", str(peer.port), "--aet", "FRIEND")
    assert "reject" in assert_one_line_error(refused).lower()
    assert allowed.returncode == 0, allowed.stderr


# --- receive --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_receive_sigterm_finishes_the_association_then_exits_0(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=3, rows=32, columns=32)
    out = tmp_path / "out"
    (contexts,) = contexts_for_files(sources)
    with aiodicom_receive(out, args=("--grace", "20")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                "127.0.0.1", peer.port, called_ae="AIODICOM", contexts=contexts
            ) as assoc:
                assert (await assoc.store(sources[0])).is_success
                peer.process.send_signal(signal.SIGTERM)
                # Shutting down: no new association is accepted ...
                while True:
                    try:
                        async with connect("127.0.0.1", peer.port, called_ae="AIODICOM"):
                            pass
                    except AiodicomError:
                        break
                    await anyio.sleep(0.05)
                # ... but the open one is served to its end.
                for source in sources[1:]:
                    assert (await assoc.store(source)).is_success
            code = await anyio.to_thread.run_sync(lambda: peer.process.wait(timeout=20))
    assert code == 0, peer.output()
    assert "stored 3 instances" in peer.output()
    for source in sources:
        assert dataset_bytes(expected_path(out, source)) == dataset_bytes(source)


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("peer_args", "cli_args", "expected"),
    [
        (("--refuse",), (), "reject"),
        (("--abort-after",), (), "abort"),
        (("--sleep-during", "10"), ("--dimse-timeout", "1"), "no dimse response"),
    ],
    ids=["refused", "aborted", "dimse-timeout"],
)
def test_store_peer_failures_are_one_line(
    tmp_path: Path, peer_args: tuple[str, ...], cli_args: tuple[str, ...], expected: str
) -> None:
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    with storescp(args=peer_args) as peer:
        result = aiodicom(
            "store", "127.0.0.1", str(peer.port), str(sources[0]), "--aec", "STORESCP", *cli_args
        )
    line = assert_one_line_error(result)
    assert expected in line.lower(), line


@pytest.mark.dcmtk
def test_receive_accept_any_stores_compressed_untouched(tmp_path: Path) -> None:
    plain = write_study(tmp_path / "plain", images_per_series=2, rows=64, columns=64)
    (tmp_path / "jpeg").mkdir()
    sources = [compress_jpeg_lossless(p, tmp_path / "jpeg" / p.name) for p in plain]
    out = tmp_path / "out"
    with aiodicom_receive(out, args=("--accept-any-transfer-syntax",)) as peer:
        result = run_dcmtk(
            ["storescu", "+sd", "-xs", "-aec", "AIODICOM", "127.0.0.1", str(peer.port),
             str(tmp_path / "jpeg")]
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert peer.returncode == 0, peer.output()
    for source in sources:
        stored = expected_path(out, source)
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
        assert dataset_bytes(stored) == dataset_bytes(source)


@pytest.mark.dcmtk
def test_receive_from_concurrent_storescu_with_a_large_instance(tmp_path: Path) -> None:
    """Three DCMTK senders at once, one of them with 8 MiB of pixels, into ``receive``."""
    small = write_study(tmp_path / "small", images_per_series=4, rows=64, columns=64)
    other = write_study(tmp_path / "other", images_per_series=4, rows=64, columns=64)
    large = write_study(tmp_path / "large", images_per_series=1, rows=2048, columns=2048)
    out = tmp_path / "out"
    with aiodicom_receive(out) as peer:
        senders = [
            subprocess.Popen(
                [
                    dcmtk("storescu"),
                    "+sd",
                    "-aec",
                    "AIODICOM",
                    "127.0.0.1",
                    str(peer.port),
                    str(folder),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=peer_env(),
            )  # fmt: skip
            for folder in (tmp_path / "small", tmp_path / "other", tmp_path / "large")
        ]
        try:
            outputs = [sender.communicate(timeout=TEST_TIMEOUT)[0] for sender in senders]
        finally:
            for sender in senders:
                if sender.poll() is None:
                    sender.kill()
                    sender.wait()
    assert [s.returncode for s in senders] == [0, 0, 0], outputs
    assert peer.returncode == 0, peer.output()
    for source in small + other + large:
        assert dataset_bytes(expected_path(out, source)) == dataset_bytes(source)
    assert len(files_by_uid(out)) == 9


@contextmanager
def misbehaving_peer(answer: bytes | None) -> Iterator[int]:
    """A TCP listener that reads the A-ASSOCIATE-RQ, sends ``answer`` and hangs up.

    ``None`` sends nothing and holds the connection until the client gives up.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TEST_TIMEOUT)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(TEST_TIMEOUT)
            connection.recv(65536)
            if answer is None:
                connection.recv(65536)  # returns once the client closes
            else:
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(TEST_TIMEOUT)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "unrecognized pdu type 0x48"),
        (b"\x02\x00\xff\xff\xff\xff", "4294967295"),  # an A-ASSOCIATE-AC of 4 GiB
        (b"", "closed"),
        (None, "did not answer a-associate-rq"),
    ],
    ids=["not-dicom", "huge-pdu", "hang-up", "silent"],
)
def test_echo_misbehaving_peer_is_one_line(answer: bytes | None, expected: str) -> None:
    with misbehaving_peer(answer) as port:
        result = aiodicom("echo", "127.0.0.1", str(port), "--timeout", "1")
    line = assert_one_line_error(result)
    assert expected in line.lower(), line


@pytest.mark.dcmtk
def test_store_refused_sop_class_fails_that_file_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    unknown = make_dataset(rows=8, columns=8)
    unknown.SOPClassUID = unknown.file_meta.MediaStorageSOPClassUID = (
        "1.2.826.0.1.3680043.10.1447.99.1"  # not a storage class DCMTK knows
    )
    pydicom.dcmwrite(src / "unknown.dcm", unknown, enforce_file_format=True)
    known = write_study(src / "ct", images_per_series=1, rows=8, columns=8)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B",)) as peer:
        result = aiodicom("store", "127.0.0.1", str(peer.port), str(src), "--aec", "STORESCP")
    line = assert_one_line_error(result)
    assert "unknown.dcm" in line and "no presentation context" in line, line
    assert "sent 1 of 2 files" in result.stdout
    assert set(files_by_uid(out)) == {sop_instance_uid(known[0])}
