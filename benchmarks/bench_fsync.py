"""Durability: ``aiodicom receive`` with and without ``--fsync``.

With ``--fsync`` every file and its folder are flushed to disk before Success is sent,
in batches shared by concurrent associations (group commit, on the event loop, no
threads). Workloads: small images on 1 and on 8 concurrent associations (DCMTK
storescu), so the cost per file and what batching saves are both visible. Run it with
``--workdir`` on the disk you care about: on tmpfs an fsync costs nothing.

    python benchmarks/bench_fsync.py [--quick] [--rounds N] [--workdir DIR]
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
    rounds = args.rounds or (1 if args.quick else 3)
    per_layout = 40 if args.quick else 800
    layouts = [(1, per_layout), (8, per_layout // 8)]
    default = h.common_contenders()["aiodicom"]
    durable = h.Contender(
        "aiodicom --fsync",
        [*default.command, "--fsync"],
        default.available,
        default.why_unavailable,
    )
    receivers = [default, durable]
    h.apply_only(receivers, args.only)
    report = ["## bench_fsync", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick}
    ok = True
    with h.scratch(args.workdir) as work:
        for associations, per_association in layouts:
            folders = [work / f"a{associations}" / f"{i:02d}" for i in range(associations)]
            files = [
                path
                for i, folder in enumerate(folders)
                for path in write_study(folder, patient_id=f"FS{i:02d}", images_per_series=per_association,
                                        rows=64, columns=64, seed=i)
            ]  # fmt: skip
            title = f"{associations} association(s) x {per_association} images 64x64"
            print(f"{title}:", file=sys.stderr)

            def measure(
                c: h.Contender, r: int, files: list[Path] = files, folders: list[Path] = folders
            ) -> h.Run:
                return h.measure_receiver(
                    c, [h.storescu(folder) for folder in folders], round_=r, items=len(files),
                    payload_bytes=h.total_size(files), workdir=work, check=h.check_stored(files),
                )  # fmt: skip

            runs = h.run_rounds(receivers, rounds, measure)
            summaries = h.summarize(runs, [c.name for c in receivers if c.available])
            ok = ok and all(r.ok for r in runs)
            report += [h.table(title, summaries, "img/s"), ""]
            payload[f"a{associations}"] = {"title": title, "runs": runs, "summary": summaries}
    report.append(
        "Senders: `TCP_NODELAY=1 storescu -aec AIODICOM +sd +r 127.0.0.1 PORT DIR`, one per association."
    )
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_fsync', args.results_dir, payload)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
