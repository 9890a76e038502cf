"""Receiving: DCMTK storescu -> each receiver, one association, files written to disk.

Workloads: 500 CT images of 512x512x16 bit (images/s, MB/s), and 2000 images of 64x64
(messages/s: per-message overhead dominates). Receivers: ``aiodicom receive`` (its
defaults, one process; and ``--workers 2``, the default on two cores), DCMTK ``storescp -od`` (defaults and ``-pdu 131072``) and pynetdicom's storescp
writing files. Targets (issue 3): >= 1.5x storescp, >= 1.0x storescp -pdu 131072,
>= 4x pynetdicom on CT; >= 1.0x storescp on small images. On CT, ``storescp --ignore -pdu
131072`` (receives and answers, writes nothing) is the floor a sender can feel: the
project's goal is a receiver within 5 % of it while writing files (reported, >= 0.95x).

    python benchmarks/bench_receive.py [--quick] [--rounds N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402


def main() -> int:
    args = h.parser(__doc__.splitlines()[0]).parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (1 if args.quick else 5)
    ct_count = 20 if args.quick else 500
    small_count = 50 if args.quick else 2000
    profiles = h.profile_dir(args)
    contenders = h.common_contenders(profiles)
    # The CLI's default on two cores: one association lands in one worker, so this
    # shows what the worker plumbing costs (issue 7: no regression).
    workers = h.concurrent_contenders(contenders)["aiodicom --workers 2"]
    contenders[workers.name] = workers
    storescp = contenders["storescp"]
    floor = h.Contender(
        "storescp --ignore -pdu 131072", ["storescp", "--ignore", "-pdu", "131072", "{port}"],
        storescp.available, storescp.why_unavailable,
    )  # fmt: skip
    contenders[floor.name] = floor
    h.apply_only(list(contenders.values()), args.only)
    report = ["## bench_receive", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick}
    ok = True
    with h.scratch(args.workdir) as work:
        ct = write_study(work / "ct", images_per_series=ct_count)
        small = write_study(work / "small", images_per_series=small_count, rows=64, columns=64)
        sections = [
            ("ct", f"{ct_count} CT images 512x512x16 bit, one association", ct,
             list(contenders.values()), "img/s"),
            ("small", f"{small_count} images 64x64, one association", small,
             [contenders["aiodicom"], contenders["storescp"]], "msg/s"),
        ]  # fmt: skip
        for key, title, files, receivers, unit in sections:
            print(f"{title}:", file=sys.stderr)
            folder = files[0].parent
            if profiles is not None:
                contenders["aiodicom"].profile_dir = profiles / f"receive-{key}"
                (profiles / f"receive-{key}").mkdir(exist_ok=True)

            def measure(c: h.Contender, r: int, files: list[Path] = files) -> h.Run:
                return h.measure_receiver(
                    c,
                    [h.storescu(files[0].parent)],
                    round_=r,
                    items=len(files),
                    payload_bytes=h.total_size(files),
                    workdir=work,
                    check=None if c is floor else h.check_stored(files),  # it writes nothing
                )

            runs = h.run_rounds(receivers, rounds, measure)
            summaries = h.summarize(runs, [c.name for c in receivers if c.available])
            ok = ok and all(r.ok for r in runs)
            report += [h.table(title, summaries, unit), ""]
            targets = (
                [("storescp", 1.5), ("storescp -pdu 131072", 1.0), ("pynetdicom storescp", 4.0)]
                if key == "ct"
                else [("storescp", 1.0)]
            )
            ratios = [
                h.compare(summaries, f"aiodicom vs {ref}", "aiodicom", ref, target)
                for ref, target in targets
            ]
            if key == "ct":
                ratios.append(h.compare(summaries, f"{workers.name} vs storescp", workers.name, "storescp", 1.5))
                ratios.append(h.compare(summaries, f"aiodicom (writing) vs {floor.name} (the sender's floor)",
                                        "aiodicom", floor.name, 0.95))  # fmt: skip
            report += [h.ratio_table(ratios), ""]
            if profiles is not None:
                report += [h.profile_report(receivers, rounds), ""]
            payload[key] = {
                "title": title,
                "commands": {c.name: c.command for c in receivers},
                "sender": h.storescu(folder),
                "runs": runs,
                "summary": summaries,
                "ratios": ratios,
            }
    note = h.unavailable_note(list(contenders.values()))
    if note:
        report += [note, ""]
    report.append("Sender: `TCP_NODELAY=1 storescu -aec AIODICOM +sd +r 127.0.0.1 PORT DIR`.")
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_receive', args.results_dir, payload)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
