"""Series geometry: where each voxel of a volume sits in the patient.

Convention (used by every grinder and by the factory): coordinates are DICOM
patient coordinates, LPS, in millimetres. An *affine* is a 4x4 float64 matrix
mapping voxel indices ``[i, j, k, 1]`` (i = column, j = row, k = slice) to the
LPS position of the voxel centre. A volume array is indexed ``[k, j, i]``
(z, y, x), so ``array[k, j, i]`` lives at ``affine @ [i, j, k, 1]``.

The slice axis follows the slice normal ``cross(row_dir, col_dir)``, never
InstanceNumber: scanners number slices head-to-feet or feet-to-head as they
please, and a volume sorted by number can be silently mirrored. Sorting along
the normal also makes every affine we build right-handed in LPS (for an
un-tilted series), which is what NIfTI readers expect after the flip to RAS.

We refuse inconsistent input (mixed orientations, pixel spacings or sizes,
uneven slice steps) rather than guess, because a wrong affine misplaces every
voxel of every result computed from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from aiodicom.data import _values as v
from aiodicom.data._values import value
from aiodicom.errors import GeometryError

__all__ = [
    "FrameGeometry",
    "affine_from_datasets",
    "affine_from_frames",
    "frame_geometries",
    "lps_to_ras",
    "orientation_and_positions",
    "ras_to_lps",
    "slice_normal",
    "sort_by_slice_position",
    "spacing_from_affine",
]

Affine = npt.NDArray[np.float64]

#: Direction cosines are written with limited precision (DS, 16 characters).
ORIENTATION_TOLERANCE = 1e-4
#: Slice steps may differ by this fraction of the mean step (plus 1 micron).
SPACING_TOLERANCE = 1e-2

_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

T = TypeVar("T")


@dataclass(frozen=True)
class FrameGeometry:
    """The plane of one frame as the header states it (``None`` when absent).

    ``pixel_spacing`` is DICOM's order: (spacing between rows, spacing between
    columns), i.e. (y, x).
    """

    rows: int
    columns: int
    orientation: tuple[float, float, float, float, float, float] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None

    @property
    def has_plane(self) -> bool:
        """True when orientation and position are both known."""
        return self.orientation is not None and self.position is not None


def _get(ds: Any, keyword: str) -> Any:
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return None
    return value


def _floats(value: Any, n: int, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes | int | float):  # a single value (VM 1)
        value = [value]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{what} is not numeric: {value!r}") from exc
    if len(out) != n:
        raise GeometryError(f"{what} has {len(out)} values, expected {n}: {value!r}")
    if not all(math.isfinite(v) for v in out):
        raise GeometryError(f"{what} is not finite: {value!r}")
    return out


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _item(ds: Any, keyword: str) -> Any:
    seq = _get(ds, keyword)
    if not seq:
        return None
    return seq[0]


def _frame_attribute(groups: tuple[Any, Any], sequence: str, keyword: str) -> Any:
    """Look an attribute up in the per-frame group first, then the shared one."""
    for group in groups:
        if group is None:
            continue
        item = _item(group, sequence)
        if item is not None:
            value = _get(item, keyword)
            if value is not None:
                return value
    return None


def _plane(
    rows: int,
    columns: int,
    orientation: Any,
    position: Any,
    spacing: Any,
    thickness: Any,
    between: Any,
) -> FrameGeometry:
    o = _floats(orientation, 6, "ImageOrientationPatient")
    p = _floats(position, 3, "ImagePositionPatient")
    s = _floats(spacing, 2, "PixelSpacing")
    if o is not None:
        # Plain floats: this runs once per frame, numpy's per-call cost would dominate.
        rn = math.sqrt(o[0] * o[0] + o[1] * o[1] + o[2] * o[2])
        cn = math.sqrt(o[3] * o[3] + o[4] * o[4] + o[5] * o[5])
        dot = o[0] * o[3] + o[1] * o[4] + o[2] * o[5]
        if abs(rn - 1) > 1e-2 or abs(cn - 1) > 1e-2 or abs(dot) > 1e-2:
            raise GeometryError(f"ImageOrientationPatient is not two orthonormal vectors: {o}")
    if s is not None and min(s) <= 0:
        raise GeometryError(f"PixelSpacing must be positive: {s}")
    return FrameGeometry(
        rows=rows,
        columns=columns,
        orientation=o,  # type: ignore[arg-type]
        position=p,  # type: ignore[arg-type]
        pixel_spacing=s,  # type: ignore[arg-type]
        slice_thickness=_float(thickness),
        spacing_between_slices=_float(between),
    )


def frame_geometries(ds: Dataset | Any) -> list[FrameGeometry]:
    """The geometry of every frame of ``ds``, in stored frame order.

    Single-frame images use the Image Plane module; enhanced multi-frame images
    the Plane Position / Plane Orientation / Pixel Measures functional groups
    (per-frame first, then shared), with the top-level attributes as fallback.
    Classic multi-frame images (no functional groups) get positions along the
    normal at SpacingBetweenSlices from their one ImagePositionPatient, or no
    plane at all when that spacing is missing.
    """
    rows = int(value(ds, v.ROWS) or 0)
    columns = int(value(ds, v.COLUMNS) or 0)
    n_frames = int(value(ds, v.NUMBER_OF_FRAMES) or 1)
    top = (
        value(ds, v.IMAGE_ORIENTATION),
        value(ds, v.IMAGE_POSITION),
        value(ds, v.PIXEL_SPACING),
        value(ds, v.SLICE_THICKNESS),
        value(ds, v.SPACING_BETWEEN_SLICES),
    )
    if 0x52009229 not in ds and 0x52009230 not in ds:  # no functional groups
        first = _plane(rows, columns, *top)
        if n_frames == 1:
            return [first]
        return _classic_frames(first, n_frames)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    if shared is None and not per_frame:
        return [_plane(rows, columns, *top) for _ in range(n_frames)]
    if per_frame is not None and len(per_frame) != n_frames:
        raise GeometryError(
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {n_frames} frames"
        )
    frames = []
    for index in range(n_frames):
        groups = (per_frame[index] if per_frame else None, shared)
        orientation = _frame_attribute(
            groups, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
        position = _frame_attribute(groups, "PlanePositionSequence", "ImagePositionPatient")
        spacing = _frame_attribute(groups, "PixelMeasuresSequence", "PixelSpacing")
        thickness = _frame_attribute(groups, "PixelMeasuresSequence", "SliceThickness")
        between = _frame_attribute(groups, "PixelMeasuresSequence", "SpacingBetweenSlices")
        frames.append(
            _plane(
                rows,
                columns,
                orientation if orientation is not None else top[0],
                position if position is not None else top[1],
                spacing if spacing is not None else top[2],
                thickness if thickness is not None else top[3],
                between if between is not None else top[4],
            )
        )
    return frames


def _classic_frames(first: FrameGeometry, n_frames: int) -> list[FrameGeometry]:
    """Frames of a multi-frame image without functional groups (NM, legacy SC).

    Its one ImagePositionPatient is the first frame's; later frames follow
    the slice normal at SpacingBetweenSlices. Without that spacing the frames
    have no known position, and we say so rather than stack them in one place.
    """
    step = first.spacing_between_slices
    if not first.has_plane or step is None:
        blank = FrameGeometry(
            first.rows,
            first.columns,
            None,
            None,
            first.pixel_spacing,
            first.slice_thickness,
            first.spacing_between_slices,
        )
        return [blank] * n_frames
    assert first.orientation is not None and first.position is not None
    normal = slice_normal(first.orientation) * step
    origin = np.asarray(first.position, dtype=np.float64)
    return [
        FrameGeometry(
            first.rows,
            first.columns,
            first.orientation,
            tuple(float(c) for c in origin + k * normal),  # type: ignore[arg-type]
            first.pixel_spacing,
            first.slice_thickness,
            step,
        )
        for k in range(n_frames)
    ]


def slice_normal(orientation: Sequence[float]) -> npt.NDArray[np.float64]:
    """Unit normal ``cross(row_dir, col_dir)`` of an ImageOrientationPatient."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        raise GeometryError(f"ImageOrientationPatient is degenerate: {list(orientation)}")
    return normal / norm


