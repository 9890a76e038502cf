"""Pipelines (issue 9): throughput, event-loop responsiveness, release-to-process delay.

(a) Throughput. 20 patients x 100 CT images 512x512 over 4 concurrent associations (one
    DCMTK ``storescu`` per 5 patients, all started at once) into ``aiodicom receive``
    (files only), the ``Trivial`` pipeline of ``_pipeline_node.py`` (disk storage,
    per-patient validation on release, a ``process`` that notes the patient), and, for the
    record, a DicomNode-style pynetdicom receiver that decodes and keeps each data set
    (``_pynetdicom_node.py``). Images/s from the senders' wall time; peak RSS of the
    receiver (with its children). Target: pipeline >= 0.9x ``aiodicom receive``, each
    patient processed exactly once (checked), peak RSS < 200 MB.
(b) Responsiveness. The ``Heavy`` pipeline (numpy grinder and a numpy ``process``, both in
    worker processes through ``aiodicom.offload``) gets 4 patients on one association;
    their release starts 4 heavy processes at once while another 100-image study arrives.
    Meanwhile our client sends C-ECHO every 10 ms on an association of its own. Target:
    p99 round trip < 50 ms while the 4 patients are processed.
(c) Release to ``process()``. One 500-image patient sent by our client; the delay from the
    moment its association is released to ``process()`` starting (wall clocks of the two
    processes, same machine), median over the rounds. Target: < 50 ms.

    python benchmarks/bench_pipeline.py [--quick] [--rounds N] [--only NAMES] [--parts a,b,c] [--shape P,I,S]

``--profile`` runs ``aiodicom receive`` and the one-process pipeline of (a) under cProfile
(profiles in RESULTS_DIR/profiles, the top functions in the report): where the
pipeline's CPU per image goes beyond ``receive``'s, in call counts the load does not move.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402
from _pipeline_node import FINISHED_LOG, PROCESSED_LOG  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
NODE = str(BENCHMARKS / "_pipeline_node.py")
PYNETDICOM_NODE = str(BENCHMARKS / "_pynetdicom_node.py")


def processed(data: Path, name: str = PROCESSED_LOG) -> list[tuple[float, str, int]]:
    """``processed.log`` (or ``finished.log``) of a node's data directory: (time, patient, instances)."""
    try:
        lines = (data / name).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(float(t), patient, int(n)) for t, patient, n in (line.split() for line in lines)]


# --- (a) throughput, and the DicomNode-style baseline -------------------------------------


def check_pipeline(patients: dict[str, int]) -> Callable[[Path], str]:
    """Every patient processed exactly once, with all its instances; nothing left behind."""

    def check(out: Path) -> str:
        seen = processed(out)
        times = Counter(patient for _, patient, _ in seen)
        if times != Counter(dict.fromkeys(patients, 1)):
            twice = sorted(p for p, n in times.items() if n > 1)
            missing = sorted(set(patients) - set(times))
            return f"processed {len(seen)} times for {len(patients)} patients (twice: {twice}, never: {missing})"
        wrong = {p: n for _, p, n in seen if n != patients[p]}
        if wrong:
            return f"process saw the wrong instance counts: {wrong}"
        left = [p for p in (out / "incoming").rglob("*") if p.is_file()] + list((out / "quarantine").rglob("*"))
        return f"{len(left)} files left in incoming/ or quarantine/" if left else ""

    return check


def check_kept(patients: dict[str, int]) -> Callable[[Path], str]:
    """The pynetdicom node kept every data set of every patient (its ``kept.json``)."""

    def check(out: Path) -> str:
        import json

        try:
            kept = json.loads((out / "kept.json").read_text())
        except (OSError, ValueError) as exc:
            return f"no kept.json: {exc}"
        return "" if kept == patients else f"kept {sum(kept.values())} of {sum(patients.values())} data sets"

    return check


def node_command(*args: str, profile: bool = False) -> list[str]:
    """``_pipeline_node.py ARGS``, under cProfile writing ``{profile}`` when asked."""
    profiler = ["-m", "cProfile", "-o", "{profile}"] if profile else []
    return [sys.executable, *profiler, NODE, *args]


