"""One-shot client commands import only what they need (issue 8, start-up).

A script that sends one file at a time pays the interpreter's start-up on every file, and
imports are most of it. This is a structural check, not a timing: the real ``aiodicom echo``
and a one-file ``aiodicom store`` of an uncompressed Part 10 file run as processes under
``python -X importtime``, and the modules they imported are read back from its report.
``benchmarks/bench_startup.py`` has the timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.synthetic import write_study
from peers import aiodicom_command, aiodicom_receive, peer_env

#: Packages a one-shot client command must not import: the data stack (numpy, pydicom,
#: nibabel), anyio and structlog, which it does not need when nothing goes wrong, and
#: json (JSON logs only), shutil (bz2, lzma...; argparse wants it for the terminal width) and
#: uvloop (faster for many messages, slower to import than one message takes).
HEAVY = ("numpy", "pydicom", "nibabel", "anyio", "structlog", "json", "shutil", "uvloop")


def imported_packages(*args: str) -> set[str]:
    """Top-level packages imported by ``aiodicom ARGS`` (which must succeed)."""
    command = aiodicom_command(*args)
    command.insert(1, "-Ximporttime")
    result = subprocess.run(command, capture_output=True, text=True, env=peer_env(), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "aiodicom.dimse.client" in names  # the report is complete
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "transfer_syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN], ids=["explicit", "implicit"]
)
def test_echo_and_one_file_store_import_no_heavy_package(
    tmp_path: Path, transfer_syntax: str
) -> None:
    (image,) = write_study(
        tmp_path / "one", images_per_series=1, rows=16, columns=16, transfer_syntax=transfer_syntax
    )
    with aiodicom_receive(tmp_path / "out") as peer:
        where = ("127.0.0.1", str(peer.port), "--aec", "AIODICOM")
        echo = imported_packages("echo", *where)
        store = imported_packages("store", where[0], where[1], str(image), *where[2:], "--no-progress")
    assert list((tmp_path / "out").rglob("*.dcm")), peer.output()
    assert sorted(echo & set(HEAVY)) == []
    assert sorted(store & set(HEAVY)) == []


def test_version_is_cheap() -> None:
    """``--version`` reads package metadata and imports none of the network stack."""
    command = [sys.executable, "-Ximporttime", "-m", "aiodicom", "--version"]
    result = subprocess.run(command, capture_output=True, text=True, env=peer_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("aiodicom ")
    assert "asyncio" not in result.stderr and "aiodicom.dimse" not in result.stderr
