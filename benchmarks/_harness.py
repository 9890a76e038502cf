"""Shared machinery of the network benchmarks: run peers as processes and measure them.

A benchmark compares *contenders* (a receiver or a sender command line) on the same
workload. These machines are noisy, so contenders run alternately, back to back, for
several rounds, and the report uses medians and ratios measured in that one run.

What is measured for one run:

- wall time of the sender (from its start to its exit), hence images/s and MB/s;
- the measured process's CPU seconds, from the ``rusage`` that ``os.wait4`` returns
  when we reap it (a receiver is stopped with SIGTERM once the sender is done). For a
  receiver the CPU it spent before its port opened (interpreter start-up, imports) is
  subtracted, read from ``/proc/<pid>/stat`` at that moment;
- its peak RSS, from ``VmHWM`` in ``/proc/<pid>/status``, polled while it runs. Not
  ``ru_maxrss``: Linux carries the RSS high-water mark of the pre-``exec`` process into
  it, and a child forked (or vforked) by this Python process starts out with the
  harness's own RSS (50+ MB once numpy and pydicom are loaded), which would swamp a C
  receiver's 5 MB. ``ru_maxrss`` is still recorded in the JSON as ``rusage_maxrss_mb``.

Only the standard library and aiodicom's own byte-level helpers are used here
(``aiodicom.codec.part10`` to find a stored file's data set, ``aiodicom.synthetic`` in the
scripts to make their data). Every process is started and stopped by PID; nothing is killed by name.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiodicom.codec.part10 import read_file_meta

REPO = Path(__file__).resolve().parents[1]
# The tests' peer helpers are plain standard library: share them rather than copy them
# (free ports, readiness waits, TCP_NODELAY, finding DCMTK's binaries).
sys.path.insert(0, str(REPO / "tests"))

from peers import LOCALHOST as LOCALHOST  # noqa: E402
from peers import dcmtk, free_port, wait_for_port  # noqa: E402
from peers import peer_env as env  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
READY_TIMEOUT = 15.0
STOP_GRACE = 20.0


# --- processes ----------------------------------------------------------------


def cpu_seconds_so_far(pid: int) -> float:
    """CPU seconds of a running process, its live children and the children it reaped (Linux ``/proc``).

    0.0 where unavailable. The live children are the worker processes of ``aiodicom
    receive --workers N``; the reaped ones, ``storescp --fork``'s per-association
    processes that already ended (their CPU is in the parent's cutime and cstime, as
    ``wait4`` will report it).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    # After the ")" closing the command name: utime, stime, cutime, cstime are fields 12 to 15.
    own = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds_so_far(int(child)) for child in children)


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Keep ``pid`` on ``cpus`` (None: leave it where the scheduler puts it).

    Called right after the process starts, before it forks: the worker processes and
    per-association children it starts later inherit the set.
    """
    if cpus is not None:
        os.sched_setaffinity(pid, cpus)


def cpu_list(text: str) -> frozenset[int]:
    """``"0"``, ``"0,2"`` or ``"0-3"`` (``taskset -c`` syntax) as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a running process's current image, plus its live children's.

    0.0 when gone. The children are ``receive --workers N``'s workers, ``storescp
    --fork``'s per-association processes: a receiver's memory is all of its processes'.
    """
    peak = 0.0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return peak
    return peak + sum(vm_hwm_mb(int(child)) for child in children)


class PeakRss:
    """Follows ``VmHWM`` of a process from a polling thread until :meth:`stop`.

    VmHWM only grows, so the last value read before the process exits is its peak up
    to the last poll (every 20 ms); receivers are also sampled just before SIGTERM.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)
        self._thread.start()

    def sample(self) -> None:
        self.peak_mb = max(self.peak_mb, vm_hwm_mb(self.pid))

    def _poll(self, interval: float) -> None:
        while not self._done.wait(interval):
            self.sample()

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak_mb


@dataclass
class Reaped:
    returncode: int
    cpu_s: float
    peak_rss_mb: float
    rusage_maxrss_mb: float


