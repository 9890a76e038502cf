"""``aiodicom contours`` and ``aiodicom masks``, run as real commands in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest

from aiodicom.grinders.nifti import volume_to_nifti
from aiodicom.grinders.numpy import Volume
from aiodicom.grinders.segmentation import ImageGrid
from segmentation.helpers import SHAPE, oblique_series, sphere, thin, torus


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodicom", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _labels() -> npt.NDArray[np.uint16]:
    labels = np.zeros(SHAPE, dtype=np.uint16)
    labels[torus()] = 2
    labels[thin() & ~torus()] = 7
    return labels


def _nifti(array: npt.NDArray[np.uint16], affine: npt.NDArray[np.float64], path: Path) -> Path:
    nib.save(volume_to_nifti(Volume(array, affine, (1.0, 1.0, 1.0))), path)
    return path


def _zyx(path: Path) -> npt.NDArray[np.generic]:
    data = np.asarray(nib.load(path).dataobj)
    return data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return oblique_series(tmp_path_factory.mktemp("oblique") / "ct")


@pytest.mark.parametrize("kind", ["rtstruct-oblique", "seg-axial"])
def test_contours_then_masks_gives_the_labels_back(
    oblique: list[Path], axial: list[Path], tmp_path: Path, kind: str
) -> None:
    """An RTSTRUCT on the tilted series, a SEG on the axial one (each CLI run costs ~1 s)."""
    seg = kind.startswith("seg")
    series = axial if seg else oblique
    folder = series[0].parent
    grid = ImageGrid.of(series)
    labels = _labels()
    mask = _nifti(labels, grid.affine, tmp_path / "labels.nii.gz")
    out = tmp_path / "out.dcm"
    done = _run("contours", folder, mask, out, "--names", "ring,wire", *(["--seg"] if seg else []))
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: {'SEG' if seg else 'RT Structure Set'} with 2 region(s)" in done.stdout
    back = tmp_path / "back.nii.gz"
    done = _run("masks", folder, out, back)
    assert done.returncode == 0, done.stderr
    assert "label 2: ring" in done.stdout and "label 7: wire" in done.stdout
    assert np.array_equal(_zyx(back), labels)
    assert np.allclose(nib.load(back).affine, nib.load(mask).affine, atol=1e-4)


def test_masks_stacks_overlapping_rois_and_chooses_them(axial: list[Path], tmp_path: Path) -> None:
    folder = axial[0].parent
    grid = ImageGrid.of(axial)
    stack = np.stack([sphere(), torus()]).astype(np.uint8)
    mask = tmp_path / "stack.nii.gz"
    nib.save(
        nib.Nifti1Image(
            stack.transpose(3, 2, 1, 0),
            volume_to_nifti(Volume(stack[0], grid.affine, (1.0, 1.0, 1.0))).affine,
        ),
        mask,
    )
    out = tmp_path / "rs.dcm"
    assert _run("contours", folder, mask, out).returncode == 0
    refused = _run("masks", folder, out, tmp_path / "labels.nii.gz")
    assert refused.returncode == 1
    assert (
        refused.stderr.count("\n") == 1
        and "overlap" in refused.stderr
        and "--stack" in refused.stderr
    )
    stacked = tmp_path / "stacked.nii.gz"
    done = _run("masks", folder, out, stacked, "--stack")
    assert done.returncode == 0, done.stderr
    assert np.array_equal(_zyx(stacked), stack)
    chosen = tmp_path / "chosen.nii.gz"
    done = _run("masks", folder, out, chosen, "--roi", "ROI 2")
    assert done.returncode == 0, done.stderr
    assert np.array_equal(_zyx(chosen), np.where(torus(), 2, 0))


def test_errors_are_one_line(axial: list[Path], tmp_path: Path) -> None:
    folder = axial[0].parent
    grid = ImageGrid.of(axial)
    shifted = grid.affine.copy()
    shifted[:3, 3] += 0.5
    mask = _nifti(_labels(), shifted, tmp_path / "shifted.nii.gz")
    done = _run("contours", folder, mask, tmp_path / "x.dcm")
    assert done.returncode == 1 and "not on the grid" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "x.dcm").exists()
    done = _run("masks", folder, axial[0], tmp_path / "x.nii.gz")
    assert done.returncode == 1 and "0 structure sets or segmentations" in done.stderr
    done = _run("masks", folder, axial[0], tmp_path / "x.txt")
    assert done.returncode == 1 and "must end in .nii" in done.stderr
    assert list(tmp_path.glob("*.dcm")) == [] and not list(tmp_path.glob("x.*"))
