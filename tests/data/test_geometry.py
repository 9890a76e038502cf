"""Series geometry: affines, slice sorting, LPS/RAS, and agreement with nibabel."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.data.geometry import (
    affine_from_datasets,
    frame_geometries,
    lps_to_ras,
    orientation_and_positions,
    ras_to_lps,
    slice_normal,
    sort_by_slice_position,
    spacing_from_affine,
)
from aiodicom.errors import GeometryError
from tests.data import synth

# DS strings hold ~10 significant digits: positions are exact to well below a micron.
ATOL = 1e-4

OBLIQUE = synth.rotation(0.3, -0.4, 0.7)


def _series(n: int = 5, affine: np.ndarray | None = None, **kw: object) -> list:
    vol = np.zeros((n, 4, 3), dtype=np.int16)
    return synth.make_series(vol, affine, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rot",
    [np.eye(3), OBLIQUE, synth.rotation(np.pi / 2, 0, 0), synth.rotation(0, np.pi / 2, 0)],
    ids=["axial", "oblique", "coronal", "sagittal"],
)
def test_affine_recovers_the_generating_affine(rot: np.ndarray) -> None:
    affine = synth.make_affine((3.0, 0.9, 0.6), (10.0, -20.0, 30.0), rot)
    datasets = _series(6, affine)
    random.Random(1).shuffle(datasets)
    ordered = sort_by_slice_position(datasets)
    np.testing.assert_allclose(affine_from_datasets(ordered), affine, atol=ATOL)
    assert spacing_from_affine(affine) == pytest.approx((3.0, 0.9, 0.6))
    # Right-handed in LPS: the slice axis runs along cross(row, col).
    assert np.linalg.det(affine[:3, :3]) > 0


def test_sort_uses_position_not_instance_number() -> None:
    # Instance numbers run opposite to anatomy, as on many scanners.
    datasets = _series(5, instance_numbers=[5, 4, 3, 2, 1])
    shuffled = [datasets[i] for i in (3, 0, 4, 2, 1)]
    ordered = sort_by_slice_position(shuffled)
    assert [d.SOPInstanceUID for d in ordered] == [d.SOPInstanceUID for d in datasets]
    assert [int(d.InstanceNumber) for d in ordered] == [5, 4, 3, 2, 1]


def test_sort_along_the_normal_of_an_oblique_series() -> None:
    # Positions whose z decreases while moving along the normal: sorting by z would mirror.
    rot = synth.rotation(np.pi * 0.6, 0.2, 0.0)
    affine = synth.make_affine((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), rot)
    assert affine[2, 2] < 0
    datasets = _series(4, affine)
    ordered = sort_by_slice_position(datasets[::-1])
    normal = slice_normal([float(v) for v in ordered[0].ImageOrientationPatient])
    along = [float(normal @ np.array(d.ImagePositionPatient, dtype=float)) for d in ordered]
    assert along == sorted(along)
    assert [d.SOPInstanceUID for d in ordered] == [d.SOPInstanceUID for d in datasets]


def test_single_slice_uses_thickness_then_one_mm() -> None:
    affine = synth.make_affine((4.0, 1.0, 1.0))
    one = _series(1, affine)
    np.testing.assert_allclose(affine_from_datasets(one), affine, atol=ATOL)
    bare = _series(1, affine, optional=False)
    assert spacing_from_affine(affine_from_datasets(bare))[0] == pytest.approx(1.0)
    bare[0].SpacingBetweenSlices = "5"
    assert spacing_from_affine(affine_from_datasets(bare))[0] == pytest.approx(5.0)


def test_missing_optional_tags_do_not_matter_for_several_slices() -> None:
    affine = synth.make_affine((2.0, 0.5, 0.5), rot=OBLIQUE)
    datasets = _series(3, affine, optional=False)
    assert "SliceThickness" not in datasets[0]
    np.testing.assert_allclose(affine_from_datasets(datasets), affine, atol=ATOL)


def test_gantry_tilt_gives_a_sheared_affine() -> None:
    # Tilted CT: slices shift along y as they advance, orientation stays axial.
    affine = synth.make_affine((2.0, 1.0, 1.0))
    affine[1, 2] = 0.5
    datasets = _series(4, affine)
    np.testing.assert_allclose(affine_from_datasets(datasets), affine, atol=ATOL)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: setattr(d[2], "ImageOrientationPatient", [0, 1, 0, 1, 0, 0]), "orientation"),
        (lambda d: setattr(d[1], "PixelSpacing", [0.5, 0.5]), "pixel spacing"),
        (lambda d: setattr(d[3], "Rows", 99), "99x"),
        (lambda d: d.pop(2), "uneven slice spacing"),
        (lambda d: d.insert(1, d[1]), "share position"),
        (lambda d: delattr(d[1], "ImagePositionPatient"), "ImagePositionPatient"),
        (lambda d: setattr(d[0], "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), "orthonormal"),
        (lambda d: setattr(d[0], "ImagePositionPatient", [1, 2]), "3"),
        (lambda d: setattr(d[0], "ImagePositionPatient", "7"), "has 1 values, expected 3"),
    ],
    ids=[
        "orientation",
        "spacing",
        "size",
        "gap",
        "duplicate",
        "no-position",
        "degenerate",
        "short",
        "single",
    ],
)
def test_inconsistent_series_are_rejected(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    datasets = _series(5)
    mutate(datasets)
    with pytest.raises(GeometryError, match=message):
        affine_from_datasets(datasets)


def test_unsorted_slices_are_an_error_not_a_wrong_affine() -> None:
    datasets = _series(4)
    datasets[1], datasets[2] = datasets[2], datasets[1]
    with pytest.raises(GeometryError, match="not in order"):
        affine_from_datasets(datasets)
    np.testing.assert_allclose(
        affine_from_datasets(sort_by_slice_position(datasets)),
        affine_from_datasets(_series(4)),
        atol=ATOL,
    )


def test_no_geometry_is_an_error() -> None:
    with pytest.raises(GeometryError, match="no patient geometry"):
        affine_from_datasets(_series(3, geometry=False))
    with pytest.raises(GeometryError):
        sort_by_slice_position(_series(3, geometry=False))


def test_lps_ras_flip_is_its_own_inverse() -> None:
    affine = synth.make_affine(rot=OBLIQUE)
    ras = lps_to_ras(affine)
    np.testing.assert_allclose(ras[:2], -affine[:2])
    np.testing.assert_allclose(ras[2:], affine[2:])
    np.testing.assert_allclose(ras_to_lps(ras), affine)


def test_orientation_and_positions_invert_the_affine() -> None:
    affine = synth.make_affine((1.5, 0.8, 0.9), (5.0, 6.0, 7.0), OBLIQUE)
    orientation, positions = orientation_and_positions(affine, 4)
    datasets = _series(4, affine)
    np.testing.assert_allclose(
        orientation, np.array(datasets[0].ImageOrientationPatient, dtype=float), atol=ATOL
    )
    for ds, position in zip(datasets, positions, strict=True):
        np.testing.assert_allclose(position, np.array(ds.ImagePositionPatient, float), atol=ATOL)
    with pytest.raises(GeometryError):
        orientation_and_positions(np.eye(3), 1)
    skew = affine.copy()
    skew[:3, 1] = skew[:3, 0]
    with pytest.raises(GeometryError, match="orthogonal"):
        orientation_and_positions(skew, 1)


def test_multiframe_functional_groups_per_frame_and_shared() -> None:
    affine = synth.make_affine((2.0, 0.7, 0.7), rot=OBLIQUE)
    vol = np.zeros((4, 3, 3), np.uint16)
    for shared in (True, False):
        ds = synth.make_multiframe(vol, affine, shared_orientation=shared)
        frames = frame_geometries(ds)
        assert len(frames) == 4
        np.testing.assert_allclose(affine_from_datasets([ds]), affine, atol=ATOL)
    ds.PerFrameFunctionalGroupsSequence.pop()
    with pytest.raises(GeometryError, match="3 items for 4 frames"):
        frame_geometries(ds)


def test_in_plane_axes_and_positions_agree_with_nibabel() -> None:
    with warnings.catch_warnings():  # nibabel warns that nicom is experimental
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import dicomwrappers

    affine = synth.make_affine((2.5, 0.6, 0.9), (-30.0, 12.0, 80.0), OBLIQUE)
    vol = synth.ramp((3, 4, 5), np.int16, -100, 100)
    datasets = synth.make_series(vol, affine)
    ours = affine_from_datasets(datasets)
    rng = np.random.default_rng(0)
    previous = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for k, ds in enumerate(datasets):
            wrapper = dicomwrappers.wrapper_from_data(ds)
            # nibabel indexes its data [row, column]; we index [column, row, slice].
            np.testing.assert_array_equal(wrapper.get_data(), vol[k])
            for _ in range(5):
                r, c = rng.integers(0, 4), rng.integers(0, 5)
                theirs = wrapper.affine @ [r, c, 0, 1]
                np.testing.assert_allclose(ours @ [c, r, k, 1], theirs, atol=ATOL)
            # nibabel's first index is the row, so its normal is cross(col, row) =
            # minus ours: its slice indicator must fall as our k rises.
            np.testing.assert_allclose(wrapper.slice_normal, -ours[:3, 2] / 2.5, atol=ATOL)
            assert wrapper.slice_indicator < previous
            previous = wrapper.slice_indicator


@settings(max_examples=40, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-np.pi, np.pi, allow_nan=False)] * 3),
    spacing=st.tuples(st.floats(0.3, 6.0), st.floats(0.1, 3.0), st.floats(0.1, 3.0)),
    n=st.integers(2, 6),
)
def test_any_orientation_round_trips(angles, spacing, n) -> None:  # type: ignore[no-untyped-def]
    affine = synth.make_affine(spacing, (12.5, -40.0, 3.0), synth.rotation(*angles))
    datasets = _series(n, affine)
    shuffled = datasets[::-1]
    ordered = sort_by_slice_position(shuffled)
    np.testing.assert_allclose(affine_from_datasets(ordered), affine, atol=1e-3)
    orientation, positions = orientation_and_positions(affine, n)
    np.testing.assert_allclose(
        positions, [np.array(d.ImagePositionPatient, float) for d in datasets], atol=1e-3
    )
