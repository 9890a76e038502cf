"""Serving Query/Retrieve: ``aiodicom qrscp`` vs DCMTK ``dcmqrscp`` on the same files.

Both servers hold the same archive: one CT study to retrieve (500 images of 512x512 by
default) and a query set of small instances (10,000 by default, in studies of 100). The
clients are DCMTK's, the same for both servers, and what is measured is their wall time:

- C-GET of the study (``getscu --ignore``: received, not written);
- C-MOVE of the study to a DCMTK ``storescp --ignore`` both servers know as SINK;
- C-FIND at study level with a wildcard on PatientName over the whole archive
  (responses/s: one response per study).

The servers run for the whole benchmark (their start-up and indexing are not measured;
the time ``aiodicom qrscp`` took to index the folder at start is reported beside).
Targets (issue 10): C-GET and C-MOVE >= 1.0x dcmqrscp.

    python benchmarks/bench_qrscp.py [--quick] [--rounds N] [--images N] [--find-instances N]
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402
from peers import dcmqrscp, run_peer, storescp  # noqa: E402

SINK_AET = "SINK"


def _archive(work: Path, images: int, find_instances: int, size: int) -> tuple[list[Path], str, int]:
    """The files (retrieve study first), the retrieve study's UID and the number of studies."""
    import pydicom

    study = write_study(work / "archive" / "retrieve", patient_id="RETRIEVE", images_per_series=images,
                        rows=size, columns=size)  # fmt: skip
    uid = str(pydicom.dcmread(study[0], stop_before_pixels=True).StudyInstanceUID)
    files = list(study)
    per_study = min(100, find_instances)
    count = max(1, find_instances // per_study)
    for index in range(count):
        files += write_study(work / "archive" / f"find{index:04d}", patient_id=f"FIND{index:04d}",
                             images_per_series=per_study, rows=8, columns=8)  # fmt: skip
    return files, uid, count + 1


def _client(name: str, command: list[str], work: Path, round_: int, items: int, payload: int, server_pid: int,
            success: str | None) -> h.Run:
    """Run one DCMTK client to completion; the server's CPU is the delta over the run.

    ``success`` is what the client prints (with ``-v``) when the final status is success.
    """
    log_path = work / f"{name.replace(' ', '_')}-{round_}.log"
    before = h.cpu_seconds_so_far(server_pid)
    with open(log_path, "w") as log:
        began = time.perf_counter()
        process = h.popen(command, log)
        reaped = h.reap(process, timeout=600)
        wall = time.perf_counter() - began
    cpu = h.cpu_seconds_so_far(server_pid) - before
    output = log_path.read_text(errors="replace")
    error = ""
    if reaped.returncode != 0:
        error = f"exit {reaped.returncode}: {output[-500:]}"
    elif success is not None and success not in output:
        error = f"no success reported: {output[-500:]}"
    return h.Run(name, round_, not error, wall, items, payload, cpu, float("nan"), error)


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="images in the retrieved study [500; quick 20]")
    p.add_argument("--find-instances", type=int, default=None, help="instances of the query set [10000; quick 200]")
    args = p.parse_args()
    h.require_dcmtk()
    rounds = args.rounds or (1 if args.quick else 5)
    images = args.images or (20 if args.quick else 500)
    find_instances = args.find_instances or (200 if args.quick else 10_000)
    size = 64 if args.quick else 512
    report = ["## bench_qrscp", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick, "images": images,
                                  "find_instances": find_instances}  # fmt: skip
    ok = True
    with h.scratch(args.workdir) as work, ExitStack() as stack:
        files, study_uid, studies = _archive(work, images, find_instances, size)
        study_bytes = h.total_size(files[:images])
        sink = stack.enter_context(storescp(aet=SINK_AET, args=("--ignore",)))
        destinations = {SINK_AET: (h.LOCALHOST, sink.port)}
        dcmtk_server = stack.enter_context(
            dcmqrscp(work / "dcmqrscp", files=files, destinations=destinations, max_pdu=131072)
        )
        port = h.free_port()
        began = time.perf_counter()
        ours = stack.enter_context(run_peer(h.aiodicom_command(
            "qrscp", "--port", str(port), "--aet", "QRSCP", "--storage", str(work / "archive"),
            f"--destination={SINK_AET}@{h.LOCALHOST}:{sink.port}",
        ), port, ready_timeout=600))  # fmt: skip
        payload["aiodicom_index_start_s"] = time.perf_counter() - began
        servers = {"aiodicom qrscp": ours, "dcmqrscp": dcmtk_server}
        retrieve_keys = ["-S", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
        workloads = [
            ("get", f"C-GET of {images} images {size}x{size}, getscu --ignore", images, study_bytes, 1.0, "img/s",
             ["getscu", "-v", "--ignore", *retrieve_keys], "C-GET Response (Success)"),
            ("move", f"C-MOVE of {images} images {size}x{size} to storescp --ignore", images, study_bytes, 1.0,
             "img/s", ["movescu", "-v", "-aem", SINK_AET, *retrieve_keys], "Final Move Response (Success)"),
            ("find", f"C-FIND, study level, PatientName=* over {len(files)} instances ({studies} studies)",
             studies, 0, None, "responses/s", ["findscu", "-S", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY",
                                               "-k", "PatientName=*", "-k", "StudyInstanceUID", "-k", "PatientID"],
             None),
        ]  # fmt: skip
        for key, title, items, size_bytes, target, unit, client, success in workloads:
            contenders = [h.Contender(name, client) for name in servers]
            h.apply_only(contenders, args.only)
            print(f"{title}:", file=sys.stderr)

            def measure(c: h.Contender, r: int, client: list[str] = client, items: int = items,
                        size_bytes: int = size_bytes, key: str = key, success: str | None = success) -> h.Run:
                server = servers[c.name]
                command = [*client, h.LOCALHOST, str(server.port)]
                return _client(f"{key} {c.name}", command, work, r, items, size_bytes, server.pid, success)

            runs = h.run_rounds(contenders, rounds, measure)
            for run in runs:  # named by workload in the logs, by server in the tables
                run.contender = run.contender.split(" ", 1)[1]
            ok = ok and all(r.ok for r in runs)
            summaries = h.summarize(runs, [c.name for c in contenders if c.available])
            ratio = h.compare(summaries, f"{key}: aiodicom qrscp vs dcmqrscp", "aiodicom qrscp", "dcmqrscp", target)
            report += [h.table(title, summaries, unit), "", h.ratio_table([ratio]), ""]
            payload[key] = {"title": title, "client": client, "runs": runs, "summary": summaries, "ratio": ratio}
    report += [
        f"`aiodicom qrscp` was listening {payload['aiodicom_index_start_s']:.2f} s after its start, "
        f"indexing {len(files)} files (not included above).",
        "CPU s is the server's CPU over the client's run (dcmqrscp forks per association: "
        "its children are counted while they live). Peak RSS is not measured here.",
        "",
    ]
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_qrscp', args.results_dir, payload)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
