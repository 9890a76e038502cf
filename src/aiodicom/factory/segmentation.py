"""Masks to DICOM: RT Structure Sets and Segmentations, by blueprint.

What a pipeline sends back to the PACS is mostly a segmentation of the images it
received. :func:`build_rtstruct` and :func:`build_seg` take the masks (a label volume,
boolean volumes by name, or the :class:`~aiodicom.grinders.segmentation.Masks` a
grinder produced) and the image series they were computed on, and return one data set
ready to write or send::

    seg = build_seg({"liver": liver_mask}, images)
    return DicomExport(address, [seg])

Everything the IODs require is filled in: patient and study copied from the images,
new series and instance UIDs from our root, the frame of reference of the images, and
references to every image instance (the study, series and, per contour or per frame,
the slice). Like the image blueprints, :data:`RTSTRUCT` and :data:`SEGMENTATION` are
plain :class:`~aiodicom.factory.Blueprint` objects: add elements on the right of ``+``
to change a label or a description.

Contours are traced by :mod:`aiodicom.data.contours` (marching squares between voxel
centres, holes as separate contours, 8-connected regions), so reading them back gives
the same mask. SEG frames are written only for slices where a segment has voxels, one
frame per (segment, slice), binary (1 bit) or fractional (8 bits, 255 = 1.0).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from aiodicom.codec.uids import IMPLEMENTATION_VERSION_NAME, new_uid
from aiodicom.codec.vr import LONG_VR_NAMES, pad_byte
from aiodicom.data.colour import rgb_to_dicom_lab
from aiodicom.data.contours import trace
from aiodicom.data.lazy import Instance
from aiodicom.errors import FactoryError
from aiodicom.factory.blueprint import Blueprint
from aiodicom.factory.blueprints import (
    FRAME_OF_REFERENCE,
    GENERAL_EQUIPMENT,
    GENERAL_SERIES,
    GENERAL_STUDY,
    PATIENT,
    SOP_COMMON,
    _date,
    _series_number,
    _time,
)
from aiodicom.factory.build import build_instance
from aiodicom.factory.elements import ABSENT, Series, SeriesEnvironment, Static, format_ds
from aiodicom.grinders import Series as ImageSeries
from aiodicom.grinders.numpy import Volume
from aiodicom.grinders.segmentation import (
    RT_STRUCTURE_SET_STORAGE,
    SEGMENTATION_STORAGE,
    ImageGrid,
    Masks,
)

__all__ = [
    "ARTIFICIAL_INTELLIGENCE",
    "RTSTRUCT",
    "SEGMENTATION",
    "TISSUE",
    "Code",
    "Segment",
    "build_rtstruct",
    "build_seg",
]


@dataclass(frozen=True)
class Code:
    """A coded concept (code value, coding scheme designator, code meaning)."""

    value: str
    scheme: str
    meaning: str

    def item(self) -> Dataset:
        ds = Dataset()
        ds.CodeValue = self.value
        ds.CodingSchemeDesignator = self.scheme
        ds.CodeMeaning = self.meaning
        return ds


TISSUE = Code("85756007", "SCT", "Tissue")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
_SEGMENTATION_DERIVATION = Code("113076", "DCM", "Segmentation")
_SOURCE_IMAGE = Code("121322", "DCM", "Source image for image processing operation")
#: The retired Detached Study Management class is what RT Referenced Study items name.
_STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"

#: Distinct display colours, used in turn for regions that bring none.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 200, 0),
    (0, 0, 255),
    (255, 200, 0),
    (0, 200, 255),
    (255, 0, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 255, 128),
    (160, 80, 40),
)


@dataclass(frozen=True)
class Segment:
    """How one region is described in the object we write.

    ``interpreted_type`` is the RT ROI Interpreted Type (ORGAN, PTV, ...; "" is
    allowed); ``category`` and ``type`` the SEG's coded segmented property. The
    algorithm fields say who made it (MANUAL needs no algorithm name).
    """

    name: str
    colour: tuple[int, int, int] | None = None
    category: Code = TISSUE
    type: Code = TISSUE
    interpreted_type: str = "ORGAN"
    algorithm_type: Literal["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"] = "AUTOMATIC"
    algorithm_name: str = "aiodicom"
    algorithm_version: str = IMPLEMENTATION_VERSION_NAME
    algorithm_family: Code = ARTIFICIAL_INTELLIGENCE
    description: str = ""


@dataclass(frozen=True)
class _Region:
    number: int
    segment: Segment
    mask: npt.NDArray[Any]


MaskInput = Masks | Mapping[str, npt.ArrayLike] | npt.ArrayLike
SegmentsInput = Mapping[int, Segment | str] | Mapping[str, Segment | str] | Sequence[Segment | str]
Images = ImageGrid | Volume | ImageSeries | Iterable[Instance]


# --- regions from whatever the caller has --------------------------------------------


def _described(
    segments: SegmentsInput | None, number: int, position: int, default: Segment
) -> Segment:
    """The caller's description of region ``number`` (by number, name or position)."""
    found: Segment | str | None = None
    if isinstance(segments, Mapping):
        found = segments.get(number, segments.get(default.name))  # type: ignore[call-overload]
    elif segments is not None and position < len(segments):
        found = segments[position]
    if found is None:
        return default
    return Segment(found) if isinstance(found, str) else found


