"""``aiodicom qrscp`` start-up errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from peers import LOCALHOST, aiodicom_command, free_port, peer_env


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiodicom_command("qrscp", *args), capture_output=True, text=True, env=peer_env(), timeout=60)


@pytest.mark.parametrize(
    ("destination", "why"),
    [
        ("bogus", "expected NAME=AE@HOST:PORT"),
        ("A=B@host:99999", "port"),
        ("A=THIS-TITLE-IS-FAR-TOO-LONG@host:104", "AE title"),
    ],
)
def test_a_bad_destination_is_one_line(tmp_path: Path, destination: str, why: str) -> None:
    result = _run("--port", "0", "--storage", str(tmp_path / "archive"), "--destination", destination)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiodicom qrscp: error:") and why in lines[0], result.stderr


def test_a_destination_given_twice_is_refused(tmp_path: Path) -> None:
    result = _run("--port", "0", "--storage", str(tmp_path / "a"),
                  "--destination", "X@127.0.0.1:104", "--destination", "X=Y@127.0.0.1:105")  # fmt: skip
    assert result.returncode == 1 and "given twice" in result.stderr


def test_a_storage_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = _run("--port", "0", "--storage", str(tmp_path / "file"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "is a file" in result.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        port = free_port()
        taken.bind((LOCALHOST, port))
        taken.listen()
        result = _run("--port", str(port), "--storage", str(tmp_path / "archive"))
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr and "Traceback" not in result.stderr, result.stderr
