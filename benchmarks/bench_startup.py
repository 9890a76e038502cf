"""Start-up: one ``aiodicom echo`` / one-file ``aiodicom store``, process start to exit,
against DCMTK ``echoscu`` / ``storescu``, all talking to DCMTK ``storescp --ignore``.

Scripts that send one file at a time (reception hooks, cron jobs) pay this on every
file. Target (issue 8): <= 100 ms for both aiodicom commands. ``python -c pass`` and
``python -c "import asyncio"`` are measured too: the floor any asyncio program pays.

    python benchmarks/bench_startup.py [--quick] [--rounds N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

import aiodicom  # noqa: E402
from aiodicom.synthetic import write_study  # noqa: E402

SINK = ["storescp", "--ignore", "-aet", "SINK", "{port}"]
TARGET_MS = 100.0


def commands(port: int, image: Path) -> dict[str, list[str]]:
    """Each contender's command line; DCMTK by absolute path, never a same-named script."""
    echoscu, storescu = h.dcmtk("echoscu"), h.dcmtk("storescu")
    assert echoscu is not None and storescu is not None
    where = [h.LOCALHOST, str(port)]
    return {
        "aiodicom echo": h.aiodicom_command("echo", *where, "--aec", "SINK"),
        "echoscu": [echoscu, "-aec", "SINK", *where],
        "aiodicom store 1 file": h.aiodicom_command(
            "store", *where, str(image), "--aec", "SINK", "--no-progress"
        ),
        "storescu 1 file": [storescu, "-aec", "SINK", *where, str(image)],
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import asyncio'": [sys.executable, "-c", "import asyncio"],
    }


def time_once(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=h.env(), check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout!r}\n{result.stderr!r}")
    return elapsed


def main() -> int:
    args = h.parser(__doc__.splitlines()[0]).parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (3 if args.quick else 30)
    # Bytecode for our package, as an install has: these machines set PYTHONDONTWRITEBYTECODE.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(aiodicom.__file__).parent)],
        capture_output=True,
        check=True,
    )
    seconds: dict[str, list[float]] = {}
    with h.scratch(args.workdir) as work:
        (image,) = write_study(work / "one", images_per_series=1, rows=512, columns=512)
        port = h.free_port()
        with open(work / "sink.log", "w") as log:
            sink = h.popen([part.format(port=port) for part in SINK], log)
            try:
                h.wait_for_port(port, timeout=h.READY_TIMEOUT)
                contenders = commands(port, image)
                for command in contenders.values():  # warm the page cache once
                    time_once(command)
                for round_ in range(rounds):
                    order = list(contenders.items())
                    for name, command in order if round_ % 2 == 0 else reversed(order):
                        seconds.setdefault(name, []).append(time_once(command))
            finally:
                h.stop(sink)
    medians = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    lines = [
        "## bench_startup",
        "",
        f"Process start to exit, median of {rounds} runs (ms); target <= {TARGET_MS:.0f} ms.",
        "",
        "| command | median ms | min ms |",
        "|---|---:|---:|",
    ]
    for name, values in seconds.items():
        lines.append(f"| {name} | {medians[name]:.0f} | {min(values) * 1000:.0f} |")
    lines += [
        "",
        f"echo: {medians['aiodicom echo'] / medians['echoscu']:.1f}x echoscu's time; "
        f"store: {medians['aiodicom store 1 file'] / medians['storescu 1 file']:.1f}x storescu's.",
    ]
    print("\n".join(lines))
    path = h.save(
        "bench_startup",
        args.results_dir,
        {"rounds": rounds, "quick": args.quick, "target_ms": TARGET_MS, "seconds": seconds,
         "median_ms": medians},
    )  # fmt: skip
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