def _regions(masks: MaskInput, segments: SegmentsInput | None) -> list[_Region]:
    if isinstance(masks, Masks):
        # A SEG's kind is a code meaning, not an RT ROI Interpreted Type (a CS).
        pairs = [
            (
                roi.number,
                Segment(roi.name, roi.colour, interpreted_type=_cs_or_empty(roi.kind)),
                roi.mask,
            )
            for roi in masks
        ]
    elif isinstance(masks, Mapping):
        pairs = [
            (n, Segment(str(name)), np.asarray(m)) for n, (name, m) in enumerate(masks.items(), 1)
        ]
    else:
        pairs = _from_array(np.asarray(masks))
    out = []
    for position, (number, default, mask) in enumerate(pairs):
        segment = _described(segments, number, position, default)
        if segment.colour is None:
            segment = replace(segment, colour=PALETTE[position % len(PALETTE)])
        out.append(_Region(number, segment, mask))
    if not out:
        raise FactoryError("no regions to write (the label volume is empty)")
    return out


def _from_array(array: npt.NDArray[Any]) -> list[tuple[int, Segment, npt.NDArray[Any]]]:
    """Regions of one array: a boolean or fractional mask, a label volume, or a stack."""
    if array.ndim == 4:
        return [(n, Segment(f"ROI {n}"), array[n - 1]) for n in range(1, len(array) + 1)]
    if array.dtype.kind in "bf":
        return [(1, Segment("ROI 1"), array)]
    if array.dtype.kind not in "iu":
        raise FactoryError(f"cannot take regions from a {array.dtype} volume")
    if array.size and int(array.min()) < 0:
        raise FactoryError("label volumes hold non-negative labels")
    return [(v, Segment(f"ROI {v}"), array == v) for v in _labels(array) if v != 0]


def _labels(array: npt.NDArray[Any]) -> list[int]:
    """The values present in a non-negative integer volume, in order.

    Counted slice by slice when labels are small: linear, and the int64 copy counting
    needs stays one slice big; sorting (np.unique) a 300 x 512 x 512 volume takes seconds.
    """
    top = int(array.max()) if array.size else 0
    if top >= 1 << 20:
        return [int(v) for v in np.unique(array)]
    present = np.zeros(top + 1, dtype=bool)
    for plane in array.reshape(-1, *array.shape[-2:]):
        present |= np.bincount(plane.ravel().astype(np.intp), minlength=top + 1) > 0
    return np.flatnonzero(present).tolist()


_CS = re.compile(r"[A-Z0-9_ ]{0,16}")
#: LO values: at most 64 characters, no backslash (the value separator), no controls.
_LO = re.compile(r"[^\\\x00-\x1f]{1,64}")


def _cs_or_empty(value: str) -> str:
    return value if _CS.fullmatch(value) else ""