def reap(process: subprocess.Popen[bytes], *, timeout: float | None = None) -> Reaped:
    """Wait for ``process`` with ``os.wait4`` and return its exit code and resource use.

    ``timeout`` kills the process when it runs out (a hung peer must not hang the
    benchmark); the kill comes from a timer thread because ``wait4`` itself blocks.
    A ``PeakRss`` watcher attached as ``process.peak_rss`` (see :func:`popen`) is
    stopped and read after the exit.
    """
    timer = None
    if timeout is not None:
        timer = threading.Timer(timeout, _kill_quietly, (process.pid,))
        timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    watcher: PeakRss | None = getattr(process, "peak_rss", None)
    return Reaped(
        returncode=process.returncode,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=watcher.stop() if watcher is not None else float("nan"),
        rusage_maxrss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
    )


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> Reaped:
    """SIGTERM ``process`` (SIGKILL after ``grace``) and reap it with its rusage."""
    if process.returncode is not None:
        # Died early and already reaped by poll(): its rusage is gone.
        return Reaped(process.returncode, float("nan"), float("nan"), float("nan"))
    watcher: PeakRss | None = getattr(process, "peak_rss", None)
    if watcher is not None:
        watcher.sample()
    # os.kill, not Popen.send_signal: the latter polls, which would reap the process
    # and lose its rusage. An unreaped PID cannot have been reused.
    os.kill(process.pid, signal.SIGTERM)
    return reap(process, timeout=grace)


# pynetdicom installed the usual way puts Python scripts with these names into its
# environment's bin/ (./dev keeps it in .venv/peers instead); a bare name must mean DCMTK.
DCMTK_NAMES = frozenset({"storescp", "storescu", "echoscu", "findscu", "movescu", "getscu"})


