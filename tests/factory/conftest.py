"""Fixtures of the factory tests: affines, a synthetic parent series, a dcmdump check."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from aiodicom.factory import write_series
from factory.helpers import ct_parent
from peers import require_dcmtk


@pytest.fixture
def parent() -> list[Dataset]:
    return ct_parent()


DcmdumpCheck = Callable[[Sequence[Dataset] | Sequence[Path], Path], list[Path]]


@pytest.fixture
def dcmdump_clean() -> DcmdumpCheck:
    """Write data sets (or take files) and assert DCMTK's dcmdump reads them silently."""
    require_dcmtk("dcmdump")

    def check(items: Sequence[Dataset] | Sequence[Path], folder: Path) -> list[Path]:
        paths = [p for p in items if isinstance(p, Path)]
        datasets = [d for d in items if isinstance(d, Dataset)]
        if datasets:
            paths += write_series(datasets, folder)
        env = dict(os.environ, TCP_NODELAY="1")
        result = subprocess.run(
            ["dcmdump", "-M", *map(str, paths)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
        problems = [line for line in result.stdout.splitlines() if line[:3] in ("W: ", "E: ")]
        assert problems == []
        assert result.stdout.count("# Dicom-File-Format") == len(paths)
        return paths

    return check
