"""Patient / study / series trees and discovery from a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from aiodicom.data import LazyDataset
from aiodicom.data.tree import DicomTree, discover
from aiodicom.errors import DicomFileError, MissingTagError
from tests.data import synth


def _series(n: int, patient: str = "SYNTH01", study: str | None = None) -> list:
    datasets = synth.make_series(np.zeros((n, 2, 2), np.uint16), study_uid=study)
    for ds in datasets:
        ds.PatientID = patient
    return datasets


def test_grouping_patient_study_series() -> None:
    study = generate_uid()
    a, b, c = _series(3, study=study), _series(2, study=study), _series(4, patient="OTHER")
    tree = DicomTree.from_instances(a + c + b)
    assert set(tree.patients) == {"SYNTH01", "OTHER"}
    patient = tree.patients["SYNTH01"]
    assert list(patient.studies) == [study] and len(patient) == 5
    node = patient.studies[study]
    assert [len(s) for s in node.series.values()] == [3, 2]
    series = node.series[a[0].SeriesInstanceUID]
    assert series.modality == "CT" and series.description == "synthetic CT"
    assert list(series) == a
    assert len(tree) == 9 and len(list(tree.studies())) == 2 and len(list(tree.series())) == 3
    assert tree.find_series(c[0].SeriesInstanceUID).instances == c
    with pytest.raises(KeyError):
        tree.find_series("1.2.3")


def test_missing_uids_are_refused() -> None:
    ds = _series(1)[0]
    del ds.SeriesInstanceUID
    with pytest.raises(MissingTagError, match="SeriesInstanceUID"):
        DicomTree().add(ds)


def test_discover_reads_headers_only_and_skips_junk(tmp_path: Path) -> None:
    synth.write(_series(3), tmp_path / "one")
    synth.write(_series(2, patient="P2"), tmp_path / "two" / "deeper")
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / ".hidden").mkdir()
    synth.write(_series(1), tmp_path / ".hidden")
    no_uid = _series(1)[0]
    del no_uid.StudyInstanceUID
    synth.write([no_uid], tmp_path / "broken")

    tree = discover(tmp_path)
    assert len(tree) == 5
    assert sorted(p.name for p in tree.skipped) == ["000.dcm", "README.txt"]
    instance = next(iter(next(tree.series())))
    assert isinstance(instance, LazyDataset) and "PixelData" not in instance.header

    flat = discover(tmp_path / "two", recursive=False)
    assert len(flat) == 0
    single = discover(tmp_path / "one" / "000.dcm")
    assert len(single) == 1
    with pytest.raises(DicomFileError, match="no such"):
        discover(tmp_path / "missing")