def popen(
    command: Sequence[str], log: TextIO, *, watch_rss: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``command`` with output to ``log``; ``watch_rss`` follows its peak RSS.

    A bare DCMTK tool name is resolved with :func:`dcmtk`.
    """
    args = list(command)
    if args[0] in DCMTK_NAMES:
        path = dcmtk(args[0])
        if path is None:
            raise RuntimeError(f"DCMTK's {args[0]} is not installed")
        args[0] = path
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env()
    )
    if watch_rss:
        process.peak_rss = PeakRss(process.pid)  # type: ignore[attr-defined]
    return process


# --- one measured run ---------------------------------------------------------


@dataclass
class Run:
    """One measured transfer."""

    contender: str
    round: int
    ok: bool
    wall_s: float
    items: int
    bytes: int
    cpu_s: float
    peak_rss_mb: float
    error: str = ""
    rusage_maxrss_mb: float = float("nan")
    #: CPU seconds of the senders (all of them): on a 2-core machine, when senders and
    #: receiver together keep both cores busy, the wall time cannot go below
    #: ``(cpu_s + senders_cpu_s) / 2``, whatever the receiver does.
    senders_cpu_s: float = float("nan")
    #: The receiver's CPU seconds from ready to the last sender's exit: ``cpu_s`` without
    #: its shutdown (three interpreters' teardown for ``--workers 2``, next to nothing for
    #: a C receiver), so both sides are measured over the same window.
    serving_cpu_s: float = float("nan")

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s if self.ok and self.wall_s > 0 else float("nan")

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.ok and self.wall_s > 0 else float("nan")


@dataclass
class Contender:
    """A named command line; ``{port}``, ``{out}`` and ``{profile}`` are filled per run.

    ``profile_dir`` is set for contenders run under cProfile (``--profile``): each run
    then writes ``<profile_dir>/<name>-<round>.prof``.
    """

    name: str
    command: list[str]
    available: bool = True
    why_unavailable: str = ""
    profile_dir: Path | None = None
    #: Text the receiver writes to its output once it serves with every process it has
    #: (``aiodicom receive``: its listening line, printed once all workers listen). An
    #: open port alone is not enough: the first of two workers opens it.
    ready_text: str | None = None

    def profile_path(self, round_: int) -> Path | None:
        if self.profile_dir is None:
            return None
        return self.profile_dir / f"{self.name.replace(' ', '_')}-{round_}.prof"

    def render(self, round_: int, **values: object) -> list[str]:
        values["profile"] = self.profile_path(round_)
        return [part.format(**values) for part in self.command]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def measure_receiver(
    receiver: Contender,
    sender_commands: Sequence[Sequence[str]],
    *,
    round_: int,
    items: int,
    payload_bytes: int,
    workdir: Path,
    check: Callable[[Path], str] | None = None,
    sender_timeout: float = 600.0,
    receiver_cpus: frozenset[int] | None = None,
    sender_cpus: frozenset[int] | None = None,
) -> Run:
    """Start ``receiver``, run the senders (concurrently when several), stop the receiver.

    Sender commands may use ``{port}``. ``check(out_dir)`` returns an error text when
    what arrived is wrong (empty when fine); the output folder is removed when the
    benchmark ends (:func:`retire`).
    ``receiver_cpus`` and ``sender_cpus`` pin each side to its own CPUs (:func:`pin`).
    """
    port = free_port()
    out = output_folder(workdir, f"out-{receiver.name}-{round_}")
    log_path = workdir / f"{receiver.name}-{round_}.log"
    # What earlier runs left in the page cache is written back now, not by the kernel's
    # flusher threads on the CPUs this run is timed on.
    os.sync()
    error = ""
    wall = senders_cpu = serving_cpu = float("nan")
    with log_path.open("w") as log:
        process = popen(receiver.render(round_, port=port, out=out), log, watch_rss=True)
        pin(process.pid, receiver_cpus)
        try:
            wait_ready(receiver, port, process, log_path)
            cpu_at_ready = cpu_seconds_so_far(process.pid)
            started = time.perf_counter()
            senders = [popen([p.format(port=port) for p in cmd], log) for cmd in sender_commands]
            for sender in senders:
                pin(sender.pid, sender_cpus)
            reaped_senders = [reap(s, timeout=sender_timeout) for s in senders]
            wall = time.perf_counter() - started
            serving_cpu = cpu_seconds_so_far(process.pid) - cpu_at_ready
            senders_cpu = sum(r.cpu_s for r in reaped_senders)
            failed = [r.returncode for r in reaped_senders if r.returncode != 0]
            if failed:
                error = f"{len(failed)} sender(s) failed (exit {failed[0]})"
        except RuntimeError as exc:
            error = f"receiver did not start: {exc}"
            cpu_at_ready = 0.0
        finally:
            reaped = stop(process)
    if not error and check is not None:
        error = check(out)
    if not error and reaped.returncode not in (0, -signal.SIGTERM):
        error = f"receiver exited with {reaped.returncode}"
    if error:
        error += "\n" + _tail(log_path)
    retire(out)
    return Run(
        contender=receiver.name,
        round=round_,
        ok=not error,
        wall_s=wall,
        items=items,
        bytes=payload_bytes,
        cpu_s=reaped.cpu_s - cpu_at_ready,
        peak_rss_mb=reaped.peak_rss_mb,
        error=error,
        rusage_maxrss_mb=reaped.rusage_maxrss_mb,
        senders_cpu_s=senders_cpu,
        serving_cpu_s=serving_cpu,
    )


def wait_ready(receiver: Contender, port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Return once ``receiver`` serves: its port accepts and its ``ready_text`` is in its log.

    The clock starts after this, for every receiver alike: start-up (interpreters,
    imports, worker processes) is never timed. Raises ``RuntimeError`` (PeerError).
    """
    wait_for_port(port, process=process, timeout=READY_TIMEOUT)
    if receiver.ready_text is None:
        return
    deadline = time.monotonic() + READY_TIMEOUT
    while receiver.ready_text not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{receiver.name} never wrote {receiver.ready_text!r}")
        time.sleep(0.01)


def measure_sender(
    sender: Contender,
    receiver_command: Sequence[str],
    *,
    round_: int,
    items: int,
    payload_bytes: int,
    workdir: Path,
    sender_timeout: float = 600.0,
) -> Run:
    """Start a fresh ``receiver_command`` (``{port}``), time ``sender`` against it."""
    port = free_port()
    log_path = workdir / f"{sender.name}-{round_}.log"
    error = ""
    wall = cpu = rss = maxrss = float("nan")
    with log_path.open("w") as log:
        receiver = popen([p.format(port=port) for p in receiver_command], log)
        try:
            wait_for_port(port, process=receiver, timeout=READY_TIMEOUT)
            started = time.perf_counter()
            process = popen(sender.render(round_, port=port), log, watch_rss=True)
            reaped = reap(process, timeout=sender_timeout)
            wall = time.perf_counter() - started
            cpu, rss, maxrss = reaped.cpu_s, reaped.peak_rss_mb, reaped.rusage_maxrss_mb
            if reaped.returncode != 0:
                error = f"sender exited with {reaped.returncode}"
        except RuntimeError as exc:
            error = f"receiver did not start: {exc}"
        finally:
            stop(receiver)
    if error:
        error += "\n" + _tail(log_path)
    return Run(sender.name, round_, not error, wall, items, payload_bytes, cpu, rss, error, maxrss)


# --- availability -----------------------------------------------------------------


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


_BYTECODE_READY = False


def ensure_bytecode() -> None:
    """Compile aiodicom's modules to ``__pycache__`` once, as ``pip install`` does.

    These machines set ``PYTHONDONTWRITEBYTECODE=1``, so without this every start of
    the CLI from a source tree compiles ~60 modules again: ~0.25 s of CPU that an
    installed package never pays, and that a loaded machine turns into ~1 s of wall
    time. Python still reads the ``.pyc`` files the flag stops it from writing.
    """
    global _BYTECODE_READY
    if _BYTECODE_READY:
        return
    import aiodicom

    package = Path(aiodicom.__file__).parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)], capture_output=True, check=True
    )
    _BYTECODE_READY = True


