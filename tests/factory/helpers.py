"""Helpers shared by the factory tests: affines and a synthetic parent series."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from aiodicom.factory import PrivateTag, Static, build_series
from aiodicom.factory.blueprints import CT_SERIES


def rotation(alpha: float, beta: float, gamma: float) -> npt.NDArray[np.float64]:
    """A proper rotation from three Euler angles (radians)."""
    ca, sa = np.cos(alpha), np.sin(alpha)
    cb, sb = np.cos(beta), np.sin(beta)
    cg, sg = np.cos(gamma), np.sin(gamma)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cg, -sg], [0, sg, cg]])
    return rz @ ry @ rx


def make_affine(
    spacing: Sequence[float] = (0.8, 0.7, 2.5),
    angles: Sequence[float] = (0.0, 0.0, 0.0),
    origin: Sequence[float] = (-120.0, -100.0, 40.0),
) -> npt.NDArray[np.float64]:
    """LPS affine: columns = rotated axes scaled by (x, y, z) spacing, then the origin."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(*angles) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


OBLIQUE = make_affine((0.9, 1.1, 3.0), (0.3, -0.2, 0.15), (-80.5, 12.25, -300.0))


def ct_parent(
    n_slices: int = 4,
    rows: int = 6,
    columns: int = 5,
    affine: npt.NDArray[np.float64] | None = None,
) -> list[Dataset]:
    """A CT 'acquisition' with patient/study data and a private element, made by us."""
    blueprint = (
        CT_SERIES
        + Static("PatientName", "Doe^Jane")
        + Static("PatientID", "PID-12345")
        + Static("PatientBirthDate", "19700101")
        + Static("PatientSex", "F")
        + Static("StudyDate", "20240102")
        + Static("StudyTime", "101500")
        + Static("AccessionNumber", "ACC1")
        + Static("StudyDescription", "Thorax")
        + Static("SeriesDescription", "Original CT")
        + Static("SeriesNumber", 3)
        + Static("InstitutionName", "General Hospital")
        + Static("KVP", "120")
        + Static(PrivateTag(0x0019, "VENDOR X", 0x10), "secret vendor note", vr="LO")
    )
    volume = np.arange(n_slices * rows * columns, dtype=np.int16).reshape(n_slices, rows, columns)
    return build_series(
        volume - 1000, blueprint, affine=make_affine() if affine is None else affine
    )
