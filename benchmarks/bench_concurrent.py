"""Concurrent associations: 8 and 64 DCMTK storescu processes at once into one receiver.

Each sender has its own folder (its own study); every file must be stored and a sample
must hold the sent data set byte for byte. Reports aggregate throughput of
``aiodicom receive --workers 2`` (two processes on one SO_REUSEPORT port) against DCMTK
``storescp --fork -od`` (a process per association) and Orthanc (threads; skipped with a
note when not installed), and of one-process ``aiodicom receive --workers 1`` against
``storescp -od`` (which serves one association at a time: the others wait in its listen
backlog). Target (issue 7): --workers 2 >= 1.3x storescp --fork on 512 KiB CT.

    python benchmarks/bench_concurrent.py [--quick] [--rounds N] [--only NAMES] [--associations 8,64]
        [--baseline-src DIR] [--pin RECEIVER_CPUS:SENDER_CPUS]

``--baseline-src DIR`` adds ``aiodicom --workers 2 (baseline)``: the same command run with
``PYTHONPATH=DIR`` (e.g. ``git archive main src | tar -x -C /tmp/base`` then
``--baseline-src /tmp/base/src``), so a change is compared with what it replaces in
the same run, on the same files.

``--pin 0:1`` (``taskset -c`` lists, e.g. ``0-1:2-3``) keeps every receiver process on
the first CPUs and every sender on the others, so the receiver's own capacity shows
apart from competing with the senders for the same cores (on 2 cores, ``0:1`` gives a
receiver one core whatever its number of workers). Without it nothing is pinned.

Fairness: every receiver is started and ready (its port accepts and, for aiodicom,
every worker listens) before the clock starts; all get the same sender commands on the
same files; the tables give each receiver's CPU (all its processes, from ready to
exit, and "serving": until the last sender exited, without its shutdown) and the
senders' CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402


def main() -> int:
    parser = h.parser(__doc__.splitlines()[0])
    parser.add_argument("--associations", default="8,64", help="which layouts to run [%(default)s]")
    parser.add_argument("--baseline-src", type=Path, default=None, help="also run aiodicom from this src folder")
    parser.add_argument(
        "--pin", default=None, metavar="RECEIVER_CPUS:SENDER_CPUS",
        help="pin receivers and senders to separate CPUs, e.g. 0:1 or 0-1:2-3 (default: no pinning)",
    )  # fmt: skip
    args = parser.parse_args()
    receiver_cpus, sender_cpus = _pinning(parser, args.pin)
    h.require_dcmtk()
    rounds = args.rounds or (1 if args.quick else 3)
    size = 64 if args.quick else 512
    # (associations, images per association): about 300-500 images in total at full size.
    layouts = [(8, 2), (64, 1)] if args.quick else [(8, 40), (64, 8)]
    wanted = {int(n) for n in args.associations.split(",")}
    layouts = [layout for layout in layouts if layout[0] in wanted]
    profiles = h.profile_dir(args)
    contenders = h.common_contenders(profiles)
    multi = h.concurrent_contenders(contenders)
    receivers = [*multi.values(), contenders["aiodicom"], contenders["storescp"]]
    if args.baseline_src is not None:
        receivers.insert(1, h.baseline(multi["aiodicom --workers 2"], args.baseline_src))
    h.apply_only(receivers, args.only)
    report = ["## bench_concurrent", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick, "pin": args.pin}
    ok = True
    with h.scratch(args.workdir) as work:
        for associations, per_association in layouts:
            root = work / f"c{associations}"
            folders = [root / f"{i:03d}" for i in range(associations)]
            files = [
                path
                for i, folder in enumerate(folders)
                for path in write_study(
                    folder,
                    patient_id=f"CONC{i:03d}",
                    images_per_series=per_association,
                    rows=size,
                    columns=size,
                    seed=i,
                )
            ]
            title = (
                f"{associations} concurrent associations x {per_association} images "
                f"{size}x{size} ({len(files)} images)"
            )
            print(f"{title}:", file=sys.stderr)
            if profiles is not None:
                contenders["aiodicom"].profile_dir = profiles / f"concurrent-{associations}"
                contenders["aiodicom"].profile_dir.mkdir(exist_ok=True)
            senders = [h.storescu(folder) for folder in folders]

            def measure(
                c: h.Contender,
                r: int,
                files: list[Path] = files,
                senders: list[list[str]] = senders,
            ) -> h.Run:
                return h.measure_receiver(
                    c,
                    senders,
                    round_=r,
                    items=len(files),
                    payload_bytes=h.total_size(files),
                    workdir=work,
                    check=h.check_stored(files),
                    receiver_cpus=receiver_cpus,
                    sender_cpus=sender_cpus,
                )

            runs = h.run_rounds(receivers, rounds, measure)
            ok = ok and all(r.ok for r in runs)
            summaries = h.summarize(runs, [c.name for c in receivers if c.available])
            workers = "aiodicom --workers 2"
            ratios = [
                h.compare(summaries, f"{workers} vs storescp --fork (aggregate)", workers, "storescp --fork", 1.3),
                h.compare(summaries, f"{workers} vs orthanc (aggregate)", workers, "orthanc"),
                h.compare(summaries, "aiodicom vs storescp (aggregate, one process each)", "aiodicom", "storescp"),
            ]
            if args.baseline_src is not None:
                ratios.append(h.compare(summaries, f"{workers} vs its baseline", workers, f"{workers} (baseline)"))
            report += [
                h.table(title, summaries),
                "",
                h.ratio_table(ratios),
                "",
            ]
            if profiles is not None:
                report += [h.profile_report(receivers, rounds), ""]
            payload[f"c{associations}"] = {
                "title": title,
                "commands": {c.name: c.command for c in receivers},
                "sender": h.storescu(root / "NNN"),
                "runs": runs,
                "summary": summaries,
                "ratios": ratios,
            }
    note = h.unavailable_note(receivers)
    if note:
        report += [note, ""]
    report.append(
        "Senders: one `TCP_NODELAY=1 storescu -aec AIODICOM +sd +r 127.0.0.1 PORT DIR` "
        "per association, all started at once; wall time is until the last one exits."
        + (f" Receivers pinned to CPUs {sorted(receiver_cpus or ())}, senders to {sorted(sender_cpus)}." if sender_cpus else "")
    )
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_concurrent', args.results_dir, payload)}")
    return 0 if ok else 1


def _pinning(
    parser: argparse.ArgumentParser, pin: str | None
) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """``--pin R:S`` as (receiver CPUs, sender CPUs): two disjoint sets of CPUs this process may use."""
    if pin is None:
        return None, None
    try:
        receiver, senders = (h.cpu_list(part) for part in pin.split(":"))
    except ValueError:
        parser.error(f"--pin wants RECEIVER_CPUS:SENDER_CPUS such as 0:1 or 0-1:2-3, not {pin!r}")
    usable = os.sched_getaffinity(0)
    if receiver & senders or not receiver | senders <= usable:
        parser.error(f"--pin {pin}: the two sets must be disjoint and among the usable CPUs {sorted(usable)}")
    return receiver, senders


if __name__ == "__main__":
    sys.exit(main())
