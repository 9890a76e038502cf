"""Segmentations to masks: RT Structure Sets and DICOM SEG on their image grid.

Radiotherapy and AI pipelines mostly consume segmentations, and a mask is only useful
on the voxels of the image it outlines. So every result here lives on the grid of the
referenced image series exactly as :func:`~aiodicom.grinders.numpy.numpy_grinder`
builds it: ``mask[k, j, i]`` with the same (z, y, x) order and LPS affine, slices
sorted along the normal. Only the image headers are read (no pixels) unless the image
volume is asked for too.

RT Structure Sets hold closed planar contours in patient millimetres. Each contour is
mapped into voxel space with the inverse affine (so oblique and tilted series need no
special case), snapped to the slice its points lie on along the slice normal, and
filled by the even-odd rule of :mod:`aiodicom.data.contours`: a voxel is inside when
its centre is inside the slice's contours or on one of them. Contours that are not
planar in a slice (points more than half a slice apart along the normal) are refused
rather than smeared; contours of slices outside the series are skipped and counted.

DICOM SEG frames are placed by their plane position (or, without one, by the source
image they were derived from); they must lie on the series' planes with the same
orientation and pixel spacing, at whole-voxel offsets. Fractional segments come back
as float32 in [0, 1], binary ones and those of label map segmentations (the 2024
Label Map Segmentation IOD, one frame holding every segment's number) as booleans.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from aiodicom._log import get_logger
from aiodicom.data.colour import dicom_lab_to_rgb
from aiodicom.data.contours import Contours, rasterise
from aiodicom.data.geometry import FrameGeometry, frame_geometries
from aiodicom.data.lazy import Instance, LazyDataset, header_of
from aiodicom.errors import GeometryError, SegmentationError
from aiodicom.grinders import Series, series_grinder
from aiodicom.grinders.numpy import Volume, numpy_grinder

__all__ = [
    "LABEL_MAP_SEGMENTATION_STORAGE",
    "RT_STRUCTURE_SET_STORAGE",
    "SEGMENTATION_STORAGE",
    "ImageGrid",
    "Masks",
    "Roi",
    "masks_grinder",
    "masks_grinder_for",
    "rtstruct_to_masks",
    "seg_to_masks",
]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
_SEG_CLASSES = frozenset({SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE})

#: Contour types that enclose a region (the XOR variant says even-odd explicitly).
_CLOSED = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})
#: A contour's points may spread this far (in slices) along the normal.
_PLANAR_TOLERANCE = 0.5
#: SEG frames must sit this close (in voxels) to a slice and to whole-voxel offsets.
_GRID_TOLERANCE = 0.05
_CONTOUR_DATA = 0x30060050

_log = get_logger("aiodicom.segmentation")

#: A region's mask: boolean, or float32 in [0, 1] for a fractional SEG segment.
Mask = npt.NDArray[np.bool_] | npt.NDArray[np.float32]


@dataclass(frozen=True)
class ImageGrid:
    """The voxel grid of one image series: what masks are defined on.

    ``slices[k]`` is the header and (for multi-frame images) the 0-based frame that
    slice ``k`` comes from; ``datasets`` are the headers in slice order.
    """

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]
    datasets: list[Dataset]
    slices: list[tuple[Dataset, int | None]]

    @classmethod
    def of(cls, images: ImageGrid | Volume | Series | Iterable[Instance]) -> ImageGrid:
        """The grid of a ground volume, a :class:`Series` or the series' instances."""
        if isinstance(images, ImageGrid):
            return images
        if isinstance(images, Volume):
            if not images.geometry_known:
                raise GeometryError("the image series has no patient geometry")
            series = Series(images.datasets, images.affine)
        elif isinstance(images, Series):
            series = images
        else:
            series = series_grinder(images)
        slices: list[tuple[Dataset, int | None]] = []
        for ds in series.datasets:
            count = len(frame_geometries(ds))
            slices.extend((ds, n if count > 1 else None) for n in range(count))
        first = series.datasets[0]
        shape = (len(slices), int(first.Rows), int(first.Columns))
        return cls(shape, series.affine, list(series.datasets), slices)

    @property
    def frame_of_reference_uid(self) -> str | None:
        uid = self.datasets[0].get("FrameOfReferenceUID")
        return str(uid) if uid else None

    def to_voxels(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, 3) LPS millimetres -> (n, 3) continuous (i, j, k) voxel coordinates."""
        inverse = np.linalg.inv(self.affine)
        out: npt.NDArray[np.float64] = points @ inverse[:3, :3].T + inverse[:3, 3]
        return out

    def to_patient(self, voxels: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, 3) (i, j, k) voxel coordinates -> (n, 3) LPS millimetres."""
        out: npt.NDArray[np.float64] = voxels @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out