def _position_along_normal(frame: FrameGeometry) -> float:
    if frame.orientation is None or frame.position is None:
        raise GeometryError(
            "cannot sort by slice position: ImageOrientationPatient or "
            "ImagePositionPatient is missing"
        )
    return float(slice_normal(frame.orientation) @ np.asarray(frame.position))


def sort_by_slice_position(datasets: Sequence[T]) -> list[T]:
    """Sort single-frame datasets along the slice normal (ascending).

    The normal is taken from the first dataset; orientation consistency is
    checked by :func:`affine_from_datasets`. A dataset's key is the position of
    its first frame, so one multi-frame dataset sorts trivially. The sort is
    stable, so slices at the same position keep their input order.
    """
    items = list(datasets)
    if len(items) < 2:
        return items
    first = frame_geometries(items[0])[0]
    if first.orientation is None:
        raise GeometryError("cannot sort by slice position: ImageOrientationPatient is missing")
    normal = slice_normal(first.orientation)

    def key(ds: T) -> float:
        frame = frame_geometries(ds)[0]
        if frame.position is None:
            raise GeometryError(
                f"cannot sort by slice position: ImagePositionPatient is missing in {_describe(ds)}"
            )
        return float(normal @ np.asarray(frame.position))

    return sorted(items, key=key)


