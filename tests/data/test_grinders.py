"""The simple grinders: identity, list, tree, series, tags, many."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from aiodicom.data import LazyDataset
from aiodicom.data.tree import DicomTree
from aiodicom.errors import GeometryError, InconsistentSeriesError, MissingTagError
from aiodicom.grinders import (
    Series,
    identity_grinder,
    list_grinder,
    many_grinder,
    series_grinder,
    tags_grinder,
    tree_grinder,
)
from aiodicom.grinders.numpy import Volume, numpy_grinder
from tests.data import synth


def _series(n: int = 4, **kw: object) -> list:
    stored = synth.ramp((n, 3, 3), np.uint16, 0, 4095)
    affine = synth.make_affine((2.0, 1.0, 1.0), rot=synth.rotation(0.1, 0.2, 0.3))
    return synth.make_series(stored, affine, **kw)  # type: ignore[arg-type]


def test_identity_and_list() -> None:
    datasets = _series()
    assert identity_grinder(datasets) is datasets
    generator = (d for d in datasets)
    listed = list_grinder(generator)
    assert listed == datasets and isinstance(listed, list)


def test_series_grinder_sorts_by_position_and_gives_the_affine(tmp_path: Path) -> None:
    datasets = _series(5, instance_numbers=[9, 3, 7, 1, 5])
    paths = synth.write(datasets, tmp_path)
    shuffled = list(paths)
    random.Random(2).shuffle(shuffled)
    series = series_grinder(shuffled)
    assert isinstance(series, Series)
    assert [d.SOPInstanceUID for d in series.datasets] == [d.SOPInstanceUID for d in datasets]
    expected = synth.make_affine((2.0, 1.0, 1.0), rot=synth.rotation(0.1, 0.2, 0.3))
    np.testing.assert_allclose(series.affine, expected, atol=1e-4)


def test_series_grinder_rejects_mixed_series_and_bad_geometry() -> None:
    with pytest.raises(InconsistentSeriesError, match="2 series"):
        series_grinder(_series(2) + _series(2))
    with pytest.raises(InconsistentSeriesError):
        series_grinder([])
    broken = _series(3)
    broken[1].PixelSpacing = [9, 9]
    with pytest.raises(GeometryError):
        series_grinder(broken)


def test_tags_grinder_required_and_optional() -> None:
    datasets = _series(2)
    grind = tags_grinder(["PatientID", 0x0020000D], optional=["PatientWeight", 0x00090010])
    values = grind(datasets)
    assert values == {
        "PatientID": "SYNTH01",
        "StudyInstanceUID": datasets[0].StudyInstanceUID,
        "PatientWeight": None,
        "00090010": None,
    }
    with pytest.raises(MissingTagError, match="PatientWeight"):
        tags_grinder(["PatientWeight"])(datasets)
    with pytest.raises(ValueError, match="unknown DICOM keyword"):
        tags_grinder(["PatientIdentifier"])
    with pytest.raises(InconsistentSeriesError):
        grind([])


def test_tags_grinder_reads_paths_without_pixels(tmp_path: Path) -> None:
    paths = synth.write(_series(2), tmp_path)
    assert tags_grinder(["Modality", "Rows"])(iter(paths)) == {"Modality": "CT", "Rows": 3}


def test_many_grinder_runs_each_on_the_same_instances() -> None:
    datasets = _series(3)
    grind = many_grinder(tree=tree_grinder, volume=numpy_grinder, ids=tags_grinder(["PatientID"]))
    result = grind(d for d in datasets)  # a generator is materialised once
    assert set(result) == {"tree", "volume", "ids"}
    assert isinstance(result["tree"], DicomTree) and len(result["tree"]) == 3
    assert isinstance(result["volume"], Volume) and result["volume"].array.shape == (3, 3, 3)
    assert result["ids"] == {"PatientID": "SYNTH01"}


def test_tree_grinder_accepts_lazy_datasets(tmp_path: Path) -> None:
    paths = synth.write(_series(2) + _series(3), tmp_path)
    tree = tree_grinder([LazyDataset(p) for p in paths])
    assert sorted(len(s) for s in tree.series()) == [2, 3]


def test_data_layer_never_pulls_in_the_network_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, aiodicom.data, aiodicom.grinders, aiodicom.grinders.numpy, "
        "aiodicom.grinders.nifti\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['aiodicom', 'ul'], ['aiodicom', 'transport'], ['aiodicom', 'dimse']) "
        "or m.startswith('pynetdicom'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