def aiodicom_command(subcommand: str, *args: str, profile: bool = False) -> list[str]:
    """``python -m aiodicom ...`` (bytecode compiled first), under cProfile writing ``{profile}`` when asked.

    cProfile writes its file when the program exits normally, which ``aiodicom
    receive`` does on SIGTERM, so receivers can be profiled too.
    """
    ensure_bytecode()
    if profile:
        return python_module_command(
            "cProfile", "-o", "{profile}", "-m", "aiodicom", subcommand, *args
        )
    return python_module_command("aiodicom", subcommand, *args)


def profile_report(contenders: Sequence[Contender], rounds: int, top: int = 25) -> str:
    """The ``top`` functions by own time, from each profiled contender's profiles merged."""
    parts = []
    for contender in contenders:
        paths = [contender.profile_path(r) for r in range(rounds)]
        found = [str(p) for p in paths if p is not None and p.exists()]
        if not found:
            continue
        out = io.StringIO()
        stats = pstats.Stats(*found, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        parts.append(
            f"### cProfile of {contender.name} ({len(found)} runs, by own time)\n\n"
            f"```\n{out.getvalue().strip()}\n```"
        )
    return "\n\n".join(parts)


def check_command(name: str, command: Sequence[str], probe: Sequence[str]) -> Contender:
    """A contender whose ``probe`` command must exit 0, else it is reported unavailable."""
    try:
        result = subprocess.run(
            list(probe), capture_output=True, text=True, timeout=60, env=env(), check=False
        )
        ok = result.returncode == 0
        why = "" if ok else (result.stderr.strip().splitlines() or ["probe failed"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    return Contender(name, list(command), available=ok, why_unavailable=why)


def startup_seconds(command: Sequence[str], runs: int = 3) -> float:
    """Median wall time of ``command`` (e.g. ``aiodicom store --help``): the share of a
    CLI's time that is interpreter start-up and imports rather than networking."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(list(command), capture_output=True, env=env(), check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- files ----------------------------------------------------------------------


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's data set: the bytes after the preamble and group 0002."""
    return path.read_bytes()[read_file_meta(path).dataset_offset :]


def sop_instance_uid(path: Path) -> str:
    return read_file_meta(path).sop_instance_uid


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def check_stored(sent: Sequence[Path], sample_every: int = 10) -> Callable[[Path], str]:
    """A ``check`` for :func:`measure_receiver`: every file arrived, a sample byte-equal.

    Receivers lay out and name files differently (storescp ``CT.<uid>``, aiodicom
    ``<study>/<series>/<uid>.dcm``), so received files are matched by SOP Instance UID.
    """
    sample = list(sent[::sample_every])

    def check(out: Path) -> str:
        received = files_under(out)
        if len(received) != len(sent):
            return f"{len(received)} files stored, {len(sent)} sent"
        by_uid = {sop_instance_uid(p): p for p in received}
        for path in sample:
            got = by_uid.get(sop_instance_uid(path))
            if got is None:
                return f"{path.name} was not stored"
            if dataset_bytes(got) != dataset_bytes(path):
                return f"{path.name} was stored with different data set bytes"
        return ""

    return check


def same_dataset_streamed(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    """Compare two (possibly huge) Part 10 files' data sets without loading them."""
    with a.open("rb") as fa, b.open("rb") as fb:
        fa.seek(read_file_meta(a).dataset_offset)
        fb.seek(read_file_meta(b).dataset_offset)
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


# --- reporting ------------------------------------------------------------------


@dataclass
class Summary:
    contender: str
    runs: int
    failures: int
    wall_s: float
    best_wall_s: float
    items_per_s: float
    mb_per_s: float
    cpu_s: float
    peak_rss_mb: float
    errors: list[str] = field(default_factory=list)
    senders_cpu_s: float = float("nan")
    serving_cpu_s: float = float("nan")


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def summarize(runs: Sequence[Run], names: Sequence[str]) -> dict[str, Summary]:
    result = {}
    for name in names:
        mine = [r for r in runs if r.contender == name]
        good = [r for r in mine if r.ok]
        result[name] = Summary(
            contender=name,
            runs=len(mine),
            failures=len(mine) - len(good),
            wall_s=_median([r.wall_s for r in good]),
            best_wall_s=min((r.wall_s for r in good), default=float("nan")),
            items_per_s=_median([r.items_per_s for r in good]),
            mb_per_s=_median([r.mb_per_s for r in good]),
            cpu_s=_median([r.cpu_s for r in good]),
            peak_rss_mb=_median([r.peak_rss_mb for r in good]),
            senders_cpu_s=_median([r.senders_cpu_s for r in good]),
            serving_cpu_s=_median([r.serving_cpu_s for r in good]),
            errors=sorted({r.error.splitlines()[0] for r in mine if r.error}),
        )
    return result


@dataclass
class Ratio:
    """How many times faster ``ours`` is than ``reference`` (reference time / our time).

    ``median`` compares median wall times and is what targets are judged on; ``best``
    compares the fastest runs, a hint of what the code can do when the machine is quiet.
    """

    label: str
    ours: str
    reference: str
    target: float | None
    median: float
    best: float


def compare(
    summaries: dict[str, Summary],
    label: str,
    ours: str,
    reference: str,
    target: float | None = None,
) -> Ratio:
    a, b = summaries.get(ours), summaries.get(reference)
    nan = float("nan")
    if a is None or b is None:
        return Ratio(label, ours, reference, target, nan, nan)
    return Ratio(
        label,
        ours,
        reference,
        target,
        b.wall_s / a.wall_s if a.wall_s > 0 else nan,
        b.best_wall_s / a.best_wall_s if a.best_wall_s > 0 else nan,
    )


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def table(title: str, summaries: dict[str, Summary], unit: str = "img/s") -> str:
    """A Markdown table of ``summaries``; the serving CPU column only when a receiver was measured."""
    serving = any(s.serving_cpu_s == s.serving_cpu_s for s in summaries.values())
    lines = [
        f"### {title}",
        "",
        f"| contender | runs (failed) | median wall s | best wall s | {unit} | MB/s | CPU s "
        + ("| CPU s serving " if serving else "")
        + "| senders' CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if serving else ""),
    ]
    for s in summaries.values():
        lines.append(
            f"| {s.contender} | {s.runs} ({s.failures}) | {_fmt(s.wall_s, 3)} | "
            f"{_fmt(s.best_wall_s, 3)} | "
            f"{_fmt(s.items_per_s, 0)} | {_fmt(s.mb_per_s, 1)} | {_fmt(s.cpu_s)} | "
            + (f"{_fmt(s.serving_cpu_s)} | " if serving else "")
            + f"{_fmt(s.senders_cpu_s)} | {_fmt(s.peak_rss_mb, 1)} |"
        )
    for s in summaries.values():
        for error in s.errors:
            lines.append(f"\n- {s.contender} failed: {error}")
    return "\n".join(lines)


def ratio_table(ratios: Sequence[Ratio]) -> str:
    lines = [
        "| comparison | ratio (medians) | ratio (best runs) | target | met |",
        "|---|---|---|---|---|",
    ]
    for r in ratios:
        if r.target is None:
            target = met = "-"
        else:
            target = f">= {r.target}x"
            met = "n/a" if r.median != r.median else ("yes" if r.median >= r.target else "NO")
        median, best = (_fmt(v) + ("x" if v == v else "") for v in (r.median, r.best))
        lines.append(f"| {r.label} | {median} | {best} | {target} | {met} |")
    return "\n".join(lines)


def apply_only(contenders: Sequence[Contender], only: str | None) -> None:
    """Leave out the contenders ``--only`` did not name (handy while tuning one of them)."""
    if not only:
        return
    wanted = {name.strip() for name in only.split(",")}
    for contender in contenders:
        if contender.name not in wanted and contender.available:
            contender.available, contender.why_unavailable = False, "left out by --only"


def unavailable_note(contenders: Sequence[Contender]) -> str:
    return "\n".join(
        f"- {c.name}: not measured ({c.why_unavailable})" for c in contenders if not c.available
    )


# --- command line and results -------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, one round (smoke run)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the aiodicom contenders under cProfile (slower; for finding where time "
        "goes, not for figures); profiles go to RESULTS_DIR/profiles",
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds per contender")
    p.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="measure only these contenders (e.g. 'aiodicom,storescp'); the others are "
        "listed as not measured",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    p.add_argument(
        "--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)"
    )
    return p


def profile_dir(args: argparse.Namespace) -> Path | None:
    """Where ``--profile`` puts its cProfile files (None without ``--profile``)."""
    if not args.profile:
        return None
    path = Path(args.results_dir) / "profiles"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Output folders of finished runs, removed when the benchmark ends (:func:`retire`).
_RETIRED: list[Path] = []
#: Below this much free space a finished run's output is removed at once.
_KEEP_OUTPUT_FREE_BYTES = 8 << 30


def output_folder(parent: Path, stem: str) -> Path:
    """A new, empty folder for one run's output: ``stem``, numbered when a kept one has it."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count():
        out = parent / (stem if n == 0 else f"{stem}-{n}")
        try:
            out.mkdir()
        except FileExistsError:
            continue
        return out
    raise AssertionError("unreachable")


def retire(out: Path) -> None:
    """Remove a finished run's output when the benchmark ends, not before the next run.

    On ext4 without a journal (this project's benchmark machines: ``dmesg`` says
    "mounted filesystem ... without journal"), every file created scans past the
    inodes freed in the last 60-300 s (``recently_deleted()`` in ext4's inode
    allocator). Removing a round's files before the next round made that round's
    receiver, whichever it was, pay up to about 0.4 ms more per file it created: a
    cost on every contender alike that shrank every ratio and set much of the noise,
    and one that a journaled production file system does not have. Kept until the
    end, outputs cost disk instead, so a nearly full disk still removes them at once.
    """
    if shutil.disk_usage(out).free < _KEEP_OUTPUT_FREE_BYTES:
        shutil.rmtree(out, ignore_errors=True)
    else:
        _RETIRED.append(out)


def _remove_retired() -> None:
    while _RETIRED:
        shutil.rmtree(_RETIRED.pop(), ignore_errors=True)


@contextmanager
def scratch(workdir: Path | None) -> Iterator[Path]:
    try:
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            yield workdir
            return
        with tempfile.TemporaryDirectory(prefix="aiodicom-bench-") as tmp:
            yield Path(tmp)
    finally:
        _remove_retired()


def machine() -> dict[str, Any]:
    version = subprocess.run(
        [dcmtk("storescp") or "storescp", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "dcmtk": version[0] if version else "missing",
        "storescp": dcmtk("storescp"),
        "loadavg_at_end": os.getloadavg(),
    }


def save(name: str, results_dir: Path, payload: dict[str, Any]) -> Path:
    """Write raw numbers as JSON (``<name>-<utc time>.json``) and return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = results_dir / f"{name}-{stamp}.json"
    payload = {"benchmark": name, "utc": stamp, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, Run):
        return {**asdict(value), "items_per_s": value.items_per_s, "mb_per_s": value.mb_per_s}
    if isinstance(value, Summary | Contender | Ratio):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def run_rounds(
    contenders: Sequence[Contender], rounds: int, measure: Callable[[Contender, int], Run]
) -> list[Run]:
    """Alternate the available contenders back to back, ``rounds`` times, and log progress.

    Every other round runs them in reverse order, so none is always first (cold caches)
    or always right after the heaviest one (dirty page cache still being written back).
    """
    runs = []
    for round_ in range(rounds):
        ordered = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for contender in ordered:
            if not contender.available:
                continue
            run = measure(contender, round_)
            state = "ok" if run.ok else "FAILED: " + run.error.splitlines()[0]
            print(
                f"  round {round_ + 1}/{rounds} {contender.name}: {run.wall_s:.3f} s {state}",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run)
    return runs


def total_size(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def common_contenders(profile_dir: Path | None = None) -> dict[str, Contender]:
    """Receivers every receive benchmark compares (``{port}``/``{out}`` filled per run).

    With ``profile_dir``, ``aiodicom receive`` runs under cProfile (see ``--profile``).
    ``aiodicom`` is one process (``--workers 1``), as every figure before multi-core
    receive; :func:`concurrent_contenders` adds the multi-process receivers.
    """
    aiodicom = check_command(
        "aiodicom",
        aiodicom_command(
            "receive", "--port", "{port}", "--aet", "AIODICOM", "--output-dir", "{out}",
            "--host", LOCALHOST, "--workers", "1", profile=profile_dir is not None,
        ),
        aiodicom_command("receive", "--help"),
    )  # fmt: skip
    aiodicom.profile_dir = profile_dir
    aiodicom.ready_text = AIODICOM_READY
    storescp = Contender("storescp", ["storescp", "-od", "{out}", "{port}"])
    if dcmtk("storescp") is None:
        storescp.available, storescp.why_unavailable = False, "DCMTK storescp not on PATH"
    storescp_pdu = Contender(
        "storescp -pdu 131072", ["storescp", "-od", "{out}", "-pdu", "131072", "{port}"],
        storescp.available, storescp.why_unavailable,
    )  # fmt: skip
    pynetdicom = check_command(
        "pynetdicom storescp",
        python_module_command("pynetdicom", "storescp", "{port}", "-od", "{out}", "-ba", LOCALHOST),
        [sys.executable, "-c", "import pynetdicom"],
    )
    return {c.name: c for c in (aiodicom, storescp, storescp_pdu, pynetdicom)}


#: What ``aiodicom receive`` prints once it serves (with ``--workers N``: once all N listen).
AIODICOM_READY = "aiodicom receive: listening on"

#: ``Orthanc`` from the Debian package (apt-get install -y -qq orthanc); started by _orthanc.py.
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)


def concurrent_contenders(common: dict[str, Contender], workers: int = 2) -> dict[str, Contender]:
    """Multi-process receivers: ``aiodicom receive --workers N``, ``storescp --fork``, Orthanc.

    Everything at its defaults (each aiodicom worker takes up to twice its share of
    ``--max-associations``, so 64 senders get in). Orthanc runs with its own configuration and ports (``_orthanc.py``) and is left
    out, with a note, when it is not installed.
    """
    base = common["aiodicom"]
    aiodicom = Contender(
        f"aiodicom --workers {workers}",
        [*base.command[: base.command.index("--workers")], "--workers", str(workers)],
        base.available, base.why_unavailable, ready_text=AIODICOM_READY,
    )  # fmt: skip
    storescp = common["storescp"]
    fork = Contender(
        "storescp --fork", ["storescp", "--fork", "-od", "{out}", "{port}"], storescp.available, storescp.why_unavailable
    )
    orthanc = Contender(
        "orthanc", [sys.executable, str(Path(__file__).resolve().parent / "_orthanc.py"), "{port}", "{out}"]
    )
    if ORTHANC is None:
        orthanc.available, orthanc.why_unavailable = False, "Orthanc not installed (apt-get install -y -qq orthanc)"
    return {c.name: c for c in (aiodicom, fork, orthanc)}


def baseline(contender: Contender, src: Path) -> Contender:
    """``contender`` run from another source tree (``PYTHONPATH=src``): before/after in one run."""
    return Contender(
        f"{contender.name} (baseline)",
        ["env", f"PYTHONPATH={src.resolve()}", *contender.command],
        contender.available, contender.why_unavailable, ready_text=contender.ready_text,
    )  # fmt: skip


def storescu(folder: Path, called: str = "AIODICOM") -> list[str]:
    """DCMTK storescu sending every file under ``folder`` on one association."""
    return ["storescu", "-aec", called, "+sd", "+r", LOCALHOST, "{port}", str(folder)]


def require_dcmtk() -> None:
    missing = [t for t in ("storescp", "storescu") if dcmtk(t) is None]
    if missing:
        sys.exit(f"DCMTK is needed for the benchmarks (missing {', '.join(missing)})")