def _checked(regions: list[_Region], grid: ImageGrid, highest: int) -> None:
    """Refuse what would write an invalid object (``highest``: the largest number)."""
    for region in regions:
        segment = region.segment
        if not 1 <= region.number <= highest:
            raise FactoryError(f"region number {region.number} is not in 1..{highest}")
        if not _LO.fullmatch(segment.name):
            raise FactoryError(
                f"region name {segment.name!r} must be 1 to 64 characters without backslashes"
            )
        if not _CS.fullmatch(segment.interpreted_type):
            raise FactoryError(
                f"interpreted type {segment.interpreted_type!r} is not a DICOM code string "
                "(upper-case letters, digits, space, underscore; at most 16)"
            )
        if region.mask.shape != grid.shape:
            raise FactoryError(
                f"region {region.segment.name!r} is {region.mask.shape}, "
                f"the image series {grid.shape} (z, y, x)"
            )
        if region.mask.dtype.kind == "f" and (
            not np.all(np.isfinite(region.mask)) or region.mask.min() < 0 or region.mask.max() > 1
        ):
            raise FactoryError(f"fractional region {region.segment.name!r} is not in [0, 1]")
    numbers = [r.number for r in regions]
    if len(set(numbers)) != len(numbers):
        raise FactoryError(f"region numbers repeat: {numbers}")


