"""Shared pytest set-up: marker policy and the small synthetic study most tests send.

Peer processes (DCMTK, pynetdicom, ``aiodicom receive``) are started with the helpers in
``tests/peers.py``; fixtures specific to one area live in that area's test files.
"""

from __future__ import annotations

import os
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
    """Skip ``dcmtk`` tests on a machine without DCMTK, with the reason spelled out.

    CI installs DCMTK, so there a missing tool must fail loudly rather than turn the
    interoperability tests into silent skips: set ``AIODICOM_REQUIRE_DCMTK=1``.
    """
    missing = missing_dcmtk_tools()
    if not missing or os.environ.get("AIODICOM_REQUIRE_DCMTK") == "1":
        return
    skip = pytest.mark.skip(
        reason=f"DCMTK not installed (missing {', '.join(missing)}); "
        "apt-get install dcmtk, or run ./dev test"
    )
    for item in items:
        if "dcmtk" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def synthetic_study(tmp_path: Path) -> list[Path]:
    """Five 64x64 CT slices (explicit VR little endian) in ``tmp_path / "study"``."""
    return write_study(tmp_path / "study", images_per_series=5, rows=64, columns=64)
