"""Synthetic shapes and image series for the segmentation tests.

Shapes are built on the voxel grid itself, so the masks are exactly what a pipeline
would hand over: spheres, tori (a hole in most slices), several disjoint parts in one
slice, and structures one voxel wide (a line, a diagonal, a single voxel, a ring).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataset import Dataset

from aiodicom.factory import write_series
from aiodicom.synthetic import write_study
from factory.helpers import OBLIQUE, ct_parent

Mask = npt.NDArray[np.bool_]

#: (z, y, x) of the test series: small, but large enough for holes and thin parts.
SHAPE = (12, 48, 56)


def grid(shape: tuple[int, int, int] = SHAPE) -> tuple[npt.NDArray[np.float64], ...]:
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return z, y, x


def sphere(shape: tuple[int, int, int] = SHAPE) -> Mask:
    z, y, x = grid(shape)
    return ((z - 5.5) * 2.5) ** 2 + (y - 22.3) ** 2 + (x - 25.7) ** 2 < 12.5**2


def torus(shape: tuple[int, int, int] = SHAPE) -> Mask:
    """A ring around the slice axis: two contours (outer and hole) per middle slice."""
    z, y, x = grid(shape)
    radial = np.sqrt((y - 24.0) ** 2 + (x - 28.0) ** 2) - 14.0
    return radial**2 + ((z - 6.0) * 2.0) ** 2 < 6.0**2


def disjoint(shape: tuple[int, int, int] = SHAPE) -> Mask:
    """Three separate blobs, two of them in the same slices, one with a hole."""
    z, y, x = grid(shape)
    out = (z >= 2) & (z <= 8) & (np.abs(y - 10) <= 4) & (np.abs(x - 10) <= 5)
    out |= (z >= 4) & (z <= 9) & ((y - 35) ** 2 + (x - 40) ** 2 < 36)
    out |= (z >= 1) & (z <= 3) & (np.abs(y - 30) <= 6) & (np.abs(x - 12) <= 6)
    out &= ~((z == 2) & (y == 30) & (x == 12))  # a one-voxel hole
    return out


def thin(shape: tuple[int, int, int] = SHAPE) -> Mask:
    """One voxel wide: a row, a column, a diagonal, a lone voxel and a square ring."""
    out = np.zeros(shape, dtype=bool)
    out[2:10, 5, 3:50] = True
    out[3:9, 8:40, 52] = True
    for n in range(20):
        out[5, 12 + n, 10 + n] = True
    out[7, 44, 2] = True
    out[9, 15:30, 20] = out[9, 15:30, 35] = True
    out[9, 15, 20:36] = out[9, 29, 20:36] = True
    return out


SHAPES = {"sphere": sphere, "torus": torus, "disjoint": disjoint, "thin": thin}


def all_shapes(shape: tuple[int, int, int] = SHAPE) -> dict[str, Mask]:
    return {name: make(shape) for name, make in SHAPES.items()}


def axial_series(folder: Path, shape: tuple[int, int, int] = SHAPE) -> list[Path]:
    """An axial CT written by :mod:`aiodicom.synthetic` (square 0.7 mm pixels)."""
    return write_study(folder, images_per_series=shape[0], rows=shape[1], columns=shape[2])


def oblique_series(folder: Path, shape: tuple[int, int, int] = SHAPE) -> list[Path]:
    """A CT whose slices are tilted about all three axes, with 0.9 x 1.1 mm pixels."""
    datasets: list[Dataset] = ct_parent(*shape, affine=OBLIQUE)
    return write_series(datasets, folder)


SERIES = {"axial": axial_series, "oblique": oblique_series}


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def require_peer_module(name: str) -> None:
    """Import a test-only peer (dev extra); skip without it unless CI requires peers."""
    if os.environ.get("AIODICOM_REQUIRE_DCMTK") == "1":
        __import__(name)
        return
    pytest.importorskip(name)
