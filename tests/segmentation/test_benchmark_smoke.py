"""benchmarks/bench_segmentation.py runs end to end at its small size (no speed asserted).

A run fails when a contender fails; every contender must also come back exact (Dice 1)
on the drawn ROIs, so the comparison is at equal accuracy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from segmentation.helpers import require_peer_module

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_segmentation.py"


def test_segmentation_benchmark_runs_small(tmp_path: Path) -> None:
    require_peer_module("rt_utils")
    require_peer_module("highdicom")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| masks") or line.startswith("| RTSTRUCT")
    ]
    assert len(table) == 6, result.stdout
    contenders = {line.split("|")[2].strip() for line in table}
    assert contenders == {"aiodicom", "rt-utils", "highdicom"}
    assert all(line.split("|")[4].strip() == "1.0000" for line in table), result.stdout
