"""How ``aiodicom receive --workers 2`` splits concurrent senders between its workers.

Runs 8 DCMTK storescu processes at once into the receiver, many rounds, and counts
which worker process held each connection, read from the kernel (``/proc/net/tcp``
and each worker's descriptors, sampled every few milliseconds while the senders run),
so the split of any version is measured the same way (``--baseline-src``). Reports the
split of every round (e.g. ``4:4`` eleven times, ``5:3`` three times) and, from
``/proc``, per round: each worker's CPU seconds and voluntary context switches (its
wake-ups) while serving, and the parent's CPU per stored instance.

    python benchmarks/bench_balance.py [--rounds 14] [--senders 8] [--images 40] [--size 128]
        [--baseline-src DIR] [--pool-counts]

``--pool-counts`` runs the receivers with ``--log-level info`` and adds the counts the
pool logs when it stops (``workers_stopped``): connections each worker accepted,
wake-ups in which another worker took the connection first (the shared socket wakes
every worker reading it), connections taken out of turn because the others stalled.

Not a timing benchmark: the sampling itself takes CPU. The split needs associations
that overlap: each sender's association must outlive the others' start-up (40
images of 128x128 last well beyond the ~30 ms a storescu takes to start).
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402

#: What the pool logs at info when it stops: its workers' accept counts.
POOL_COUNTS = re.compile(r"accepted=\[[^\]]*\] missed=\[[^\]]*\] out_of_turn=\[[^\]]*\]")
#: Seconds between two looks at the workers' connections.
SAMPLE_INTERVAL = 0.003


def children(pid: int) -> list[int]:
    try:
        return [int(word) for word in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def connections_on(port: int) -> set[str]:
    """Socket inodes of the TCP connections to ``port`` not yet closed by the receiver (/proc/net/tcp)."""
    open_states = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT (the peer is done, the worker not yet)
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        row = line.split()
        if int(row[1].split(":")[1], 16) == port and row[3] in open_states:
            inodes.add(row[9])
    return inodes


def sockets_of(pid: int) -> set[str]:
    found = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = fd.readlink().name
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(link[8:-1])
    except OSError:
        pass
    return found


def process_figures(pid: int) -> tuple[float, int]:
    """(CPU seconds, voluntary context switches) of one single-threaded process so far.

    CPU from ``/proc/PID/schedstat`` (nanoseconds on a CPU), not ``stat``'s clock ticks:
    10 ms ticks are too coarse for the parent's share of a short round.
    """
    try:
        on_cpu_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan"), 0
    switches = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt")), 0)
    return on_cpu_ns / 1e9, switches


def one_round(receiver: h.Contender, senders: list[list[str]], work: Path, round_: int, images: int) -> dict[str, object]:
    port = h.free_port()
    out = h.output_folder(work, f"out-{round_}")
    log_path = work / f"{receiver.name.replace(' ', '_')}-{round_}.log"
    with log_path.open("w") as log:
        process = h.popen(receiver.render(round_, port=port, out=out), log)
        try:
            h.wait_ready(receiver, port, process, log_path)
            workers = children(process.pid)
            deadline = time.monotonic() + 5
            while connections_on(port) and time.monotonic() < deadline:  # the readiness probe
                time.sleep(0.01)
            before = {pid: process_figures(pid) for pid in (process.pid, *workers)}
            seen: dict[int, set[str]] = {pid: set() for pid in workers}
            running = [h.popen([p.format(port=port) for p in cmd], log) for cmd in senders]
            while any(sender.poll() is None for sender in running):
                live = connections_on(port)
                for pid in workers:
                    seen[pid] |= sockets_of(pid) & live
                time.sleep(SAMPLE_INTERVAL)
            after = {pid: process_figures(pid) for pid in (process.pid, *workers)}
            failed = [sender.returncode for sender in running if sender.returncode != 0]
        finally:
            h.stop(process)
    pool = POOL_COUNTS.search(log_path.read_text(errors="replace"))
    stored = len(h.files_under(out))
    h.retire(out)
    counts = [len(seen[pid]) for pid in workers]
    cpu = [after[pid][0] - before[pid][0] for pid in workers]
    return {
        "split": ":".join(str(c) for c in sorted(counts, reverse=True)),
        "connections": counts,
        "worker_cpu_s": cpu,
        "worker_wakeups": [after[pid][1] - before[pid][1] for pid in workers],
        "parent_cpu_ms_per_instance": 1000 * (after[process.pid][0] - before[process.pid][0]) / max(stored, 1),
        "stored": stored,
        "expected": images,
        "failed_senders": len(failed),
        "pool_counts": pool.group(0) if pool else "",
    }


def main() -> int:
    parser = h.parser(__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8, help="concurrent storescu processes [%(default)s]")
    parser.add_argument("--images", type=int, default=40, help="images per sender [%(default)s]")
    parser.add_argument("--size", type=int, default=128, help="rows and columns of each image [%(default)s]")
    parser.add_argument("--baseline-src", type=Path, default=None, help="also run aiodicom from this src folder")
    parser.add_argument("--pool-counts", action="store_true", help="log at info and report the pool's own counts")
    args = parser.parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (2 if args.quick else 14)
    images = 2 if args.quick else args.images
    receivers = [h.concurrent_contenders(h.common_contenders())["aiodicom --workers 2"]]
    if args.pool_counts:
        receivers[0].command += ["--log-level", "info"]
    if args.baseline_src is not None:
        receivers.append(h.baseline(receivers[0], args.baseline_src))
    report = ["## bench_balance", ""]
    payload: dict[str, object] = {"rounds": rounds, "senders": args.senders, "images": images, "size": args.size}
    with h.scratch(args.workdir) as work:
        folders = [work / "send" / f"{i:03d}" for i in range(args.senders)]
        for i, folder in enumerate(folders):
            write_study(folder, patient_id=f"BAL{i:03d}", images_per_series=images, rows=args.size,
                        columns=args.size, seed=i)  # fmt: skip
        senders = [h.storescu(folder) for folder in folders]
        total = images * args.senders
        for receiver in receivers:
            results = []
            for round_ in range(rounds):
                result = one_round(receiver, senders, work, round_, total)
                print(f"  {receiver.name} round {round_ + 1}/{rounds}: {result['split']}", file=sys.stderr, flush=True)
                results.append(result)
            payload[receiver.name] = results
            report += [f"### {receiver.name}: {args.senders} senders x {images} images {args.size}x{args.size}", ""]
            report += _summary(results, total)
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_balance', args.results_dir, payload)}")
    return 0


def _summary(results: list[dict[str, object]], total: int) -> list[str]:
    splits = Counter(str(r["split"]) for r in results)
    lines = ["- splits (connections per worker, most loaded first): "
             + ", ".join(f"{split} x{n}" for split, n in splits.most_common())]  # fmt: skip
    lines.append("\n| round | split | worker CPU s | worker wake-ups | parent CPU ms/instance | stored | pool's counts |")
    lines.append("|---|---|---|---|---|---|---|")
    for i, r in enumerate(results):
        cpu = " / ".join(f"{c:.2f}" for c in r["worker_cpu_s"])  # type: ignore[attr-defined]
        wakeups = " / ".join(str(w) for w in r["worker_wakeups"])  # type: ignore[attr-defined]
        lines.append(
            f"| {i + 1} | {r['split']} | {cpu} | {wakeups} | {r['parent_cpu_ms_per_instance']:.3f} | "
            f"{r['stored']}/{total}{' FAILED SENDERS' if r['failed_senders'] else ''} | {r['pool_counts'] or '-'} |"
        )
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