@dataclass(frozen=True)
class Roi:
    """One region: its number (ROI or segment number), name, mask and description.

    ``mask`` is boolean, or float32 in [0, 1] for a fractional SEG segment.
    ``kind`` is the RT ROI Interpreted Type, or the segmented property type's
    meaning for a SEG.
    """

    number: int
    name: str
    mask: Mask
    colour: tuple[int, int, int] | None = None
    kind: str = ""


@dataclass(frozen=True)
class Masks:
    """Every region of a structure set or segmentation on the image grid.

    Index by ROI name (``masks["Liver"]``) or number (``masks[3]``) to get a mask.
    ``image`` is the image volume when it was asked for.
    """

    rois: list[Roi]
    grid: ImageGrid
    source: str = ""
    image: Volume | None = field(default=None, compare=False)

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        return self.grid.affine

    @property
    def names(self) -> list[str]:
        return [roi.name for roi in self.rois]

    def roi(self, key: str | int) -> Roi:
        """The ROI named ``key`` (str) or numbered ``key`` (int)."""
        for roi in self.rois:
            if (roi.name if isinstance(key, str) else roi.number) == key:
                return roi
        raise KeyError(f"no ROI {key!r}; there are {self._listing()}")

    def __getitem__(self, key: str | int) -> Mask:
        return self.roi(key).mask

    def __iter__(self) -> Iterator[Roi]:
        return iter(self.rois)

    def __len__(self) -> int:
        return len(self.rois)

    def _listing(self) -> str:
        return ", ".join(f"{r.number}: {r.name!r}" for r in self.rois) or "none"

    def label_volume(self) -> npt.NDArray[np.uint16]:
        """One uint16 volume, each voxel holding its ROI's number (0: none).

        Fractional masks count where they are above one half. Raises
        :class:`SegmentationError` where ROIs overlap, since a label volume cannot
        say that a voxel is in two ROIs (keep the per-ROI masks instead).
        """
        labels = np.zeros(self.grid.shape, dtype=np.uint16)
        for roi in self.rois:
            if not 0 < roi.number <= 0xFFFF:
                raise SegmentationError(f"ROI number {roi.number} does not fit a uint16 label")
            inside = roi.mask > 0.5 if roi.mask.dtype.kind == "f" else roi.mask
            clash = inside & (labels != 0)
            if clash.any():
                other = int(labels[clash].flat[0])
                raise SegmentationError(
                    f"ROIs {other} and {roi.number} ({roi.name!r}) overlap in "
                    f"{int(clash.sum())} voxel(s): a label volume cannot hold both"
                )
            labels[inside] = roi.number
        return labels


# --- reading instances ------------------------------------------------------------


def _full(instance: Instance | Dataset) -> Dataset:
    """The whole data set, pixels included."""
    if isinstance(instance, Dataset):
        return instance
    if isinstance(instance, LazyDataset):
        return instance.dataset
    if isinstance(instance, str | os.PathLike):
        return pydicom.dcmread(instance)
    raise TypeError(f"not a DICOM instance: {type(instance).__name__}")


def _check_sop_class(ds: Dataset, expected: Collection[str], what: str) -> None:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in expected:
        raise SegmentationError(f"not {what}: SOPClassUID is {sop_class or '(missing)'}")


def _check_frame_of_reference(found: Iterable[str], grid: ImageGrid, what: str) -> None:
    expected = grid.frame_of_reference_uid
    others = {uid for uid in found if uid and uid != expected}
    if expected and others:
        raise SegmentationError(
            f"{what} is in frame of reference {sorted(others)[0]}, the images in {expected}: "
            "its coordinates would be misplaced"
        )


