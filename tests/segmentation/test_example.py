"""examples/threshold_to_segmentations.py runs and its outputs read back exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "threshold_to_segmentations.py"


def test_threshold_example_writes_an_rtstruct_and_a_seg(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("read back exactly") == 2
    assert pydicom.dcmread(tmp_path / "rtstruct.dcm").Modality == "RTSTRUCT"
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["body", "bone"]
