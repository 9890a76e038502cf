"""``ReceivedInstance.save_under``: wire values never climb out of the folder or collide.

Instances with hostile Patient IDs and UIDs travel over a real association to a
running Server whose handler files them with ``save_under``; the test then
looks at what landed on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pydicom
import pytest

import aiodicom
from aiodicom.dimse.store import ReceivedInstance, StorageError
from aiodicom.synthetic import make_dataset

# pydicom warns about the invalid values this test sends on purpose.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

HOSTILE_PATIENT_IDS = [
    "../../x", "..", ".", "", "\t", "a/b", "a\\b", "a_b", "_a_b", "A" * 70, "Müller", "名前",
    "CON", "nul.txt", "COM1", "lpt9", "x\0y", "trailing.", "-", "ok-ID_1.2", "_unknown-PatientID",
]
LAYOUT = "{PatientID}/{StudyInstanceUID}/{Modality}_{SeriesNumber}/{SOPInstanceUID}.dcm"


def dataset(index: int, patient_id: str, **uids: str) -> pydicom.Dataset:
    ds = make_dataset(rows=8, columns=8, seed=index)
    ds.PatientID = patient_id
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    return ds


def assert_safe_tree(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        assert path.resolve().is_relative_to(root.resolve()), path
        for part in path.relative_to(root).parts:
            assert part not in (".", "..") and 0 < len(part) <= 64 + 14 + 4, part
            assert part.isascii() and "\0" not in part and "\\" not in part, part
            assert part.split(".")[0].upper() not in {"CON", "NUL", "COM1", "LPT9"}, part
            assert not part.endswith("."), part
    return files


async def test_hostile_values_stay_inside_and_never_collide(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    outside_before = set(tmp_path.parent.iterdir())
    saved: dict[str, Path] = {}

    async def on_store(instance: ReceivedInstance) -> None:
        saved[instance.sop_instance_uid] = instance.save_under(root, LAYOUT)

    sent = [dataset(i, pid) for i, pid in enumerate(HOSTILE_PATIENT_IDS)]
    # Hostile UIDs too: the command set's UID and the data set's (what the layout reads).
    sent.append(dataset(90, "P", StudyInstanceUID="../../../../etc", SeriesInstanceUID="1.2/../3"))
    sent.append(dataset(91, "P", StudyInstanceUID="..", SOPInstanceUID="../evil"))
    server = aiodicom.Server("SCP", "127.0.0.1", 0, on_store=on_store)
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(server.serve)
        with anyio.fail_after(30):
            async with aiodicom.connect("127.0.0.1", port, called_ae="SCP") as assoc:
                for ds in sent:
                    (await assoc.store(ds)).raise_for_status()
        server.shutdown(grace=1)
    files = assert_safe_tree(root)
    assert len(files) == len(sent) == len(set(saved.values()))  # no two instances on one path
    assert set(tmp_path.parent.iterdir()) == outside_before
    assert not (tmp_path / "x").exists() and not Path("/etc/evil.dcm").exists()
    # One folder per distinct Patient ID: "a/b", "a\\b" and "a_b" stay apart.
    folders = {saved[str(ds.SOPInstanceUID)].relative_to(root).parts[0] for ds in sent[: len(HOSTILE_PATIENT_IDS)]}
    assert len(folders) == len(HOSTILE_PATIENT_IDS), folders
    # Plain values are kept as they are, and the files are the instances sent.
    plain = saved[str(sent[HOSTILE_PATIENT_IDS.index("ok-ID_1.2")].SOPInstanceUID)]
    assert plain.relative_to(root).parts[0] == "ok-ID_1.2"
    assert plain.relative_to(root).parts[2] == "CT_1"
    for ds in sent:
        assert pydicom.dcmread(saved[str(ds.SOPInstanceUID)]).SOPInstanceUID == ds.SOPInstanceUID


async def test_layouts_that_leave_the_root_or_name_unknown_fields_are_refused(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    async def on_store(instance: ReceivedInstance) -> int:
        for layout in ("../{SOPInstanceUID}.dcm", "/tmp/{SOPInstanceUID}.dcm", "{PatientName}.dcm",
                       "{SOPInstanceUID!r}.dcm"):
            try:
                instance.save_under(tmp_path / "root", layout)
            except (StorageError, ValueError) as exc:
                errors.append(exc)
        instance.save_under(tmp_path / "root")  # the default layout
        return 0

    server = aiodicom.Server("SCP", "127.0.0.1", 0, on_store=on_store)
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(server.serve)
        with anyio.fail_after(30):
            async with aiodicom.connect("127.0.0.1", port, called_ae="SCP") as assoc:
                ds = dataset(0, "P")
                (await assoc.store(ds)).raise_for_status()
        server.shutdown(grace=1)
    assert len(errors) == 4
    files = assert_safe_tree(tmp_path / "root")
    assert [f.relative_to(tmp_path / "root").parts for f in files] == [
        (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), f"{ds.SOPInstanceUID}.dcm")
    ]
    assert not any(p.name.endswith(".dcm") for p in tmp_path.iterdir() if p.is_file())
    assert os.listdir(tmp_path) == ["root"]
