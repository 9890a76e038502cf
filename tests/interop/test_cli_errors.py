"""Every mistake a user makes when starting a command: one line on stderr, a non-zero exit,
no traceback, and nothing left listening.

Each case runs the real ``aiodicom`` command in a subprocess. The read-only cases mount a
small tmpfs (or a read-only bind) because root ignores permission bits.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from aiodicom.dimse.client import connect
from aiodicom.dimse.server import Server
from aiodicom.errors import InvalidPortError
from aiodicom.runner import run
from aiodicom.synthetic import write_study
from aiodicom.transport.address import describe_os_error
from peers import LOCALHOST, aiodicom_command, aiodicom_receive, free_port, peer_env

from .test_cli import aiodicom, assert_one_line_error

#: argparse's exit code for a usage mistake.
USAGE = 2


def receive(*args: str) -> subprocess.CompletedProcess[str]:
    """``aiodicom receive`` expected to stop at once (a short timeout proves it does)."""
    return aiodicom("receive", *args, timeout=20)


# --- addresses and ports ----------------------------------------------------------------


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = receive("--port", str(port), "--output-dir", str(tmp_path / "out"))
    line = assert_one_line_error(result)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line, line


@pytest.mark.parametrize(
    ("host", "reason"),
    [("192.0.2.1", "Cannot assign requested address"), ("no-such-host.invalid", "")],
    ids=["address-not-ours", "unknown-name"],
)
def test_address_that_cannot_be_bound(tmp_path: Path, host: str, reason: str) -> None:
    result = receive("--host", host, "--port", "0", "--output-dir", str(tmp_path / "out"))
    line = assert_one_line_error(result)
    assert result.returncode == 1
    assert f"cannot listen on {host}:0: {reason}" in line, line


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("receive", "--port", "70000", "--output-dir", "out"), "--port: must be at least 0 and at most 65535"),
        (("receive", "--port", "-1", "--output-dir", "out"), "--port: must be at least 0"),
        (("receive", "--port", "http", "--output-dir", "out"), "--port: not a number: 'http'"),
        (("echo", "127.0.0.1", "70000"), "port: must be at least 1 and at most 65535, not 70000"),
        (("echo", "127.0.0.1", "0"), "port: must be at least 1"),
        (("store", "127.0.0.1", "65536", "file.dcm"), "port: must be at least 1 and at most 65535"),
        (("receive", "--output-dir", "out", "--metrics-port", "99999"), "--metrics-port: must be"),
        (("receive", "--output-dir", "out", "--max-operations", "0"), "--max-operations: must be at least 1"),
        (("receive", "--output-dir", "out", "--max-associations", "-2"), "--max-associations: must be"),
        (("receive", "--output-dir", "out", "--idle-timeout", "0"), "--idle-timeout: must be more than 0"),
        (("receive", "--output-dir", "out", "--grace", "-1"), "--grace: must be at least 0"),
        (("echo", "127.0.0.1", "104", "--timeout", "-5"), "--timeout: must be more than 0"),
        (("store", "127.0.0.1", "104", "f.dcm", "--dimse-timeout", "0"), "--dimse-timeout: must be more"),
    ],
)  # fmt: skip
def test_numbers_out_of_range(tmp_path: Path, command: tuple[str, ...], expected: str) -> None:
    """A port outside 1-65535 (70000 used to become 4464), a count below 1, a timeout of 0."""
    result = subprocess.run(
        aiodicom_command(*command), capture_output=True, text=True, cwd=tmp_path, timeout=20
    )
    line = assert_one_line_error(result)
    assert result.returncode == USAGE
    assert expected in line and "--help" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("port", [70000, -1, 65536])
def test_library_refuses_ports_outside_the_range(port: int) -> None:
    """70000 used to become 4464 without a word; now Server and connect refuse it."""
    with pytest.raises(InvalidPortError, match=str(port)):
        Server("AIODICOM", LOCALHOST, port)
    for bad in (port, 0):  # 0 means "any free port" only to listen
        with pytest.raises(InvalidPortError, match=str(bad)):
            run(_connect_once, bad)


async def _connect_once(port: int) -> None:
    async with connect(LOCALHOST, port, called_ae="ANY"):
        pass


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (OSError(111, "Connect call failed ('127.0.0.1', 1)"), "Connection refused"),  # asyncio
        (OSError(98, "error while attempting to bind on address"), "Address already in use"),  # uvloop
        (socket.gaierror(-2, "Name or service not known"), "Name or service not known"),
        (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
         "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        (OSError("Multiple exceptions: a, b"), "Multiple exceptions: a, b"),
    ],
    ids=["errno-asyncio", "errno-uvloop", "name", "tls", "no-errno"],
)  # fmt: skip
def test_socket_errors_are_said_plainly(error: OSError, said: str) -> None:
    assert describe_os_error(error) == said


# --- the output folder ------------------------------------------------------------------


@contextmanager
def read_only_mount(path: Path, kind: str) -> Iterator[Path]:
    """``path`` as a read-only tmpfs, or a read-only bind of a writable folder (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    path.mkdir()
    if kind == "tmpfs":
        mounts = [["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                  ["mount", "-o", "remount,ro", str(path)]]  # fmt: skip
    else:
        mounts = [["mount", "--bind", str(path), str(path)],
                  ["mount", "-o", "remount,ro,bind", str(path)]]  # fmt: skip
    mounted = False
    try:
        for command in mounts:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount here: {done.stderr.strip()}")
            mounted = True
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def test_output_folder_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("not a folder")
    line = assert_one_line_error(receive("--port", "0", "--output-dir", str(target)))
    assert f"output folder {target} is a file" in line, line


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
@pytest.mark.parametrize("inside", [False, True], ids=["itself", "subfolder"])
def test_output_folder_on_a_read_only_file_system(tmp_path: Path, kind: str, inside: bool) -> None:
    with read_only_mount(tmp_path / "ro", kind) as mount:
        target = mount / "out" if inside else mount
        result = receive("--port", "0", "--output-dir", str(target))
    line = assert_one_line_error(result)
    assert f"cannot write to output folder {target}: Read-only file system" in line, line


def test_output_folder_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes whatever the permission bits say (the read-only cases cover it)")
    target = tmp_path / "out"
    target.mkdir(mode=0o555)
    line = assert_one_line_error(receive("--port", "0", "--output-dir", str(target)))
    assert f"cannot write to output folder {target}: Permission denied" in line, line


# --- TLS files ----------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    return files


MISSING = "No such file or directory"


@pytest.mark.parametrize(
    ("commands", "flag", "bad", "expected"),
    [
        (("receive", "echo", "store"), "--tls-cert", "missing.pem", "cannot read TLS certificate {bad}: " + MISSING),
        (("receive", "echo", "store"), "--tls-key", "missing.pem", "cannot read TLS private key {bad}: " + MISSING),
        (("receive", "echo", "store"), "--tls-ca", "missing.pem", "cannot read TLS CA file {bad}: " + MISSING),
        (("receive", "echo"), "--tls-cert", ".", "cannot read TLS certificate {bad}: Is a directory"),
        (("receive", "echo"), "--tls-cert", "garbage.pem", "{bad}"),
        (("receive",), "--tls-key", "garbage.pem", "{bad}"),
        (("receive",), "--tls-ca", "garbage.pem", "TLS CA file {bad}"),
    ],
)  # fmt: skip
def test_tls_file_problems_name_the_file(
    tmp_path: Path,
    tls_files: dict[str, Path],
    commands: tuple[str, ...],
    flag: str,
    bad: str,
    expected: str,
) -> None:
    options = {"--tls-cert": tls_files["cert"], "--tls-key": tls_files["key"], "--tls-ca": tls_files["ca"]}
    options[flag] = tmp_path / bad
    tls = [str(item) for pair in options.items() for item in pair]
    (image,) = write_study(tmp_path / "study", images_per_series=1, rows=8, columns=8)
    # Nothing listens on the clients' port: the files are checked before connecting.
    port = str(free_port())
    command_lines = {
        "receive": ["receive", "--port", "0", "--output-dir", str(tmp_path / "out"), *tls],
        "echo": ["echo", "127.0.0.1", port, "--tls", *tls],
        "store": ["store", "127.0.0.1", port, str(image), "--tls", *tls],
    }
    for command in commands:
        line = assert_one_line_error(aiodicom(*command_lines[command], timeout=20))
        assert expected.format(bad=tmp_path / bad) in line, f"{command}: {line}"


# --- AE titles ----------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["A" * 17, "BAD\\AE", "  "])
def test_invalid_ae_title(tmp_path: Path, title: str) -> None:
    result = aiodicom("receive", "--port", "0", "--aet", title, "--output-dir", str(tmp_path / "out"), timeout=10)
    line = assert_one_line_error(result)
    assert repr(title) in line, line  # the title at fault, as typed
    with aiodicom_receive(tmp_path / "in") as peer:
        for flag in ("--aet", "--aec"):
            line = assert_one_line_error(aiodicom("echo", "127.0.0.1", str(peer.port), flag, title))
            assert repr(title) in line, line


# --- Ctrl-C in a client command --------------------------------------------------------------


def test_ctrl_c_while_echo_waits_exits_130_without_traceback() -> None:
    """A peer that accepts the connection and never answers: echo waits; Ctrl-C ends it."""
    with socket.socket() as silent:
        silent.bind((LOCALHOST, 0))
        silent.listen()
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            aiodicom_command("echo", LOCALHOST, str(port), "--timeout", "60"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=peer_env(),
        )  # fmt: skip
        connection, _ = silent.accept()  # the A-ASSOCIATE-RQ arrives and stays unanswered
        with connection:
            connection.recv(65536)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and err.strip() == "", err