def _select(
    available: Sequence[tuple[int, str]], wanted: Sequence[str | int] | None
) -> list[tuple[int, str]]:
    if wanted is None:
        return list(available)
    out: list[tuple[int, str]] = []
    for key in wanted:
        match = [a for a in available if (a[1] if isinstance(key, str) else a[0]) == key]
        if not match:
            listing = ", ".join(f"{n}: {name!r}" for n, name in available) or "none"
            raise SegmentationError(f"no ROI {key!r}; there are {listing}")
        out.extend(m for m in match if m not in out)
    return out


# --- RT Structure Set -> masks ------------------------------------------------------


def _numbers(item: Dataset, tag: int) -> npt.NDArray[np.float64]:
    """A DS value as floats, parsed from the raw bytes when pydicom has not yet.

    pydicom turns each value into a ``DSfloat`` object on access; structure sets hold
    millions of them, and parsing the bytes in one go is an order of magnitude faster.
    """
    element = item.get_item(tag)
    if element is None:
        return np.zeros(0)
    if isinstance(element, RawDataElement) and element.value is not None:
        raw = bytes(element.value).strip(b" \0")
        if not raw:
            return np.zeros(0)
        try:
            return np.array(raw.split(b"\\"), dtype=np.float64)
        except ValueError as exc:
            raise SegmentationError(f"ContourData is not numeric: {exc}") from exc
    value = item[tag].value
    if value is None or value == "":
        return np.zeros(0)
    return np.asarray(value if isinstance(value, Sequence) else [value], dtype=np.float64)


def _roi_contours(
    contour_items: Iterable[Dataset], grid: ImageGrid, name: str
) -> tuple[Contours, int]:
    """The ROI's closed contours in voxel space, and how many fell outside the series."""
    pieces: list[tuple[int, npt.NDArray[np.float64]]] = []
    outside = 0
    for item in contour_items:
        kind = str(item.get("ContourGeometricType", "")).upper()
        if kind not in _CLOSED:
            continue
        flat = _numbers(item, _CONTOUR_DATA)
        if len(flat) < 3 or len(flat) % 3:
            raise SegmentationError(f"ROI {name!r}: ContourData has {len(flat)} values")
        voxels = grid.to_voxels(flat.reshape(-1, 3))
        k = voxels[:, 2]
        if not np.all(np.isfinite(voxels)):
            raise SegmentationError(f"ROI {name!r}: ContourData is not finite")
        slice_index = int(np.rint(k.mean()))
        if float(np.abs(k - slice_index).max()) > _PLANAR_TOLERANCE:
            raise GeometryError(
                f"ROI {name!r}: a contour is not in one slice plane of the series "
                f"(its points span {float(k.min()):.2f}..{float(k.max()):.2f} in slices)"
            )
        if not 0 <= slice_index < grid.shape[0]:
            outside += 1
            continue
        pieces.append((slice_index, voxels))
    return Contours.from_list(pieces), outside


def _colour(value: Any) -> tuple[int, int, int] | None:
    try:
        r, g, b = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (r, g, b)


