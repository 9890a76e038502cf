"""The NIfTI grinder: RAS affine from the series geometry, voxel order, files nibabel reads."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aiodicom.data.geometry import lps_to_ras
from aiodicom.grinders.nifti import nifti_grinder, volume_to_nifti
from aiodicom.grinders.numpy import numpy_grinder
from tests.data import synth

OBLIQUE = synth.rotation(-0.4, 0.25, 1.1)


def _nibabel_wrapper(ds):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import dicomwrappers

        return dicomwrappers.wrapper_from_data(ds)


@pytest.mark.parametrize("rot", [np.eye(3), OBLIQUE], ids=["axial", "oblique"])
def test_voxels_land_where_nibabel_puts_the_dicom_pixels(tmp_path: Path, rot: np.ndarray) -> None:
    stored = synth.ramp((4, 6, 5), np.int16, -1000, 1000, seed=1)
    affine = synth.make_affine((3.0, 0.75, 0.5), (-60.0, 25.0, -10.0), rot)
    datasets = synth.make_series(stored, affine, modality="MR")
    paths = synth.write(datasets, tmp_path / "dicom")
    image = nifti_grinder(paths[::-1])
    out = tmp_path / "out.nii.gz"
    nib.save(image, out)
    loaded = nib.load(out)
    data = np.asarray(loaded.dataobj)
    assert data.shape == (5, 6, 4)  # [i, j, k] = column, row, slice
    assert loaded.get_data_dtype() == np.int16
    for code_affine in (loaded.affine, loaded.get_qform(), loaded.get_sform()):
        np.testing.assert_allclose(code_affine, lps_to_ras(affine), atol=1e-4)
    assert int(loaded.header["sform_code"]) == 1 and int(loaded.header["qform_code"]) == 1
    # Every DICOM pixel: same value at the same RAS position (nibabel as reference).
    for k, ds in enumerate(datasets):
        wrapper = _nibabel_wrapper(ds)
        for r, c in ((0, 0), (5, 4), (2, 3)):
            lps = wrapper.affine @ [r, c, 0, 1]
            ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
            i, j, kk, _ = np.linalg.inv(loaded.affine) @ ras
            idx = tuple(int(round(v)) for v in (i, j, kk))
            assert idx == (c, r, k)
            assert data[idx] == wrapper.get_data()[r, c]


def test_axial_lps_series_reads_as_las_in_nibabel() -> None:
    stored = synth.ramp((3, 4, 4), np.uint16, 0, 4095)
    image = nifti_grinder(synth.make_series(stored))
    # Columns run to patient left (L), rows to posterior (P), slices to head (S):
    # in RAS terms that is L, P, S.
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")


def test_rgb_becomes_rgb24(tmp_path: Path) -> None:
    rgb = synth.ramp((2, 3, 4, 3), np.uint8, 0, 255, seed=3)
    image = nifti_grinder(synth.make_rgb_series(rgb))
    out = tmp_path / "rgb.nii"
    nib.save(image, out)
    loaded = nib.load(out)
    data = np.asarray(loaded.dataobj)
    assert data.shape == (4, 3, 2)
    assert data[1, 2, 0]["G"] == rgb[0, 2, 1, 1]
    assert data[3, 0, 1]["B"] == rgb[1, 0, 3, 2]


def test_nominal_geometry_is_marked_unknown() -> None:
    stored = synth.ramp((2, 3, 3), np.uint8, 0, 255)
    image = volume_to_nifti(numpy_grinder(synth.make_series(stored, geometry=False)))
    assert int(image.header["sform_code"]) == 0
    assert int(image.header["qform_code"]) == 0


def test_float_pet_keeps_values() -> None:
    stored = synth.ramp((3, 2, 2), np.uint16, 0, 30000)
    slopes = [0.01, 0.02, 0.5]
    image = nifti_grinder(synth.make_series(stored, modality="PT", slopes=slopes, intercepts=0))
    data = np.asarray(image.dataobj)
    assert data.dtype == np.float32
    np.testing.assert_allclose(
        data, (stored * np.array(slopes)[:, None, None]).transpose(2, 1, 0), rtol=1e-6
    )
