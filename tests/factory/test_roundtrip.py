"""The round-trip guarantee, as properties over shapes, dtypes, spacings and orientations.

numpy -> build_series -> numpy_grinder gives the same voxels (within half a rescale
step) and the same affine; NIfTI -> build_series -> nifti_grinder the same affine
and data. The grinders are part A's real implementations.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from aiodicom.factory import build_series, validate
from aiodicom.factory.blueprints import CT_SERIES, MR_SERIES, PET_SERIES, SECONDARY_CAPTURE_SERIES
from aiodicom.grinders import nifti as grinders_nifti  # plain imports: never a reason to skip
from aiodicom.grinders import numpy as grinders_numpy
from factory.helpers import make_affine

pytestmark = pytest.mark.filterwarnings("error::UserWarning")

DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]
BLUEPRINTS = [CT_SERIES, MR_SERIES, PET_SERIES, SECONDARY_CAPTURE_SERIES]

angles = st.floats(-math.pi, math.pi, allow_nan=False)
spacings = st.floats(0.05, 20.0, allow_nan=False)
origins = st.floats(-1000.0, 1000.0, allow_nan=False)


@st.composite
def affines(draw: st.DrawFn) -> npt.NDArray[np.float64]:
    affine = make_affine(
        (draw(spacings), draw(spacings), draw(spacings)),
        (draw(angles), draw(angles), draw(angles)),
        (draw(origins), draw(origins), draw(origins)),
    )
    if draw(st.booleans()):
        affine[:3, 2] *= -1  # slices stacked against the normal: a left-handed affine
    return affine


@st.composite
def volumes(draw: st.DrawFn) -> npt.NDArray[np.generic]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low = draw(st.integers(int(info.min), int(info.max)))
        high = draw(st.integers(low, int(info.max)))
        return rng.integers(low, high, shape, endpoint=True, dtype=dtype)
    scale = 10.0 ** draw(st.integers(-6, 6))
    offset = draw(st.floats(-1e3, 1e3)) * scale
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def in_grinder_order(
    volume: npt.NDArray[np.generic], affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float64]]:
    """The same voxels indexed the way grinders index them (slices along the normal).

    A left-handed affine stacks slices against the normal; grinders sort along it,
    so they give the same physical volume with k reversed.
    """
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    if volume.shape[0] == 1 or float(normal @ affine[:3, 2]) > 0:
        return volume, affine
    n = volume.shape[0]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, n - 1
    return volume[::-1], affine @ flip


def assert_same_affine(actual: npt.ArrayLike, expected: npt.NDArray[np.float64]) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6 * scale)


def tolerance(datasets: list[Dataset], volume: npt.NDArray[np.generic]) -> float:
    """Half a rescale step, plus float32 rounding of the grinder's output."""
    slope = float(datasets[0].get("RescaleSlope", 1))
    magnitude = float(np.abs(volume.astype(np.float64)).max(initial=0.0))
    return slope / 2 * (1 + 1e-9) + magnitude * 2e-7 + slope * 1e-6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volume=volumes(), affine=affines(), blueprint=st.sampled_from(BLUEPRINTS))
def test_numpy_round_trip(
    volume: npt.NDArray[np.generic], affine: npt.NDArray[np.float64], blueprint: object
) -> None:
    datasets = build_series(volume, blueprint, affine=affine)  # type: ignore[arg-type]
    assert all(validate(ds) == [] for ds in datasets)
    ground = grinders_numpy.numpy_grinder(datasets)
    expected_volume, expected_affine = in_grinder_order(volume, affine)
    if volume.shape[0] > 1:
        assert_same_affine(ground.affine, expected_affine)
    else:
        # One slice has no slice step: only the plane and the position are defined.
        assert_same_affine(ground.affine[:, [0, 1, 3]], expected_affine[:, [0, 1, 3]])
    assert ground.array.shape == volume.shape
    np.testing.assert_allclose(
        ground.array.astype(np.float64),
        expected_volume.astype(np.float64),
        rtol=0,
        atol=tolerance(datasets, volume),
    )
    if np.dtype(volume.dtype).kind in "iu" and np.dtype(volume.dtype).itemsize <= 2:
        np.testing.assert_array_equal(ground.array, expected_volume)


@settings(max_examples=40, deadline=None)
@given(
    affine=affines(),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(2, 4)),
    dtype=st.sampled_from(["int16", "uint8", "float32"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_nifti_round_trip(
    affine: npt.NDArray[np.float64], shape: tuple[int, int, int], dtype: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal(shape) * 100).astype(dtype)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    image = nib.Nifti1Image(data, ras)
    datasets = build_series(image, MR_SERIES)
    result = grinders_nifti.nifti_grinder(datasets)
    expected_zyx, expected_lps = in_grinder_order(data.transpose(2, 1, 0), affine)
    assert_same_affine(result.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected_lps)
    got = np.asanyarray(result.dataobj).astype(np.float64)
    np.testing.assert_allclose(
        got,
        expected_zyx.transpose(2, 1, 0).astype(np.float64),
        rtol=0,
        atol=tolerance(datasets, data),
    )


def test_rgb_round_trip() -> None:
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 256, (3, 4, 5, 3)).astype(np.uint8)
    affine = make_affine((0.5, 0.5, 1.0), (0.2, 0.1, -0.3))
    ground = grinders_numpy.numpy_grinder(
        build_series(volume, SECONDARY_CAPTURE_SERIES, affine=affine)
    )
    np.testing.assert_array_equal(ground.array, volume)
    assert_same_affine(ground.affine, affine)


def test_grinder_volume_goes_back_to_dicom_in_the_same_place() -> None:
    from factory.helpers import OBLIQUE, ct_parent

    parent = ct_parent(affine=OBLIQUE)
    volume = grinders_numpy.numpy_grinder(parent)
    derived = build_series(volume, CT_SERIES, parent)  # a grinder Volume, no affine argument
    again = grinders_numpy.numpy_grinder(derived)
    assert_same_affine(again.affine, volume.affine)
    np.testing.assert_array_equal(again.array, volume.array)
    # Each derived slice references the parent slice at the same position.
    for ds, source in zip(derived, volume.datasets, strict=True):
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