def _binary(mask: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    return mask > 0.5 if mask.dtype.kind == "f" else mask.astype(bool, copy=False)


# --- shared references ------------------------------------------------------------------


def _instance_references(grid: ImageGrid) -> list[Dataset]:
    out = []
    for header in grid.datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = header.SOPClassUID
        item.ReferencedSOPInstanceUID = header.SOPInstanceUID
        out.append(item)
    return out


def _context(env: SeriesEnvironment, key: str) -> Any:
    value = env.kwargs.get(key)
    if value is None:
        raise FactoryError(f"this blueprint is built by {key}() (it needs masks and images)")
    return value


# --- pre-encoded items -------------------------------------------------------------------
#
# A structure set has thousands of contours and a SEG a functional group per frame; as
# pydicom data sets each costs a few dozen element objects, set and then encoded one
# by one, which took longer than everything else together. Their few, fixed elements
# are encoded here directly in explicit VR little endian (the transfer syntax we
# write) and handed to pydicom as raw elements of an item that says it is encoded so:
# pydicom writes them as they are, and parses them like a file's if anyone reads them.

_ITEM = struct.Struct("<HHI")
_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2s2xI")


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element (value already even-length)."""
    header = _LONG_HEADER if vr in LONG_VR_NAMES else _SHORT_HEADER
    return header.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value


def _text(vr: str, value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + pad_byte(vr) if len(raw) % 2 else raw


def _sequence(tag: int, *items: bytes) -> bytes:
    """A sequence of defined-length items, each the encoded elements in tag order."""
    body = b"".join(_ITEM.pack(0xFFFE, 0xE000, len(item)) + item for item in items)
    return _element(tag, "SQ", body)


def _code(code: Code) -> bytes:
    return (
        _element(0x00080100, "SH", _text("SH", code.value))
        + _element(0x00080102, "SH", _text("SH", code.scheme))
        + _element(0x00080104, "LO", _text("LO", code.meaning))
    )


def _reference(header: Dataset, frame: int | None) -> bytes:
    """ReferencedSOPClass/InstanceUID (and frame number) of one slice."""
    out = _element(0x00081150, "UI", _text("UI", str(header.SOPClassUID)))
    out += _element(0x00081155, "UI", _text("UI", str(header.SOPInstanceUID)))
    if frame is not None:
        out += _element(0x00081160, "IS", _text("IS", str(frame + 1)))
    return out


def _encoded(dataset: Dataset) -> Dataset:
    """Declare a built data set encoded like its pre-encoded items (see above).

    Otherwise pydicom's writer walks every sequence to correct ambiguous VRs, parsing
    each pre-encoded item on the way (we write none: every VR here is explicit).
    """
    charset = convert_encodings(dataset.get("SpecificCharacterSet") or "ISO_IR 6")
    dataset.set_original_encoding(False, True, charset)
    return dataset


def _encoded_item(elements: Sequence[tuple[int, str, bytes]]) -> Dataset:
    """An item holding already encoded elements (tag, VR, whole encoded element)."""
    item = Dataset()
    item.set_original_encoding(False, True, "iso8859")
    for tag, vr, encoded in elements:
        header = (_LONG_HEADER if vr in LONG_VR_NAMES else _SHORT_HEADER).size
        value = encoded[header:]
        item[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return item


# --- RT Structure Set -------------------------------------------------------------------


#: Explicit VR gives DS values a 2-byte length.
_MAX_SHORT_VALUE = 0xFFFE


def _ds_text(values: npt.NDArray[np.float64]) -> bytes:
    """ContourData as DS text: 0.1 micron precision, coarser for very long contours.

    Points lie at least 0.3 voxel from every voxel centre, so even 0.01 mm changes no
    voxel; a contour that does not fit 64 KiB even so is refused, not truncated.
    """
    if values.size and float(np.abs(values).max()) >= 1e9:
        raise FactoryError("contour coordinates beyond 1e9 mm do not fit DS")
    numbers = values.tolist()
    for decimals in ("{:.4f}", "{:.3f}", "{:.2f}"):
        text = _text("DS", "\\".join(map(decimals.format, numbers)))
        if len(text) <= _MAX_SHORT_VALUE:
            return text
    raise FactoryError(
        f"a contour of {len(numbers) // 3} points does not fit one ContourData value "
        "(64 KiB in explicit VR): smooth or split the region"
    )


_CLOSED_PLANAR = _element(0x30060042, "CS", _text("CS", "CLOSED_PLANAR"))


def _contour_item(number: int, reference: bytes, points: npt.NDArray[np.float64]) -> bytes:
    """The encoded elements of one Contour Sequence item."""
    return (
        _sequence(0x30060016, reference)
        + _CLOSED_PLANAR
        + _element(0x30060046, "IS", _text("IS", str(len(points))))
        + _element(0x30060048, "IS", _text("IS", str(number)))
        + _element(0x30060050, "DS", _ds_text(points.ravel()))
    )


@dataclass
class _StructureSet:
    grid: ImageGrid
    regions: list[_Region]
    contours: list[bytes] = field(default_factory=list)  # encoded Contour Sequences


def _structure_set(regions: list[_Region], grid: ImageGrid) -> _StructureSet:
    out = _StructureSet(grid, regions)
    references = [_reference(header, frame) for header, frame in grid.slices]
    for region in regions:
        traced = trace(_binary(region.mask))
        patient = grid.to_patient(traced.points)
        items = []
        for n in range(len(traced)):
            start, end = traced.offsets[n], traced.offsets[n + 1]
            k = int(traced.slices[n])
            try:
                items.append(_contour_item(n + 1, references[k], patient[start:end]))
            except FactoryError as exc:
                raise FactoryError(f"ROI {region.segment.name!r}, slice {k}: {exc}") from None
        # An empty ROI has no Contour Sequence: present, it needs one item or more.
        out.contours.append(_sequence(0x30060040, *items) if items else b"")
    return out


def _rt_referenced_frames(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _StructureSet = _context(env, "build_rtstruct")
    first = ctx.grid.datasets[0]
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = _instance_references(ctx.grid)
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_COMPONENT
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return [frame]


def _structure_set_rois(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _StructureSet = _context(env, "build_rtstruct")
    out = []
    for region in ctx.regions:
        item = Dataset()
        item.ROINumber = region.number
        item.ReferencedFrameOfReferenceUID = ctx.grid.datasets[0].FrameOfReferenceUID
        item.ROIName = region.segment.name
        if region.segment.description:
            item.ROIDescription = region.segment.description
        item.ROIGenerationAlgorithm = region.segment.algorithm_type
        out.append(item)
    return out


def _roi_contours(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _StructureSet = _context(env, "build_rtstruct")
    out = []
    for region, contours in zip(ctx.regions, ctx.contours, strict=True):
        colour = "\\".join(str(int(c)) for c in region.segment.colour or PALETTE[0])
        elements = [
            (0x3006002A, "IS", _element(0x3006002A, "IS", _text("IS", colour))),
            (0x30060040, "SQ", contours),
            (0x30060084, "IS", _element(0x30060084, "IS", _text("IS", str(region.number)))),
        ]
        out.append(_encoded_item([e for e in elements if e[2]]))
    return out


def _observations(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _StructureSet = _context(env, "build_rtstruct")
    out = []
    for n, region in enumerate(ctx.regions, start=1):
        item = Dataset()
        item.ObservationNumber = n
        item.ReferencedROINumber = region.number
        item.ROIObservationLabel = region.segment.name[:16]
        item.RTROIInterpretedType = region.segment.interpreted_type
        item.ROIInterpreter = ""
        out.append(item)
    return out


def _new_series(modality: str, description: str) -> Blueprint:
    """A new series of ``modality`` beside its images (numbered after them)."""
    return Blueprint(
        [
            Static("Modality", modality),
            Series("SeriesInstanceUID", lambda env: new_uid()),
            Series("SeriesNumber", _series_number),
            Series("SeriesDate", _date),
            Series("SeriesTime", _time),
            Static("SeriesDescription", description),
        ]
    )


#: RT Series module.
RT_SERIES = _new_series("RTSTRUCT", "aiodicom contours") + Static("OperatorsName", "")

#: Structure Set, ROI Contour and RT ROI Observations modules.
STRUCTURE_SET = Blueprint(
    [
        Static("StructureSetLabel", "aiodicom"),
        Static("InstanceNumber", 1),
        Series("StructureSetDate", _date),
        Series("StructureSetTime", _time),
        Series("ReferencedFrameOfReferenceSequence", _rt_referenced_frames, vr="SQ"),
        Series("StructureSetROISequence", _structure_set_rois, vr="SQ"),
        Series("ROIContourSequence", _roi_contours, vr="SQ"),
        Series("RTROIObservationsSequence", _observations, vr="SQ"),
    ]
)

#: The RT Structure Set IOD.
RTSTRUCT = (
    SOP_COMMON
    + PATIENT
    + GENERAL_STUDY
    + RT_SERIES
    + FRAME_OF_REFERENCE
    + GENERAL_EQUIPMENT
    + STRUCTURE_SET
    + Static("SOPClassUID", RT_STRUCTURE_SET_STORAGE)
)


def build_rtstruct(
    masks: MaskInput,
    images: Images,
    *,
    segments: SegmentsInput | None = None,
    blueprint: Blueprint = RTSTRUCT,
    kwargs: Mapping[str, Any] | None = None,
) -> Dataset:
    """An RT Structure Set outlining ``masks`` on the image series ``images``.

    ``masks`` is a label volume (each non-zero label a ROI, numbered by its label), a
    boolean (or fractional, cut at one half) volume, a mapping name -> mask, a
    (regions, z, y, x) stack, or a grinder's :class:`Masks`; every mask has the
    images' (z, y, x) shape. ``segments`` names and describes the ROIs (by number,
    name or position; plain strings are names). ``images`` is what the masks were
    computed on: the instances, a :class:`~aiodicom.grinders.Series` or a ground
    :class:`~aiodicom.grinders.numpy.Volume`.
    """
    grid = ImageGrid.of(images)
    regions = _regions(masks, segments)
    _checked(regions, grid, 2**31 - 1)  # ROI Number is an IS
    context = {**dict(kwargs or {}), "build_rtstruct": _structure_set(regions, grid)}
    return _encoded(build_instance(blueprint, grid.datasets, kwargs=context))


# --- Segmentation -----------------------------------------------------------------------


@dataclass
class _Segmentation:
    grid: ImageGrid
    regions: list[_Region]
    fractional: bool
    frames: list[tuple[int, int]]  # (region position, slice)
    pixel_data: bytes
    dimension_uid: str = field(default_factory=new_uid)


def _segmentation(regions: list[_Region], grid: ImageGrid, fractional: bool) -> _Segmentation:
    frames = []
    planes = []
    for position, region in enumerate(regions):
        present = region.mask > 0 if fractional else _binary(region.mask)
        for k in np.flatnonzero(present.any(axis=(1, 2))):
            frames.append((position, int(k)))
            planes.append(region.mask[k].astype(np.float32) if fractional else present[k])
    if not frames:
        raise FactoryError("every segment is empty: a SEG needs at least one frame")
    stack = np.stack(planes)
    if fractional:
        data = np.rint(np.clip(stack, 0.0, 1.0) * 255.0).astype(np.uint8).tobytes()
    else:
        data = np.packbits(stack.reshape(-1), bitorder="little").tobytes()
    if len(data) % 2:
        data += b"\0"
    return _Segmentation(grid, regions, fractional, frames, data)


def _segment_item(region: _Region) -> Dataset:
    segment = region.segment
    item = Dataset()
    item.SegmentNumber = region.number
    item.SegmentLabel = segment.name
    if segment.description:
        item.SegmentDescription = segment.description
    item.SegmentAlgorithmType = segment.algorithm_type
    if segment.algorithm_type != "MANUAL":
        item.SegmentAlgorithmName = segment.algorithm_name
        algorithm = Dataset()
        algorithm.AlgorithmFamilyCodeSequence = [segment.algorithm_family.item()]
        algorithm.AlgorithmName = segment.algorithm_name
        algorithm.AlgorithmVersion = segment.algorithm_version
        item.SegmentationAlgorithmIdentificationSequence = [algorithm]
    item.SegmentedPropertyCategoryCodeSequence = [segment.category.item()]
    item.SegmentedPropertyTypeCodeSequence = [segment.type.item()]
    if segment.colour is not None:
        item.RecommendedDisplayCIELabValue = rgb_to_dicom_lab(segment.colour)
    return item


def _segments(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _Segmentation = _context(env, "build_seg")
    return [_segment_item(region) for region in ctx.regions]


def _shared_groups(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _Segmentation = _context(env, "build_seg")
    affine = ctx.grid.affine
    steps = np.linalg.norm(affine[:3, :3], axis=0)
    measures = Dataset()
    measures.PixelSpacing = [format_ds(float(steps[1])), format_ds(float(steps[0]))]
    measures.SliceThickness = format_ds(float(steps[2]))
    measures.SpacingBetweenSlices = format_ds(float(steps[2]))
    orientation = Dataset()
    orientation.ImageOrientationPatient = [
        format_ds(round(float(v), 15))
        for v in (*affine[:3, 0] / steps[0], *affine[:3, 1] / steps[1])
    ]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    return [shared]


def _per_frame_groups(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _Segmentation = _context(env, "build_seg")
    used = sorted({k for _, k in ctx.frames})
    rank = {k: n for n, k in enumerate(used, start=1)}
    positions = ctx.grid.to_patient(
        np.array([[0.0, 0.0, float(k)] for k in range(ctx.grid.shape[0])])
    )
    derivation_code = _sequence(0x00089215, _code(_SEGMENTATION_DERIVATION))
    purpose = _sequence(0x0040A170, _code(_SOURCE_IMAGE))
    # The frame is on its source's grid: highdicom indexes by source only then.
    preserved = _element(0x0028135A, "CS", _text("CS", "YES"))
    out = []
    for position, k in ctx.frames:
        number = ctx.regions[position].number
        header, frame = ctx.grid.slices[k]
        source = _reference(header, frame) + preserved + purpose
        derivation = _sequence(0x00082112, source) + derivation_code
        ipp = "\\".join(format_ds(float(v)) for v in positions[k])
        elements = [
            (0x00089124, _sequence(0x00089124, derivation)),
            (
                0x00209111,
                _sequence(
                    0x00209111, _element(0x00209157, "UL", struct.pack("<II", number, rank[k]))
                ),
            ),
            (0x00209113, _sequence(0x00209113, _element(0x00200032, "DS", _text("DS", ipp)))),
            (
                0x0062000A,
                _sequence(0x0062000A, _element(0x0062000B, "US", struct.pack("<H", number))),
            ),
        ]
        out.append(_encoded_item([(tag, "SQ", encoded) for tag, encoded in elements]))
    return out


def _dimension_index(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _Segmentation = _context(env, "build_seg")
    pointers = (
        (0x0062000B, 0x0062000A, "Segment Number"),
        (0x00200032, 0x00209113, "Image Position Patient"),
    )
    out = []
    for pointer, group, label in pointers:
        item = Dataset()
        item.DimensionOrganizationUID = ctx.dimension_uid
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = group
        item.DimensionDescriptionLabel = label
        out.append(item)
    return out


def _dimension_organisation(env: SeriesEnvironment) -> list[Dataset]:
    item = Dataset()
    item.DimensionOrganizationUID = _context(env, "build_seg").dimension_uid
    return [item]


def _referenced_series(env: SeriesEnvironment) -> list[Dataset]:
    ctx: _Segmentation = _context(env, "build_seg")
    item = Dataset()
    item.SeriesInstanceUID = ctx.grid.datasets[0].SeriesInstanceUID
    item.ReferencedInstanceSequence = _instance_references(ctx.grid)
    return [item]


def _seg(env: SeriesEnvironment) -> _Segmentation:
    value: _Segmentation = _context(env, "build_seg")
    return value


def _bits(env: SeriesEnvironment) -> int:
    return 8 if _seg(env).fractional else 1


#: Segmentation Series module (on top of General Series).
SEGMENTATION_SERIES = _new_series("SEG", "aiodicom segmentation")

#: Enhanced General Equipment module (its attributes are type 1).
ENHANCED_GENERAL_EQUIPMENT = Blueprint([Static("DeviceSerialNumber", "0")])

#: Segmentation Image, Multi-frame Functional Groups, Multi-frame Dimension and Common
#: Instance Reference modules, plus the image pixel attributes they constrain.
SEGMENTATION_IMAGE = Blueprint(
    [
        Static("ImageType", ["DERIVED", "PRIMARY"]),
        Static("InstanceNumber", 1),
        Series("ContentDate", _date),
        Series("ContentTime", _time),
        Static("ContentLabel", "SEGMENTATION"),
        Static("ContentDescription", ""),
        Static("ContentCreatorName", ""),
        Static("SamplesPerPixel", 1),
        Static("PhotometricInterpretation", "MONOCHROME2"),
        Series("Rows", lambda env: _seg(env).grid.shape[1]),
        Series("Columns", lambda env: _seg(env).grid.shape[2]),
        Series("BitsAllocated", _bits),
        Series("BitsStored", _bits),
        Series("HighBit", lambda env: _bits(env) - 1),
        Static("PixelRepresentation", 0),
        Static("LossyImageCompression", "00"),
        Series("SegmentationType", lambda env: "FRACTIONAL" if _seg(env).fractional else "BINARY"),
        Series(
            "SegmentationFractionalType",
            lambda env: (
                env.kwargs.get("fractional_type", "PROBABILITY") if _seg(env).fractional else ABSENT
            ),
        ),
        Series("MaximumFractionalValue", lambda env: 255 if _seg(env).fractional else ABSENT),
        Series("SegmentSequence", _segments, vr="SQ"),
        Series("NumberOfFrames", lambda env: len(_seg(env).frames)),
        Series("SharedFunctionalGroupsSequence", _shared_groups, vr="SQ"),
        Series("PerFrameFunctionalGroupsSequence", _per_frame_groups, vr="SQ"),
        Series("DimensionOrganizationSequence", _dimension_organisation, vr="SQ"),
        Series("DimensionIndexSequence", _dimension_index, vr="SQ"),
        Series("ReferencedSeriesSequence", _referenced_series, vr="SQ"),
        Series("PixelData", lambda env: _seg(env).pixel_data, vr="OB"),
    ]
)

#: The Segmentation IOD.
SEGMENTATION = (
    SOP_COMMON
    + PATIENT
    + GENERAL_STUDY
    + GENERAL_SERIES.without("PatientPosition")
    + SEGMENTATION_SERIES
    + FRAME_OF_REFERENCE
    + GENERAL_EQUIPMENT
    + ENHANCED_GENERAL_EQUIPMENT
    + SEGMENTATION_IMAGE
    + Static("SOPClassUID", SEGMENTATION_STORAGE)
)


def build_seg(
    masks: MaskInput,
    images: Images,
    *,
    segments: SegmentsInput | None = None,
    fractional: bool | None = None,
    fractional_type: Literal["PROBABILITY", "OCCUPANCY"] = "PROBABILITY",
    blueprint: Blueprint = SEGMENTATION,
    kwargs: Mapping[str, Any] | None = None,
) -> Dataset:
    """A DICOM Segmentation of ``masks`` on the image series ``images``.

    ``masks``, ``segments`` and ``images`` are as for :func:`build_rtstruct`.
    ``fractional`` defaults to True when a mask is floating point (values in [0, 1],
    stored in 8 bits); binary segmentations store 1 bit per voxel. Only slices where
    a segment has voxels become frames.
    """
    grid = ImageGrid.of(images)
    regions = _regions(masks, segments)
    _checked(regions, grid, 0xFFFF)  # Segment Number is a US
    if fractional is None:
        fractional = any(region.mask.dtype.kind == "f" for region in regions)
    context = {
        **dict(kwargs or {}),
        "fractional_type": fractional_type,
        "build_seg": _segmentation(regions, grid, fractional),
    }
    return _encoded(build_instance(blueprint, grid.datasets, kwargs=context))
