"""Shared by the ``test_export_*`` files: small synthetic data and what a peer stored.

Peers are real processes (DCMTK ``storescp``, Orthanc) started by PID through
``tests/peers.py`` and ``tests/orthanc_peer.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from aiodicom.synthetic import make_dataset
from peers import dataset_bytes


def small_datasets(count: int, *, patient_id: str = "EXPORT01", **options: object) -> list[Dataset]:
    """``count`` 16x16 CT slices of one series, each with file meta."""
    first = make_dataset(patient_id=patient_id, rows=16, columns=16, slices=count, **options)  # type: ignore[arg-type]
    rest = [
        make_dataset(patient_id=patient_id, rows=16, columns=16, slices=count, index=n,
                     study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                     **options)  # type: ignore[arg-type]
        for n in range(1, count)
    ]
    return [first, *rest]


def snapshot(datasets: list[Dataset]) -> list[bytes]:
    """Every attribute of every data set, file meta and private state included."""
    return [pickle.dumps(ds) for ds in datasets]


def stored_by_uid(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every DICOM file a peer wrote under ``folder``."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.endswith((".json", ".log")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            found[str(ds.SOPInstanceUID)] = path
    return found


def same_data(path: Path, dataset: Dataset) -> bool:
    """True when the file holds ``dataset``'s elements (compared decoded, pixels included)."""
    stored = pydicom.dcmread(path)
    return stored == dataset and dataset_bytes(path) != b""
