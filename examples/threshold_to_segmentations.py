"""A pipeline's work on a received CT: threshold it, send back an RT Structure Set and a SEG.

The pipeline API (inputs, ``process``, ``DicomExport``) does not exist yet, so
:func:`process` below is a plain function: it is what the body of a pipeline's
``process`` would be, taking the instances of one input (the CT series) and returning
the data sets to export. With the pipeline API it would end in
``return DicomExport(address, datasets)``.

Run it to see it work on a synthetic CT (``aiodicom.synthetic``)::

    python examples/threshold_to_segmentations.py [--output DIR]

It writes ``rtstruct.dcm`` and ``seg.dcm`` into DIR (default ./segmentation-output),
reads both back and checks they give the masks it drew.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from aiodicom.data.lazy import Instance
from aiodicom.factory.segmentation import Code, Segment, build_rtstruct, build_seg
from aiodicom.grinders.numpy import numpy_grinder
from aiodicom.grinders.segmentation import rtstruct_to_masks, seg_to_masks
from aiodicom.synthetic import write_study

BONE = Code("272673000", "SCT", "Bone")
HISTOGRAM_ANALYSIS = Code("123105", "DCM", "Histogram Analysis")


def masks_of(hounsfield: np.ndarray) -> dict[str, np.ndarray]:
    """Body (above -300 HU) and bone (above 300 HU): the 'model' of this pipeline."""
    return {"body": hounsfield > -300, "bone": hounsfield > 300}


def process(instances: Iterable[Instance]) -> list[Dataset]:
    """The body of a pipeline's ``process``: CT instances in, data sets to export out."""
    volume = numpy_grinder(instances)  # (z, y, x) HU and the series geometry
    masks = masks_of(volume.array)
    segments = [
        Segment("body", colour=(255, 200, 150), interpreted_type="EXTERNAL"),
        Segment(
            "bone",
            colour=(240, 240, 240),
            type=BONE,
            algorithm_name="threshold 300 HU",
            algorithm_family=HISTOGRAM_ANALYSIS,
        ),
    ]
    rtstruct = build_rtstruct(masks, volume, segments=segments)
    seg = build_seg(masks, volume, segments=segments)
    return [rtstruct, seg]  # with the pipeline API: DicomExport(address, [rtstruct, seg])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("segmentation-output"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        series = write_study(Path(scratch) / "ct", images_per_series=24, rows=128, columns=128)
        rtstruct, seg = process(series)
        args.output.mkdir(parents=True, exist_ok=True)
        rtstruct.save_as(args.output / "rtstruct.dcm", enforce_file_format=True)
        seg.save_as(args.output / "seg.dcm", enforce_file_format=True)
        expected = masks_of(numpy_grinder(series).array)
        for reader, name in ((rtstruct_to_masks, "rtstruct.dcm"), (seg_to_masks, "seg.dcm")):
            back = reader(args.output / name, series)
            for roi in back:
                assert np.array_equal(roi.mask, expected[roi.name]), (name, roi.name)
            summary = ", ".join(f"{roi.name} {int(roi.mask.sum())} voxels" for roi in back)
            print(f"wrote {args.output / name}: {summary}; read back exactly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