def throughput(
    work: Path, quick: bool, rounds: int, only: str | None, shape: str | None, profiles: Path | None = None
) -> tuple[list[str], dict[str, object], bool]:
    patients_per_association, images, size = (1, 4, 32) if quick else (5, 100, 512)
    if shape:  # PATIENTS_PER_ASSOCIATION,IMAGES,SIZE
        patients_per_association, images, size = (int(v) for v in shape.split(","))
    associations = 4
    root = work / "throughput"
    folders = [root / f"a{i}" for i in range(associations)]
    patients: dict[str, int] = {}
    files: list[Path] = []
    for a, folder in enumerate(folders):
        for p in range(patients_per_association):
            patient = f"PIPE{a}{p:02d}"
            files += write_study(folder / patient, patient_id=patient, images_per_series=images, rows=size,
                                 columns=size, seed=a * 100 + p)  # fmt: skip
            patients[patient] = images
    title = (f"{len(patients)} patients x {images} images {size}x{size} over {associations} concurrent "
             f"associations ({len(files)} images)")  # fmt: skip
    print(f"{title}:", file=sys.stderr)
    receive = h.common_contenders(profiles)["aiodicom"]
    receive.name = "aiodicom receive"
    profile = profiles is not None
    pipeline = h.Contender("aiodicom pipeline", node_command("Trivial", "{port}", "{out}", profile=profile),
                           profile_dir=profiles)  # fmt: skip
    pipeline_workers = h.Contender("aiodicom pipeline --workers 2",
                                   node_command("Trivial", "{port}", "{out}", "--workers", "2"))  # fmt: skip
    pynetdicom = h.check_command("pynetdicom keep (DicomNode-style)", [sys.executable, PYNETDICOM_NODE, "{port}", "{out}"],
                                 [sys.executable, "-c", "import pynetdicom"])  # fmt: skip
    contenders = [receive, pipeline, pipeline_workers, pynetdicom]
    h.apply_only(contenders, only)
    checks = {receive.name: h.check_stored(files), pipeline.name: check_pipeline(patients),
              pipeline_workers.name: check_pipeline(patients), pynetdicom.name: check_kept(patients)}  # fmt: skip
    senders = [h.storescu(folder) for folder in folders]

    def measure(c: h.Contender, r: int) -> h.Run:
        return h.measure_receiver(c, senders, round_=r, items=len(files), payload_bytes=h.total_size(files),
                                  workdir=work, check=checks[c.name])  # fmt: skip

    runs = h.run_rounds(contenders, rounds, measure)
    summaries = h.summarize(runs, [c.name for c in contenders if c.available])
    ratios = [
        h.compare(summaries, "pipeline vs aiodicom receive", pipeline.name, receive.name, 0.9),
        h.compare(summaries, "pipeline vs DicomNode-style pynetdicom", pipeline.name, pynetdicom.name),
        h.compare(summaries, "pipeline --workers 2 vs pipeline", pipeline_workers.name, pipeline.name),
    ]
    rss = summaries.get(pipeline.name)
    rss_line = f"Pipeline peak RSS (median): {h._fmt(rss.peak_rss_mb, 1)} MB (target < 200 MB)." if rss else ""
    report = [h.table(title, summaries), "", h.ratio_table(ratios), "", rss_line, ""]
    if profiles is not None:  # cProfile slows both alike; its call counts do not depend on the load
        report += [h.profile_report([receive, pipeline], rounds), ""]
    note = h.unavailable_note(contenders)
    if note:
        report += [note, ""]
    payload = {"title": title, "commands": {c.name: c.command for c in contenders}, "sender": h.storescu(root / "aN"),
               "runs": runs, "summary": summaries, "ratios": ratios}  # fmt: skip
    return report, payload, all(r.ok for r in runs)


# --- (b) responsiveness and (c) release to process() ----------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def echo_loop(port: int, rtts: list[tuple[float, float]], interval: float = 0.01) -> None:
    """C-ECHO every ``interval`` seconds on one association until cancelled: (wall time sent, rtt)."""
    import anyio

    import aiodicom

    async with aiodicom.connect(h.LOCALHOST, port, called_ae="AIODICOM", calling_ae="ECHO") as assoc:
        while True:
            sent, started = time.time(), time.perf_counter()
            (await assoc.echo()).raise_for_status()
            rtts.append((sent, time.perf_counter() - started))
            await anyio.sleep(interval)