def _describe(ds: Any) -> str:
    uid = getattr(ds, "SOPInstanceUID", None)
    return f"instance {uid}" if uid else "an instance"


def affine_from_frames(frames: Sequence[FrameGeometry]) -> Affine:
    """The affine of frames already sorted along the slice axis.

    Raises :class:`GeometryError` when the frames do not share size,
    orientation and pixel spacing, when slice steps are uneven, or when two
    frames share a position. With one frame the slice step is
    SpacingBetweenSlices, else SliceThickness, else 1 mm.
    """
    if not frames:
        raise GeometryError("no frames: cannot build an affine")
    first = frames[0]
    if not first.has_plane:
        raise GeometryError(
            "ImageOrientationPatient or ImagePositionPatient is missing: "
            "the series has no patient geometry"
        )
    if first.pixel_spacing is None:
        raise GeometryError("PixelSpacing is missing: the series has no patient geometry")
    assert first.orientation is not None and first.position is not None
    orientation = np.asarray(first.orientation)
    for n, frame in enumerate(frames):
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise GeometryError(
                f"slice {n} is {frame.rows}x{frame.columns}, "
                f"slice 0 is {first.rows}x{first.columns}"
            )
        if not frame.has_plane:
            raise GeometryError(f"slice {n} has no ImageOrientationPatient/ImagePositionPatient")
        if frame.pixel_spacing is None:
            raise GeometryError(f"slice {n} has no PixelSpacing")
    orientations = np.array([f.orientation for f in frames], dtype=np.float64)
    bad = np.max(np.abs(orientations - orientation), axis=1) > ORIENTATION_TOLERANCE
    if bad.any():
        n = int(np.argmax(bad))
        raise GeometryError(
            f"slice {n} has orientation {list(frames[n].orientation or ())}, "
            f"slice 0 has {list(first.orientation)}"
        )
    spacings = np.array([f.pixel_spacing for f in frames], dtype=np.float64)
    bad = ~np.isclose(spacings, spacings[0], rtol=1e-4, atol=1e-6).all(axis=1)
    if bad.any():
        n = int(np.argmax(bad))
        raise GeometryError(
            f"slice {n} has pixel spacing {frames[n].pixel_spacing}, "
            f"slice 0 has {first.pixel_spacing}"
        )
    row_dir = orientation[:3] / np.linalg.norm(orientation[:3])
    col_dir = orientation[3:] / np.linalg.norm(orientation[3:])
    dy, dx = first.pixel_spacing
    positions = np.array([f.position for f in frames], dtype=np.float64)
    if len(frames) == 1:
        step_length = first.spacing_between_slices or first.slice_thickness or 1.0
        step = slice_normal(first.orientation) * step_length
    else:
        steps = np.diff(positions, axis=0)
        lengths = np.linalg.norm(steps, axis=1)
        if float(lengths.min()) < 1e-6:
            n = int(np.argmin(lengths))
            raise GeometryError(
                f"slices {n} and {n + 1} share position {positions[n].tolist()}: "
                "duplicate instances or several series mixed"
            )
        step = (positions[-1] - positions[0]) / (len(frames) - 1)
        if float((steps @ step).min()) <= 0:
            raise GeometryError(
                "slices are not in order along the slice axis "
                "(sort them with sort_by_slice_position first)"
            )
        deviation = np.linalg.norm(steps - step, axis=1)
        tolerance = SPACING_TOLERANCE * float(np.linalg.norm(step)) + 1e-3
        if float(deviation.max()) > tolerance:
            n = int(np.argmax(deviation))
            raise GeometryError(
                f"uneven slice spacing: step {n}->{n + 1} is {lengths[n]:.4g} mm, "
                f"mean step is {float(np.linalg.norm(step)):.4g} mm (missing slices?)"
            )
    affine = np.eye(4, dtype=np.float64)
    affine[:3, 0] = row_dir * dx
    affine[:3, 1] = col_dir * dy
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return affine


