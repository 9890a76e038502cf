"""FileExport: names never from raw wire values, files linked into place, no surprise overwrites."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest

from aiodicom.pipeline.export import ExportError, FileExport

from .export_helpers import small_datasets, snapshot, stored_by_uid

pytestmark = pytest.mark.anyio

HOSTILE_IDS = ["../../x", "", "..", "/etc/passwd", "A" * 70, "Åsa^Ünïcode", "CON", "a/b\\c", "x."]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # the 70-character ID, on purpose
async def test_hostile_values_in_the_layout_stay_inside_and_never_collide(tmp_path: Path) -> None:
    datasets = []
    for patient_id in HOSTILE_IDS:
        ds = small_datasets(1)[0]
        ds.PatientID = patient_id
        datasets.append(ds)
    out = tmp_path / "out"
    await FileExport(out, datasets, layout="{PatientID}/{Modality}/{SOPInstanceUID}.dcm").export()
    files = _files(tmp_path)  # everything written, anywhere under tmp_path
    assert len(files) == len(HOSTILE_IDS)
    assert all(out.resolve() in f.resolve().parents for f in files)
    assert len({f.parent.parent.name for f in files}) == len(HOSTILE_IDS)  # one folder per patient ID
    stored = stored_by_uid(out)
    for ds in datasets:
        assert pydicom.dcmread(stored[str(ds.SOPInstanceUID)]).PatientID == ds.PatientID


async def test_a_file_with_the_same_content_counts_as_written(tmp_path: Path) -> None:
    datasets = small_datasets(3)
    before = snapshot(datasets)
    for _ in range(2):  # a retried or resumed export
        await FileExport(tmp_path, iter(datasets), on_conflict="fail").export()
    assert len(_files(tmp_path)) == 3
    assert snapshot(datasets) == before


@pytest.mark.parametrize("policy", ["keep-both", "replace", "fail"])
async def test_other_content_under_the_same_name_follows_the_policy(tmp_path: Path, policy: str) -> None:
    (ds,) = small_datasets(1)
    name = f"{ds.SOPInstanceUID}.dcm"
    await FileExport(tmp_path, [ds]).export()
    changed = small_datasets(1)[0]
    changed.SOPInstanceUID = ds.SOPInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    changed.PatientID = "OTHER"
    export = FileExport(tmp_path, [changed], on_conflict=policy)  # type: ignore[arg-type]
    if policy == "fail":
        with pytest.raises(ExportError, match="already exists with other content"):
            await export.export()
        assert pydicom.dcmread(tmp_path / name).PatientID == ds.PatientID
    else:
        await export.export()
        ids = {p.name: pydicom.dcmread(p).PatientID for p in _files(tmp_path)}
        expected = {name: "OTHER"} if policy == "replace" else {
            name: ds.PatientID, f"{ds.SOPInstanceUID}_2.dcm": "OTHER"}
        assert ids == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


async def test_an_unwritable_folder_fails_each_instance_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-folder"
        blocked.write_text("x")
        folder = blocked / "out"  # a folder under a file: refused even for root
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    datasets = small_datasets(2)
    with pytest.raises(ExportError) as caught:
        await FileExport(folder, datasets).export()
    assert len(caught.value.failures) == 2
    # Reasons are logged: no paths (a layout may put IDs in them; the configured folder is named once).
    assert all(str(tmp_path) not in reason for _uid, reason in caught.value.failures)


async def test_a_single_data_set_path_or_bytes_is_a_batch_of_one(tmp_path: Path) -> None:
    ds, on_disk = small_datasets(2)
    path = tmp_path / "source.dcm"
    on_disk.save_as(path, enforce_file_format=True)
    for item in (ds, path, str(path), path.read_bytes()):
        await FileExport(tmp_path / "out", item).export()  # type: ignore[arg-type]
    assert sorted(stored_by_uid(tmp_path / "out")) == sorted([str(ds.SOPInstanceUID), str(on_disk.SOPInstanceUID)])


def test_a_layout_naming_an_unknown_field_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PatientName"):
        FileExport(tmp_path, [], layout="{PatientName}.dcm")
    with pytest.raises(ValueError, match="on_conflict"):
        FileExport(tmp_path, [], on_conflict="overwrite")  # type: ignore[arg-type]
