"""``aiodicom anonymize`` and ``aiodicom from-nifti`` on files the tests write themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from aiodicom.cli import main
from aiodicom.factory import encapsulate_pdf, validate, write_series
from factory.conftest import DcmdumpCheck
from factory.helpers import OBLIQUE, ct_parent


@pytest.fixture
def series_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "Doe^Jane" / "series"
    write_series(ct_parent(), folder)
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_anonymize_folder(
    series_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clean"
    mapping = tmp_path / "mapping.json"
    assert main(["anonymize", str(series_dir), str(out), "--mapping", str(mapping)]) == 0
    files = sorted(out.iterdir())
    assert len(files) == 4
    captured = capsys.readouterr()
    assert "4 file(s) de-identified" in captured.out
    assert "notes.txt" in captured.err  # reported, not fatal
    datasets = [pydicom.dcmread(f) for f in files]
    assert {f.name for f in files} == {f"{ds.SOPInstanceUID}.dcm" for ds in datasets}
    assert all(ds.PatientName == "ANON000001" and ds.StudyDate == "" for ds in datasets)
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    # A second run with the same mapping file gives the same UIDs.
    again = tmp_path / "again"
    assert main(["anonymize", str(series_dir), str(again), "--mapping", str(mapping)]) == 0
    assert sorted(p.name for p in again.iterdir()) == [f.name for f in files]


def test_anonymize_one_file_with_options(series_dir: Path, tmp_path: Path) -> None:
    source = sorted(series_dir.glob("*.dcm"))[0]
    target = tmp_path / "one.dcm"
    assert main(["anonymize", str(source), str(target), "--retain-uids", "--retain-dates"]) == 0
    original, clean = pydicom.dcmread(source), pydicom.dcmread(target)
    assert clean.SOPInstanceUID == original.SOPInstanceUID
    assert clean.StudyDate == original.StudyDate
    assert clean.PatientID != original.PatientID


def test_anonymize_refuses_burned_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = write_series([encapsulate_pdf(b"%PDF-1.4\n")], tmp_path / "pdf")[0]
    assert main(["anonymize", str(pdf), str(tmp_path / "out.dcm")]) == 1
    assert "BurnedInAnnotation" in capsys.readouterr().err
    assert not (tmp_path / "out.dcm").exists()


def test_anonymize_missing_input_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["anonymize", str(tmp_path / "nope"), str(tmp_path / "out")]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.dcmtk
def test_from_nifti_like_parent(
    series_dir: Path, tmp_path: Path, dcmdump_clean: DcmdumpCheck
) -> None:
    data = np.random.default_rng(1).random((5, 6, 3)).astype(np.float32) * 100  # (i, j, k)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ OBLIQUE
    nifti = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(data, ras), nifti)
    out = tmp_path / "derived"
    code = main(
        ["from-nifti", str(nifti), "--like", str(series_dir), str(out), "--description", "Mask"]
    )
    assert code == 0
    files = sorted(out.iterdir())
    datasets = [pydicom.dcmread(f) for f in files]
    parent = pydicom.dcmread(sorted(series_dir.glob("*.dcm"))[0])
    assert len(datasets) == 3
    for ds in datasets:
        assert ds.Modality == "CT" and ds.SeriesDescription == "Mask"
        assert ds.PatientID == parent.PatientID and ds.StudyInstanceUID == parent.StudyInstanceUID
        assert ds.SeriesInstanceUID != parent.SeriesInstanceUID
        assert validate(ds) == []
    dcmdump_clean(files, tmp_path)
    # The voxels and the geometry are the NIfTI's (checked with part A's grinder).
    from aiodicom.grinders.nifti import nifti_grinder
    back = nifti_grinder(files)
    np.testing.assert_allclose(back.affine, ras, atol=1e-6)
    slope = float(datasets[0].RescaleSlope)
    np.testing.assert_allclose(np.asanyarray(back.dataobj), data, atol=slope / 2 + 1e-4)


def test_from_nifti_errors(
    series_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nifti = tmp_path / "bad.nii.gz"
    nifti.write_bytes(b"not nifti")
    assert main(["from-nifti", str(nifti), "--like", str(series_dir), str(tmp_path / "o")]) == 1
    assert (
        main(["from-nifti", str(nifti), "--like", str(tmp_path / "none"), str(tmp_path / "o")]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("error:") == 2


def test_entry_point_runs_as_a_program(series_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiodicom", "anonymize", str(series_dir), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "o").iterdir())) == 4