def affine_from_datasets(datasets: Sequence[Dataset | Any]) -> Affine:
    """The affine of a sorted series (see :func:`sort_by_slice_position`).

    Frames of multi-frame datasets are taken in stored order, one slice each.
    """
    frames = [frame for ds in datasets for frame in frame_geometries(ds)]
    return affine_from_frames(frames)


def lps_to_ras(affine: npt.ArrayLike) -> Affine:
    """Flip an LPS affine to RAS (NIfTI's world), voxel axes unchanged."""
    return _LPS_RAS @ np.asarray(affine, dtype=np.float64)


def ras_to_lps(affine: npt.ArrayLike) -> Affine:
    """Flip a RAS affine (NIfTI's world) to LPS (DICOM's), voxel axes unchanged."""
    return _LPS_RAS @ np.asarray(affine, dtype=np.float64)


def spacing_from_affine(affine: npt.ArrayLike) -> tuple[float, float, float]:
    """Voxel size (z, y, x) in mm: the lengths of the affine's k, j, i columns."""
    a = np.asarray(affine, dtype=np.float64)
    norms = np.linalg.norm(a[:3, :3], axis=0)
    return (float(norms[2]), float(norms[1]), float(norms[0]))


def orientation_and_positions(
    affine: npt.ArrayLike, n_slices: int
) -> tuple[list[float], list[list[float]]]:
    """ImageOrientationPatient and one ImagePositionPatient per slice of an LPS affine.

    The inverse of :func:`affine_from_datasets` for a series written in slice
    order: slice ``k`` gets the position of voxel ``[0, 0, k]``.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"an affine is 4x4, got shape {a.shape}")
    row, col = a[:3, 0], a[:3, 1]
    rn, cn = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if rn == 0 or cn == 0:
        raise GeometryError("affine has a zero-length in-plane axis")
    row, col = row / rn, col / cn
    if abs(float(row @ col)) > 1e-3:
        raise GeometryError("affine's in-plane axes are not orthogonal: not a DICOM image plane")
    orientation = [float(v) for v in (*row, *col)]
    positions = [[float(v) for v in a[:3, 3] + k * a[:3, 2]] for k in range(n_slices)]
    return orientation, positions
