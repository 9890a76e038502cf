"""Benchmark: numpy grinder vs ``pydicom.dcmread`` + ``np.stack`` on a CT series from disk.

Writes a synthetic CT series (default 500 x 512 x 512, 12-bit stored, intercept
-1024, Explicit VR Little Endian) to a temporary folder, then loads it with each
method in a *fresh subprocess* so that peak memory is the method's own:
seconds are measured inside the child around the load only (imports excluded);
peak RSS is the child's ``ru_maxrss`` from ``os.wait4``. A child that only
imports the same modules gives the baseline RSS, subtracted to get the memory
the load itself needed. Runs alternate between methods and the median is
reported. The page cache is warm (files were just written or read), so this
measures parsing and copying, not the disk.

The pydicom baseline is the usual idiom, kept as cheap as possible: read every
file, sort by ImagePositionPatient z, ``np.stack`` the ``pixel_array``s (no
rescale, so the grinder does strictly more work: rescale to int16, geometry).

    /tmp/venv/bin/python benchmarks/bench_numpy_grinder.py [--slices 500] [--size 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("imports", "grinder", "pydicom")


def _child(method: str, folder: str) -> None:
    import numpy as np
    import pydicom

    from aiodicom.grinders.numpy import numpy_grinder

    paths = sorted(Path(folder).glob("*.dcm"))
    start = time.perf_counter()
    if method == "grinder":
        volume = numpy_grinder(paths)
        array = volume.array
    elif method == "pydicom":
        datasets = [pydicom.dcmread(p) for p in paths]
        datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        array = np.stack([d.pixel_array for d in datasets])
    else:
        array = np.zeros((0,), np.uint8)
    seconds = time.perf_counter() - start
    # Outside the timed region: both methods must have produced the same HU values.
    checksum = int(array.sum(dtype=np.int64))
    if method == "pydicom":
        checksum += sum(int(float(d.RescaleIntercept)) for d in datasets) * array[0].size
    print(
        json.dumps(
            {
                "seconds": seconds,
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "nbytes": int(array.nbytes),
                "checksum": checksum,
            }
        )
    )


def _run(method: str, folder: Path) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", method, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{method} child failed with {proc.returncode}")
    result = json.loads(out)
    result["maxrss_bytes"] = usage.ru_maxrss * 1024  # kilobytes on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    from aiodicom import synthetic

    with tempfile.TemporaryDirectory(prefix="bench_numpy_grinder_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        synthetic.write_study(
            folder, images_per_series=args.slices, rows=args.size, columns=args.size
        )
        print(
            f"wrote {args.slices} x {args.size} x {args.size} CT in {time.perf_counter() - t0:.1f} s"
        )
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for _ in range(args.repeat):
            for method in METHODS:
                runs[method].append(_run(method, folder))

    checksums = {r["checksum"] for m in ("grinder", "pydicom") for r in runs[m]}
    if len(checksums) != 1:
        raise SystemExit(f"the methods disagree on the voxel values: checksums {checksums}")
    print("voxel values agree (rescaled checksums equal)")
    base_rss = statistics.median(r["maxrss_bytes"] for r in runs["imports"])
    summary = {}
    for method in ("grinder", "pydicom"):
        seconds = statistics.median(r["seconds"] for r in runs[method])
        best = min(r["seconds"] for r in runs[method])
        rss = statistics.median(r["maxrss_bytes"] for r in runs[method])
        nbytes = runs[method][0]["nbytes"]
        summary[method] = (seconds, rss, nbytes, best)
        print(
            f"{method:8s} median {seconds:6.3f} s (best {best:6.3f} s)  peak RSS {rss / 2**20:7.1f} MiB "
            f"(+{(rss - base_rss) / 2**20:6.1f} MiB over imports = "
            f"{(rss - base_rss) / nbytes:4.2f} x its {nbytes / 2**20:.0f} MiB "
            f"{runs[method][0]['dtype']} volume {tuple(runs[method][0]['shape'])})"
        )
    g, p = summary["grinder"], summary["pydicom"]
    print(f"imports-only peak RSS {base_rss / 2**20:.1f} MiB")
    print(f"speed-up {p[0] / g[0]:.2f}x on medians, {p[3] / g[3]:.2f}x on bests (target >= 1.5x)")
    print(f"grinder memory {(g[1] - base_rss) / g[2]:.2f}x the volume (target <= 1.2x)")
    print("all runs:", json.dumps(runs))


if __name__ == "__main__":
    main()
