"""Benchmark: ``build_series`` of a 500 x 512 x 512 volume, in seconds per 100 slices.

Two volumes, both made here: an int16 CT-like phantom (stored exactly, no rescale)
and the same values as float32 plus a fraction (rescaled to 16 bits: the slope and
intercept path). Each is built with the default CT blueprint (fresh UIDs, geometry
from an oblique affine, Part 10 meta); optionally the series is also written to a
temporary folder (``--write``), which adds pydicom's encoder and the disk.
Repeats alternate between volumes; medians are reported.

    /tmp/venv/bin/python benchmarks/bench_build_series.py [--slices 500] [--size 512] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import numpy.typing as npt

from aiodicom.factory import build_series, write_series
from aiodicom.factory.blueprints import CT_SERIES


def phantom(slices: int, size: int) -> npt.NDArray[np.int16]:
    """Air, a body ellipse and a denser core, varying along z (cheap to make)."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    core = x**2 + y**2 < 0.1
    base = np.where(body, 40, -1000).astype(np.int16) + np.where(core, 300, 0).astype(np.int16)
    volume = np.empty((slices, size, size), np.int16)
    for k in range(slices):
        volume[k] = base + np.int16(k % 50)
    return volume


def oblique_affine() -> npt.NDArray[np.float64]:
    angle = 0.2
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.7, 1.25])
    affine[:3, 3] = [-180.0, -180.0, -300.0]
    return affine


def run(volume: npt.NDArray[np.generic], write: bool) -> float:
    start = time.perf_counter()
    datasets = build_series(volume, CT_SERIES, affine=oblique_affine())
    if write:
        with tempfile.TemporaryDirectory() as folder:
            write_series(datasets, folder)
    elapsed = time.perf_counter() - start
    assert len(datasets) == volume.shape[0]
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="also write the files")
    args = parser.parse_args()

    exact = phantom(args.slices, args.size)
    rescaled = exact.astype(np.float32) + np.float32(0.25)
    volumes = {"int16 (exact)": exact, "float32 (rescaled)": rescaled}
    times: dict[str, list[float]] = {name: [] for name in volumes}
    for _ in range(args.repeat):
        for name, volume in volumes.items():
            times[name].append(run(volume, args.write))

    what = "build_series + write_series" if args.write else "build_series (in memory)"
    print(f"{what}, {args.slices} x {args.size} x {args.size}, median of {args.repeat}")
    print("| volume | seconds | seconds per 100 slices |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / args.slices * 100:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
