"""A CT threshold pipeline: receive a CT series per patient, segment it, write a DICOM SEG.

The pipeline (:class:`CTThreshold`) takes the CT images of each patient, waits until an
association that sent them is released and the series is complete, turns the series
into a volume in Hounsfield units (``numpy_grinder``), thresholds it into "body" and
"bone" masks in a worker process (``aiodicom.offload``, so the event loop keeps
receiving) and exports the result as a DICOM Segmentation into a folder.

Run it:

    python examples/ct_threshold_pipeline.py          # the demo (what ``./dev demo`` runs)
    cd examples && aiodicom serve ct_threshold_pipeline:CTThreshold --data-directory data

The demo generates a synthetic CT study, starts the pipeline in this process on a free
port, sends the study with aiodicom's own C-STORE SCU, waits for the export and checks
that the SEG written to ``--output`` (default ./demo-output) reads back as the masks
it was made from. Options: ``--images N`` (default 60), ``--patients N`` (default 1).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.factory.segmentation import Code, Segment, build_seg
from aiodicom.grinders.numpy import Volume, numpy_grinder

#: Images a CT series needs before it is processed (the demo sends exactly this many).
MIN_IMAGES = 20
BONE = Code("272673000", "SCT", "Bone")
THRESHOLDING = Code("123105", "DCM", "Histogram Analysis")
SEGMENTS = [
    Segment("body", colour=(255, 200, 150), interpreted_type="EXTERNAL"),
    Segment("bone", colour=(240, 240, 240), type=BONE, algorithm_name="threshold 300 HU",
            algorithm_family=THRESHOLDING),
]  # fmt: skip


class CT(aiodicom.Input):
    """One CT series of a patient, as a (z, y, x) volume in Hounsfield units."""

    required_tags = ["SOPInstanceUID", "PixelData"]
    required_values = {"Modality": "CT"}
    enforce_single_series = True
    grinder = numpy_grinder

    def validate(self) -> bool:
        return len(self) >= MIN_IMAGES


def threshold(hounsfield: npt.NDArray[np.floating]) -> dict[str, npt.NDArray[np.bool_]]:
    """Body (above -300 HU) and bone (above 300 HU): the 'model' of this pipeline."""
    return {"body": hounsfield > -300, "bone": hounsfield > 300}


def segment(volume: Volume) -> Dataset:
    """Masks and the SEG that holds them: CPU work, run in a worker process by ``process``."""
    return build_seg(threshold(volume.array), volume, segments=SEGMENTS)


class CTThreshold(aiodicom.Pipeline):
    """Receives CT, writes a SEG of body and bone per patient into ``output_directory``."""

    ae_title = "THRESHOLD"
    inputs = {"ct": CT}
    #: Where the SEGs go, one folder per patient (a setting like the others:
    #: ``CTThreshold(output_directory="out")``).
    output_directory: str | Path = "threshold-output"

    async def process(self, container: aiodicom.InputContainer) -> aiodicom.FileExport:
        volume = container["ct"]
        assert isinstance(volume, Volume)
        seg = await aiodicom.offload(segment, volume)  # seconds of numpy: not on the event loop
        self.log.info("segmented", batch=container.batch_id, frames=int(seg.NumberOfFrames))
        return aiodicom.FileExport(self.output_directory, [seg], layout="{PatientID}/{SOPInstanceUID}.dcm")


# --- the demo ---------------------------------------------------------------------------


async def demo(images: int, patients: int, output: Path) -> int:
    """Generate, start, send, wait for the exports, check them; 0 when all went through."""
    import anyio

    from aiodicom.grinders.segmentation import seg_to_masks
    from aiodicom.synthetic import write_study

    with tempfile.TemporaryDirectory(prefix="aiodicom-demo-") as scratch:
        studies = {f"DEMO{n + 1:02d}": write_study(Path(scratch) / f"study{n}", patient_id=f"DEMO{n + 1:02d}",
                                                   images_per_series=images, rows=256, columns=256, seed=n)
                   for n in range(patients)}  # fmt: skip
        for patient_id in studies:  # a previous run's SEGs would be counted again
            shutil.rmtree(output / patient_id, ignore_errors=True)
        sent = [path for paths in studies.values() for path in paths]
        size = sum(path.stat().st_size for path in sent) >> 20
        print(f"generated {len(sent)} CT images ({patients} patient(s), 256x256, {size} MiB)")
        pipeline = CTThreshold(port=0, data_directory=Path(scratch) / "data", output_directory=output)
        async with anyio.create_task_group() as group:
            port = await group.start(pipeline.serve)
            print(f"pipeline {type(pipeline).__name__} listening on 127.0.0.1:{port} as {pipeline.ae_title}")
            started = time.perf_counter()
            failures = await send(port, pipeline.ae_title, sent)
            elapsed = time.perf_counter() - started
            print(f"sent {len(sent)} images in {elapsed:.2f} s ({len(sent) / elapsed:.0f} images/s) "
                  f"with aiodicom's C-STORE SCU: {len(sent) - failures} acknowledged")  # fmt: skip
            status = await wait_until_done(pipeline, patients)
            pipeline.shutdown(grace=5)
        counts = status.counts
        print(f"processed {counts.get('processed', 0)} patient(s) in worker processes, "
              f"exported {counts.get('exported', 0)}, failed {status.failed}")  # fmt: skip
        checked = 0
        for patient_id, paths in studies.items():
            for seg in sorted((output / patient_id).glob("*.dcm")):
                masks = {roi.name: roi.mask for roi in seg_to_masks(seg, paths)}
                expected = threshold(numpy_grinder(paths).array)
                if all(np.array_equal(masks[name], expected[name]) for name in expected):
                    checked += 1
                voxels = ", ".join(f"{name} {int(mask.sum())} voxels" for name, mask in masks.items())
                print(f"  {seg}: DICOM SEG of {patient_id} ({voxels})")
    ok = failures == 0 and checked == patients and counts.get("exported", 0) == patients
    print("all SEGs read back as the masks computed from the images sent" if ok else "FAILED")
    return 0 if ok else 1


async def send(port: int, ae_title: str, paths: list[Path]) -> int:
    """C-STORE ``paths`` over one association (released at the end); the failures' count."""
    failures = 0
    async with aiodicom.connect("127.0.0.1", port, called_ae=ae_title, calling_ae="DEMO-SCU") as assoc:
        async for path, status in assoc.store_files(paths):
            if not isinstance(status, aiodicom.Status) or not status.is_success:
                failures += 1
                print(f"  {path.name}: {status}")
    return failures


async def wait_until_done(pipeline: aiodicom.Pipeline, patients: int, timeout: float = 120) -> aiodicom.PipelineStatus:
    """Poll the status until every patient is exported or failed (or ``timeout`` passed)."""
    import anyio

    with anyio.move_on_after(timeout):
        while True:
            status = pipeline.status()
            if status.counts.get("exported", 0) + status.failed + status.counts.get("dead_lettered", 0) >= patients:
                return status
            await anyio.sleep(0.05)
    return pipeline.status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--patients", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    args = parser.parse_args()
    if args.images < MIN_IMAGES:
        parser.error(f"--images must be at least {MIN_IMAGES} (the input validates at {MIN_IMAGES})")
    return aiodicom.run(demo, args.images, args.patients, args.output)


if __name__ == "__main__":  # a guard, also because offload's workers import this file
    sys.exit(main())
