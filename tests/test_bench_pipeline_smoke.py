"""``benchmarks/bench_pipeline.py --quick`` runs end to end and checks what it measures.

Like ``test_benchmarks_smoke.py``: no speed is asserted; the quick run fails when a
contender fails or a pipeline processes a patient twice or never (the benchmark's own
checks), and this test checks that every part recorded its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peers import peer_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.dcmtk
@pytest.mark.timeout(150)
def test_quick_pipeline_benchmark_measures_every_part(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_pipeline.py"), "--quick",
         "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, env=peer_env(), timeout=140,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (tmp_path / "results").glob("bench_pipeline-*.json")
    data = json.loads(saved.read_text())
    assert data["quick"] is True
    runs = data["a"]["runs"]
    contenders = {run["contender"] for run in runs}
    assert contenders == {"aiodicom receive", "aiodicom pipeline", "pynetdicom keep (DicomNode-style)"}
    assert all(run["ok"] and run["items_per_s"] > 0 and 0 < run["peak_rss_mb"] < 4096 for run in runs)
    responsiveness = data["b"]["results"]
    assert responsiveness["processed"] == 5 and responsiveness["loaded_echoes"] > 0
    assert responsiveness["loaded_p99_ms"] > 0
    delays = data["c"]["delays_s"]
    assert len(delays) == 2 and all(0 < delay < 30 for delay in delays)
