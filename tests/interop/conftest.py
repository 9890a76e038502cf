"""Fixtures for the interoperability tests: asyncio backend, a running aiodicom Server.

Every test here talks to an independent DICOM implementation (DCMTK, pynetdicom) over
127.0.0.1, so a disagreement with the standard shows up as a failure rather than as two
halves of aiodicom agreeing with each other.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
