"""Soak: many short associations into one ``aiodicom receive``; nothing may leak.

A warm-up of 10,000 associations with 64 at a time, then 10,000 one after the other,
then 10,000 with 64 at a time, twice (``--associations`` and ``--concurrency`` scale it),
each storing one small instance with its own SOP Instance UID. The receiver runs as a
subprocess writing files. Measured on the receiver, from ``/proc``: resident memory
(VmRSS) and open file descriptors after the warm-up, and after each phase once it is
idle again. Checks, each a failure (exit 1) when broken:

* RSS after each phase within ``--rss-tolerance-mb`` (default 32 MiB) of the baseline.
  The warm-up has the volume and concurrency of the concurrent phases because RSS is
  the allocator's high-water mark: memory freed at a peak stays mapped, so a shorter
  warm-up reaches less of it and its growth later looked like a leak when it was not;
* the second concurrent phase adds at most ``--plateau-tolerance-mb`` (default 16 MiB)
  to the first: a leak grows with every phase, a high-water mark stays put;
* open descriptors within ``--fd-tolerance`` (default 4) of the baseline;
* every instance stored exactly once: as many files as stores answered with success,
  and as many distinct SOP Instance UIDs (read back from the files) as files;
* no store failed and the receiver is still running at the end.

Senders: ``aiodicom`` (default: our own client, in this process, one association per
instance) or ``storescu`` (one DCMTK process per instance, ``--concurrency`` at a time).

    python benchmarks/bench_soak.py                      # 10,000 + 10,000, 64 at a time
    python benchmarks/bench_soak.py --associations 200   # a quick check
    python benchmarks/bench_soak.py --sender storescu --associations 2000
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

import aiodicom  # noqa: E402
from aiodicom.synthetic import write_study  # noqa: E402

#: The template instance's SOP Instance UID is replaced by one of the same length.
UID_PREFIX = "1.2.826.0.1.3680043.8.498.77"
UID_DIGITS = 12


@dataclass
class Sample:
    """The receiver's footprint at one moment."""

    label: str
    rss_mb: float
    open_fds: int
    stored_files: int


@dataclass
class Phase:
    name: str
    associations: int
    concurrency: int
    wall_s: float
    failures: int
    first_error: str

    @property
    def associations_per_s(self) -> float:
        return self.associations / self.wall_s if self.wall_s > 0 else float("nan")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stored_files(out: Path) -> list[Path]:
    """Stored instances (``*.dcm``), not the receiver's spool files kept ready beside them."""
    return [p for p in h.files_under(out) if p.suffix == ".dcm"]


def sample(label: str, pid: int, out: Path) -> Sample:
    taken = Sample(label, rss_mb(pid), open_fds(pid), len(stored_files(out)))
    print(
        f"  {label}: RSS {taken.rss_mb:.1f} MiB, {taken.open_fds} fds, {taken.stored_files} files",
        file=sys.stderr,
        flush=True,
    )
    return taken


def instance_uid(n: int) -> str:
    return f"{UID_PREFIX}.{n:0{UID_DIGITS}d}"


class Instances:
    """Part 10 bytes of one small CT image, with a fresh SOP Instance UID each time."""

    def __init__(self, workdir: Path) -> None:
        (path,) = write_study(workdir / "template", images_per_series=1, rows=16, columns=16)
        self.template_uid = h.sop_instance_uid(path)
        data = path.read_bytes()
        # Same length, so every length field stays right (file meta and data set).
        self.placeholder = instance_uid(0)
        if len(self.template_uid) != len(self.placeholder):
            # Re-encode once with a placeholder of our length.
            import pydicom

            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = self.placeholder
            ds.save_as(path, enforce_file_format=True)
            data = path.read_bytes()
        else:
            data = data.replace(self.template_uid.encode(), self.placeholder.encode())
        assert data.count(self.placeholder.encode()) == 2, "SOP Instance UID in meta and data set"
        self.template = data
        self.counter = 0

    def next(self) -> bytes:
        self.counter += 1
        return self.template.replace(self.placeholder.encode(), instance_uid(self.counter).encode())

    def write_next(self, folder: Path) -> Path:
        path = folder / f"{self.counter + 1:08d}.dcm"
        path.write_bytes(self.next())
        return path


