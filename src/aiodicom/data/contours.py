"""Planar contours <-> voxel masks, vectorised with numpy (no OpenCV, no per-pixel loops).

Both directions work in *voxel index space*: a point is ``(i, j, k)`` = (column, row,
slice) as in :mod:`aiodicom.data.geometry`, so ``affine @ [i, j, k, 1]`` is its LPS
position and voxel ``mask[k, j, i]`` has its centre at integer ``(i, j, k)``. Callers
convert patient coordinates with the series affine; nothing here knows about DICOM.

The voxel rule (what "inside" means, stated once because both directions rely on it):
a voxel belongs to a slice's region when its centre lies inside the slice's contours by
the **even-odd rule** (so holes and several contours per slice need no hierarchy), or
on a contour, within :data:`ON_CONTOUR` voxels. The tolerance makes contours drawn
through voxel centres (OpenCV, rt-utils and many planning systems) include the voxels
they pass through.

Tracing (:func:`trace`) is marching squares between voxel centres: every vertex lies
between an inside and an outside centre, :data:`INSET` (0.05 voxel) nearer the inside
one than the midpoint. No centre then lies within 0.3 voxels of a traced contour, so
:func:`rasterise` gives back exactly the mask that was traced, and readers that round
vertices to the nearest voxel and fill inclusively (OpenCV-based ones such as rt-utils)
land on the boundary voxels themselves and get the same mask too; at the midpoint,
their rounding of .5 would grow the mask by a voxel on some sides. Diagonal neighbours
inside are joined (8-connected regions), holes come out as separate contours, and
collinear vertices are dropped. A region's polygon encloses about its true area (a
single voxel gives a small diamond, long straight boundaries lose 0.05 voxel), unlike
contours through boundary centres, which lose half a voxel all around.

Rasterising (:func:`rasterise`) is a scanline fill: each polygon edge gives its
crossings with the rows of voxel centres it spans (half-open in y, so a vertex on a row
counts once), crossings of all contours of one slice are sorted together and paired,
and the runs between pairs are written through a difference array. The cost grows with
the boundary length, not the area.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["INSET", "ON_CONTOUR", "Contours", "rasterise", "trace"]

#: Traced points sit this much (in voxels) nearer the inside centre than the midpoint.
INSET = 0.05
#: A voxel whose centre lies this close (in voxels) to a contour counts as inside.
ON_CONTOUR = 1e-2
#: Coordinates this close to an integer are taken as that integer (float noise from
#: the affine round trip would otherwise move a vertex to one side of a row).
_SNAP = 1e-6
#: Voxels per chunk when a mask is traced or filled piecewise (bounds the memory).
_CHUNK_VOXELS = 1 << 23

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Contours:
    """Closed planar contours in voxel index space, packed in flat arrays.

    ``points`` is (N, 3) of (i, j, k); contour ``n`` is
    ``points[offsets[n]:offsets[n + 1]]`` (the closing edge back to its first point is
    implied). ``slices[n]`` is the slice index the contour belongs to.
    """

    points: FloatArray
    offsets: IntArray
    slices: IntArray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[tuple[int, FloatArray]]:
        for n in range(len(self)):
            yield int(self.slices[n]), self.points[self.offsets[n] : self.offsets[n + 1]]

    @classmethod
    def from_list(cls, contours: list[tuple[int, FloatArray]]) -> Contours:
        """Pack ``(slice, (n, 3) points)`` pairs."""
        if not contours:
            return cls(np.zeros((0, 3)), np.zeros(1, dtype=np.int64), np.zeros(0, np.int64))
        lengths = np.array([len(p) for _, p in contours], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        points = np.concatenate([np.asarray(p, dtype=np.float64) for _, p in contours])
        slices = np.array([k for k, _ in contours], dtype=np.int64)
        return cls(points, offsets, slices)


# --- tracing -----------------------------------------------------------------------

# A marching-squares cell has corners TL, TR, BR, BL (bits 1, 2, 4, 8) and sides
# T, R, B, L. Cell-local coordinates (x right, y down) of corners and side midpoints:
_CORNERS = {1: (0.0, 0.0), 2: (1.0, 0.0), 4: (1.0, 1.0), 8: (0.0, 1.0)}
_SIDES = {"T": (0.5, 0.0), "R": (1.0, 0.5), "B": (0.5, 1.0), "L": (0.0, 0.5)}
#: The sides a segment joins to cut off one corner.
_CUT = {1: ("T", "L"), 2: ("T", "R"), 4: ("R", "B"), 8: ("B", "L")}


def _segments(case: int) -> list[tuple[str, str]]:
    """Oriented segments of one cell case, inside on the left (x right, y down).

    Saddles (5, 10) cut off their two outside corners, which joins the inside ones:
    regions are 8-connected.
    """
    inside = [bit for bit in _CORNERS if case & bit]
    if len(inside) in (0, 4):
        return []
    if len(inside) == 1:
        pairs = [_CUT[inside[0]]]
    elif len(inside) == 3:
        pairs = [_CUT[next(bit for bit in _CORNERS if not case & bit)]]
    elif case in (5, 10):
        pairs = [_CUT[bit] for bit in _CORNERS if not case & bit]
    else:  # two neighbouring corners: the segment crosses the cell
        sides = [s for s in "TRBL" if _side_cuts(s, case)]
        pairs = [(sides[0], sides[1])]
    out = []
    for a, b in pairs:
        (ax, ay), (bx, by) = _SIDES[a], _SIDES[b]
        dx, dy = bx - ax, by - ay
        # The corners on the segment's smaller side are all inside or all outside.
        signs = {bit: dx * (cy - ay) - dy * (cx - ax) for bit, (cx, cy) in _CORNERS.items()}
        left = [bit for bit, s in signs.items() if s > 0]
        right = [bit for bit, s in signs.items() if s < 0]
        near, near_is_left = (left, True) if len(left) <= len(right) else (right, False)
        near_inside = bool(case & near[0])
        out.append((a, b) if near_inside == near_is_left else (b, a))
    return out


def _side_cuts(side: str, case: int) -> bool:
    """Whether the two corners a side joins differ in ``case``."""
    ends = {"T": (1, 2), "R": (2, 4), "B": (4, 8), "L": (8, 1)}[side]
    return bool(case & ends[0]) != bool(case & ends[1])


def _table() -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """Per case, up to two segments as side indices (T=0, R=1, B=2, L=3; -1 = none)."""
    index = {"T": 0, "R": 1, "B": 2, "L": 3}
    start = np.full((16, 2), -1, dtype=np.int8)
    end = np.full((16, 2), -1, dtype=np.int8)
    for case in range(16):
        for n, (a, b) in enumerate(_segments(case)):
            start[case, n], end[case, n] = index[a], index[b]
    return start, end


_SEG_START, _SEG_END = _table()


class _Cracks:
    """Ids of the boundary points of a padded mask chunk (midpoints between centres).

    A horizontal crack lies between columns c and c+1 of row r, a vertical one
    between rows r and r+1 of column c. Ids of existing cracks are compacted to
    0..n-1 in (kind, slice, row, column) order.
    """

    def __init__(self, padded: npt.NDArray[np.bool_]) -> None:
        self.nz, self.h, self.w = padded.shape
        horizontal = padded[:, :, :-1] != padded[:, :, 1:]
        vertical = padded[:, :-1, :] != padded[:, 1:, :]
        self.n_horizontal_slots = self.nz * self.h * (self.w - 1)
        self.ids = np.concatenate(
            (
                np.flatnonzero(horizontal),
                self.n_horizontal_slots + np.flatnonzero(vertical),
            )
        )

    def horizontal(self, z: IntArray, r: IntArray, c: IntArray) -> IntArray:
        slots: IntArray = (z * self.h + r) * (self.w - 1) + c
        return slots

    def vertical(self, z: IntArray, r: IntArray, c: IntArray) -> IntArray:
        slots: IntArray = self.n_horizontal_slots + (z * (self.h - 1) + r) * self.w + c
        return slots

    def compact(self, slots: IntArray) -> IntArray:
        return np.searchsorted(self.ids, slots)

    def positions(self, padded: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray, IntArray]:
        """(x, y, z) of every crack in unpadded voxel coordinates.

        A crack's point lies between its two centres, :data:`INSET` nearer the
        inside one (see the module doc).
        """
        ids = self.ids
        is_h = ids < self.n_horizontal_slots
        h_ids = ids[is_h]
        v_ids = ids[~is_h] - self.n_horizontal_slots
        hz, rest = np.divmod(h_ids, self.h * (self.w - 1))
        hr, hc = np.divmod(rest, self.w - 1)
        vz, rest = np.divmod(v_ids, (self.h - 1) * self.w)
        vr, vc = np.divmod(rest, self.w)
        # Unpadded, the first centre of a crack is at c - 1 (or r - 1); the point sits
        # 0.5 - INSET past it when that centre is inside, 0.5 + INSET otherwise.
        h_first_inside = padded[hz, hr, hc]
        v_first_inside = padded[vz, vr, vc]
        x = np.concatenate((hc - 0.5 + np.where(h_first_inside, -INSET, INSET), vc - 1.0))
        y = np.concatenate((hr - 1.0, vr - 0.5 + np.where(v_first_inside, -INSET, INSET)))
        z = np.concatenate((hz, vz))
        return x, y, z


def _side_slots(cracks: _Cracks, side: IntArray, z: IntArray, r: IntArray, c: IntArray) -> IntArray:
    """Crack slot of a side (T, R, B, L) of cells at padded (z, r, c)."""
    top = cracks.horizontal(z, r, c)
    bottom = cracks.horizontal(z, r + 1, c)
    left = cracks.vertical(z, r, c)
    right = cracks.vertical(z, r, c + 1)
    return np.choose(side, (top, right, bottom, left))


def _successors(padded: npt.NDArray[np.bool_], cracks: _Cracks) -> IntArray:
    """For each crack, the next crack along its contour."""
    tl = padded[:, :-1, :-1]
    case = (
        tl.astype(np.uint8)
        | (padded[:, :-1, 1:].astype(np.uint8) << 1)
        | (padded[:, 1:, 1:].astype(np.uint8) << 2)
        | (padded[:, 1:, :-1].astype(np.uint8) << 3)
    )
    cells = np.flatnonzero((case != 0) & (case != 15))
    cases = case.ravel()[cells]
    z, rest = np.divmod(cells, case.shape[1] * case.shape[2])
    r, c = np.divmod(rest, case.shape[2])
    successor = np.full(len(cracks.ids), -1, dtype=np.int64)
    for n in (0, 1):
        start = _SEG_START[cases, n].astype(np.int64)
        end = _SEG_END[cases, n].astype(np.int64)
        has = start >= 0
        zs, rs, cs = z[has], r[has], c[has]
        a = cracks.compact(_side_slots(cracks, start[has], zs, rs, cs))
        b = cracks.compact(_side_slots(cracks, end[has], zs, rs, cs))
        successor[a] = b
    return successor


def _cycles(successor: IntArray) -> tuple[IntArray, IntArray]:
    """Label every node of a permutation with its cycle's smallest node, and order it.

    Pointer doubling: after t rounds each node knows the minimum over the next 2**t
    nodes, so log2(longest cycle) vectorised rounds label every cycle. Returns the
    labels and the node order (cycle by cycle, each from its smallest node onwards).
    """
    n = len(successor)
    label = np.arange(n)
    jump = successor.copy()
    while True:
        new = np.minimum(label, label[jump])
        jump = jump[jump]
        if np.array_equal(new, label):
            break
        label = new
    # List ranking on the cycles cut just before their smallest node.
    last = label[successor] == successor  # its successor is its cycle's first node
    distance = np.where(last, 0, 1)
    jump = np.where(last, np.arange(n), successor)
    while not np.array_equal(jump[jump], jump):
        distance = distance + distance[jump]
        jump = jump[jump]
    order = np.lexsort((-distance, label))
    return label, order


def _group_neighbours(starts: IntArray, n_total: int) -> tuple[IntArray, IntArray, IntArray]:
    """Group of every element, and its previous and next index within its (cyclic) group."""
    index = np.arange(n_total)
    ends = np.append(starts[1:], n_total) - 1
    group = np.repeat(np.arange(len(starts)), ends - starts + 1)
    previous = index - 1
    previous[starts] = ends
    following = index + 1
    following[ends] = starts
    return group, previous, following


def _trace_chunk(mask: npt.NDArray[np.bool_], z0: int) -> list[tuple[int, FloatArray]]:
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    cracks = _Cracks(padded)
    if len(cracks.ids) == 0:
        return []
    successor = _successors(padded, cracks)
    label, order = _cycles(successor)
    x, y, z = cracks.positions(padded)
    x, y, z, label = x[order], y[order], z[order], label[order]
    starts = np.flatnonzero(np.diff(label, prepend=-1))
    group, previous, following = _group_neighbours(starts, len(order))
    # Drop vertices where the direction does not change.
    cross = (x - x[previous]) * (y[following] - y) - (y - y[previous]) * (x[following] - x)
    keep = np.abs(cross) > 1e-9
    x, y, z, group = x[keep], y[keep], z[keep], group[keep]
    bounds = np.flatnonzero(np.diff(group, prepend=-1))
    points = np.stack((x, y, (z + z0).astype(np.float64)), axis=1)
    pieces = np.split(points, bounds[1:])
    return [(int(p[0, 2]), p) for p in pieces]


def _chunks(n_slices: int, slice_voxels: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_VOXELS // max(slice_voxels, 1))
    return [(z, min(z + step, n_slices)) for z in range(0, n_slices, step)]


def trace(mask: npt.ArrayLike) -> Contours:
    """Closed contours of a (z, y, x) boolean mask, slice by slice (see the module doc).

    Only the mask's bounding box is traced; points are (i, j, k) voxel coordinates.
    """
    volume = np.asarray(mask, dtype=bool)
    if volume.ndim == 2:
        volume = volume[np.newaxis]
    if volume.ndim != 3:
        raise ValueError(f"a mask is (z, y, x), got shape {volume.shape}")
    box = _bounding_box(volume)
    if box is None:
        return Contours.from_list([])
    (z0, z1), (y0, y1), (x0, x1) = box
    crop = volume[z0:z1, y0:y1, x0:x1]
    found: list[tuple[int, FloatArray]] = []
    for a, b in _chunks(crop.shape[0], crop.shape[1] * crop.shape[2]):
        found.extend(_trace_chunk(crop[a:b], z0 + a))
    contours = Contours.from_list(found)
    points = contours.points.copy()
    points[:, 0] += x0
    points[:, 1] += y0
    return Contours(points, contours.offsets, contours.slices)


def _bounding_box(volume: npt.NDArray[np.bool_]) -> tuple[tuple[int, int], ...] | None:
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(volume.any(axis=other))
        if len(hits) == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


# --- rasterising -------------------------------------------------------------------


def _snap(values: FloatArray) -> FloatArray:
    nearest = np.rint(values)
    return np.where(np.abs(values - nearest) < _SNAP, nearest, values)


def _edges(contours: Contours, slices: IntArray) -> tuple[FloatArray, ...]:
    """(x0, y0, x1, y1, slice) of every edge, closing edges included."""
    n = len(contours.points)
    lengths = np.diff(contours.offsets)
    following = np.arange(1, n + 1)
    ends = contours.offsets[1:] - 1
    following[ends] = contours.offsets[:-1]
    x = _snap(contours.points[:, 0])
    y = _snap(contours.points[:, 1])
    z = np.repeat(slices, lengths)
    return x, y, x[following], y[following], z.astype(np.float64)


def _crossings(
    x0: FloatArray, y0: FloatArray, x1: FloatArray, y1: FloatArray, z: FloatArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """(slice, row, x) of every crossing of an edge with a row of centres, half-open in y."""
    low = np.minimum(y0, y1)
    high = np.maximum(y0, y1)
    first = np.ceil(low).astype(np.int64)
    count = np.maximum(np.ceil(high).astype(np.int64) - first, 0)
    count[y0 == y1] = 0
    edge = np.repeat(np.arange(len(x0)), count)
    if len(edge) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    within = np.arange(len(edge)) - np.repeat(np.cumsum(count) - count, count)
    row = first[edge] + within
    slope = (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    cross_x = x0[edge] + (row - y0[edge]) * slope
    return z[edge].astype(np.int64), row, cross_x


def _boundary_runs(
    x0: FloatArray, y0: FloatArray, x1: FloatArray, y1: FloatArray, z: FloatArray
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Runs of centres lying on horizontal edges or on vertices (the "on the contour" rule)."""
    flat = (y0 == y1) & (np.abs(y0 - np.rint(y0)) < ON_CONTOUR)
    on_row = np.abs(y0 - np.rint(y0)) < ON_CONTOUR
    vertex = on_row & (np.abs(x0 - np.rint(x0)) < ON_CONTOUR)
    zs = np.concatenate((z[flat], z[vertex])).astype(np.int64)
    rows = np.concatenate((np.rint(y0[flat]), np.rint(y0[vertex]))).astype(np.int64)
    a = np.concatenate(
        (np.ceil(np.minimum(x0[flat], x1[flat]) - ON_CONTOUR), np.rint(x0[vertex]))
    ).astype(np.int64)
    b = np.concatenate(
        (np.floor(np.maximum(x0[flat], x1[flat]) + ON_CONTOUR), np.rint(x0[vertex]))
    ).astype(np.int64)
    return zs, rows, a, b


