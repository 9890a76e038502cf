"""Contour tracing and filling (aiodicom.data.contours), without DICOM.

The voxel rule under test: a voxel is inside when its centre is inside the slice's
contours by the even-odd rule, or on a contour (within ON_CONTOUR voxels).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aiodicom.data.contours import INSET, Contours, rasterise, trace
from segmentation.helpers import SHAPES


def _square(k: int, x0: float, y0: float, x1: float, y1: float) -> tuple[int, np.ndarray]:
    return k, np.array([[x0, y0, k], [x1, y0, k], [x1, y1, k], [x0, y1, k]], dtype=float)


def test_even_odd_makes_a_hole_of_an_inner_contour_and_fills_separate_ones() -> None:
    contours = Contours.from_list(
        [
            _square(1, 0.5, 0.5, 8.5, 8.5),  # outer: centres 1..8
            _square(1, 2.5, 2.5, 5.5, 5.5),  # hole: centres 3..5
            _square(1, 10.5, 1.5, 12.5, 3.5),  # a separate part: x 11..12, y 2..3
            _square(2, 0.5, 0.5, 2.5, 2.5),  # another slice
        ]
    )
    mask = rasterise(contours, (3, 10, 14))
    expected = np.zeros((3, 10, 14), dtype=bool)
    expected[1, 1:9, 1:9] = True
    expected[1, 3:6, 3:6] = False
    expected[1, 2:4, 11:13] = True
    expected[2, 1:3, 1:3] = True
    assert np.array_equal(mask, expected)


def test_contours_through_centres_include_the_voxels_they_pass_through() -> None:
    # A diamond through centres, a horizontal-edged square, a degenerate line and a point.
    diamond = np.array([[5, 1, 0], [8, 4, 0], [5, 7, 0], [2, 4, 0]], dtype=float)
    contours = Contours.from_list(
        [
            (0, diamond),
            _square(1, 2, 2, 6, 5),
            (2, np.array([[1, 3, 2], [9, 3, 2]], dtype=float)),
            (3, np.array([[4, 4, 3]], dtype=float)),
        ]
    )
    mask = rasterise(contours, (4, 10, 10))
    yy, xx = np.mgrid[:10, :10]
    assert np.array_equal(mask[0], np.abs(xx - 5) + np.abs(yy - 4) <= 3)
    assert np.array_equal(mask[1], (xx >= 2) & (xx <= 6) & (yy >= 2) & (yy <= 5))
    assert np.array_equal(mask[2], (yy == 3) & (xx >= 1) & (xx <= 9))
    assert np.argwhere(mask[3]).tolist() == [[4, 4]]


def test_contours_off_the_volume_are_clipped_and_outside_slices_ignored() -> None:
    contours = Contours.from_list([_square(0, -5.5, -5.5, 2.5, 2.5), _square(7, 0, 0, 3, 3)])
    mask = rasterise(contours, (2, 6, 6))
    assert mask[0, :3, :3].all() and mask.sum() == 9


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_traced_shapes_fill_back_exactly(name: str) -> None:
    mask = SHAPES[name]()
    contours = trace(mask)
    assert np.array_equal(rasterise(contours, mask.shape), mask)
    # Points lie between centres, INSET nearer the inside: never on a centre's row
    # and column at once, and every contour is in its own slice.
    fractions = np.abs(contours.points[:, :2] - np.rint(contours.points[:, :2]))
    assert np.all(np.isclose(fractions, 0) | np.isclose(fractions, 0.5 - INSET))
    for k, points in contours:
        assert np.all(points[:, 2] == k)


def test_holes_and_parts_are_separate_contours_without_collinear_points() -> None:
    mask = np.zeros((1, 9, 12), dtype=bool)
    mask[0, 1:8, 1:8] = True
    mask[0, 3:5, 3:5] = False  # hole
    mask[0, 2:4, 9:11] = True  # second part
    contours = trace(mask)
    assert len(contours) == 3
    # Rectangles keep only the two ends of each cut corner: straight runs are dropped.
    assert sorted(np.diff(contours.offsets).tolist()) == [8, 8, 8]


def test_a_single_voxel_and_a_diagonal_are_one_contour_each() -> None:
    mask = np.zeros((2, 8, 8), dtype=bool)
    mask[0, 3, 3] = True
    for n in range(6):
        mask[1, 1 + n, 1 + n] = True  # 8-connected: one region
    contours = trace(mask)
    assert contours.slices.tolist() == [0, 1]
    assert np.array_equal(rasterise(contours, mask.shape), mask)


def test_rounding_vertices_to_the_nearest_voxel_lands_on_boundary_voxels() -> None:
    """What OpenCV-based readers do: they must land inside the mask, never outside."""
    mask = SHAPES["thin"]() | SHAPES["torus"]()
    contours = trace(mask)
    rounded = np.rint(contours.points).astype(int)
    assert mask[rounded[:, 2], rounded[:, 1], rounded[:, 0]].all()


def test_empty_mask_has_no_contours() -> None:
    contours = trace(np.zeros((3, 4, 5), dtype=bool))
    assert len(contours) == 0
    assert not rasterise(contours, (3, 4, 5)).any()


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))))
def test_any_mask_survives_trace_and_fill(mask: np.ndarray) -> None:
    assert np.array_equal(rasterise(trace(mask), mask.shape), mask)
