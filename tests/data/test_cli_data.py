"""``aiodicom show`` and ``aiodicom to-nifti`` through the real CLI entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from aiodicom.cli import main
from aiodicom.data.geometry import lps_to_ras
from tests.data import synth

OBLIQUE = synth.rotation(0.3, 0.1, -0.2)


def _ct_folder(folder: Path, n: int = 4) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    stored = synth.ramp((n, 6, 5), np.uint16, 0, 4095, seed=11)
    affine = synth.make_affine((2.0, 0.8, 0.6), (10.0, 20.0, -30.0), OBLIQUE)
    paths = synth.write(
        synth.make_series(stored, affine, slopes=1, intercepts=-1024, bits_stored=12), folder
    )
    return stored, affine, paths


def test_show_prints_header_sequences_and_pixel_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored, _, paths = _ct_folder(tmp_path)
    ds = synth.make_series(stored[:1], slopes=1, intercepts=-1024, bits_stored=12)[0]
    item = Dataset()
    item.CodeValue = "T-D0050"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", "secret sauce")
    path = synth.write([ds], tmp_path / "seq")[0]
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "transfer syntax: Explicit VR Little Endian" in out
    assert "(0010,0020) LO PatientID: SYNTH01" in out
    assert "UI SOPClassUID: 1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)" in out
    assert "(0008,2218) SQ AnatomicRegionSequence: 1 item(s)" in out
    assert "\n  item 1\n    (0008,0100) SH CodeValue: T-D0050\n" in out  # nested, indented
    assert "(0009,0010) LO Private Creator: ACME 1.0" in out
    assert "(0009,1001) LO Private tag data: secret sauce" in out
    low, high = int(stored[0].min()) - 1024, int(stored[0].max()) - 1024
    assert f"values: int16, min {low}, max {high}" in out
    assert "pixels: 6 x 5, 1 frame(s), 1 sample(s), 16/12 bits unsigned" in out


def test_show_without_pixels_and_with_width(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, paths = _ct_folder(tmp_path, 1)
    assert main(["show", "--no-pixels", "--width", "30", str(paths[0])]) == 0
    out = capsys.readouterr().out
    assert "values:" not in out
    assert all(len(line) <= 30 for line in out.splitlines())


def test_show_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 10)
    assert main(["show", str(junk)]) == 1
    assert main(["show", str(tmp_path / "missing.dcm")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("aiodicom show: error:") for line in err)


def test_to_nifti_writes_the_series_with_its_ras_affine(tmp_path: Path) -> None:
    stored, affine, _ = _ct_folder(tmp_path / "series", 5)
    out = tmp_path / "ct.nii.gz"
    # Through a real process, as a user would run it.
    done = subprocess.run(
        [sys.executable, "-m", "aiodicom", "to-nifti", str(tmp_path / "series"), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "5 instance(s)" in done.stdout
    image = nib.load(out)
    np.testing.assert_allclose(image.affine, lps_to_ras(affine), atol=1e-4)
    np.testing.assert_array_equal(
        np.asarray(image.dataobj), (stored.astype(np.int32) - 1024).transpose(2, 1, 0)
    )
    assert not list(tmp_path.glob(".*partial*"))


def test_to_nifti_picks_a_series_or_explains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ct_folder(tmp_path / "in" / "a", 3)
    _, _, paths = _ct_folder(tmp_path / "in" / "b", 2)
    out = tmp_path / "x.nii"
    assert main(["to-nifti", str(tmp_path / "in"), str(out)]) == 1
    assert "holds 2 series, choose one with --series" in capsys.readouterr().err
    import pydicom

    uid = pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID
    assert main(["to-nifti", str(tmp_path / "in"), str(out), "--series", uid]) == 0
    assert nib.load(out).shape == (5, 6, 2)
    assert main(["to-nifti", str(tmp_path / "in"), str(out), "--series", "1.2.3"]) == 1
    assert main(["to-nifti", str(tmp_path / "in"), str(tmp_path / "x.png")]) == 1
    assert main(["to-nifti", str(tmp_path / "nothing"), str(out)]) == 1
    (tmp_path / "empty").mkdir()
    assert main(["to-nifti", str(tmp_path / "empty"), str(out)]) == 1
    err = capsys.readouterr().err
    assert "no series 1.2.3" in err and ".nii or .nii.gz" in err and "no DICOM series" in err


def test_to_nifti_refuses_an_inconsistent_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, paths = _ct_folder(tmp_path / "s", 4)
    paths[2].unlink()  # a missing slice: uneven spacing
    assert main(["to-nifti", str(tmp_path / "s"), str(tmp_path / "o.nii")]) == 1
    assert "uneven slice spacing" in capsys.readouterr().err
    assert not (tmp_path / "o.nii").exists()


def test_show_a_file_without_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = synth.make_series(np.zeros((1, 2, 2), np.uint16))[0]
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    path = synth.write([ds], tmp_path)[0]
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("pixels: none")


@pytest.mark.dcmtk
@pytest.mark.dcmtk("dcmcjpeg")
def test_show_still_prints_the_header_when_pixels_cannot_be_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, paths = _ct_folder(tmp_path, 1)
    jpeg = tmp_path / "jpeg.dcm"
    subprocess.run(["dcmcjpeg", "+e1", str(paths[0]), str(jpeg)], check=True, capture_output=True)
    assert main(["show", "--width", "0", str(jpeg)]) == 0
    out = capsys.readouterr().out
    assert "(0010,0020) LO PatientID: SYNTH01" in out
    assert "JPEG Lossless" in out
    try:
        import pylibjpeg  # noqa: F401
    except ImportError:
        assert "values: not decoded (cannot decode pixel data" in out
        assert "aiodicom[codecs]" in out
    else:
        assert "values: int16" in out
