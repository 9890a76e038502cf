"""One large multi-frame instance (~1 GiB) from DCMTK storescu into each receiver.

Measures receiver peak RSS (target for ``aiodicom receive``: < 150 MB, i.e. the data
set is streamed to disk, never held whole) and throughput. References: DCMTK
``storescp -od`` (defaults) and ``storescp -od +B`` (bit-preserving, writes as it reads).
The stored file must hold the sent data set byte for byte.

    python benchmarks/bench_large.py [--quick] [--rounds N] [--size-mb N]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_large_multiframe  # noqa: E402

RSS_TARGET_MB = 150.0


def check_large(sent: Path) -> Callable[[Path], str]:
    def check(out: Path) -> str:
        received = h.files_under(out)
        if len(received) != 1:
            return f"{len(received)} files stored, 1 sent"
        if not h.same_dataset_streamed(received[0], sent):
            return "the stored data set differs from the sent one"
        return ""

    return check


def main() -> int:
    cli = h.parser(__doc__.splitlines()[0])
    cli.add_argument("--size-mb", type=int, default=None, help="instance size (default 1024)")
    args = cli.parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (1 if args.quick else 3)
    size_mb = args.size_mb or (32 if args.quick else 1024)
    contenders = h.common_contenders(h.profile_dir(args))
    receivers = [
        contenders["aiodicom"],
        contenders["storescp"],
        h.Contender(
            "storescp +B",
            ["storescp", "-od", "{out}", "+B", "{port}"],
            contenders["storescp"].available,
            contenders["storescp"].why_unavailable,
        ),
    ]
    h.apply_only(receivers, args.only)
    ok = True
    with h.scratch(args.workdir) as work:
        source = write_large_multiframe(work / "large" / "large.dcm", size_bytes=size_mb << 20)
        size = source.stat().st_size
        title = f"one multi-frame instance of {size / 2**20:.0f} MiB"
        print(f"{title}:", file=sys.stderr)

        def measure(c: h.Contender, r: int) -> h.Run:
            return h.measure_receiver(
                c,
                [h.storescu(source.parent)],
                round_=r,
                items=1,
                payload_bytes=size,
                workdir=work,
                check=check_large(source),
            )

        runs = h.run_rounds(receivers, rounds, measure)
        ok = all(r.ok for r in runs)
    summaries = h.summarize(runs, [c.name for c in receivers if c.available])
    ours = summaries.get("aiodicom")
    rss = ours.peak_rss_mb if ours else float("nan")
    rss_met = "n/a" if rss != rss else ("yes" if rss < RSS_TARGET_MB else "NO")
    report = [
        "## bench_large",
        "",
        h.table(title, summaries, "img/s"),
        "",
        h.ratio_table([h.compare(summaries, "aiodicom vs storescp", "aiodicom", "storescp")]),
        "",
        f"aiodicom receive peak RSS: {rss:.1f} MB (target < {RSS_TARGET_MB:.0f} MB: {rss_met})",
        "",
    ]
    note = h.unavailable_note(receivers)
    if note:
        report += [note, ""]
    if args.profile:
        report += [h.profile_report(receivers, rounds), ""]
    report.append("Sender: `TCP_NODELAY=1 storescu -aec AIODICOM +sd +r 127.0.0.1 PORT DIR`.")
    print("\n".join(report))
    payload = {
        "rounds": rounds,
        "quick": args.quick,
        "size_bytes": size,
        "commands": {c.name: c.command for c in receivers},
        "runs": runs,
        "summary": summaries,
        "aiodicom_peak_rss_mb": rss,
        "rss_target_mb": RSS_TARGET_MB,
    }
    print(f"\nraw numbers: {h.save('bench_large', args.results_dir, payload)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
