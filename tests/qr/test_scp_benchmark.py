"""bench_qrscp runs end to end at a tiny size (no speed asserted: the harness must work)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peers import peer_env

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_qrscp.py"


@pytest.mark.dcmtk("getscu", "movescu", "findscu", "storescp", "dcmqrscp", "dcmqridx")
@pytest.mark.timeout(110)
def test_bench_qrscp_quick_run_measures_every_workload(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--images", "6", "--find-instances", "20",
         "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, env=peer_env(), timeout=100,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (tmp_path / "results").glob("bench_qrscp-*.json")
    data = json.loads(saved.read_text())
    for workload in ("get", "move", "find"):
        runs = data[workload]["runs"]
        assert {run["contender"] for run in runs} == {"aiodicom qrscp", "dcmqrscp"}
        assert all(run["ok"] and run["wall_s"] > 0 for run in runs)
