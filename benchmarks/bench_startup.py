"""Start-up: one ``aiodicom echo`` / one-file ``aiodicom store``, process start to exit,
against DCMTK ``echoscu`` / ``storescu``, all talking to DCMTK ``storescp --ignore``.

Scripts that send one file at a time (reception hooks, cron jobs) pay this on every
file. Target (issue 8): <= 100 ms for both aiodicom commands. The floor under them is
measured in the same run, as a breakdown: the bare interpreter (``python -S -c pass``),
with ``site`` (``python -c pass``: the venv's .pth files), with asyncio imported
(``python -c "import asyncio"``: what any asyncio program pays; echo and store run on
a blocking driver without it), the standard library they do import (``import argparse,
socket, typing``) and ``aiodicom echo --help`` (argparse and the CLI, no network stack). Each aiodicom command runs both as
the console script users run (``aiodicom ...`` next to this interpreter, when installed)
and as ``python -m aiodicom``.

Wall time on a machine other programs load is noisy, so every contender runs in every
round (the order alternating) and the ratios to DCMTK come from the same run.
``--instructions`` also counts each command's instructions once under valgrind
(cachegrind): a figure the machine's load does not move. ``--baseline SRC`` adds the
console-script commands run from another version's ``src`` folder (its package first on
``PYTHONPATH``), for a before/after comparison within one run, e.g.

    git archive <commit> src | tar -x -C /tmp/baseline
    python benchmarks/bench_startup.py --rounds 30 --instructions --baseline /tmp/baseline/src

    python benchmarks/bench_startup.py [--quick] [--rounds N] [--instructions] [--baseline SRC]
"""

from __future__ import annotations

import os
import shutil
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
#: What any one-shot command of ours imports from the standard library (echo and store
#: run on the blocking driver: no asyncio), the floor its start-up is measured against.
FLOOR = "python -c 'import argparse, socket, typing'"
TARGET_MS = 100.0
#: The console script pip installed next to this interpreter (absent in a bare checkout).
SCRIPT = Path(sys.executable).with_name("aiodicom")


#: A contender: its command line and, for a baseline, the ``src`` folder that goes first on PYTHONPATH.
Contender = tuple[list[str], Path | None]


def commands(port: int, image: Path, baseline: Path | None) -> dict[str, Contender]:
    """Each contender's command line; DCMTK by absolute path, never a same-named script."""
    echoscu, storescu = h.dcmtk("echoscu"), h.dcmtk("storescu")
    assert echoscu is not None and storescu is not None
    where = [h.LOCALHOST, str(port)]
    echo = ["echo", *where, "--aec", "SINK"]
    store = ["store", *where, str(image), "--aec", "SINK", "--no-progress"]
    contenders = {
        "python -S -c pass": [sys.executable, "-S", "-c", "pass"],
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import asyncio'": [sys.executable, "-c", "import asyncio"],
        FLOOR: [sys.executable, "-c", "import argparse, socket, typing"],
        "aiodicom echo --help": h.aiodicom_command("echo", "--help"),
        "echoscu": [echoscu, "-aec", "SINK", *where],
        "aiodicom echo": h.aiodicom_command(*echo),
        "storescu 1 file": [storescu, "-aec", "SINK", *where, str(image)],
        "aiodicom store 1 file": h.aiodicom_command(*store),
    }
    ours = [str(SCRIPT)] if SCRIPT.is_file() else h.python_module_command("aiodicom")
    if SCRIPT.is_file():
        contenders["aiodicom echo (script)"] = [*ours, *echo]
        contenders["aiodicom store 1 file (script)"] = [*ours, *store]
    result: dict[str, Contender] = {name: (command, None) for name, command in contenders.items()}
    if baseline is not None:
        result["aiodicom echo (baseline)"] = ([*ours, *echo], baseline)
        result["aiodicom store 1 file (baseline)"] = ([*ours, *store], baseline)
    return result


def environment(source: Path | None) -> dict[str, str]:
    env = h.env()
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(source), env.get("PYTHONPATH"))))
    return env


