"""Retrieving a study: ``aiodicom get``/``move --to-self`` vs DCMTK ``getscu``/``movescu``.

One study (500 CT images 512x512 by default) is served by DCMTK ``dcmqrscp`` and by
Orthanc (uploaded through its REST API), each started once with its own configuration.
Every contender retrieves the whole study into a fresh folder and writes every file:
C-GET on the query association, and C-MOVE to itself (the SCU listens on a port the
archive knows as the move destination ``MOVESELF``, as ``movescu --port`` does). The
wall time is the SCU's, from its start to its exit; every run is checked to have
written all the images. Target (issue 10): aiodicom >= 1.0x DCMTK on both.

    python benchmarks/bench_retrieve.py [--quick] [--rounds N] [--images N] [--only NAMES]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402

#: The AE title both SCUs take for a move to themselves; the archives know it at MOVE_PORT.
MOVE_AE = "MOVESELF"


@dataclass
class Archive:
    name: str
    port: int
    aet: str


@contextmanager
def archives(stack: ExitStack, work: Path, files: list[Path], move_port: int, only: set[str]) -> Iterator[list[Archive]]:
    """dcmqrscp and Orthanc serving ``files``, each knowing ``MOVESELF`` at ``move_port``."""
    from peers import dcmqrscp

    found = []
    if "dcmqrscp" in only and h.dcmtk("dcmqrscp") is not None:
        peer = stack.enter_context(dcmqrscp(work / "dcmqrscp", files=files, max_pdu=131072,
                                            destinations={MOVE_AE: (h.LOCALHOST, move_port)}))  # fmt: skip
        found.append(Archive("dcmqrscp", peer.port, "QRSCP"))
    if "orthanc" in only and h.ORTHANC is not None:
        from qr.orthanc import orthanc

        server = stack.enter_context(orthanc(work / "orthanc", modalities={MOVE_AE: (MOVE_AE, h.LOCALHOST, move_port)}))
        started = time.perf_counter()
        server.upload(files)
        print(f"  uploaded {len(files)} files to Orthanc in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        found.append(Archive("orthanc", server.port, server.aet))
    yield found


def contenders(archive: Archive, study_uid: str, move_port: int) -> list[h.Contender]:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    dcmtk_keys = ["-k", "0008,0052=STUDY", "-k", f"0020,000D={study_uid}"]
    peer = [h.LOCALHOST, str(archive.port)]
    ours_get = h.check_command(
        "aiodicom get", h.aiodicom_command("get", *peer, "--aec", archive.aet, *keys, "--output-dir", "{out}"),
        h.aiodicom_command("get", "--help"),
    )  # fmt: skip
    ours_move = h.check_command(
        "aiodicom move",
        h.aiodicom_command("move", *peer, "--aec", archive.aet, "--aet", MOVE_AE, *keys, "--to-self",
                           "--port", str(move_port), "--output-dir", "{out}"),
        h.aiodicom_command("move", "--help"),
    )  # fmt: skip
    getscu = h.Contender("getscu", ["getscu", "-aec", archive.aet, "-S", *dcmtk_keys, "-od", "{out}", *peer])
    movescu = h.Contender("movescu", ["movescu", "-aet", MOVE_AE, "-aec", archive.aet, "-aem", MOVE_AE,
                                      "--port", str(move_port), "-S", *dcmtk_keys, "-od", "{out}", *peer])  # fmt: skip
    for tool in (getscu, movescu):
        if h.dcmtk(tool.command[0]) is None:
            tool.available, tool.why_unavailable = False, f"DCMTK {tool.command[0]} not on PATH"
    return [ours_get, getscu, ours_move, movescu]


def measure(contender: h.Contender, round_: int, *, work: Path, files: list[Path], size: int) -> h.Run:
    """Run one SCU into a fresh folder; it must exit 0 having written every image."""
    out = h.output_folder(work / "out", f"{contender.name.replace(' ', '_')}-{round_}")
    log_path = work / f"{contender.name.replace(' ', '_')}-{round_}.log"
    error = ""
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = h.popen(contender.render(round_, out=out), log, watch_rss=True)
        reaped = h.reap(process, timeout=900)
        wall = time.perf_counter() - started
    written = [p for p in out.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)]
    if reaped.returncode != 0:
        error = f"exited with {reaped.returncode}"
    elif len(written) != len(files):
        error = f"wrote {len(written)} files of {len(files)}"
    if error:
        error += "\n" + log_path.read_text()[-2000:]
    h.retire(out)
    return h.Run(contender.name, round_, not error, wall, len(files), size, reaped.cpu_s, reaped.peak_rss_mb,
                 error, reaped.rusage_maxrss_mb)  # fmt: skip


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="images in the study [500; 20 with --quick]")
    p.add_argument("--archives", default="dcmqrscp,orthanc", help="which archives serve [%(default)s]")
    args = p.parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (1 if args.quick else 5)
    count = args.images or (20 if args.quick else 500)
    rows = 64 if args.quick else 512
    report = ["## bench_retrieve", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick, "images": count, "rows": rows}
    ok = True
    with h.scratch(args.workdir) as work, ExitStack() as stack:
        files = write_study(work / "study", images_per_series=count, rows=rows, columns=rows)
        size = h.total_size(files)
        study_uid = _study_uid(files[0])
        move_port = h.free_port()
        wanted = {name.strip() for name in args.archives.split(",")}
        with archives(stack, work, files, move_port, wanted) as served:
            if not served:
                sys.exit(f"none of the archives {sorted(wanted)} is installed")
            for archive in served:
                title = f"{count} CT images {rows}x{rows} from {archive.name}"
                print(f"{title}:", file=sys.stderr)
                scus = contenders(archive, study_uid, move_port)
                h.apply_only(scus, args.only)
                runs = h.run_rounds(scus, rounds, lambda c, r: measure(c, r, work=work, files=files, size=size))
                ok = ok and all(r.ok for r in runs)
                summaries = h.summarize(runs, [c.name for c in scus if c.available])
                ratios = [
                    h.compare(summaries, f"C-GET from {archive.name}: aiodicom get vs getscu",
                              "aiodicom get", "getscu", 1.0),
                    h.compare(summaries, f"C-MOVE from {archive.name}: aiodicom move vs movescu",
                              "aiodicom move", "movescu", 1.0),
                ]  # fmt: skip
                report += [h.table(title, summaries), "", h.ratio_table(ratios), ""]
                note = h.unavailable_note(scus)
                if note:
                    report += [note, ""]
                payload[archive.name] = {
                    "title": title, "commands": {c.name: c.command for c in scus},
                    "runs": runs, "summary": summaries, "ratios": ratios,
                }  # fmt: skip
    report.append("Every SCU writes every file; its wall time includes its start-up (the aiodicom CLI's "
                  "is ~0.1-0.2 s with its bytecode compiled first, as an install has; DCMTK's a few ms). "
                  "On a loaded machine the wall time follows the CPU time: compare the CPU column too.")  # fmt: skip
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_retrieve', args.results_dir, payload)}")
    return 0 if ok else 1


def _study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


if __name__ == "__main__":
    sys.exit(main())
