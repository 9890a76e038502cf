"""Every benchmark script runs end to end with ``--quick`` and its receivers store correctly.

Run by default rather than behind ``slow``: the quick runs take about 15-20 s together on
two cores, and they are the only check that the benchmark harness (process start/stop,
wait4 and RSS accounting, the stored-file checks) still works before someone relies on
its figures.
No speed is asserted; a quick run fails when a contender fails or stores wrong data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peers import peer_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    "script", ["bench_receive", "bench_concurrent", "bench_send", "bench_large"]
)
def test_quick_run_succeeds_and_records_every_run(script: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"## {script}" in result.stdout
    (saved,) = results.glob(f"{script}-*.json")
    data = json.loads(saved.read_text())
    assert data["benchmark"] == script and data["quick"] is True
    # The real DCMTK, not pynetdicom's same-named scripts from the venv's bin/.
    assert "dcmtk" in data["machine"]["dcmtk"].lower()
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
        if script != "bench_large" and run["contender"] in ("storescp", "storescu"):
            # DCMTK needs ~15 MB; the harness itself holds 50+ MB. A figure near the
            # latter would mean the child's RSS is polluted by its parent's (ru_maxrss).
            assert run["peak_rss_mb"] < 40


def _run(script: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / f"{script}.py"),
            "--quick",
            "--results-dir",
            str(tmp_path / "results"),
            "--workdir",
            str(tmp_path / "work"),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=110,
    )


@pytest.mark.dcmtk
def test_profile_run_writes_and_reports_a_cprofile_of_aiodicom(tmp_path: Path) -> None:
    """``--profile`` only works if ``aiodicom receive`` exits normally on SIGTERM."""
    result = _run("bench_large", tmp_path, "--profile", "--only", "aiodicom")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### cProfile of aiodicom" in result.stdout
    assert list((tmp_path / "results" / "profiles").glob("aiodicom-*.prof"))


@pytest.mark.dcmtk("storescu")
@pytest.mark.parametrize("sender", ["aiodicom", "storescu"])
def test_soak_runs_small_and_checks_every_instance(tmp_path: Path, sender: str) -> None:
    """bench_soak end to end at a tiny size. RSS is not judged here (a tiny run says
    nothing about leaks); descriptors, failures and stored-once are."""
    result = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "bench_soak.py"), "--associations", "24",
            "--concurrency", "8", "--sender", sender, "--rss-tolerance-mb", "100000",
            "--plateau-tolerance-mb", "100000",
            "--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"),
        ],
        capture_output=True, text=True, env=peer_env(), timeout=110,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (tmp_path / "results").glob("bench_soak-*.json")
    data = json.loads(saved.read_text())
    checks = {c["check"]: c for c in data["checks"]}
    assert checks["every instance stored once"]["ok"]
    assert "96 answered with success, 96 files" in checks["every instance stored once"]["detail"]
    # The warm-up has the measured phases' volume; the concurrent phase runs twice (plateau).
    assert [(p["associations"], p["concurrency"]) for p in data["phases"]] == [(24, 8), (24, 1), (24, 8), (24, 8)]
    assert "RSS plateau: concurrent again phase over concurrent phase" in checks
    assert all(c["ok"] for c in data["checks"])


@pytest.mark.dcmtk("storescp", "echoscu", "storescu")
def test_startup_benchmark_times_every_command(tmp_path: Path) -> None:
    result = _run("bench_startup", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "## bench_startup" in result.stdout
    (saved,) = (tmp_path / "results").glob("bench_startup-*.json")
    data = json.loads(saved.read_text())
    assert set(data["median_ms"]) >= {"aiodicom echo", "echoscu", "aiodicom store 1 file", "storescu 1 file"}
    assert all(len(times) == data["rounds"] and min(times) > 0 for times in data["seconds"].values())


@pytest.mark.dcmtk
@pytest.mark.timeout(150)
def test_quick_pipeline_benchmark_measures_every_part(tmp_path: Path) -> None:
    """``bench_pipeline.py`` (issue 9): its own checks fail the run when a contender fails or
    a pipeline processes a patient twice or never; every part must record its figures."""
    result = _run("bench_pipeline", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (tmp_path / "results").glob("bench_pipeline-*.json")
    data = json.loads(saved.read_text())
    runs = data["a"]["runs"]
    contenders = {run["contender"] for run in runs}
    assert contenders == {"aiodicom receive", "aiodicom pipeline", "aiodicom pipeline --workers 2",
                          "pynetdicom keep (DicomNode-style)"}  # fmt: skip
    assert all(run["ok"] and run["items_per_s"] > 0 and 0 < run["peak_rss_mb"] < 4096 for run in runs)
    responsiveness = data["b"]["results"]
    assert responsiveness["processed"] == 5 and responsiveness["loaded_echoes"] > 0
    assert responsiveness["loaded_p99_ms"] > 0
    delays = data["c"]["delays_s"]
    assert len(delays) == 2 and all(0 < delay < 30 for delay in delays)


@pytest.mark.dcmtk
def test_balance_benchmark_counts_each_workers_connections(tmp_path: Path) -> None:
    """``bench_balance.py`` reads which worker held each connection from /proc, every round."""
    result = _run("bench_balance", tmp_path, "--senders", "4", "--images", "8", "--size", "32", "--pool-counts")
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (tmp_path / "results").glob("bench_balance-*.json")
    rounds = json.loads(saved.read_text())["aiodicom --workers 2"]
    assert len(rounds) == 2
    for measured in rounds:
        assert measured["stored"] == measured["expected"] == 4 * 2 and not measured["failed_senders"]
        # /proc is sampled: under load a short connection can open and close between two
        # looks, so only the upper bound holds there; the pool's own counts are exact
        # (the 4 senders plus the harness's readiness probe).
        assert len(measured["connections"]) == 2 and sum(measured["connections"]) <= 4
        accepted = re.search(r"accepted=\[([^\]]*)\]", measured["pool_counts"])
        assert accepted is not None, measured["pool_counts"]
        assert sum(int(n) for n in accepted.group(1).split(",")) == 4 + 1
        assert all(cpu > 0 for cpu in measured["worker_cpu_s"])


@pytest.mark.dcmtk
def test_concurrent_benchmark_pins_receivers_and_senders_apart(tmp_path: Path) -> None:
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("pinning apart needs two CPUs")
    first, second = sorted(os.sched_getaffinity(0))[:2]
    result = _run("bench_concurrent", tmp_path, "--associations", "8", "--only", "aiodicom --workers 2",
                  "--pin", f"{first}:{second}")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Receivers pinned to CPUs [{first}], senders to [{second}]" in result.stdout
    (saved,) = (tmp_path / "results").glob("bench_concurrent-*.json")
    (run,) = json.loads(saved.read_text())["c8"]["runs"]
    assert run["ok"] and 0 <= run["serving_cpu_s"] <= run["cpu_s"]
    refused = _run("bench_concurrent", tmp_path, "--pin", f"{first}:{first}")
    assert refused.returncode == 2 and "disjoint" in refused.stderr


@pytest.mark.dcmtk
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", [(), ("--handlers",)], ids=["network", "handlers"])
def test_quick_pipeline_cpu_profile_compares_receive_and_the_pipeline(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """``profile_pipeline.py``: CPU per image of both receivers and their cProfile, over the
    network and for the store handlers alone."""
    result = _run("profile_pipeline", tmp_path, "--profile", *mode)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Pipeline / receive CPU per image" in result.stdout
    assert "Python-level calls per image" in result.stdout
    assert {p.name.split("-")[1] for p in (tmp_path / "results" / "profiles").glob("*.prof")} == {"receive", "pipeline"}
