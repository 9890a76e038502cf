"""Exporting through the outbox: images/s to a DICOM node, and how long the event loop stalls.

A pipeline exports while it keeps receiving, so what matters besides throughput is the
longest time the event loop is not served while a batch is submitted (every data set
encoded and written as a Part 10 file) and exported (C-STORE to DCMTK ``storescp``, which
discards). A ticker task sleeps 1 ms in a loop and records how late it wakes up. Three
phases: submitting N 512x512 CT data sets (pydicom, in memory), exporting them, and
submitting one large data set (``--large-mb``) to see the stall its encoding causes.

    python benchmarks/bench_export.py [--quick] [--images N] [--large-mb M] [--fsync] [--workdir DIR]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import _harness as h  # noqa: E402
import anyio  # noqa: E402

from aiodicom.pipeline.export import DicomExport  # noqa: E402
from aiodicom.pipeline.outbox import Outbox  # noqa: E402
from aiodicom.synthetic import make_dataset  # noqa: E402
from peers import LOCALHOST, storescp  # noqa: E402


class Ticker:
    """How late a 1 ms sleep wakes up: the event loop's stalls, in milliseconds."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.sleeping_since = time.perf_counter()

    async def run(self) -> None:
        while True:
            self.sleeping_since = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lateness.append((time.perf_counter() - self.sleeping_since - 0.001) * 1000)

    def take(self) -> dict[str, float]:
        """The stalls since the last call, counting the sleep in progress (a phase that never
        yielded shows as one long stall, not as none)."""
        now = time.perf_counter()
        in_progress = (now - self.sleeping_since - 0.001) * 1000
        values, self.lateness = [*self.lateness, max(in_progress, 0.0)], []
        self.sleeping_since = now  # the next phase counts from here
        values.sort()
        return {"max_ms": round(values[-1], 2), "p99_ms": round(values[int(len(values) * 0.99) - 1], 2),
                "median_ms": round(statistics.median(values), 2)}


async def measure(work: Path, port: int, images: int, large_mb: int, fsync: bool) -> dict[str, object]:
    datasets = [make_dataset(index=n, slices=images, rows=512, columns=512) for n in range(images)]
    large = make_dataset(rows=1024, columns=1024)
    frames = max(1, large_mb * 1024 * 1024 // (1024 * 1024 * 2))
    large.NumberOfFrames = frames
    large.PixelData = bytes(1024 * 1024 * 2 * frames)
    ticker = Ticker()
    results: dict[str, object] = {"images": images, "large_mb": large_mb, "fsync": fsync}
    outbox = Outbox(work / "outbox", attempts=1, fsync=fsync)
    address = (LOCALHOST, port, "BENCH")
    async with anyio.create_task_group() as group:
        group.start_soon(ticker.run)
        await group.start(outbox.run)
        started = time.perf_counter()
        await outbox.submit("ct", [DicomExport(address, datasets)])
        results["submit"] = {"seconds": round(time.perf_counter() - started, 3), **ticker.take()}
        started = time.perf_counter()
        outcome = await outbox.wait("ct")
        seconds = time.perf_counter() - started
        results["export"] = {"seconds": round(seconds, 3), "images_per_s": round(images / seconds, 1),
                             "delivered": outcome.delivered, **ticker.take()}
        started = time.perf_counter()
        await outbox.submit("large", [DicomExport(address, [large])])
        results["submit_large"] = {"seconds": round(time.perf_counter() - started, 3), **ticker.take()}
        outcome = await outbox.wait("large")
        results["export_large"] = {"delivered": outcome.delivered, **ticker.take()}
        group.cancel_scope.cancel()
    return results


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="CT images in the batch (default 200; quick 10)")
    p.add_argument("--large-mb", type=int, default=None, help="size of the large data set (default 256; quick 8)")
    p.add_argument("--fsync", action="store_true", help="Outbox(fsync=True): batches and acknowledgements flushed")
    args = p.parse_args()
    h.require_dcmtk()
    images = args.images or (10 if args.quick else 200)
    large_mb = args.large_mb or (8 if args.quick else 256)
    with h.scratch(args.workdir) as work, storescp(aet="BENCH") as peer:
        results = anyio.run(measure, work, peer.port, images, large_mb, args.fsync)
    lines = [f"## bench_export{' (fsync)' if args.fsync else ''}", "", "| phase | seconds | images/s | loop stall max / p99 / median (ms) |",
             "|---|---|---|---|"]
    for phase in ("submit", "export", "submit_large", "export_large"):
        r = results[phase]
        assert isinstance(r, dict)
        lines.append(f"| {phase} | {r.get('seconds', '')} | {r.get('images_per_s', '')} | "
                     f"{r['max_ms']} / {r['p99_ms']} / {r['median_ms']} |")
    print("\n".join(lines))
    print(f"results: {h.save('bench_export', args.results_dir, results)}")
    ok = all(isinstance(results[k], dict) and results[k].get("delivered", True)  # type: ignore[union-attr]
             for k in ("export", "export_large"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
