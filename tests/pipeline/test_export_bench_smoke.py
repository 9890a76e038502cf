"""benchmarks/bench_export.py runs end to end with ``--quick`` (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peers import peer_env

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_export.py"


@pytest.mark.dcmtk("storescp")
def test_the_export_benchmark_delivers_everything_and_records_loop_stalls(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--results-dir", str(tmp_path / "results"),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, env=peer_env(), timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "## bench_export" in result.stdout
    (saved,) = (tmp_path / "results").glob("bench_export-*.json")
    data = json.loads(saved.read_text())
    assert data["export"]["delivered"] and data["export_large"]["delivered"]
    assert all(data[phase]["max_ms"] >= 0 for phase in ("submit", "export", "submit_large", "export_large"))
