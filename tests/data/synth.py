"""Synthetic series for data-conversion tests: any geometry, any pixel format.

Everything is generated here from parameters (no files outside the repository):
single-frame CT/PET/MR-like series with arbitrary (oblique) affines, per-slice
rescale, signed or unsigned pixels, enhanced multi-frame images with per-frame
or shared functional groups, and RGB series.

Affines follow :mod:`aiodicom.data.geometry`: 4x4 LPS, voxel ``[i, j, k, 1]``
(column, row, slice) -> mm; volumes are ``(z, y, x)`` arrays of *stored* values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PET = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SOP_CLASSES = {"CT": CT, "MR": MR, "PT": PET}


def rotation(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
    """Rotation matrix (radians) about x, then y, then z."""
    cx, sx, cy, sy, cz, sz = (
        np.cos(ax),
        np.sin(ax),
        np.cos(ay),
        np.sin(ay),
        np.cos(az),
        np.sin(az),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(
    spacing: Sequence[float] = (2.5, 0.7, 0.8),
    origin: Sequence[float] = (-100.0, -120.0, 50.0),
    rot: np.ndarray | None = None,
) -> np.ndarray:
    """An LPS affine with ``spacing`` (z, y, x) and the rotation ``rot`` (default none)."""
    r = np.eye(3) if rot is None else np.asarray(rot, dtype=float)
    affine = np.eye(4)
    affine[:3, 0] = r[:, 0] * spacing[2]
    affine[:3, 1] = r[:, 1] * spacing[1]
    affine[:3, 2] = r[:, 2] * spacing[0]
    affine[:3, 3] = origin
    return affine


def _ds_str(values: Sequence[float]) -> list[str]:
    # 16-char DS strings, as real scanners write them.
    return [f"{v:.10g}"[:16] for v in values]


def _plane(affine: np.ndarray, k: int) -> tuple[list[str], list[str], list[str]]:
    row = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    col = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    position = affine[:3, 3] + k * affine[:3, 2]
    spacing = [np.linalg.norm(affine[:3, 1]), np.linalg.norm(affine[:3, 0])]
    return _ds_str([*row, *col]), _ds_str(position), _ds_str(spacing)


def _pixel_module(ds: Dataset, volume: np.ndarray, bits_stored: int | None) -> None:
    dtype = volume.dtype
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = dtype.itemsize * 8
    ds.BitsStored = bits_stored or dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])


def _base(modality: str, sop_class: str, study: str, series: str, frame: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = "SYNTH01"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame
    ds.Modality = modality
    ds.StudyDate = "20240115"
    ds.SeriesNumber = 3
    ds.SeriesDescription = f"synthetic {modality}"
    return ds


def _finish(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds


def make_series(
    volume: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    modality: str = "CT",
    slopes: Sequence[float] | float | None = None,
    intercepts: Sequence[float] | float | None = None,
    bits_stored: int | None = None,
    geometry: bool = True,
    optional: bool = True,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_numbers: Sequence[int] | None = None,
) -> list[Dataset]:
    """Single-frame instances (slice order) holding ``volume``'s stored values.

    ``slopes``/``intercepts`` are written per slice (a scalar for all, ``None``
    to omit the attributes). ``geometry=False`` drops the image plane module;
    ``optional=False`` drops SliceThickness, SpacingBetweenSlices, InstanceNumber
    and the descriptions.
    """
    affine = make_affine() if affine is None else affine
    study, series, frame = study_uid or generate_uid(), series_uid or generate_uid(), generate_uid()
    n = volume.shape[0]
    out = []
    for k in range(n):
        ds = _base(modality, SOP_CLASSES.get(modality, SECONDARY_CAPTURE), study, series, frame)
        if geometry:
            orientation, position, spacing = _plane(affine, k)
            ds.ImageOrientationPatient = orientation
            ds.ImagePositionPatient = position
            ds.PixelSpacing = spacing
        if optional:
            ds.SliceThickness = _ds_str([np.linalg.norm(affine[:3, 2])])[0]
            ds.InstanceNumber = instance_numbers[k] if instance_numbers else k + 1
        elif instance_numbers:
            ds.InstanceNumber = instance_numbers[k]
        if not optional:
            del ds.SeriesDescription
        for keyword, value in (("RescaleSlope", slopes), ("RescaleIntercept", intercepts)):
            if value is None:
                continue
            v = value[k] if isinstance(value, Sequence) else value
            setattr(ds, keyword, f"{v:.10g}"[:16])
        _pixel_module(ds, volume, bits_stored)
        ds.PixelData = (
            np.ascontiguousarray(volume[k]).astype(volume.dtype.newbyteorder("<")).tobytes()
        )
        out.append(_finish(ds))
    return out


def make_multiframe(
    volume: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    slopes: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
    shared_orientation: bool = True,
    frame_order: Sequence[int] | None = None,
    bits_stored: int | None = None,
) -> Dataset:
    """One enhanced multi-frame instance; ``frame_order`` permutes stored frames.

    Orientation and pixel measures are in the shared functional groups when
    ``shared_orientation`` (else per frame); positions and rescale per frame.
    """
    affine = make_affine() if affine is None else affine
    ds = _base("CT", ENHANCED_CT, generate_uid(), generate_uid(), generate_uid())
    order = list(frame_order) if frame_order is not None else list(range(volume.shape[0]))
    ds.NumberOfFrames = len(order)
    _pixel_module(ds, volume, bits_stored)
    shared = Dataset()
    per_frame = []
    orientation, _, spacing = _plane(affine, 0)

    def plane_groups(item: Dataset) -> None:
        o = Dataset()
        o.ImageOrientationPatient = orientation
        item.PlaneOrientationSequence = DicomSequence([o])
        m = Dataset()
        m.PixelSpacing = spacing
        m.SliceThickness = _ds_str([np.linalg.norm(affine[:3, 2])])[0]
        item.PixelMeasuresSequence = DicomSequence([m])

    if shared_orientation:
        plane_groups(shared)
    for k in order:
        item = Dataset()
        p = Dataset()
        p.ImagePositionPatient = _plane(affine, k)[1]
        item.PlanePositionSequence = DicomSequence([p])
        if not shared_orientation:
            plane_groups(item)
        t = Dataset()
        t.RescaleSlope = f"{slopes[k] if slopes else 1:.10g}"
        t.RescaleIntercept = f"{intercepts[k] if intercepts else 0:.10g}"
        t.RescaleType = "US"
        item.PixelValueTransformationSequence = DicomSequence([t])
        per_frame.append(item)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = (
        np.ascontiguousarray(volume[order]).astype(volume.dtype.newbyteorder("<")).tobytes()
    )
    return _finish(ds)


def make_rgb_series(
    volume: np.ndarray, affine: np.ndarray | None = None, *, planar: bool = False
) -> list[Dataset]:
    """Single-frame RGB instances from a (z, y, x, 3) uint8 volume."""
    affine = make_affine() if affine is None else affine
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(volume.shape[0]):
        ds = _base("OT", SECONDARY_CAPTURE, study, series, frame)
        orientation, position, spacing = _plane(affine, k)
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = position
        ds.PixelSpacing = spacing
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 1 if planar else 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
        frame_pixels = volume[k].transpose(2, 0, 1) if planar else volume[k]
        ds.PixelData = np.ascontiguousarray(frame_pixels).tobytes()
        out.append(_finish(ds))
    return out


def write(
    datasets: Sequence[Dataset], folder: Path, *, transfer_syntax: str | None = None
) -> list[Path]:
    """Write data sets as Part 10 files ``folder/NNN.dcm`` (optionally re-encoded).

    Only the three native uncompressed syntaxes can be re-encoded here; use
    ``ds.compress`` for RLE and :mod:`aiodicom.synthetic` for deflated files.
    """
    if transfer_syntax not in (
        None,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        "1.2.840.10008.1.2",
    ):
        raise ValueError(f"synth.write cannot re-encode to {transfer_syntax}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        if transfer_syntax is not None:
            ds = ds.copy()
            ds.file_meta = ds.file_meta.copy()
            ds.file_meta.TransferSyntaxUID = transfer_syntax
            if transfer_syntax == ExplicitVRBigEndian and ds.BitsAllocated > 8:
                # pydicom writes bytes values as given: swap them ourselves.
                pixels = np.frombuffer(ds.PixelData, dtype=f"<u{ds.BitsAllocated // 8}")
                ds.PixelData = pixels.byteswap().tobytes()
        path = folder / f"{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def ramp(shape: Sequence[int], dtype: Any, lo: int, hi: int, seed: int = 0) -> np.ndarray:
    """Random integers in [lo, hi] including both ends (so ranges are exercised)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(lo, hi, size=tuple(shape), endpoint=True).astype(dtype)
    flat = out.reshape(-1)
    flat[0], flat[-1] = lo, hi
    return out
