"""Shared pytest set-up: marker policy and the small synthetic study most tests send.

Peer processes (DCMTK, pynetdicom, ``aiodicom receive``) are started with the helpers in
``tests/peers.py``; fixtures specific to one area live in that area's test files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# ``tests`` is a regular package (tests/__init__.py) so that a third-party wheel shipping a
# top-level ``tests`` package (rt-utils does) cannot shadow ours; the flat helper modules
# (``peers``) stay importable by name.
sys.path.insert(0, str(Path(__file__).parent))

from aiodicom.synthetic import write_study  # noqa: E402
from peers import peers_dir, require_dcmtk, require_dicom3tools  # noqa: E402

# pynetdicom (a test peer) is installed apart from the environment, in <venv>/peers: only
# the tests see it, and its console scripts never shadow DCMTK's (see ./dev).
if peers_dir().is_dir():
    sys.path.append(str(peers_dir()))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``dcmtk`` (optionally naming their tools) need DCMTK; ``dicom3tools``
    ones need dciodvfy.

    Without it they skip, with the reason spelled out; with the "DCMTK required" switch
    on (``AIODICOM_REQUIRE_DCMTK=1``, set by ``./dev`` and CI) they fail instead, so
    interoperability tests never turn into silent skips where DCMTK should be.
    """
    for marker in item.iter_markers("dcmtk"):
        require_dcmtk(*marker.args)
    if item.get_closest_marker("dicom3tools") is not None:
        require_dicom3tools()


@pytest.fixture
def synthetic_study(tmp_path: Path) -> list[Path]:
    """Five 64x64 CT slices (explicit VR little endian) in ``tmp_path / "study"``."""
    return write_study(tmp_path / "study", images_per_series=5, rows=64, columns=64)
