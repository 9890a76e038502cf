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
#: json (JSON logs only), shutil (bz2, lzma...; argparse wants it for the terminal width),
#: uvloop (faster for many messages, slower to import than one message takes),
#: dataclasses (code generated per class at import: the network path uses records),
#: pathlib with urllib and ipaddress, which it imports (paths stay strings).
#: And asyncio (with the ssl, concurrent.futures, logging and subprocess it pulls in):
#: its import alone costs more than a one-shot exchange, so echo and store run on the
#: blocking driver; ssl only with a TLS option.
HEAVY = (
    "numpy", "pydicom", "nibabel", "anyio", "structlog", "json", "shutil", "uvloop",
    "dataclasses", "pathlib", "urllib", "ipaddress",
    "asyncio", "ssl", "concurrent", "logging", "subprocess",
)  # fmt: skip
#: What only sending files needs: ``aiodicom echo`` starts without the Part 10 reader.
FILE_CODEC = ("aiodicom.codec.part10", "aiodicom.codec.walk", "aiodicom.codec.scan", "zlib")
#: What only Query/Retrieve needs: neither echo nor store imports it.
QUERY_RETRIEVE = ("aiodicom.dimse.services.models", "aiodicom.dimse.retrieve", "aiodicom.qr")


def imported_modules(*args: str) -> set[str]:
    """Modules imported by ``aiodicom ARGS`` (which must succeed)."""
    command = aiodicom_command(*args)
    command.insert(1, "-Ximporttime")
    result = subprocess.run(command, capture_output=True, text=True, env=peer_env(), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "aiodicom.dimse.blocking" in names  # the report is complete, the blocking driver ran
    return names


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


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
        echo = imported_modules("echo", *where)
        store = imported_modules("store", where[0], where[1], str(image), *where[2:], "--no-progress")
    assert list((tmp_path / "out").rglob("*.dcm")), peer.output()
    assert sorted(packages(echo) & set(HEAVY)) == []
    assert sorted(packages(store) & set(HEAVY)) == []
    assert sorted(echo & set(FILE_CODEC)) == []
    assert sorted((echo | store) & set(QUERY_RETRIEVE)) == []
    assert "aiodicom.codec.part10" in store  # the check sees what store does import


def test_version_is_cheap() -> None:
    """``--version`` reads package metadata and imports none of the network stack."""
    command = [sys.executable, "-Ximporttime", "-m", "aiodicom", "--version"]
    result = subprocess.run(command, capture_output=True, text=True, env=peer_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("aiodicom ")
    assert "asyncio" not in result.stderr and "aiodicom.dimse" not in result.stderr


#: ``aiodicom echo`` as the program (``main()`` without arguments, as the console script
#: calls it), reporting what the collector looks like once the command is done.
_AS_PROGRAM = """
import gc, sys
from aiodicom.cli import main
sys.argv = ["aiodicom", *sys.argv[1:]]
code = main()
print(gc.get_freeze_count(), gc.isenabled(), code)
"""


def test_start_up_objects_are_frozen_out_of_the_collector_only_in_the_program(tmp_path: Path) -> None:
    """The objects start-up made are frozen (later collections and the last one at exit
    skip them) and the collector is back on for the run; ``main(argv)`` called from
    Python leaves the host's collector alone."""
    with aiodicom_receive(tmp_path / "out") as peer:
        where = ["127.0.0.1", str(peer.port), "--aec", "AIODICOM"]
        command = [sys.executable, "-c", _AS_PROGRAM, "echo", *where]
        result = subprocess.run(command, capture_output=True, text=True, env=peer_env(), timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        frozen, enabled, code = result.stdout.splitlines()[-1].split()
        assert int(frozen) > 10_000 and enabled == "True" and code == "0", result.stdout

        hosted = "import gc, sys\nfrom aiodicom.cli import main\ncode = main(sys.argv[1:])\n" + (
            "print(gc.get_freeze_count(), gc.isenabled(), code)"
        )
        result = subprocess.run(
            [sys.executable, "-c", hosted, "echo", *where], capture_output=True, text=True, env=peer_env(), timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1].split() == ["0", "True", "0"], result.stdout


def test_echo_proposes_only_verification(tmp_path: Path) -> None:
    """Like ``echoscu``: one context, not the 27 a store would propose (both sides' work)."""
    with aiodicom_receive(tmp_path / "out") as peer:
        command = aiodicom_command("echo", "127.0.0.1", str(peer.port), "--aec", "AIODICOM", "-v")
        result = subprocess.run(command, capture_output=True, text=True, env=peer_env(), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "association_established" in result.stderr and "contexts=1 " in result.stderr, result.stderr
