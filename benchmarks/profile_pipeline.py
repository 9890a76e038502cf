"""CPU per image of the pipeline vs ``aiodicom receive``, in figures the machine's load moves little or not at all.

bench_pipeline.py (a) times images/s; on a shared machine that is noisy. This script runs
the same workload (P patients x I CT images SxS over 4 concurrent DCMTK ``storescu``
associations) into each receiver, in a process of its own, twice: the first pass warms up
(lazy imports, caches, first associations), the second is measured, from the end of the
first until every image is stored again (and, for the pipeline, every patient processed
and its batch done):

- CPU seconds (user, sys) from ``getrusage``, per image;
- with ``--profile``, cProfile (timed by CPU, not wall clock) of the second pass of a
  separate run: per-image call counts, which do not depend on the load at all, and the
  functions whose own CPU grows most from ``receive`` to the pipeline;
- with ``--valgrind``, user-space instructions per image (``valgrind --tool=cachegrind``):
  a run sending once is subtracted from one sending five times, so start-up and warm-up do
  not count (use ``--handlers``: over the network, the event loop's turns depend on timing). The kernel's share (file creation, writes) is not in these counts.

The receiver is built as the command line builds it: ``aiodicom receive --workers 1``
(its Server and FileWriter) and the ``Trivial`` pipeline of ``_pipeline_node.py``
(what ``aiodicom serve _pipeline_node:Trivial`` runs).

    python benchmarks/profile_pipeline.py [--handlers] [--shape P,I,S] [--rounds N] [--profile] [--top N] [--valgrind] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pstats
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

from aiodicom.synthetic import write_study  # noqa: E402

if TYPE_CHECKING:
    from aiodicom.pipeline import Pipeline

KINDS = ("receive", "pipeline")
#: Passes --valgrind measures (beyond the one it subtracts).
VALGRIND_PASSES = 4
ASSOCIATIONS = 4


# --- the receiving process -----------------------------------------------------------------


def _receive_server(port: int, out: Path) -> tuple[object, object]:
    """The Server of ``aiodicom receive --workers 1`` (same options, same handler)."""
    from aiodicom.cli import build_parser
    from aiodicom.cli.receive import Tally, _build_server

    args = build_parser("receive").parse_args(
        ["receive", "--port", str(port), "--aet", "AIODICOM", "--output-dir", str(out), "--workers", "1"]
    )
    out.mkdir(parents=True, exist_ok=True)
    server = _build_server(args, Tally(open(os.devnull, "w"), live=False), out)  # noqa: SIM115
    return server.serve, server.shutdown


def _idle(pipeline: Pipeline, processed: int) -> bool:
    """The pipeline processed ``processed`` batches and has nothing else to do."""
    status = pipeline.status()
    busy = status.queued or status.processing or status.exporting
    return status.counts.get("processed", 0) >= processed and not busy


def child(kind: str, port: int, out: Path, patients: int, profile: str) -> None:
    """Serve; at each SIGUSR1 (a pass of the senders is over), once the pass's work is done
    (for the pipeline: every patient processed), print the CPU used since listening. cProfile
    (with ``profile``) runs from the end of the first pass: a warm-up (lazy imports, caches)."""
    import cProfile
    import resource

    import anyio

    from aiodicom.cli.net import configure_cli_logging
    from aiodicom.runner import run

    configure_cli_logging("warning", "console")
    pipeline = None
    if kind == "receive":
        serve, shutdown = _receive_server(port, out)
    else:
        from _pipeline_node import Trivial

        pipeline = Trivial(port=port, data_directory=out, grace=60)
        serve, shutdown = pipeline.serve, pipeline.shutdown

    def done(passes: int) -> bool:
        return pipeline is None or _idle(pipeline, patients * passes)

    async def main() -> None:
        profiler = cProfile.Profile(time.process_time) if profile else None
        with anyio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
            async with anyio.create_task_group() as group:
                await group.start(serve)  # type: ignore[arg-type]
                before = resource.getrusage(resource.RUSAGE_SELF)
                print("ready", flush=True)
                passes = 0
                async for signum in signals:
                    if signum == signal.SIGUSR2:  # the end
                        break
                    passes += 1
                    while not done(passes):
                        await anyio.sleep(0.01)
                    if profiler is not None and passes == 1:
                        profiler.enable()
                    elif profiler is not None:
                        profiler.disable()
                    now = resource.getrusage(resource.RUSAGE_SELF)
                    print(json.dumps({"user": now.ru_utime - before.ru_utime, "sys": now.ru_stime - before.ru_stime}),
                          flush=True)  # fmt: skip
                shutdown(0)  # type: ignore[operator]
        if profiler is not None:
            profiler.dump_stats(profile)

    run(main)


def _fragments(data: bytes, size: int = 128 * 1024) -> list[bytes]:
    """A data set as PDV fragments, each in a buffer of its own (as each PDU is)."""
    return [data[at : at + size] for at in range(0, len(data), size)]


def handler_child(kind: str, root: Path, out: Path, passes: int, profile: str) -> None:
    """The store handlers alone, no network: each file's data set fed to an InstanceSink in
    128 KiB fragments (as PDVs arrive, each in its own buffer), handed to the handler as the server does, then the
    association "released". Round-robin over the 4 folders, like 4 concurrent senders. The
    first pass warms up; prints the CPU of the others (and profiles them with ``profile``)."""
    import cProfile
    import resource

    import anyio

    from aiodicom.cli.net import configure_cli_logging
    from aiodicom.cli.receive import FileWriter, Tally
    from aiodicom.dimse.association import AssociationInfo
    from aiodicom.dimse.store import InstanceSink, ReceivedInstance, SpoolFiles
    from aiodicom.runner import run

    configure_cli_logging("warning", "console")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("a"))
    sent = [[(h.read_file_meta(f), _fragments(h.dataset_bytes(f))) for f in h.files_under(folder)] for folder in folders]
    patients = sum(len(list(folder.iterdir())) for folder in folders)
    (out / "spool").mkdir(parents=True)
    spool = SpoolFiles(out / "spool")

    async def main() -> None:
        from _pipeline_node import Trivial

        pipeline = Trivial(port=0, data_directory=out / "data", grace=60) if kind == "pipeline" else None
        extra: frozenset[int] = frozenset()
        threshold = 0  # aiodicom receive's
        async with anyio.create_task_group() as group:
            if pipeline is not None:
                await group.start(pipeline.serve)
                assert pipeline._store is not None
                options = pipeline._server_options(pipeline._store, {})
                extra, threshold = frozenset(pipeline._routing_tags), int(options.get("memory_threshold", 1 << 20))
            profiler = cProfile.Profile(time.process_time) if profile else None
            before = resource.getrusage(resource.RUSAGE_SELF)
            for round_ in range(passes):
                if round_ == 1:
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    if profiler is not None:
                        profiler.enable()
                if pipeline is None:  # a fresh folder per pass, as a fresh receive has
                    on_store = Tally(open(os.devnull, "w"), live=False).counting(FileWriter(out / f"files{round_}"))  # noqa: SIM115
                infos = [AssociationInfo(round_ * 10 + a, "STORESCU", "AIODICOM", "127.0.0.1", 40000 + a)
                         for a in range(len(sent))]  # fmt: skip
                for i in range(max(len(files) for files in sent)):
                    for a, files in enumerate(sent):
                        if i >= len(files):
                            continue
                        meta, fragments = files[i]
                        sink = InstanceSink(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax,
                                            spool=spool, memory_threshold=threshold, extra_tags=extra)  # fmt: skip
                        for fragment in fragments:
                            sink.write(memoryview(fragment))
                        sink.finish()
                        instance = ReceivedInstance(sink, association=infos[a])
                        code = await (pipeline._on_store(instance) if pipeline is not None else on_store(instance))
                        assert not code, code
                        if not instance.detached:
                            instance.close()
                        spool.refill()
                        if i == len(files) - 1 and pipeline is not None:
                            await pipeline._on_released(infos[a])
                while pipeline is not None and not _idle(pipeline, patients * (round_ + 1)):
                    await anyio.sleep(0.01)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            now = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({"user": now.ru_utime - before.ru_utime, "sys": now.ru_stime - before.ru_stime}), flush=True)
            if pipeline is not None:
                pipeline.shutdown(0)
        spool.close()

    run(main)


# --- the measuring process -----------------------------------------------------------------


def measure(
    kind: str,
    work: Path,
    run_id: str,
    *,
    folders: list[Path],
    patients: int,
    passes: int = 2,
    profile: Path | None = None,
    wrapper: Sequence[str] = (),
) -> dict[str, float]:
    """CPU seconds of the passes after the first (a warm-up), each pass sending everything again."""
    port = h.free_port()
    out = work / f"out-{run_id}"
    command = [*wrapper, sys.executable, __file__, "--child", kind, str(port), str(out), str(patients), str(profile or "")]
    receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=h.env({"PYTHONHASHSEED": "0"}))
    snapshots: list[dict[str, float]] = []
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} did not start")
        for _ in range(passes):
            senders = [subprocess.Popen([p.format(port=port) for p in h.storescu(f)], env=h.env(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for f in folders]  # fmt: skip
            if any(s.wait(timeout=600) != 0 for s in senders):
                raise RuntimeError(f"a sender failed against {kind}")
            receiver.send_signal(signal.SIGUSR1)
            snapshots.append(json.loads(receiver.stdout.readline()))
            for stored in out.rglob("*.dcm"):  # the next pass writes new files, as the first did
                stored.unlink()
        receiver.send_signal(signal.SIGUSR2)
        receiver.wait(timeout=120)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    h.shutil.rmtree(out, ignore_errors=True)
    first, last = snapshots[0], snapshots[-1]
    return {name: last[name] - first[name] for name in ("user", "sys")}


Run = Callable[..., dict[str, float]]


def handler_measure(kind: str, work: Path, run_id: str, *, passes: int = 2, profile: Path | None = None,
                    wrapper: Sequence[str] = ()) -> dict[str, float]:  # fmt: skip
    """:func:`handler_child` in a process of its own: CPU seconds of its passes after the first."""
    command = [*wrapper, sys.executable, __file__, "--handler-child", kind, str(work), str(work / f"out-{run_id}"),
               str(passes), str(profile or "")]  # fmt: skip
    # one hash seed: the same dict and set layouts in every run (instruction counts compare)
    result = subprocess.run(command, capture_output=True, text=True, env=h.env({"PYTHONHASHSEED": "0"}), check=True,
                            timeout=1200)  # fmt: skip
    h.shutil.rmtree(work / f"out-{run_id}", ignore_errors=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def instructions(run: Run, kind: str, work: Path, passes: int) -> int:
    """User-space instructions of a receiver's whole life under cachegrind (its "I refs")."""
    out = work / f"cachegrind-{kind}-{passes}.out"
    wrapper = ["valgrind", "-q", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
    run(kind, work, f"{kind}-valgrind-{passes}", passes=passes, wrapper=wrapper)
    summary = [line for line in out.read_text().splitlines() if line.startswith("summary:")]
    return int(summary[0].split()[1])


def per_image_calls(path: Path, images: int) -> dict[str, tuple[float, float]]:
    """``function -> (calls per image, own CPU ms per image)``."""
    stats = pstats.Stats(str(path))
    rows = {}
    for (file, line, name), (_, calls, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.split("/src/")[-1].split("site-packages/")[-1].split("/lib/python3")[-1]
        rows[f"{short}:{line}({name})"] = (calls / images, own * 1000 / images)
    return rows


def profile_report(profiles: dict[str, Path], images: int, top: int) -> list[str]:
    receive, pipeline = (per_image_calls(profiles[k], images) for k in KINDS)
    lines = ["### cProfile (CPU timer), per image: the pipeline's extra own CPU, largest first", "",
             "| extra own ms | pipeline calls | receive calls | function |", "|---|---|---|---|"]  # fmt: skip
    extra = sorted(set(receive) | set(pipeline), key=lambda f: receive.get(f, (0, 0))[1] - pipeline.get(f, (0, 0))[1])
    for function in extra[:top]:
        (rc, rt), (pc, pt) = receive.get(function, (0, 0)), pipeline.get(function, (0, 0))
        lines.append(f"| {pt - rt:.4f} | {pc:.2f} | {rc:.2f} | `{function}` |")
    totals = [sum(calls for calls, _ in rows.values()) for rows in (receive, pipeline)]
    lines += ["", f"Python-level calls per image: receive {totals[0]:.0f}, pipeline {totals[1]:.0f}.", ""]
    return lines


def cpu_report(title: str, runs: dict[str, list[dict[str, float]]], total: int) -> list[str]:
    report = [title, "", "| receiver | CPU ms/image (median) | user ms/image | sys ms/image | runs (ms/image) |",
              "|---|---|---|---|---|"]  # fmt: skip
    medians = {}
    for kind in KINDS:
        each = sorted(1000 * (f["user"] + f["sys"]) / total for f in runs[kind])
        middle = sorted(runs[kind], key=lambda f: f["user"] + f["sys"])[len(each) // 2]
        medians[kind] = each[len(each) // 2]
        report.append(f"| {kind} | {medians[kind]:.3f} | {1000 * middle['user'] / total:.3f} | "
                      f"{1000 * middle['sys'] / total:.3f} | {', '.join(f'{v:.3f}' for v in each)} |")  # fmt: skip
    return [*report, "", f"Pipeline / receive CPU per image: {medians['pipeline'] / medians['receive']:.2f}x "
            f"(+{medians['pipeline'] - medians['receive']:.3f} ms).", ""]  # fmt: skip


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, port, out, patients, profile = sys.argv[2:7]
        child(kind, int(port), Path(out), int(patients), profile)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--handler-child":
        kind, root, out, passes, profile = sys.argv[2:7]
        handler_child(kind, Path(root), Path(out), int(passes), profile)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2,50,512", metavar="P,I,S",
                        help="P patients per association (4 associations), I images each, SxS pixels [%(default)s]")
    parser.add_argument("--handlers", action="store_true",
                        help="the store handlers alone, no network (see handler_child): figures that hardly vary")
    parser.add_argument("--rounds", type=int, default=3, help="CPU runs per receiver, alternating [%(default)s]")
    parser.add_argument("--profile", action="store_true", help="one more run of each under cProfile")
    parser.add_argument("--top", type=int, default=30, help="functions listed with --profile [%(default)s]")
    parser.add_argument("--valgrind", action="store_true",
                        help="user-space instructions per image under cachegrind (slow: use a small --shape)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke run)")
    parser.add_argument("--results-dir", type=Path, default=h.RESULTS_DIR, help="profiles go to RESULTS_DIR/profiles")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.shape, args.rounds = "1,3,32", 1
    h.require_dcmtk()
    h.ensure_bytecode()  # else the first run of each receiver compiles what the next one reads
    per_association, images, size = (int(v) for v in args.shape.split(","))
    with h.scratch(args.workdir) as work:
        folders = [work / f"a{a}" for a in range(ASSOCIATIONS)]
        for a, folder in enumerate(folders):
            for p in range(per_association):
                write_study(folder / f"PIPE{a}{p:02d}", patient_id=f"PIPE{a}{p:02d}", images_per_series=images,
                            rows=size, columns=size, seed=a * 100 + p)  # fmt: skip
        patients, total = ASSOCIATIONS * per_association, ASSOCIATIONS * per_association * images
        run: Run = handler_measure if args.handlers else functools.partial(measure, folders=folders, patients=patients)
        where = "the store handlers alone" if args.handlers else "the receiving process"
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        for r in range(args.rounds):
            for kind in KINDS:
                runs[kind].append(run(kind, work, f"{kind}-{r}"))
        title = (f"### CPU of {where}, {patients} patients x {images} images {size}x{size} over {ASSOCIATIONS} "
                 f"associations ({total} images, the second of two passes), {args.rounds} runs each")  # fmt: skip
        report = cpu_report(title, runs, total)
        if args.valgrind:
            report += [f"### User-space instructions per image of {where} (cachegrind; a run with one pass "
                       f"subtracted from one with {1 + VALGRIND_PASSES})", "", "| receiver | instructions/image |",
                       "|---|---|"]  # fmt: skip
            per_image = {}
            for kind in KINDS:  # start-up varies by ~0.5 %: four passes make it small per image
                once = instructions(run, kind, work, 1)
                per_image[kind] = (instructions(run, kind, work, 1 + VALGRIND_PASSES) - once) / (VALGRIND_PASSES * total)
                report.append(f"| {kind} | {per_image[kind]:,.0f} |")
            report += ["", f"Pipeline / receive: {per_image['pipeline'] / per_image['receive']:.2f}x "
                       f"(+{per_image['pipeline'] - per_image['receive']:,.0f} instructions per image).", ""]  # fmt: skip
        if args.profile:
            profiles = {kind: work / f"{kind}.prof" for kind in KINDS}
            for kind in KINDS:
                run(kind, work, f"{kind}-profile", profile=profiles[kind])
            report += profile_report(profiles, total, args.top)
            keep = args.results_dir / "profiles"
            keep.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for kind, path in profiles.items():
                h.shutil.copy(path, keep / f"profile_pipeline-{kind}-{stamp}.prof")
            report.append(f"Profiles: {keep}/profile_pipeline-*-{stamp}.prof")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
