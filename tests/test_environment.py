"""The project environment is safe to activate: `aiodicom` is there, DCMTK is not shadowed.

The README says `source .venv/bin/activate` then `aiodicom ...`. That only works if the
environment's bin/ holds no program named like a DCMTK tool (pynetdicom's console scripts
used to be there: `storescu` then ran pynetdicom); ./dev installs such test peers apart,
in `<venv>/peers`.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from peers import DCMTK_TOOLS, peer_env, peers_dir

BIN = Path(sys.prefix) / "bin"

pytestmark = pytest.mark.skipif(
    sys.prefix == sys.base_prefix, reason="the tests do not run in a virtual environment"
)


def test_environment_bin_has_no_dcmtk_named_program() -> None:
    shadowing = sorted(tool for tool in DCMTK_TOOLS if (BIN / tool).exists())
    assert shadowing == [], f"{BIN} would shadow DCMTK's {', '.join(shadowing)}"


def test_aiodicom_runs_from_the_environment_bin() -> None:
    result = subprocess.run(
        [str(BIN / "aiodicom"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"aiodicom {version('aiodicom')}"
    assert result.stderr == ""


def test_pynetdicom_is_a_peer_outside_the_environment() -> None:
    """The tests still get pynetdicom, in-process and in peer processes, from the peers folder."""
    assert (peers_dir() / "pynetdicom").is_dir(), f"./dev installs pynetdicom into {peers_dir()}"
    code = "import pynetdicom, sys; print(pynetdicom.__file__)"
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0, f"pynetdicom is installed in the environment: {bare.stdout}"
    as_peer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=peer_env()
    )
    assert as_peer.stdout.startswith(str(peers_dir())), as_peer.stdout + as_peer.stderr
