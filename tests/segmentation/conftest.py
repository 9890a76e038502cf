"""Fixtures of the segmentation tests: an axial and an oblique CT, written once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from segmentation.helpers import SERIES


@pytest.fixture(scope="module", params=sorted(SERIES))
def series(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The files of a 12 x 48 x 56 CT series, axial or tilted about all three axes."""
    kind: str = request.param
    return SERIES[kind](tmp_path_factory.mktemp(kind) / "ct")


@pytest.fixture(scope="module")
def axial(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return SERIES["axial"](tmp_path_factory.mktemp("axial") / "ct")
