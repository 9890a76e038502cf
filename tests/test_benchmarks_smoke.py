"""Every benchmark script runs end to end with ``--quick`` and its receivers store correctly.

Run by default rather than behind ``slow``: all four quick runs take about 10-15 s on two
cores, and they are the only check that the benchmark harness (process start/stop, wait4
accounting, the stored-file checks) still works before someone relies on its figures.
No speed is asserted; a quick run fails when a contender fails or stores wrong data.
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
@pytest.mark.parametrize("script", ["bench_receive", "bench_concurrent", "bench_send", "bench_large"])
def test_quick_run_succeeds_and_records_every_run(script: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / f"{script}.py"),
            "--quick",
            "--results-dir",
            str(results),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"## {script}" in result.stdout
    (saved,) = results.glob(f"{script}-*.json")
    data = json.loads(saved.read_text())
    assert data["benchmark"] == script and data["quick"] is True
    runs = [
        run
        for value in data.values()
        if isinstance(value, dict) and "runs" in value
        for run in value["runs"]
    ] + data.get("runs", [])
    assert runs, "no contender was measured"
    assert all(run["ok"] for run in runs)
    assert {"storescp", "storescu"} & {run["contender"] for run in runs}
    for run in runs:
        assert run["wall_s"] > 0 and run["items_per_s"] > 0
        assert 0 < run["peak_rss_mb"] < 4096