async def run_storescu(folder: Path, port: int) -> None:
    import anyio

    command = [part.format(port=port) for part in h.storescu(folder)]
    command[0] = h.dcmtk(command[0]) or command[0]
    await anyio.run_process(command, env=h.env(), check=True)


async def wait_processed(
    data: Path, count: int, timeout: float, poll: float = 0.005, name: str = PROCESSED_LOG
) -> list[tuple[float, str, int]]:
    """Wait until ``count`` lines are in the node's ``name`` log (bounded by ``timeout``)."""
    import anyio

    with anyio.move_on_after(timeout):
        while len(seen := processed(data, name)) < count:
            await anyio.sleep(poll)
        return seen
    raise RuntimeError(f"{len(processed(data, name))} of {count} patients in {name} after {timeout} s")


def start_node(kind: str, data: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a node of ``_pipeline_node.py`` on a free port; return it once it listens."""
    port = h.free_port()
    data.mkdir(parents=True)
    log = log_path.open("w")
    process = h.popen([sys.executable, NODE, kind, str(port), str(data)], log, watch_rss=True)
    h.wait_for_port(port, process=process, timeout=h.READY_TIMEOUT)
    return process, port


def responsiveness(work: Path, quick: bool) -> tuple[list[str], dict[str, object], bool]:
    import os

    import anyio

    import aiodicom

    images, size, heavy_seconds = (4, 32, 0.2) if quick else (100, 256, 3.0)
    os.environ["BENCH_HEAVY_SECONDS"] = str(heavy_seconds)  # the node reads it (h.env() copies ours)
    root = work / "responsiveness"
    four = root / "four"
    for p in range(4):
        write_study(four / f"HEAVY{p}", patient_id=f"HEAVY{p}", images_per_series=images, rows=size, columns=size, seed=p)
    other = write_study(root / "other", patient_id="ARRIVING", images_per_series=images, rows=512 if not quick else 64,
                        columns=512 if not quick else 64)  # fmt: skip
    title = (f"C-ECHO round trips while 4 patients x {images} images {size}x{size} run {heavy_seconds:g} s of "
             f"offloaded numpy each and a {len(other)}-image study arrives")  # fmt: skip
    print(f"{title}:", file=sys.stderr)
    data = root / "data"
    process, port = start_node("Heavy", data, root / "node.log")
    rtts: list[tuple[float, float]] = []
    window: dict[str, float] = {}

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(echo_loop, port, rtts)
            await anyio.sleep(0.5)  # idle round trips first
            window["sending"] = time.time()
            await run_storescu(four, port)  # 4 patients, released together: 4 processes at once
            window["released"] = time.time()
            await run_storescu(root / "other", port)  # another study arrives while they run
            finished = await wait_processed(data, 5, timeout=600, name=FINISHED_LOG)
            window["done"] = max(t for t, patient, _ in finished if patient.startswith("HEAVY"))
            group.cancel_scope.cancel()

    ok, error = True, ""
    try:
        aiodicom.run(main)
    except Exception as exc:  # noqa: BLE001 - reported as a failed run
        ok, error = False, f"{type(exc).__name__}: {exc}"
    reaped = h.stop(process)
    idle = [rtt for sent, rtt in rtts if sent < window.get("sending", 0)]
    loaded = [rtt for sent, rtt in rtts if window.get("released", 0) <= sent <= window.get("done", 0)]
    p99 = percentile(loaded, 99) * 1000
    results = {
        "idle_echoes": len(idle), "idle_p50_ms": percentile(idle, 50) * 1000,
        "loaded_echoes": len(loaded), "loaded_p50_ms": percentile(loaded, 50) * 1000,
        "loaded_p99_ms": p99, "loaded_max_ms": max(loaded, default=float("nan")) * 1000,
        "processed": len(processed(data)), "node_peak_rss_mb": reaped.peak_rss_mb, "ok": ok, "error": error,
    }  # fmt: skip
    ok = ok and len(loaded) > 0 and results["processed"] == 5 and len(processed(data, FINISHED_LOG)) == 5
    met = "n/a" if p99 != p99 else ("yes" if p99 < 50 else "NO")
    report = [
        f"### {title}", "",
        "| echoes idle | idle p50 ms | echoes under load | p50 ms | p99 ms | max ms | target p99 | met |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(idle)} | {h._fmt(results['idle_p50_ms'])} | {len(loaded)} | {h._fmt(results['loaded_p50_ms'])} | "
        f"{h._fmt(p99)} | {h._fmt(results['loaded_max_ms'])} | < 50 ms | {met} |", "",
    ]  # fmt: skip
    if error:
        report += [f"- failed: {error}", ""]
    return report, {"title": title, "results": results}, ok


def release_to_process(work: Path, quick: bool, rounds: int) -> tuple[list[str], dict[str, object], bool]:

    import aiodicom

    images, size = (10, 32) if quick else (500, 512)
    root = work / "release"
    title = f"Release to process() starting, one patient of {images} images {size}x{size} per round"
    print(f"{title}:", file=sys.stderr)
    data = root / "data"
    root.mkdir(parents=True)
    process, port = start_node("Trivial", data, root / "node.log")
    delays: list[float] = []
    ok, error = True, ""

    async def one(round_: int) -> float:
        patient = f"LATENCY{round_}"
        paths = write_study(root / patient, patient_id=patient, images_per_series=images, rows=size, columns=size)
        async with aiodicom.connect(h.LOCALHOST, port, called_ae="AIODICOM") as assoc:
            async for path, status in assoc.store_files(paths):
                if not isinstance(status, aiodicom.Status) or not status.is_success:
                    raise RuntimeError(f"{path.name}: {status}")
            released = time.time()  # leaving the block sends A-RELEASE-RQ
        seen = await wait_processed(data, round_ + 1, timeout=60, poll=0.002)
        (started,) = [t for t, p, _ in seen if p == patient]
        return started - released

    async def main() -> None:
        for round_ in range(rounds):
            delay = await one(round_)
            delays.append(delay)
            print(f"  round {round_ + 1}/{rounds}: {delay * 1000:.1f} ms", file=sys.stderr, flush=True)

    try:
        aiodicom.run(main)
    except Exception as exc:  # noqa: BLE001 - reported as a failed run
        ok, error = False, f"{type(exc).__name__}: {exc}"
    h.stop(process)
    median = statistics.median(delays) * 1000 if delays else float("nan")
    met = "n/a" if median != median else ("yes" if median < 50 else "NO")
    report = [
        f"### {title}", "",
        "| rounds | median ms | min ms | max ms | target | met |", "|---|---|---|---|---|---|",
        f"| {len(delays)} | {h._fmt(median, 1)} | {h._fmt(min(delays, default=float('nan')) * 1000, 1)} | "
        f"{h._fmt(max(delays, default=float('nan')) * 1000, 1)} | < 50 ms | {met} |", "",
    ]  # fmt: skip
    if error:
        report += [f"- failed: {error}", ""]
    return report, {"title": title, "delays_s": delays, "median_ms": median, "error": error}, ok and bool(delays)


def main() -> int:
    parser = h.parser(__doc__.splitlines()[0])
    parser.add_argument("--shape", default=None, metavar="P,I,S",
                        help="part a: P patients per association (4 associations), I images each, SxS pixels "
                        "(default 5,100,512; --quick 1,4,32)")  # fmt: skip
    parser.add_argument("--parts", default="a,b,c", help="which measurements: a (throughput and baseline), "
                        "b (responsiveness), c (release to process) [%(default)s]")  # fmt: skip
    args = parser.parse_args()
    h.require_dcmtk()
    parts = {p.strip() for p in args.parts.split(",")}
    rounds = args.rounds or (1 if args.quick else 3)
    report = ["## bench_pipeline", ""]
    payload: dict[str, object] = {"rounds": rounds, "quick": args.quick}
    ok = True
    with h.scratch(args.workdir) as work:
        steps = {
            "a": lambda: throughput(work, args.quick, rounds, args.only, args.shape, h.profile_dir(args)),
            "b": lambda: responsiveness(work, args.quick),
            "c": lambda: release_to_process(work, args.quick, max(rounds, 2 if args.quick else 5)),
        }
        for name in sorted(parts & steps.keys()):
            lines, data, good = steps[name]()
            report += lines
            payload[name] = data
            ok = ok and good
    print("\n".join(report))
    print(f"\nraw numbers: {h.save('bench_pipeline', args.results_dir, payload)}")
    return 0 if ok else 1


if __name__ == "__main__":  # guarded: offload's workers of an in-process pipeline would import it
    sys.exit(main())
