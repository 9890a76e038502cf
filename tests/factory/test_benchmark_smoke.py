"""benchmarks/bench_build_series.py runs end to end on a tiny volume (no speed asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_build_series.py"


def test_build_series_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--slices", "3", "--size", "16", "--repeat", "1", "--write"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "| int16 (exact) |" in result.stdout
    assert "| float32 (rescaled) |" in result.stdout
