"""The pipeline examples in ``examples/`` run as users run them and do what they say.

- ``ct_threshold_pipeline.py``: its demo (what ``./dev demo`` runs) as a process:
  generated CT for two patients, our SCU, a SEG per patient in the output folder; and
  in this process, fed by DCMTK ``storescu``: a series short of ``MIN_IMAGES`` waits.
- ``pet_ct_pipeline.py``: two inputs per patient, fed by pynetdicom and by our client
  over concurrent associations; the SEGs arrive at DCMTK ``storescp`` by C-STORE and
  hold the masks the example's own function computes.
- ``starlette_pipeline.py``: under uvicorn; ``/status`` follows a study sent by our client
  until it is exported, and SIGTERM stops the app and the pipeline cleanly.
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.grinders.numpy import numpy_grinder
from aiodicom.grinders.segmentation import seg_to_masks
from aiodicom.synthetic import write_study
from peers import Peer, dcmtk, free_port, peer_env, run_peer, storescp

from .helpers import TEST_TIMEOUT, send_async, series, wait_until, write

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example(name: str) -> ModuleType:
    """Import an example as a module; its folder goes on ``sys.path`` so that offload's
    worker processes (which get our ``sys.path``) import it by the same name."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


# --- the CT threshold demo (./dev demo) -----------------------------------------------


def test_ct_demo_receives_processes_and_exports(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "ct_threshold_pipeline.py"), "--images", "20", "--patients", "2",
         "--output", str(output)],
        cwd=tmp_path, env=peer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "sent 40 images" in result.stdout and "40 acknowledged" in result.stdout, result.stdout
    assert "processed 2 patient(s) in worker processes, exported 2, failed 0" in lines, result.stdout
    assert lines[-1] == "all SEGs read back as the masks computed from the images sent", result.stdout
    for patient in ("DEMO01", "DEMO02"):
        (seg,) = (output / patient).glob("*.dcm")
        ds = pydicom.dcmread(seg)
        assert (ds.Modality, ds.PatientID) == ("SEG", patient)
        assert [s.SegmentLabel for s in ds.SegmentSequence] == ["body", "bone"]


@pytest.mark.anyio
@pytest.mark.dcmtk("storescu")
async def test_ct_threshold_processes_complete_series_only(tmp_path: Path) -> None:
    """DCMTK storescu sends two patients on one association; the short series waits."""
    module = example("ct_threshold_pipeline")
    complete = write_study(tmp_path / "send" / "full", patient_id="FULL", images_per_series=module.MIN_IMAGES,
                           rows=32, columns=32)  # fmt: skip
    write_study(tmp_path / "send" / "short", patient_id="SHORT", images_per_series=module.MIN_IMAGES - 1,
                rows=32, columns=32)  # fmt: skip
    out = tmp_path / "out"
    pipeline = module.CTThreshold(port=0, data_directory=tmp_path / "data", output_directory=out)
    async with anyio.create_task_group() as group:
        port = await group.start(pipeline.serve)
        storescu = [dcmtk("storescu") or "storescu", "-aec", "THRESHOLD", "+sd", "+r", "127.0.0.1", str(port),
                    str(tmp_path / "send")]  # fmt: skip
        await anyio.run_process(storescu, env=peer_env(), check=True)
        await wait_until(lambda: pipeline.status().counts.get("exported", 0) >= 1, what="the export")
        status = pipeline.status()
        pipeline.shutdown(grace=5)
    assert status.counts["processed"] == 1 and status.failed == 0
    assert (status.patients_waiting, status.instances_waiting) == (1, module.MIN_IMAGES - 1)
    assert sorted(p.name for p in out.iterdir()) == ["FULL"]
    (seg,) = (out / "FULL").glob("*.dcm")
    masks = {roi.name: roi.mask for roi in seg_to_masks(seg, complete)}
    expected = module.threshold(numpy_grinder(complete).array)
    assert masks.keys() == expected.keys() and all(np.array_equal(masks[k], expected[k]) for k in expected)


# --- PET+CT to storescp ----------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Path]]:
    folder = tmp_path_factory.mktemp("archive")
    with storescp(output_dir=folder, aet="ARCHIVE") as peer:
        yield peer, folder


def pet_ct(patient_id: str, images: int) -> tuple[list[Dataset], list[Dataset]]:
    """A CT and a PET series of one study, on the same grid (the PET is relabelled CT)."""
    study = pydicom.uid.generate_uid()
    return series(patient_id, "CT", images, study_uid=study), series(patient_id, "PT", images, study_uid=study)


async def our_client(port: int, datasets: list[Dataset]) -> list[int]:
    async with aiodicom.connect("127.0.0.1", port, called_ae="PETCT") as assoc:
        return [int(await assoc.store(ds)) for ds in datasets]