def time_once(contender: Contender) -> float:
    command, source = contender
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=environment(source), check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout!r}\n{result.stderr!r}")
    return elapsed


def instructions(contender: Contender) -> int | None:
    """Instructions one run executes (valgrind's cachegrind), or None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    command, source = contender
    probe = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    result = subprocess.run(
        [*probe, *command], capture_output=True, text=True, env=environment(source), check=False
    )
    for line in result.stderr.splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.rsplit(":", 1)[1].strip().replace(",", ""))
    raise RuntimeError(f"no instruction count from valgrind:\n{result.stderr[-2000:]}")


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def main() -> int:
    parser = h.parser(__doc__.splitlines()[0])
    parser.add_argument("--instructions", action="store_true",
                        help="also count each command's instructions once under valgrind")
    parser.add_argument("--baseline", type=Path, default=None, metavar="SRC",
                        help="another version's src folder: its echo and store run too")
    args = parser.parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (3 if args.quick else 30)
    # Bytecode for our package, as an install has: these machines set PYTHONDONTWRITEBYTECODE.
    for package in (Path(aiodicom.__file__).parent, args.baseline and args.baseline / "aiodicom"):
        if package:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], capture_output=True, check=True)
    seconds: dict[str, list[float]] = {}
    counts: dict[str, int | None] = {}
    with h.scratch(args.workdir) as work:
        (image,) = write_study(work / "one", images_per_series=1, rows=512, columns=512)
        port = h.free_port()
        with open(work / "sink.log", "w") as log:
            sink = h.popen([part.format(port=port) for part in SINK], log)
            try:
                h.wait_for_port(port, timeout=h.READY_TIMEOUT)
                contenders = commands(port, image, args.baseline)
                for contender in contenders.values():  # warm the page cache once
                    time_once(contender)
                for round_ in range(rounds):
                    order = list(contenders.items())
                    for name, contender in order if round_ % 2 == 0 else reversed(order):
                        seconds.setdefault(name, []).append(time_once(contender))
                if args.instructions:
                    counts = {name: instructions(contender) for name, contender in contenders.items()}
            finally:
                h.stop(sink)
    medians = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    print("\n".join(report(rounds, seconds, medians, counts)))
    path = h.save(
        "bench_startup",
        args.results_dir,
        {"rounds": rounds, "quick": args.quick, "target_ms": TARGET_MS, "seconds": seconds,
         "median_ms": medians, "p90_ms": {name: p90(v) * 1000 for name, v in seconds.items()},
         "instructions": counts},
    )  # fmt: skip
    print(f"\nraw numbers: {path}", file=sys.stderr)
    return 0


def report(
    rounds: int, seconds: dict[str, list[float]], medians: dict[str, float], counts: dict[str, int | None]
) -> list[str]:
    lines = [
        "## bench_startup",
        "",
        f"Process start to exit, {rounds} runs each (ms); target <= {TARGET_MS:.0f} ms.",
        "",
        "| command | median ms | p90 ms | min ms |" + (" instructions (M) |" if counts else ""),
        "|---|---:|---:|---:|" + ("---:|" if counts else ""),
    ]
    for name, values in seconds.items():
        row = f"| {name} | {medians[name]:.0f} | {p90(values) * 1000:.0f} | {min(values) * 1000:.0f} |"
        if counts:
            count = counts.get(name)
            row += f" {count / 1e6:.0f} |" if count is not None else " - |"
        lines.append(row)
    floor = medians[FLOOR]
    lines.append("")
    for ours, theirs in (("aiodicom echo", "echoscu"), ("aiodicom store 1 file", "storescu 1 file")):
        for variant in (ours, f"{ours} (script)", f"{ours} (baseline)"):
            if variant in medians:
                lines.append(
                    f"{variant}: {medians[variant]:.0f} ms, {medians[variant] / medians[theirs]:.1f}x "
                    f"{theirs}'s time; {medians[variant] - floor:.0f} ms above `{FLOOR[11:-1]}`"
                )
    return lines


if __name__ == "__main__":
    sys.exit(main())