def _runs(contours: Contours, slices: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """(slice, row, first column, last column) of every inside run, boundary included."""
    x0, y0, x1, y1, z = _edges(contours, slices)
    cz, crow, cx = _crossings(x0, y0, x1, y1, z)
    order = np.lexsort((cx, crow, cz))
    cz, crow, cx = cz[order], crow[order], cx[order]
    # Closed polygons cross every row an even number of times, so after sorting the
    # crossings of one (slice, row) pair up in order: even-odd fill.
    if len(cx) % 2:
        raise ValueError("contour crossings do not pair up: an open contour?")
    inside_z, inside_row = cz[0::2], crow[0::2]
    a = np.ceil(cx[0::2] - ON_CONTOUR).astype(np.int64)
    b = np.floor(cx[1::2] + ON_CONTOUR).astype(np.int64)
    bz, brow, ba, bb = _boundary_runs(x0, y0, x1, y1, z)
    return (
        np.concatenate((inside_z, bz)),
        np.concatenate((inside_row, brow)),
        np.concatenate((a, ba)),
        np.concatenate((b, bb)),
    )


def rasterise(contours: Contours, shape: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    """The (z, y, x) mask of ``contours`` by the even-odd rule (see the module doc).

    Contours are taken to lie in slice ``contours.slices[n]``; their k coordinates are
    not used. Contours of slices outside the volume are ignored.
    """
    nz, ny, nx = shape
    out = np.zeros(shape, dtype=bool)
    if len(contours) == 0:
        return out
    z, row, a, b = _runs(contours, contours.slices.astype(np.int64))
    a = np.maximum(a, 0)
    b = np.minimum(b, nx - 1)
    valid = (a <= b) & (row >= 0) & (row < ny) & (z >= 0) & (z < nz)
    z, row, a, b = z[valid], row[valid], a[valid], b[valid]
    if len(z) == 0:
        return out
    z_lo, z_hi = int(z.min()), int(z.max()) + 1
    y_lo, y_hi = int(row.min()), int(row.max()) + 1
    x_lo, x_hi = int(a.min()), int(b.max()) + 1
    width = x_hi - x_lo + 1
    for c0, c1 in _chunks(z_hi - z_lo, (y_hi - y_lo) * width):
        lo, hi = z_lo + c0, z_lo + c1
        pick = (z >= lo) & (z < hi)
        # int16: runs overlap only where they touch, so counts stay tiny.
        diff = np.zeros((hi - lo, y_hi - y_lo, width), dtype=np.int16)
        zz, rr = z[pick] - lo, row[pick] - y_lo
        np.add.at(diff, (zz, rr, a[pick] - x_lo), 1)
        np.add.at(diff, (zz, rr, b[pick] - x_lo + 1), -1)
        out[lo:hi, y_lo:y_hi, x_lo:x_hi] = np.cumsum(diff, axis=2, dtype=np.int16)[:, :, :-1] > 0
    return out
