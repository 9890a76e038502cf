"""The masks grinder and the readers' refusals: an input holding images and a segmentation."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from aiodicom.data.lazy import LazyDataset
from aiodicom.errors import GeometryError, SegmentationError
from aiodicom.factory.segmentation import build_rtstruct, build_seg
from aiodicom.grinders.numpy import numpy_grinder
from aiodicom.grinders.segmentation import (
    Masks,
    masks_grinder,
    masks_grinder_for,
    rtstruct_to_masks,
    seg_to_masks,
)
from aiodicom.synthetic import write_study
from segmentation.helpers import SHAPE, sphere, thin, torus


@pytest.fixture(scope="module")
def shapes() -> dict[str, np.ndarray]:
    return {"sphere": sphere(), "torus": torus(), "thin": thin()}


@pytest.fixture(scope="module")
def files(axial: list[Path], shapes: dict[str, np.ndarray]) -> dict[str, Path]:
    folder = axial[0].parent.parent
    out = {}
    for name, build in (("rtstruct", build_rtstruct), ("seg", build_seg)):
        path = folder / f"{name}.dcm"
        build(shapes, axial).save_as(path, enforce_file_format=True)
        out[name] = path
    return out


@pytest.mark.parametrize("kind", ["rtstruct", "seg"])
@pytest.mark.parametrize("form", ["path", "lazy", "dataset"])
def test_grinder_finds_the_segmentation_and_its_images(
    axial: list[Path],
    files: dict[str, Path],
    shapes: dict[str, np.ndarray],
    tmp_path: Path,
    kind: str,
    form: str,
) -> None:
    other = write_study(tmp_path / "other", images_per_series=3, rows=16, columns=16)
    convert = {"path": lambda p: p, "lazy": LazyDataset, "dataset": pydicom.dcmread}[form]
    instances = [convert(p) for p in [files[kind], *reversed(axial), *other]]
    masks = masks_grinder(instances)
    assert isinstance(masks, Masks) and masks.image is None
    assert masks.names == list(shapes)
    assert np.array_equal(masks.affine, numpy_grinder(axial).affine)
    for name, mask in shapes.items():
        assert np.array_equal(masks[name], mask)
    assert np.array_equal(masks[2], shapes["torus"])


def test_grinder_for_chosen_rois_with_the_image(axial: list[Path], files: dict[str, Path]) -> None:
    grind = masks_grinder_for(["thin", 1], with_image=True)
    masks = grind([*axial, files["rtstruct"]])
    assert [(r.number, r.name) for r in masks] == [(3, "thin"), (1, "sphere")]
    assert masks.image is not None
    assert np.array_equal(masks.image.array, numpy_grinder(axial).array)


def test_unknown_roi_and_missing_pieces_are_refused(
    axial: list[Path], files: dict[str, Path]
) -> None:
    with pytest.raises(SegmentationError, match="no ROI 'liver'; there are 1: 'sphere'"):
        masks_grinder_for(["liver"])([*axial, files["rtstruct"]])
    with pytest.raises(SegmentationError, match="no ROI 7"):
        rtstruct_to_masks(files["rtstruct"], axial, [7])
    with pytest.raises(SegmentationError, match="2 structure sets or segmentations"):
        masks_grinder([*axial, files["rtstruct"], files["seg"]])
    with pytest.raises(SegmentationError, match="0 structure sets"):
        masks_grinder(axial)
    with pytest.raises(SegmentationError, match="no instance of the referenced image series"):
        masks_grinder([files["seg"]])
    with pytest.raises(SegmentationError, match="not an RT Structure Set"):
        rtstruct_to_masks(files["seg"], axial)
    with pytest.raises(SegmentationError, match="not a Segmentation"):
        seg_to_masks(files["rtstruct"], axial)


def test_another_frame_of_reference_is_refused(axial: list[Path], files: dict[str, Path]) -> None:
    rtstruct = pydicom.dcmread(files["rtstruct"])
    for item in rtstruct.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(SegmentationError, match="frame of reference 1.2.3.4"):
        rtstruct_to_masks(rtstruct, axial)
    seg = pydicom.dcmread(files["seg"])
    seg.FrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(SegmentationError, match="frame of reference 1.2.3.4"):
        seg_to_masks(seg, axial)


def _first_contour(rtstruct: Dataset) -> Dataset:
    item: Dataset = rtstruct.ROIContourSequence[0].ContourSequence[0]
    return item


def test_contour_off_the_slice_planes_is_refused_and_outside_ones_skipped(
    axial: list[Path], files: dict[str, Path], shapes: dict[str, np.ndarray]
) -> None:
    rtstruct = pydicom.dcmread(files["rtstruct"])
    contour = _first_contour(rtstruct)
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    tilted = points.copy()
    tilted[:, 2] += np.linspace(0, 5.0, len(points))  # 2 slices of 2.5 mm
    contour.ContourData = [f"{v:.4f}" for v in tilted.ravel()]
    with pytest.raises(GeometryError, match="not in one slice plane"):
        rtstruct_to_masks(rtstruct, axial)
    moved = points.copy()
    moved[:, 2] -= 100.0
    contour.ContourData = [f"{v:.4f}" for v in moved.ravel()]
    masks = rtstruct_to_masks(rtstruct, axial)
    k = int(np.flatnonzero(shapes["sphere"].any(axis=(1, 2)))[0])
    assert not masks["sphere"][k].any()  # that slice's only contour went away
    assert np.array_equal(masks["sphere"][k + 1 :], shapes["sphere"][k + 1 :])


def test_non_closed_contours_are_not_regions(axial: list[Path], files: dict[str, Path]) -> None:
    rtstruct = pydicom.dcmread(files["rtstruct"])
    for roi in rtstruct.ROIContourSequence:
        for contour in roi.ContourSequence:
            contour.ContourGeometricType = "OPEN_PLANAR"
    masks = rtstruct_to_masks(rtstruct, axial)
    assert not any(roi.mask.any() for roi in masks)


@pytest.mark.parametrize("frame_number", [None, 1], ids=["no-frame-number", "frame-1"])
def test_seg_frames_without_positions_are_placed_by_their_source_image(
    axial: list[Path],
    files: dict[str, Path],
    shapes: dict[str, np.ndarray],
    frame_number: int | None,
) -> None:
    seg = pydicom.dcmread(files["seg"])
    for group in seg.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence
        if frame_number is not None:  # frame 1 of a single-frame image: the image
            source = group.DerivationImageSequence[0].SourceImageSequence[0]
            source.ReferencedFrameNumber = frame_number
    masks = seg_to_masks(seg, axial)
    for name, mask in shapes.items():
        assert np.array_equal(masks[name], mask)


def test_seg_frames_off_the_grid_are_refused(axial: list[Path], files: dict[str, Path]) -> None:
    seg = pydicom.dcmread(files["seg"])
    shifted = copy.deepcopy(seg)
    position = shifted.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 0.3 for v in position.ImagePositionPatient]
    with pytest.raises(GeometryError, match="between the image series' voxels"):
        seg_to_masks(shifted, axial)
    spaced = copy.deepcopy(seg)
    spaced.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [1.4, 1.4]
    with pytest.raises(GeometryError, match="pixel spacing"):
        seg_to_masks(spaced, axial)


def test_label_volume_refuses_overlaps(axial: list[Path], files: dict[str, Path]) -> None:
    masks = rtstruct_to_masks(files["rtstruct"], axial)
    with pytest.raises(SegmentationError, match=r"ROIs 1 and 2 \('torus'\) overlap"):
        masks.label_volume()
    assert masks.roi("thin").number == 3
    with pytest.raises(KeyError, match="no ROI 'liver'"):
        masks["liver"]
    assert len(masks) == 3 and SHAPE == masks.grid.shape


def _multiframe(axial: list[Path]) -> Dataset:
    """The axial series as one enhanced CT instance (frames in slice order)."""
    slices = sorted(
        (pydicom.dcmread(p) for p in axial), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    first = slices[0]
    ds = Dataset()
    for keyword in (
        "PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Rows",
        "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
        "BitsStored", "HighBit", "PixelRepresentation", "Modality",
    ):  # fmt: skip
        setattr(ds, keyword, first.get(keyword))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.NumberOfFrames = len(slices)
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for image in slices:
        position = Dataset()
        position.ImagePositionPatient = image.ImagePositionPatient
        group = Dataset()
        group.PlanePositionSequence = [position]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = b"".join(image.PixelData for image in slices)
    return ds


def test_multiframe_images_are_referenced_by_frame(
    axial: list[Path], shapes: dict[str, np.ndarray]
) -> None:
    image = _multiframe(axial)
    rtstruct = build_rtstruct(shapes, [image])
    references = {
        int(contour.ContourImageSequence[0].ReferencedFrameNumber)
        for roi in rtstruct.ROIContourSequence
        for contour in roi.ContourSequence
    }
    assert references <= set(range(1, SHAPE[0] + 1)) and len(references) > 5
    for name, mask in shapes.items():
        assert np.array_equal(rtstruct_to_masks(rtstruct, [image])[name], mask)
    seg = build_seg(shapes, [image])
    for group in seg.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence  # placed by source frame number alone
    for name, mask in shapes.items():
        assert np.array_equal(seg_to_masks(seg, [image])[name], mask)