@pytest.mark.anyio
@pytest.mark.dcmtk("storescp")
async def test_pet_ct_sends_a_seg_per_patient_to_storescp(archive: tuple[Peer, Path], tmp_path: Path) -> None:
    module = example("pet_ct_pipeline")
    peer, folder = archive
    images = module.MIN_IMAGES
    patients = {"PETCT1": pet_ct("PETCT1", images), "PETCT2": pet_ct("PETCT2", images),
                "CTONLY": (series("CTONLY", "CT", images), [])}  # fmt: skip
    pipeline = module.PETCT(port=0, data_directory=tmp_path / "data", destination=f"ARCHIVE@127.0.0.1:{peer.port}")
    async with anyio.create_task_group() as group:
        port = await group.start(pipeline.serve)
        results: dict[str, object] = {}

        async def pynetdicom_sends(patient: str) -> None:
            ct, pet = patients[patient]
            results[patient] = (await send_async(port, [*pet, *ct], called_ae="PETCT")).statuses

        async def we_send(patient: str) -> None:
            ct, pet = patients[patient]
            results[patient] = await our_client(port, [*ct, *pet])

        async with anyio.create_task_group() as senders:  # three associations at once
            senders.start_soon(pynetdicom_sends, "PETCT1")
            senders.start_soon(we_send, "PETCT2")
            senders.start_soon(we_send, "CTONLY")
        await wait_until(lambda: pipeline.status().counts.get("exported", 0) >= 2, what="two exports")
        status = pipeline.status()
        pipeline.shutdown(grace=5)
    assert results["PETCT1"] == [(0, None)] * (2 * images)
    assert results["PETCT2"] == [0] * (2 * images) and results["CTONLY"] == [0] * images
    assert status.counts["processed"] == 2 and status.failed == 0
    assert (status.patients_waiting, status.instances_waiting) == (1, images)  # CT only: no PET yet

    segs = {ds.PatientID: ds for ds in map(pydicom.dcmread, folder.rglob("*")) if ds.Modality == "SEG"}
    assert sorted(segs) == ["PETCT1", "PETCT2"]
    for patient, seg in segs.items():
        ct, pet = patients[patient]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pet[0].SeriesInstanceUID
        expected = module.hot_spots(numpy_grinder(pet).array, numpy_grinder(ct).array, pipeline.hot_fraction)
        assert expected.any()
        (roi,) = seg_to_masks(seg, pet)
        assert roi.name == "hot" and np.array_equal(roi.mask, expected)


# --- the Starlette app -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_starlette_status_follows_a_study_until_exported(tmp_path: Path) -> None:
    study = write(series("WEB01", "CT", 6), tmp_path / "study")
    http_port, dicom_port = free_port(), free_port()
    env = {"HTTP_PORT": str(http_port), "DICOM_PORT": str(dicom_port), "DATA_DIR": str(tmp_path / "data"),
           "OUTPUT_DIR": str(tmp_path / "web-output")}  # fmt: skip
    url = f"http://127.0.0.1:{http_port}/status"
    with run_peer([sys.executable, str(EXAMPLES / "starlette_pipeline.py")], http_port, env=env, grace=20) as app:
        before = httpx.get(url, timeout=10)
        assert before.headers["content-type"] == "application/json"
        assert before.json()["counts"] == {} and before.json()["patients_waiting"] == 0

        async def send_and_watch() -> dict[str, object]:
            async with httpx.AsyncClient(timeout=10) as http:
                async with aiodicom.connect("127.0.0.1", dicom_port, called_ae="WEBNODE") as assoc:
                    async for _path, stored in assoc.store_files(study):
                        assert isinstance(stored, aiodicom.Status) and stored.is_success
                    during: dict[str, object] = (await http.get(url)).json()
                    assert during["associations"] == 1 and during["instances_waiting"] == len(study)
                with anyio.fail_after(TEST_TIMEOUT):
                    while (status := (await http.get(url)).json())["counts"].get("exported") != 1:
                        await anyio.sleep(0.05)
                return status

        after = anyio.run(send_and_watch)
        counts = after["counts"]
        assert (counts["received"], counts["validated"], counts["processed"], counts["exported"]) == (len(study), 1, 1, 1)
        assert not {"rejected", "unroutable", "quarantined", "dead_lettered"} & counts.keys(), counts
        assert (after["patients_waiting"], after["queued"], after["processing"], after["exporting"]) == (0, 0, 0, 0)
        assert after["outbox"]["delivered"] == 1
        app.process.send_signal(signal.SIGTERM)
        app.process.wait(timeout=30)
    output = app.output()
    assert "Application shutdown complete." in output and "Traceback" not in output, output
    written = sorted(p.name for p in (tmp_path / "web-output").rglob("*.dcm"))
    assert written == sorted(p.name for p in study)
