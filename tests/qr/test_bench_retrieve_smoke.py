"""``benchmarks/bench_retrieve.py`` runs end to end at a tiny size: every SCU retrieves every image.

No speed is asserted; the run fails when a contender fails or writes fewer files than the study has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peers import peer_env
from qr.orthanc import require_orthanc

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_retrieve.py"


@pytest.mark.dcmtk("dcmqrscp", "getscu", "movescu")
def test_bench_retrieve_quick_run(tmp_path: Path) -> None:
    require_orthanc()
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--images", "4", "--results-dir", str(tmp_path / "results"),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, env=peer_env(), timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (tmp_path / "results").glob("bench_retrieve-*.json")
    data = json.loads(saved.read_text())
    for archive in ("dcmqrscp", "orthanc"):
        runs = data[archive]["runs"]
        assert {run["contender"] for run in runs} == {"aiodicom get", "getscu", "aiodicom move", "movescu"}
        assert all(run["ok"] and run["items"] == 4 for run in runs)
