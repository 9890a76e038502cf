"""Independent readers and writers: rt-utils (RTSTRUCT), highdicom (SEG), dciodvfy (IODs).

rt-utils and highdicom are test-only peers (the ``dev`` extra); dciodvfy comes from the
Debian package dicom3tools. rt-utils allocates its masks as (columns, rows) and scales
the row direction by the spacing between rows, so it is run on an axial series with
square images and square pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from aiodicom.factory.segmentation import build_rtstruct, build_seg
from aiodicom.grinders.segmentation import ImageGrid, rtstruct_to_masks, seg_to_masks
from peers import dciodvfy
from segmentation.helpers import all_shapes, axial_series, require_peer_module

NAMES = ("sphere", "torus", "disjoint", "thin")
SQUARE = (12, 56, 56)


@pytest.fixture(scope="module")
def square(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return axial_series(tmp_path_factory.mktemp("square") / "ct", SQUARE)


def _rt_utils() -> object:
    require_peer_module("rt_utils")
    from rt_utils import RTStructBuilder

    return RTStructBuilder


def _highdicom() -> object:
    require_peer_module("highdicom")
    import highdicom

    return highdicom


def test_rt_utils_reads_our_rtstruct_exactly(square: list[Path], tmp_path: Path) -> None:
    builder = _rt_utils()
    shapes = all_shapes(SQUARE)
    path = tmp_path / "ours.dcm"
    build_rtstruct(shapes, square).save_as(path, enforce_file_format=True)
    theirs = builder.create_from(  # type: ignore[attr-defined]
        dicom_series_path=str(square[0].parent), rt_struct_path=str(path)
    )
    assert theirs.get_roi_names() == list(NAMES)
    for name in NAMES:
        mask = theirs.get_roi_mask_by_name(name).transpose(2, 0, 1)  # (y, x, z) -> (z, y, x)
        assert np.array_equal(mask, shapes[name]), name


def test_we_read_rt_utils_rtstruct_exactly(square: list[Path], tmp_path: Path) -> None:
    builder = _rt_utils()
    shapes = all_shapes(SQUARE)
    theirs = builder.create_new(dicom_series_path=str(square[0].parent))  # type: ignore[attr-defined]
    for name in NAMES:
        theirs.add_roi(mask=shapes[name].transpose(1, 2, 0), name=name)
    path = tmp_path / "theirs.dcm"
    theirs.save(str(path))
    masks = rtstruct_to_masks(path, square)
    assert masks.names == list(NAMES)
    for roi in masks:  # fractional values are stored in 1/255 steps
        assert np.allclose(roi.mask, shapes[roi.name], atol=0.5 / 255 + 1e-6), roi.name


def test_highdicom_reads_our_seg(series: list[Path], tmp_path: Path) -> None:
    hd = _highdicom()
    shapes = all_shapes()
    path = tmp_path / "ours.dcm"
    build_seg(shapes, series).save_as(path, enforce_file_format=True)
    seg = hd.seg.segread(path)  # type: ignore[attr-defined]
    assert [s.segment_label for s in seg.SegmentSequence] == list(NAMES)
    grid = ImageGrid.of(series)
    uids = [str(ds.SOPInstanceUID) for ds, _ in grid.slices]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=False
    )
    for n, name in enumerate(NAMES):
        assert np.array_equal(pixels[..., n].astype(bool), shapes[name]), name


def _their_inputs(kind: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """highdicom's pixel array for ``kind`` and the masks we expect back per segment."""
    shapes = all_shapes()
    if kind == "LABELMAP":  # one label per voxel: later shapes win where they overlap
        labels = np.zeros(shapes["sphere"].shape, dtype=np.uint8)
        for n, name in enumerate(NAMES, start=1):
            labels[shapes[name]] = n
        return labels, {name: labels == n for n, name in enumerate(NAMES, start=1)}
    stack = np.stack([shapes[name] for name in NAMES], axis=-1)
    if kind == "FRACTIONAL":
        return stack.astype(np.float32) * 0.6, {n: m * np.float32(0.6) for n, m in shapes.items()}
    return stack.astype(np.uint8), shapes


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_we_read_highdicom_seg(series: list[Path], tmp_path: Path, kind: str) -> None:
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    images = sorted(
        (pydicom.dcmread(p) for p in series),
        key=lambda ds: float(
            np.cross(*np.reshape(ds.ImageOrientationPatient, (2, 3)))
            @ np.asarray(ds.ImagePositionPatient, dtype=float)
        ),
    )
    pixels, expected = _their_inputs(kind)
    seg_module = hd.seg  # type: ignore[attr-defined]
    descriptions = [
        seg_module.SegmentDescription(
            segment_number=n,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=seg_module.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, name in enumerate(NAMES, start=1)
    ]
    theirs = seg_module.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=seg_module.SegmentationTypeValues[kind],
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),  # type: ignore[attr-defined]
        series_number=20,
        sop_instance_uid=hd.UID(),  # type: ignore[attr-defined]
        instance_number=1,
        manufacturer="highdicom",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
        max_fractional_value=255,
    )
    path = tmp_path / "theirs.dcm"
    theirs.save_as(path)
    masks = seg_to_masks(path, series)
    assert masks.names == list(NAMES)
    for roi in masks:
        if kind == "FRACTIONAL":
            assert np.allclose(roi.mask, expected[roi.name], atol=0.5 / 255 + 1e-6)
        else:
            assert roi.mask.dtype == bool
            assert np.array_equal(roi.mask, expected[roi.name]), roi.name


@pytest.mark.dicom3tools
@pytest.mark.parametrize("kind", ["rtstruct", "seg", "fractional seg"])
def test_dciodvfy_finds_nothing_in_what_we_write(
    axial: list[Path], tmp_path: Path, kind: str
) -> None:
    shapes: dict[str, np.ndarray] = dict(all_shapes())
    shapes["empty"] = np.zeros_like(shapes["sphere"])  # no contour, no frame
    if kind == "fractional seg":
        shapes = {name: mask.astype(np.float32) * 0.5 for name, mask in shapes.items()}
    build = build_rtstruct if kind == "rtstruct" else build_seg
    path = tmp_path / "out.dcm"
    build(shapes, axial).save_as(path, enforce_file_format=True)
    assert dciodvfy(path) == []
    reader = rtstruct_to_masks if kind == "rtstruct" else seg_to_masks
    masks = reader(path, axial)
    assert masks.names == list(shapes)
    for roi in masks:  # fractional values are stored in 1/255 steps
        assert np.allclose(roi.mask, shapes[roi.name], atol=0.5 / 255 + 1e-6), roi.name