async def _aiodicom_phase(port: int, instances: Instances, count: int, concurrency: int) -> tuple[int, str]:
    failures = 0
    first_error = ""
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures, first_error
        async with semaphore:
            try:
                async with aiodicom.connect(h.LOCALHOST, port, called_ae="AIODICOM", calling_ae="SOAK") as assoc:
                    status = await assoc.store(instances.next())
                if not status.is_success:
                    raise RuntimeError(f"store answered {status}")
            except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
                failures += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(one() for _ in range(count)))
    return failures, first_error


def _storescu_phase(port: int, instances: Instances, count: int, concurrency: int, folder: Path) -> tuple[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    failures = 0
    first_error = ""
    running: list[tuple[object, Path]] = []
    with open(folder / "storescu.log", "w") as log:

        def reap_one() -> None:
            nonlocal failures, first_error
            process, path = running.pop(0)
            code = h.reap(process).returncode  # type: ignore[arg-type]
            path.unlink()
            if code != 0:
                failures += 1
                first_error = first_error or f"storescu exited with {code}"

        for _ in range(count):
            if len(running) >= concurrency:
                reap_one()
            path = instances.write_next(folder)
            command = ["storescu", "-aec", "AIODICOM", "-aet", "SOAK", h.LOCALHOST, str(port), str(path)]
            running.append((h.popen(command, log), path))
        while running:
            reap_one()
    return failures, first_error


def run_phase(
    name: str, sender: str, port: int, instances: Instances, count: int, concurrency: int, work: Path
) -> Phase:
    print(f"{name}: {count} associations, {concurrency} at a time ({sender})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    if sender == "aiodicom":
        failures, error = asyncio.run(_aiodicom_phase(port, instances, count, concurrency))
    else:
        failures, error = _storescu_phase(port, instances, count, concurrency, work / f"send-{name}")
    return Phase(name, count, concurrency, time.perf_counter() - started, failures, error)


def wait_settled(pid: int, out: Path, expected_files: int, timeout: float = 30.0) -> None:
    """Give the receiver time to close what it closes lazily (ARTIM, spool recycling)."""
    deadline = time.monotonic() + timeout
    previous = -1
    while time.monotonic() < deadline:
        current = open_fds(pid)
        if current == previous and len(stored_files(out)) >= expected_files:
            return
        previous = current
        time.sleep(0.5)


def check_unique(out: Path) -> tuple[int, int]:
    files = stored_files(out)
    return len(files), len({h.sop_instance_uid(p) for p in files})


def verdicts(
    baseline: Sample, after: Sequence[Sample], phases: Sequence[Phase], stored: int, unique: int,
    expected: int, rss_tolerance: float, fd_tolerance: int, alive: bool, plateau_tolerance: float,
) -> list[tuple[str, bool, str]]:  # fmt: skip
    result = []
    for s in after:
        grew = s.rss_mb - baseline.rss_mb
        result.append((f"RSS flat after {s.label}", grew <= rss_tolerance,
                       f"{baseline.rss_mb:.1f} -> {s.rss_mb:.1f} MiB ({grew:+.1f}, tolerance {rss_tolerance} MiB)"))  # fmt: skip
        more = s.open_fds - baseline.open_fds
        result.append((f"descriptors flat after {s.label}", more <= fd_tolerance,
                       f"{baseline.open_fds} -> {s.open_fds} ({more:+d}, tolerance {fd_tolerance})"))  # fmt: skip
    first, again = after[-2], after[-1]
    more = again.rss_mb - first.rss_mb
    result.append((f"RSS plateau: {again.label} over {first.label}", more <= plateau_tolerance,
                   f"{first.rss_mb:.1f} -> {again.rss_mb:.1f} MiB ({more:+.1f}, tolerance {plateau_tolerance} MiB)"))  # fmt: skip
    failed = sum(p.failures for p in phases)
    result.append(("no store failed", failed == 0, f"{failed} failed" + (f" ({phases[0].first_error or phases[-1].first_error})" if failed else "")))  # fmt: skip
    result.append(("every instance stored once", stored == expected == unique,
                   f"{expected} answered with success, {stored} files, {unique} distinct SOP Instance UIDs"))  # fmt: skip
    result.append(("receiver still running", alive, "" if alive else "it exited"))
    return result


def measured_phases(concurrency: int) -> tuple[tuple[str, int], ...]:
    """Measured phases after the warm-up: (name, associations at a time)."""
    return (("sequential", 1), ("concurrent", concurrency), ("concurrent again", concurrency))


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--associations", type=int, default=10_000, help="associations per phase [%(default)s]")
    p.add_argument("--concurrency", type=int, default=64, help="associations at a time in phase 2 [%(default)s]")
    p.add_argument("--sender", choices=("aiodicom", "storescu"), default="aiodicom")
    p.add_argument(
        "--warmup", type=int, default=None,
        help="associations at full concurrency before the baseline [--associations]: the "
        "receiver's footprint once warm at the load measured is the baseline, so what grows "
        "beyond it is a leak",
    )  # fmt: skip
    p.add_argument(
        "--rss-tolerance-mb", type=float, default=32.0,
        help="allowed RSS growth over the baseline [%(default)s]: the allocator's high-water "
        "marks move by 10-20 MiB between samples at 64 associations at a time",
    )  # fmt: skip
    p.add_argument(
        "--plateau-tolerance-mb", type=float, default=16.0,
        help="allowed RSS growth of the second concurrent phase over the first [%(default)s]",
    )  # fmt: skip
    p.add_argument("--fd-tolerance", type=int, default=4)
    p.add_argument("--receiver-arg", action="append", default=[], help="extra `aiodicom receive` option")
    args = p.parse_args()
    if args.quick:
        args.associations = min(args.associations, 100)
    if args.warmup is None:
        args.warmup = max(args.concurrency, args.associations)
    # Our client logs through the standard logging module; only errors matter here.
    logging.getLogger("aiodicom").setLevel(logging.ERROR)
    if args.sender == "storescu":
        h.require_dcmtk()
    with h.scratch(args.workdir) as work:
        out = work / "out"
        port = h.free_port()
        instances = Instances(work)
        receiver = h.aiodicom_command(
            "receive", "--port", str(port), "--host", h.LOCALHOST, "--aet", "AIODICOM",
            "--output-dir", str(out), *args.receiver_arg,
        )  # fmt: skip
        with (work / "receiver.log").open("w") as log:
            process = h.popen(receiver, log)
            try:
                h.wait_for_port(port, process=process, timeout=h.READY_TIMEOUT)
                samples: list[Sample] = []
                warm = run_phase("warm-up", args.sender, port, instances, args.warmup, args.concurrency, work)
                wait_settled(process.pid, out, warm.associations - warm.failures)
                baseline = sample("baseline (after warm-up)", process.pid, out)
                phases = [warm]
                for name, concurrency in measured_phases(args.concurrency):
                    phase = run_phase(name, args.sender, port, instances, args.associations, concurrency, work)
                    phases.append(phase)
                    expected = sum(ph.associations - ph.failures for ph in phases)
                    wait_settled(process.pid, out, expected)
                    samples.append(sample(f"{name} phase", process.pid, out))
                alive = process.poll() is None
            finally:
                h.stop(process)
        stored, unique = check_unique(out)
    expected = sum(ph.associations - ph.failures for ph in phases)
    checks = verdicts(baseline, samples, phases[1:], stored, unique, expected,
                      args.rss_tolerance_mb, args.fd_tolerance, alive, args.plateau_tolerance_mb)  # fmt: skip
    report = [
        "## bench_soak",
        "",
        f"`aiodicom receive` fed by {args.sender}: a warm-up of {args.warmup} associations with "
        f"{args.concurrency} at a time, then {args.associations} in sequence, then "
        f"{args.associations} with {args.concurrency} at a time, twice; one 16x16 CT instance each.",
        "",
        "| phase | associations | at a time | wall s | associations/s | failed |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {ph.name} | {ph.associations} | {ph.concurrency} | {ph.wall_s:.1f} | "
          f"{ph.associations_per_s:.0f} | {ph.failures} |" for ph in phases),  # fmt: skip
        "",
        "| receiver | RSS MiB | open fds | files |",
        "|---|---:|---:|---:|",
        *(f"| {s.label} | {s.rss_mb:.1f} | {s.open_fds} | {s.stored_files} |" for s in [baseline, *samples]),
        "",
        "| check | result | detail |",
        "|---|---|---|",
        *(f"| {name} | {'ok' if ok else 'FAILED'} | {detail} |" for name, ok, detail in checks),
    ]
    print("\n".join(report))
    payload = {
        "quick": args.quick,
        "sender": args.sender,
        "associations": args.associations,
        "concurrency": args.concurrency,
        "receiver": receiver,
        "phases": [{**asdict(ph), "associations_per_s": ph.associations_per_s} for ph in phases],
        "samples": [asdict(s) for s in [baseline, *samples]],
        "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks],
    }
    print(f"\nraw numbers: {h.save('bench_soak', args.results_dir, payload)}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
