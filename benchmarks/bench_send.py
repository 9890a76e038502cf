"""Sending: ``aiodicom store`` vs DCMTK ``storescu`` into DCMTK ``storescp --ignore``.

Both senders use one association and send the same folder; the sink discards what it
receives, so the sender is what is measured (wall time, its CPU seconds and peak RSS).
Target (issue 3): aiodicom >= 1.0x storescu on the CT workload.

    python benchmarks/bench_send.py [--quick] [--rounds N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402

SINK = ["storescp", "--ignore", "-aet", "SINK", "{port}"]


def main() -> int:
    args = h.parser(__doc__.splitlines()[0]).parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (1 if args.quick else 5)
    ct_count = 20 if args.quick else 500
    small_count = 50 if args.quick else 2000
    report = ["## bench_send", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick, "sink": SINK}
    ok = True
    with h.scratch(args.workdir) as work:
        ct = write_study(work / "ct", images_per_series=ct_count)
        small = write_study(work / "small", images_per_series=small_count, rows=64, columns=64)
        sections = [
            ("ct", f"{ct_count} CT images 512x512x16 bit, one association", ct, 1.0, "img/s"),
            ("small", f"{small_count} images 64x64, one association", small, None, "msg/s"),
        ]
        profiles = h.profile_dir(args)
        senders: list[h.Contender] = []
        for key, title, files, target, unit in sections:
            folder = files[0].parent
            ours = h.check_command(
                "aiodicom store",
                h.aiodicom_command(
                    "store", h.LOCALHOST, "{port}", str(folder), "--aec", "SINK",
                    "--aet", "AIODICOM", profile=profiles is not None,
                ),
                h.aiodicom_command("store", "--help"),
            )  # fmt: skip
            if profiles is not None:
                ours.profile_dir = profiles / f"send-{key}"
                ours.profile_dir.mkdir(exist_ok=True)
            senders = [ours, h.Contender("storescu", h.storescu(folder, called="SINK"))]
            h.apply_only(senders, args.only)
            print(f"{title}:", file=sys.stderr)

            def measure(c: h.Contender, r: int, files: list[Path] = files) -> h.Run:
                return h.measure_sender(
                    c,
                    SINK,
                    round_=r,
                    items=len(files),
                    payload_bytes=h.total_size(files),
                    workdir=work,
                )

            runs = h.run_rounds(senders, rounds, measure)
            ok = ok and all(r.ok for r in runs)
            summaries = h.summarize(runs, [c.name for c in senders if c.available])
            value = h.compare(
                summaries, "aiodicom store vs storescu", "aiodicom store", "storescu", target
            )
            report += [
                h.table(title, summaries, unit),
                "",
                h.ratio_table([value]),
                "",
            ]
            if profiles is not None:
                report += [h.profile_report(senders, rounds), ""]
            payload[key] = {
                "title": title,
                "commands": {c.name: c.command for c in senders},
                "runs": runs,
                "summary": summaries,
                "ratio": value,
            }
    if senders and senders[0].available:
        startup = h.startup_seconds(h.aiodicom_command("store", "--help"))
        payload["aiodicom_startup_s"] = startup
        report += [
            f"Start-up of the aiodicom CLI (`aiodicom store --help`, median of 3): "
            f"{startup:.3f} s, included in its wall times above (storescu starts in ms).",
            "",
        ]
    note = h.unavailable_note(senders)
    if note:
        report += [note, ""]
    report.append("Sink: `TCP_NODELAY=1 storescp --ignore -aet SINK PORT` (a fresh one per run).")
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_send', args.results_dir, payload)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