def rtstruct_to_masks(
    structure_set: Instance | Dataset,
    images: ImageGrid | Volume | Series | Iterable[Instance],
    rois: Sequence[str | int] | None = None,
) -> Masks:
    """One boolean mask per ROI of ``structure_set`` on the grid of ``images``.

    ``rois`` chooses ROIs by name or number (all by default, in structure set order);
    an unknown one raises :class:`SegmentationError`. ROIs without contours give an
    empty mask. See the module doc for the voxel rule.
    """
    ds = structure_set if isinstance(structure_set, Dataset) else header_of(structure_set)
    _check_sop_class(ds, {RT_STRUCTURE_SET_STORAGE}, "an RT Structure Set")
    grid = ImageGrid.of(images)
    described = list(ds.get("StructureSetROISequence") or [])
    _check_frame_of_reference(
        (str(item.get("ReferencedFrameOfReferenceUID", "")) for item in described),
        grid,
        "the structure set",
    )
    available = [(int(item.ROINumber), str(item.get("ROIName", ""))) for item in described]
    contours = {int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence") or []}
    kinds = {
        int(item.ReferencedROINumber): str(item.get("RTROIInterpretedType", "") or "")
        for item in ds.get("RTROIObservationsSequence") or []
        if "ReferencedROINumber" in item
    }
    out = []
    for number, name in _select(available, rois):
        item = contours.get(number)
        found, outside = _roi_contours(
            (item.get("ContourSequence") or []) if item is not None else [], grid, name
        )
        if outside:
            _log.warning("contours outside the series", roi=number, skipped=outside)
        out.append(
            Roi(
                number=number,
                name=name,
                mask=rasterise(found, grid.shape),
                colour=_colour(item.get("ROIDisplayColor")) if item is not None else None,
                kind=kinds.get(number, ""),
            )
        )
    return Masks(out, grid, source=str(ds.get("SOPInstanceUID", "")))


# --- DICOM SEG -> masks -------------------------------------------------------------


def _group_value(groups: tuple[Any, Any], sequence: str, keyword: str) -> Any:
    for group in groups:
        if group is None:
            continue
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def _seg_frames(ds: Dataset) -> npt.NDArray[Any]:
    """All frames as (n, rows, columns): bool for 1 bit, else unsigned stored values."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    n = int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.BitsAllocated)
    meta = getattr(ds, "file_meta", None)
    syntax = pydicom.uid.UID(str(getattr(meta, "TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    if syntax.is_compressed:
        array = np.asarray(ds.pixel_array).reshape(n, rows, columns)
        return array.astype(bool) if bits == 1 else array
    data = bytes(ds.PixelData)
    count = n * rows * columns
    if bits == 1:
        if len(data) * 8 < count:
            raise SegmentationError(f"PixelData holds {len(data) * 8} bits, {count} expected")
        bits_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return bits_array[:count].reshape(n, rows, columns).astype(bool)
    if bits not in (8, 16):
        raise SegmentationError(f"SEG with BitsAllocated {bits} is not supported (1, 8, 16)")
    dtype = np.dtype(f"{'<' if syntax.is_little_endian else '>'}u{bits // 8}")
    if len(data) < count * dtype.itemsize:
        raise SegmentationError("PixelData is shorter than the frames it announces")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(n, rows, columns)


def _segment_numbers(ds: Dataset, n_frames: int) -> list[int]:
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    out = []
    for index in range(n_frames):
        group = per_frame[index] if index < len(per_frame) else None
        number = _group_value(
            (group, shared), "SegmentIdentificationSequence", "ReferencedSegmentNumber"
        )
        if number is None:
            raise SegmentationError(f"frame {index + 1} names no segment")
        out.append(int(number))
    return out


def _source_slice(source: Dataset, where: dict[tuple[str, int | None], int]) -> int | None:
    """The slice of one Source Image Sequence item, if it is in the series."""
    uid = str(source.get("ReferencedSOPInstanceUID", ""))
    frame = int(source.get("ReferencedFrameNumber") or 0)
    k = where.get((uid, frame - 1 if frame else None))
    if k is None and frame <= 1:  # frame 1 of a single-frame image is the image
        k = where.get((uid, None))
    return k


def _source_slices(ds: Dataset, grid: ImageGrid, n_frames: int) -> list[int | None]:
    """Slice of each frame by the image it was derived from (when it has no position)."""
    where = {(str(h.SOPInstanceUID), frame): k for k, (h, frame) in enumerate(grid.slices)}
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    out: list[int | None] = []
    for index in range(n_frames):
        group = per_frame[index] if index < len(per_frame) else Dataset()
        found = [
            _source_slice(source, where)
            for derivation in group.get("DerivationImageSequence") or []
            for source in derivation.get("SourceImageSequence") or []
        ]
        out.append(next((k for k in found if k is not None), None))
    return out


def _check_plane(index: int, frame: FrameGeometry, reference: FrameGeometry) -> None:
    """A SEG frame must have the images' orientation and pixel spacing (no resampling)."""
    orientation = frame.orientation or reference.orientation
    if orientation is None or not np.allclose(
        orientation, reference.orientation or orientation, atol=1e-3
    ):
        raise GeometryError(f"frame {index + 1} is not oriented like the image series")
    spacing = frame.pixel_spacing or reference.pixel_spacing
    if spacing is None or not np.allclose(spacing, reference.pixel_spacing or spacing, rtol=1e-3):
        raise GeometryError(f"frame {index + 1} has another pixel spacing than the images")


def _placements(ds: Dataset, grid: ImageGrid, n_frames: int) -> list[tuple[int, int, int]]:
    """(slice, row offset, column offset) of every frame on the grid."""
    geometries = frame_geometries(ds)
    reference = frame_geometries(grid.slices[0][0])[0]
    sources: list[int | None] | None = None
    out = []
    for index, geometry in enumerate(geometries[:n_frames]):
        if geometry.position is None:
            sources = sources or _source_slices(ds, grid, n_frames)
            k = sources[index]
            if k is None:
                raise SegmentationError(
                    f"frame {index + 1} has no plane position and no source image in the series"
                )
            out.append((k, 0, 0))
            continue
        _check_plane(index, geometry, reference)
        i, j, k = grid.to_voxels(np.asarray([geometry.position], dtype=np.float64))[0]
        snapped = [round(float(c)) for c in (i, j, k)]
        if max(abs(float(c) - s) for c, s in zip((i, j, k), snapped, strict=True)) > (
            _GRID_TOLERANCE
        ):
            raise GeometryError(
                f"frame {index + 1} lies between the image series' voxels "
                f"(at voxel {float(i):.2f}, {float(j):.2f}, {float(k):.2f})"
            )
        out.append((snapped[2], snapped[1], snapped[0]))
    return out


def _display_colour(item: Dataset) -> tuple[int, int, int] | None:
    value = item.get("RecommendedDisplayCIELabValue")
    try:
        lab = [int(v) for v in value]
    except (TypeError, ValueError):
        return None
    return dicom_lab_to_rgb(lab) if len(lab) == 3 else None


def _frames_of(numbers: list[int] | None, n_frames: int, number: int) -> npt.NDArray[np.intp]:
    """Indices of the frames that hold segment ``number`` (a label map's frames hold all)."""
    if numbers is None:
        return np.arange(n_frames)
    return np.flatnonzero(np.asarray(numbers) == number)


#: What a stored frame says about one segment, by SegmentationType.
_FRAME_VALUES: dict[str, Callable[[npt.NDArray[Any], int, float], npt.NDArray[Any]]] = {
    "BINARY": lambda frame, number, maximum: frame.astype(bool),
    "FRACTIONAL": lambda frame, number, maximum: frame.astype(np.float32) / np.float32(maximum),
    "LABELMAP": lambda frame, number, maximum: frame == number,
}


def _paste(mask: Mask, frame: npt.NDArray[Any], placement: tuple[int, int, int]) -> None:
    """Merge a frame into ``mask`` at (slice, row, column), clipped to the grid."""
    k, j, i = placement
    nz, ny, nx = mask.shape
    y0, x0 = max(j, 0), max(i, 0)
    y1, x1 = min(j + frame.shape[0], ny), min(i + frame.shape[1], nx)
    if 0 <= k < nz and y0 < y1 and x0 < x1:
        target = mask[k, y0:y1, x0:x1]
        np.maximum(target, frame[y0 - j : y1 - j, x0 - i : x1 - i], out=target)


def _segment_roi(item: Dataset, number: int, label: str, mask: Mask) -> Roi:
    types = item.get("SegmentedPropertyTypeCodeSequence") or []
    return Roi(
        number=number,
        name=label,
        mask=mask,
        colour=_display_colour(item),
        kind=str(types[0].get("CodeMeaning", "")) if types else "",
    )


def seg_to_masks(
    segmentation: Instance | Dataset,
    images: ImageGrid | Volume | Series | Iterable[Instance],
    segments: Sequence[str | int] | None = None,
) -> Masks:
    """One mask per segment of a DICOM SEG on the grid of ``images``.

    Binary and label map segments give boolean masks, fractional ones float32 in
    [0, 1] (stored value / MaximumFractionalValue). ``segments`` chooses by label or
    number.
    """
    ds = _full(segmentation)
    _check_sop_class(ds, _SEG_CLASSES, "a Segmentation")
    grid = ImageGrid.of(images)
    _check_frame_of_reference([str(ds.get("FrameOfReferenceUID", ""))], grid, "the segmentation")
    kind = str(ds.get("SegmentationType", "BINARY")).upper()
    if kind not in _FRAME_VALUES:
        raise SegmentationError(f"SegmentationType {kind!r} is not one we read")
    # Segment 0 of a label map is its background, "no segment" as in a label volume.
    described = {
        int(item.SegmentNumber): item
        for item in ds.get("SegmentSequence") or []
        if int(item.SegmentNumber) != 0
    }
    available = [(n, str(item.get("SegmentLabel", ""))) for n, item in described.items()]
    chosen = _select(available, segments)
    frames = _seg_frames(ds)
    numbers = None if kind == "LABELMAP" else _segment_numbers(ds, len(frames))
    placements = _placements(ds, grid, len(frames))
    maximum = float(ds.get("MaximumFractionalValue") or 255)
    value = _FRAME_VALUES[kind]
    out = []
    for number, label in chosen:
        mask = np.zeros(grid.shape, dtype=np.float32 if kind == "FRACTIONAL" else bool)
        for index in _frames_of(numbers, len(frames), number):
            _paste(mask, value(frames[index], number, maximum), placements[index])
        out.append(_segment_roi(described[number], number, label, mask))
    return Masks(out, grid, source=str(ds.get("SOPInstanceUID", "")))


# --- grinders -----------------------------------------------------------------------

_READERS: dict[str, Callable[..., Masks]] = {
    RT_STRUCTURE_SET_STORAGE: rtstruct_to_masks,
    SEGMENTATION_STORAGE: seg_to_masks,
    LABEL_MAP_SEGMENTATION_STORAGE: seg_to_masks,
}


def _referenced_series(ds: Dataset) -> set[str]:
    """Series UIDs a structure set or segmentation says it was drawn on."""
    found = {
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence") or []
        for study in frame.get("RTReferencedStudySequence") or []
        for series in study.get("RTReferencedSeriesSequence") or []
        if "SeriesInstanceUID" in series
    }
    found.update(
        str(series.SeriesInstanceUID)
        for series in ds.get("ReferencedSeriesSequence") or []
        if "SeriesInstanceUID" in series
    )
    return found


def masks_grinder_for(
    rois: Sequence[str | int] | None = None, *, with_image: bool = False
) -> Callable[[Iterable[Instance]], Masks]:
    """A grinder turning one input's instances into :class:`Masks`.

    The input holds the image series and one RT Structure Set or SEG that refers to
    it (other series are ignored). ``rois`` chooses ROIs or segments by name or number;
    ``with_image`` also grinds the image volume into :attr:`Masks.image`.
    """

    def grind(instances: Iterable[Instance]) -> Masks:
        items = list(instances)
        headers = [header_of(item) for item in items]
        found = [
            (item, header)
            for item, header in zip(items, headers, strict=True)
            if str(header.get("SOPClassUID", "")) in _READERS
        ]
        if len(found) != 1:
            raise SegmentationError(
                f"the input holds {len(found)} structure sets or segmentations, expected one"
            )
        source, header = found[0]
        wanted = _referenced_series(header)
        images = [
            (item, h)
            for item, h in zip(items, headers, strict=True)
            if str(h.get("SOPClassUID", "")) not in _READERS
            and (not wanted or str(h.get("SeriesInstanceUID", "")) in wanted)
        ]
        if not images:
            raise SegmentationError("the input holds no instance of the referenced image series")
        volume = numpy_grinder([item for item, _ in images]) if with_image else None
        reader = _READERS[str(header.SOPClassUID)]
        # The headers read above are all the grid needs: files are not read again.
        grid = ImageGrid.of(volume if volume is not None else [h for _, h in images])
        masks = reader(header if reader is rtstruct_to_masks else source, grid, rois)
        return Masks(masks.rois, masks.grid, masks.source, volume)

    return grind


#: The default: every ROI, image headers only.
masks_grinder = masks_grinder_for()
