"""Shared pytest set-up: marker policy and the small synthetic study most tests send.

Peer processes (DCMTK, pynetdicom, ``aiodicom receive``) are started with the helpers in
``tests/peers.py``; fixtures specific to one area live in that area's test files.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# ``tests`` is a regular package (tests/__init__.py) so that a third-party wheel shipping a
# top-level ``tests`` package (rt-utils does) cannot shadow ours; the flat helper modules
# (``peers``) stay importable by name.
sys.path.insert(0, str(Path(__file__).parent))

from aiodicom.synthetic import write_study  # noqa: E402
from peers import missing_dcmtk_tools  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``dcmtk`` (``dicom3tools``) tests on a machine without DCMTK (dciodvfy),
    with the reason spelled out.

    CI installs both, so there a missing tool must fail loudly rather than turn the
    interoperability tests into silent skips: set ``AIODICOM_REQUIRE_DCMTK=1``.
    """
    if os.environ.get("AIODICOM_REQUIRE_DCMTK") == "1":
        return
    reasons = {}
    missing = missing_dcmtk_tools()
    if missing:
        reasons["dcmtk"] = (
            f"DCMTK not installed (missing {', '.join(missing)}); "
            "apt-get install dcmtk, or run ./dev test"
        )
    if shutil.which("dciodvfy") is None:
        reasons["dicom3tools"] = (
            "dciodvfy not installed; apt-get install dicom3tools, or run ./dev test"
        )
    for item in items:
        for marker, reason in reasons.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def synthetic_study(tmp_path: Path) -> list[Path]:
    """Five 64x64 CT slices (explicit VR little endian) in ``tmp_path / "study"``."""
    return write_study(tmp_path / "study", images_per_series=5, rows=64, columns=64)
