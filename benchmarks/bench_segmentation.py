"""Benchmark: segmentations to masks and back, aiodicom against rt-utils and highdicom.

Workload (made here): a synthetic CT of 300 slices of 512 x 512 (``aiodicom.synthetic``)
and 10 ROIs drawn on its grid: a body outline, spheres, an ellipsoid, a torus and a
hollow shell (holes), three disjoint blobs, a one-voxel-wide wire, a box. Three
operations, each contender in the same run on the same data:

- masks -> RTSTRUCT: ``build_rtstruct`` + write, against rt-utils ``add_roi`` x 10 + save;
- RTSTRUCT -> masks: ``rtstruct_to_masks`` against rt-utils ``get_roi_mask_by_name`` x 10,
  both reading the same file (the one rt-utils wrote: its own format);
- masks -> SEG: ``build_seg`` + write, against highdicom ``Segmentation`` + save.

Times exclude what both sides need once and the caller usually has already (the series
headers for us, the loaded series for rt-utils, the source data sets for highdicom);
that loading is timed separately. Accuracy is the smallest Dice over the 10 ROIs of
the result read back (by us, for the files written) against the drawn masks, so a
speed-up is only claimed at equal accuracy. Target (issue 11): >= 2x faster.

    python benchmarks/bench_segmentation.py            # 300 x 512 x 512 (needs ~4 GB RAM)
    python benchmarks/bench_segmentation.py --small    # 20 x 128 x 128, a smoke run

Needs the ``dev`` extra (rt-utils, highdicom). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from aiodicom.factory.segmentation import build_rtstruct, build_seg
from aiodicom.grinders.segmentation import ImageGrid, rtstruct_to_masks, seg_to_masks
from aiodicom.synthetic import write_study

Mask = npt.NDArray[np.bool_]


def rois(shape: tuple[int, int, int]) -> dict[str, Mask]:
    """Ten ROIs in coordinates relative to the grid, so any size gets the same anatomy."""
    nz, ny, nx = shape
    z = (np.arange(nz, dtype=np.float32)[:, None, None] + 0.5) / nz * 2 - 1
    y = (np.arange(ny, dtype=np.float32)[None, :, None] + 0.5) / ny * 2 - 1
    x = (np.arange(nx, dtype=np.float32)[None, None, :] + 0.5) / nx * 2 - 1

    def ball(cz: float, cy: float, cx: float, r: float, rz: float | None = None) -> Mask:
        out: Mask = ((z - cz) / (rz or r)) ** 2 + ((y - cy) / r) ** 2 + ((x - cx) / r) ** 2 < 1
        return out

    radial = np.sqrt((y - 0.1) ** 2 + (x + 0.1) ** 2)
    wire = np.zeros(shape, dtype=bool)
    wire[nz // 4 : 3 * nz // 4, ny // 5, nx // 5 : 4 * nx // 5] = True
    return {
        "body": np.broadcast_to((x / 0.85) ** 2 + (y / 0.65) ** 2 < 1, shape).copy(),
        "lung_left": ball(0.1, -0.1, 0.4, 0.3, 0.6),
        "lung_right": ball(0.1, -0.1, -0.4, 0.3, 0.6),
        "liver": ((z / 0.4) ** 2 + ((y - 0.2) / 0.25) ** 2 + ((x + 0.3) / 0.35) ** 2) < 1,
        "bowel": (radial - 0.3) ** 2 + (z / 2.0) ** 2 < 0.08**2,
        "nodes": ball(-0.5, 0.3, 0.2, 0.08)
        | ball(-0.5, 0.3, 0.5, 0.08)
        | ball(-0.2, 0.4, 0.0, 0.1),
        "wire": wire,
        "lesion": ball(0.3, -0.2, 0.35, 0.08, 0.15),
        "shell": ball(0.0, 0.0, 0.0, 0.25) & ~ball(0.0, 0.0, 0.0, 0.18),
        "box": (np.abs(z + 0.6) < 0.2) & (np.abs(y + 0.4) < 0.1) & (np.abs(x - 0.1) < 0.2),
    }


def dice(a: npt.NDArray[Any], b: Mask) -> float:
    a = a.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def timed(
    function: Callable[..., Any], repeat: int, setup: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls, and the last call's result.

    ``setup`` (untimed) makes a fresh argument for each call.
    """
    times = []
    result = None
    for _ in range(repeat):
        arguments = () if setup is None else (setup(),)
        start = time.perf_counter()
        result = function(*arguments)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20 x 128 x 128 (a smoke run)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.slices, args.size = 20, 128

    import highdicom as hd
    from pydicom.sr.codedict import codes
    from rt_utils import RTStructBuilder

    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        paths = write_study(
            work / "ct", images_per_series=args.slices, rows=args.size, columns=args.size
        )
        shape = (args.slices, args.size, args.size)
        drawn = rois(shape)
        rows: list[tuple[str, str, float, float, str]] = []

        # --- loading what each side needs once -------------------------------------
        load_ours, grid = timed(lambda: ImageGrid.of(paths), args.repeat)
        load_rt, _ = timed(lambda: RTStructBuilder.create_new(str(work / "ct")), 1)
        load_hd, sources = timed(
            lambda: sorted(
                (pydicom.dcmread(p, stop_before_pixels=True) for p in paths),
                key=lambda ds: float(ds.ImagePositionPatient[2]),
            ),
            1,
        )
        rows.append(("load series", "aiodicom", load_ours, 1.0, "headers only"))
        rows.append(("load series", "rt-utils", load_rt, 1.0, "whole files"))
        rows.append(("load series", "highdicom", load_hd, 1.0, "headers (pydicom)"))

        # --- masks -> RTSTRUCT -----------------------------------------------------
        ours_rs = work / "ours_rs.dcm"

        def ours_write_rtstruct() -> None:
            build_rtstruct(drawn, grid).save_as(ours_rs, enforce_file_format=True)

        theirs_rs = work / "theirs_rs.dcm"

        def theirs_write_rtstruct(rtstruct: Any) -> None:
            for name, mask in drawn.items():
                rtstruct.add_roi(mask=mask.transpose(1, 2, 0), name=name)
            rtstruct.save(str(theirs_rs))

        t_ours, _ = timed(ours_write_rtstruct, args.repeat)
        t_theirs, _ = timed(
            theirs_write_rtstruct,
            args.repeat,
            setup=lambda: RTStructBuilder.create_new(str(work / "ct")),  # loads the series
        )
        back = rtstruct_to_masks(ours_rs, grid)
        acc_ours = min(dice(back[name], m) for name, m in drawn.items())
        back = rtstruct_to_masks(theirs_rs, grid)
        acc_theirs = min(dice(back[name], m) for name, m in drawn.items())
        rows.append(("masks -> RTSTRUCT", "aiodicom", t_ours, acc_ours, ""))
        rows.append(("masks -> RTSTRUCT", "rt-utils", t_theirs, acc_theirs, ""))

        # --- RTSTRUCT -> masks -----------------------------------------------------
        t_ours, masks = timed(lambda: rtstruct_to_masks(theirs_rs, grid), args.repeat)
        acc_ours = min(dice(masks[name], m) for name, m in drawn.items())
        loaded = RTStructBuilder.create_from(str(work / "ct"), str(theirs_rs))

        def theirs_read() -> dict[str, npt.NDArray[np.bool_]]:
            return {name: loaded.get_roi_mask_by_name(name) for name in drawn}

        t_theirs, theirs = timed(theirs_read, args.repeat)
        acc_theirs = min(dice(theirs[n].transpose(2, 0, 1), m) for n, m in drawn.items())
        rows.append(("RTSTRUCT -> masks", "aiodicom", t_ours, acc_ours, "reads rt-utils' file"))
        rows.append(("RTSTRUCT -> masks", "rt-utils", t_theirs, acc_theirs, "reads rt-utils' file"))

        # --- masks -> SEG ----------------------------------------------------------
        ours_seg = work / "ours_seg.dcm"

        def ours_write_seg() -> None:
            build_seg(drawn, grid).save_as(ours_seg, enforce_file_format=True)

        theirs_seg = work / "theirs_seg.dcm"
        names = list(drawn)
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=name,
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=codes.SCT.Tissue,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
            for n, name in enumerate(names, start=1)
        ]

        def theirs_write_seg() -> None:
            stack = np.stack([drawn[name] for name in names], axis=-1)
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=stack,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=2,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="bench",
                manufacturer_model_name="bench",
                software_versions="1",
                device_serial_number="1",
            )
            seg.save_as(theirs_seg)

        t_ours, _ = timed(ours_write_seg, args.repeat)
        t_theirs, _ = timed(theirs_write_seg, args.repeat)
        acc_ours = min(dice(r.mask, drawn[r.name]) for r in seg_to_masks(ours_seg, grid))
        acc_theirs = min(dice(r.mask, drawn[r.name]) for r in seg_to_masks(theirs_seg, grid))
        rows.append(("masks -> SEG", "aiodicom", t_ours, acc_ours, ""))
        rows.append(("masks -> SEG", "highdicom", t_theirs, acc_theirs, ""))

    print(
        f"## bench_segmentation: {args.slices} x {args.size} x {args.size} CT, "
        f"{len(drawn)} ROIs, median of {args.repeat}"
    )
    print("| operation | contender | seconds | min Dice | speed-up of aiodicom | note |")
    print("|---|---|---|---|---|---|")
    ours_time = {op: t for op, who, t, _, _ in rows if who == "aiodicom"}
    for op, who, seconds, accuracy, note in rows:
        ratio = "" if who == "aiodicom" else f"{seconds / ours_time[op]:.1f}x"
        print(f"| {op} | {who} | {seconds:.3f} | {accuracy:.4f} | {ratio} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
