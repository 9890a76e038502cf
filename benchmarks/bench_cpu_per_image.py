"""Receiver cost per image, in figures a loaded machine does not move: CPU seconds, calls, instructions.

One DCMTK storescu sends CT images (512x512x16 bit, 512 KiB) on one association into
``aiodicom receive --workers 1``. Each figure is the difference between a run of
``--images`` images and a run of ``--warmup`` images, divided by the difference, so
start-up, association set-up and shutdown cancel out (the page cache is flushed before
each run, so one run's writeback is not counted in the next):

- ``--measure cpu`` (default): user and sys CPU ms per image of the receiver, from
  ``/proc/PID/stat`` (ticks) read when it is ready and when the sender has finished;
- ``--measure calls``: Python function calls per image, the receiver run under cProfile;
- ``--measure instructions``: instructions per image, the receiver run under valgrind
  (``--tool=cachegrind --cache-sim=no``; slow: use a few hundred images at most). Valgrind
  counts ``rep movsb`` (memcpy) one instruction per byte: compare without memcpy/memset
  (``cg_diff`` then ``cg_annotate`` of the two runs' files, kept with ``--workdir``).

``--src DIR`` runs another source tree (e.g. ``git archive main src | tar -x -C /tmp/base``)
for a before/after comparison in the same session.

    python benchmarks/bench_cpu_per_image.py [--images 200] [--rounds 3] [--measure cpu|calls|instructions]
"""

from __future__ import annotations

import os
import pstats
import re
import signal
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402


def _ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) clock ticks of a running process and its live children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0, 0
    user, system = int(fields[11]), int(fields[12])
    for child in children:
        u, s = _ticks(int(child))
        user, system = user + u, system + s
    return user, system


def _receiver(src: Path | None, measure: str, artefact: Path, storescp: bool = False) -> h.Contender:
    if storescp:  # the reference: DCMTK's receiver, same workload
        command = [h.dcmtk("storescp") or "storescp", "-od", "{out}", "{port}"]
        if measure == "instructions":
            command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={artefact}", *command]
        return h.Contender("storescp", command)
    command = h.aiodicom_command(
        "receive", "--port", "{port}", "--aet", "AIODICOM", "--output-dir", "{out}",
        "--host", h.LOCALHOST, "--workers", "1",
    )  # fmt: skip
    if measure == "calls":
        command = [command[0], "-m", "cProfile", "-o", str(artefact), *command[1:]]
    elif measure == "instructions":
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={artefact}", *command]
    if src is not None:
        command = ["env", f"PYTHONPATH={src.resolve()}", *command]
    return h.Contender("aiodicom", command, ready_text=h.AIODICOM_READY)


def _run(receiver: h.Contender, folder: Path, work: Path, tag: str) -> tuple[int, int]:
    """One run; returns the receiver's (user, sys) ticks spent while the sender ran."""
    # Earlier runs' dirty pages would be written back while this one runs (and throttle
    # its writes, counted as its sys time): flush them first.
    os.sync()
    port = h.free_port()
    out = h.output_folder(work, f"out-{tag}")
    log_path = work / f"{tag}.log"
    with log_path.open("w") as log:
        process = h.popen(receiver.render(0, port=port, out=out), log)
        try:
            h.wait_ready(receiver, port, process, log_path)
            before = _ticks(process.pid)
            sender = h.reap(h.popen([p.format(port=port) for p in h.storescu(folder)], log), timeout=1800)
            after = _ticks(process.pid)
        finally:
            os.kill(process.pid, signal.SIGTERM)
            h.reap(process, timeout=120)
    error = h.check_stored(h.files_under(folder), sample_every=1)(out)
    h.retire(out)
    if sender.returncode != 0 or error:
        sys.exit(f"run {tag} failed: sender exit {sender.returncode}; {error}\n"
                 + log_path.read_text(errors="replace")[-2000:])
    return after[0] - before[0], after[1] - before[1]


def _calls(profile: Path) -> int:
    return int(pstats.Stats(str(profile)).total_calls)  # type: ignore[attr-defined]


def _instructions(cachegrind_out: Path) -> int:
    match = re.search(r"^summary:\s+(\d+)", cachegrind_out.read_text(), re.MULTILINE)
    if match is None:
        sys.exit(f"no summary in {cachegrind_out}")
    return int(match.group(1))


def main() -> int:
    parser = h.parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images in the measured run [%(default)s]")
    parser.add_argument("--warmup", type=int, default=20, help="images in the subtracted run [%(default)s]")
    parser.add_argument("--measure", choices=("cpu", "calls", "instructions"), default="cpu")
    parser.add_argument("--storescp", action="store_true", help="measure DCMTK storescp -od instead (reference)")
    parser.add_argument("--src", type=Path, default=None, help="source tree to run (PYTHONPATH) [this one]")
    args = parser.parse_args()
    h.require_dcmtk()
    if args.storescp and args.measure == "calls":
        parser.error("--measure calls counts Python calls: not for storescp")
    rounds = args.rounds or (1 if args.quick or args.measure != "cpu" else 3)
    tick = os.sysconf("SC_CLK_TCK")
    with h.scratch(args.workdir) as work:
        folders = {
            n: write_study(work / f"ct{n}", images_per_series=n)[0].parent for n in (args.warmup, args.images)
        }
        figures: dict[str, list[float]] = {}
        for r in range(rounds):
            results = {}
            for n, folder in folders.items():
                artefact = work / f"{args.measure}-{n}-{r}.out"
                user, system = _run(_receiver(args.src, args.measure, artefact, args.storescp), folder, work, f"{n}-{r}")
                results[n] = (user, system, artefact)
            images = args.images - args.warmup
            (u1, s1, a1), (u2, s2, a2) = results[args.warmup], results[args.images]
            if args.measure == "cpu":
                figures.setdefault("user ms/image", []).append(1000 * (u2 - u1) / tick / images)
                figures.setdefault("sys ms/image", []).append(1000 * (s2 - s1) / tick / images)
                figures.setdefault("user+sys ms/image", []).append(1000 * (u2 + s2 - u1 - s1) / tick / images)
            elif args.measure == "calls":
                figures.setdefault("Python calls/image", []).append((_calls(a2) - _calls(a1)) / images)
            else:
                figures.setdefault("instructions/image", []).append((_instructions(a2) - _instructions(a1)) / images)
        for name, values in figures.items():
            shown = ", ".join(f"{v:,.3f}" if v < 100 else f"{v:,.0f}" for v in values)
            print(f"{name}: median {statistics.median(values):,.3f} (rounds: {shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
