"""Deterministic synthetic DICOM studies for demos, tests and benchmarks.

A newcomer's clone has no patient data, and tests must not depend on files outside the
repository, so every study aiodicom exercises itself with is generated here. Pixels are a
cheap CT-like phantom (air, a body ellipse, a spine and a spherical "organ" whose cross
section changes from slice to slice) that depends only on ``seed``; UIDs are fresh on every
call so that two generated studies never collide in a receiver's output folder.

Speed matters more than realism: benchmarks generate hundreds of 512x512 slices, so one
random noise buffer is made per (rows, columns, seed) and each slice is derived from it
with a few vectorised numpy operations.

This module is part of the data layer: it imports pydicom, numpy and ``aiodicom.codec``
only, never the network stack.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from aiodicom.codec.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    new_uid,
)
from aiodicom.errors import SyntheticDataError

__all__ = [
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE",
    "TRANSFER_SYNTAXES",
    "make_dataset",
    "pixel_array",
    "write_large_multiframe",
    "write_study",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"

#: Short names (as the CLI spells them) of the transfer syntaxes we can write.
TRANSFER_SYNTAXES: dict[str, str] = {
    "implicit": IMPLICIT_VR_LITTLE_ENDIAN,
    "explicit": EXPLICIT_VR_LITTLE_ENDIAN,
    "big": EXPLICIT_VR_BIG_ENDIAN,
    "deflated": DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
}

_SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}

# Geometry shared by every generated series: axial slices, 0.7 mm pixels, 2.5 mm apart.
_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_PIXEL_SPACING = 0.7
_SLICE_SPACING = 2.5

# CT stores HU + 1024 in 12 of the 16 allocated bits, as most scanners do.
_CT_INTERCEPT = -1024.0
_MAX_STORED = 4095

_STUDY_DATE = "20240115"
_STUDY_TIME = "093000"


def _check_transfer_syntax(transfer_syntax: str, allowed: Sequence[str]) -> None:
    if transfer_syntax not in allowed:
        raise SyntheticDataError(
            f"cannot write transfer syntax {transfer_syntax!r}; use one of {', '.join(allowed)}"
        )


def _check_size(rows: int, columns: int) -> None:
    if not (1 <= rows <= 0xFFFF and 1 <= columns <= 0xFFFF):
        raise SyntheticDataError(f"rows and columns must be 1..65535, not {rows}x{columns}")


@functools.lru_cache(maxsize=8)
def _phantom(
    rows: int, columns: int, seed: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Return (anatomy in stored values, noise, squared distance to the organ centre).

    Cached because building it (random noise, distance maps) is the only costly step and
    every slice of a series shares it; the arrays are read-only so no caller can spoil it.
    """
    rng = np.random.default_rng(seed)
    y = (np.arange(rows, dtype=np.float32) - rows / 2.0) / (rows / 2.0)
    x = (np.arange(columns, dtype=np.float32) - columns / 2.0) / (columns / 2.0)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    hu = np.full((rows, columns), -1000.0, dtype=np.float32)  # air
    hu[(xx / 0.85) ** 2 + (yy / 0.65) ** 2 < 1.0] = 40.0  # soft tissue
    hu[(xx / 0.12) ** 2 + ((yy - 0.42) / 0.12) ** 2 < 1.0] = 700.0  # spine
    anatomy = np.rint(hu - _CT_INTERCEPT).astype(np.int32)
    noise = np.rint(rng.normal(0.0, 12.0, size=(rows, columns))).astype(np.int32)
    dist2 = ((xx + 0.3) ** 2 + (yy + 0.1) ** 2).astype(np.float32)
    for array in (anatomy, noise, dist2):
        array.flags.writeable = False
    return anatomy, noise, dist2


def pixel_array(
    rows: int, columns: int, *, index: int = 0, slices: int = 1, seed: int = 0
) -> npt.NDArray[np.uint16]:
    """The stored pixel values of slice ``index`` of a ``slices``-slice volume.

    Public so tests can compare what a peer received with what was generated, without
    decoding the file they sent.
    """
    _check_size(rows, columns)
    anatomy, noise, dist2 = _phantom(rows, columns, seed)
    # Shift the noise (not the anatomy) per slice so no two slices are byte-identical.
    out = anatomy + np.roll(noise, 7 * index, axis=1)
    # An ellipsoidal "organ" spanning the stack: its cross section grows and shrinks
    # from slice to slice, so a volume built from the series has structure along z.
    z = 0.0 if slices <= 1 else (index / (slices - 1)) * 2.0 - 1.0
    r2 = 0.09 * (1.0 - z * z)
    if r2 > 0:
        out += np.where(dist2 < r2, 60, 0).astype(np.int32)
    stored: npt.NDArray[np.uint16] = np.clip(out, 0, _MAX_STORED).astype(np.uint16)
    return stored


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _common_header(
    ds: Dataset,
    *,
    sop_class: str,
    sop_instance: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    series_number: int,
    instance_number: int,
    modality: str,
) -> None:
    """Patient, study, series, equipment and SOP common modules (what every IOD needs)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Value 3 (image flavour): AXIAL is a CT term; MR has its own list, where OTHER is one.
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = _STUDY_DATE
    ds.SeriesDate = _STUDY_DATE
    ds.ContentDate = _STUDY_DATE
    ds.StudyTime = _STUDY_TIME
    ds.SeriesTime = _STUDY_TIME
    ds.ContentTime = _STUDY_TIME
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "aiodicom"
    ds.ReferringPhysicianName = ""
    ds.StationName = "SYNTHETIC"
    ds.StudyDescription = "aiodicom synthetic study"
    ds.SeriesDescription = f"synthetic series {series_number}"
    ds.ManufacturerModelName = "aiodicom.synthetic"
    ds.PatientName = f"Synthetic^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Series: Patient Position is Type 2C, required for CT and MR; Laterality is Type 2C
    # too, required unless the body part examined is known to be unpaired, so name one.
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"


def _pixel_bytes(pixels: npt.NDArray[np.uint16], transfer_syntax: str) -> bytes:
    # pydicom writes OW values as given (it does not swap), so big endian is our job.
    if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
        return pixels.astype(">u2").tobytes()
    return pixels.astype("<u2").tobytes()


def make_dataset(
    *,
    patient_id: str = "AIODEMO01",
    modality: str = "CT",
    rows: int = 512,
    columns: int = 512,
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    seed: int = 0,
    index: int = 0,
    slices: int = 1,
    series_number: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """One CT or MR Image Storage instance in memory, with Part 10 file meta.

    ``index`` and ``slices`` place the image in a stack (position, instance number, pixel
    content); UIDs not given are fresh. The result can be written with
    ``pydicom.dcmwrite(path, ds, enforce_file_format=True)`` or sent as it is.
    """
    modality = modality.upper()
    if modality not in _SOP_CLASSES:
        raise SyntheticDataError(
            f"modality must be one of {', '.join(_SOP_CLASSES)}, not {modality!r}"
        )
    _check_transfer_syntax(transfer_syntax, tuple(TRANSFER_SYNTAXES.values()))
    _check_size(rows, columns)
    if not 0 <= index < max(slices, 1):
        raise SyntheticDataError(f"index {index} is outside a stack of {slices} slices")

    sop_class = _SOP_CLASSES[modality]
    sop_instance = sop_instance_uid or new_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance, transfer_syntax)
    _common_header(
        ds,
        sop_class=sop_class,
        sop_instance=sop_instance,
        patient_id=patient_id,
        study_uid=study_uid or new_uid(),
        series_uid=series_uid or new_uid(),
        frame_of_reference_uid=frame_of_reference_uid or new_uid(),
        series_number=series_number,
        instance_number=index + 1,
        modality=modality,
    )

    # Image plane: slices step along the normal of the (axial) orientation, which is +z.
    # Rounded so the DS strings stay within their 16 characters.
    z = round(-0.5 * _SLICE_SPACING * (slices - 1) + index * _SLICE_SPACING, 4)
    ds.SliceThickness = _SLICE_SPACING
    ds.ImagePositionPatient = [
        round(-0.5 * _PIXEL_SPACING * (columns - 1), 4),
        round(-0.5 * _PIXEL_SPACING * (rows - 1), 4),
        z,
    ]
    ds.ImageOrientationPatient = list(_ORIENTATION)
    ds.SliceLocation = z
    ds.PixelSpacing = [_PIXEL_SPACING, _PIXEL_SPACING]
    ds.AcquisitionNumber = 1

    if modality == "CT":
        ds.KVP = 120
        ds.RescaleIntercept = _CT_INTERCEPT
        ds.RescaleSlope = 1.0
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500.0
        ds.EchoTime = 15.0
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = _pixel_bytes(
        pixel_array(rows, columns, index=index, slices=slices, seed=seed), transfer_syntax
    )
    ds["PixelData"].VR = "OW"
    return ds


def write_study(
    directory: str | Path,
    *,
    patient_id: str = "AIODEMO01",
    series: int = 1,
    images_per_series: int = 20,
    rows: int = 512,
    columns: int = 512,
    modality: str = "CT",
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    seed: int = 0,
) -> list[Path]:
    """Write one study of ``series`` x ``images_per_series`` Part 10 files into ``directory``.

    Files are named ``<n>.dcm`` (n counts from 1 across the study) and returned in that
    order. All series share one study and one frame of reference; each series is a
    contiguous stack of axial slices.
    """
    if series < 1 or images_per_series < 1:
        raise SyntheticDataError("a study needs at least one series and one image per series")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = new_uid()
    frame_of_reference_uid = new_uid()
    paths: list[Path] = []
    for s in range(series):
        series_uid = new_uid()
        for i in range(images_per_series):
            ds = make_dataset(
                patient_id=patient_id,
                modality=modality,
                rows=rows,
                columns=columns,
                transfer_syntax=transfer_syntax,
                seed=seed + s,
                index=i,
                slices=images_per_series,
                series_number=s + 1,
                study_uid=study_uid,
                series_uid=series_uid,
                frame_of_reference_uid=frame_of_reference_uid,
            )
            path = out / f"{len(paths) + 1}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            paths.append(path)
    return paths


_FRAME_WRITE_CHUNK = 4 << 20  # bytes handed to write() at once


def write_large_multiframe(
    path: str | Path,
    *,
    size_bytes: int,
    rows: int = 1024,
    columns: int = 1024,
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    patient_id: str = "AIODEMO01",
    seed: int = 0,
) -> Path:
    """Stream a Multi-frame Grayscale Word Secondary Capture instance of about ``size_bytes``.

    Only the header goes through pydicom; the Pixel Data element is written by hand, frame
    by frame from one reused buffer, so a 1 GiB instance costs a few MiB of memory. The
    frame count is rounded up so the pixel data reach ``size_bytes``.
    """
    _check_transfer_syntax(
        transfer_syntax,
        (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN),
    )
    _check_size(rows, columns)
    frame_bytes = rows * columns * 2
    frames = max(1, math.ceil(size_bytes / frame_bytes))
    pixel_length = frames * frame_bytes
    if pixel_length >= 0xFFFFFFFF:
        raise SyntheticDataError(
            f"{pixel_length} bytes of pixel data do not fit one defined-length element"
        )

    sop_instance = new_uid()
    sop_class = MULTIFRAME_GRAYSCALE_WORD_SC_STORAGE
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance, transfer_syntax)
    _common_header(
        ds,
        sop_class=sop_class,
        sop_instance=sop_instance,
        patient_id=patient_id,
        study_uid=new_uid(),
        series_uid=new_uid(),
        frame_of_reference_uid=new_uid(),
        series_number=1,
        instance_number=1,
        modality="OT",
    )
    del ds.FrameOfReferenceUID, ds.PositionReferenceIndicator
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.NumberOfFrames = frames
    ds.FrameTime = 40.0
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0.0
    ds.RescaleSlope = 1.0
    ds.RescaleType = "US"
    # Type 1 / 1C / 2C elements of the SC Multi-frame Image and General Image modules.
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PatientOrientation = ""

    base = pixel_array(rows, columns, seed=seed)
    frame = np.empty_like(base)
    dtype = ">u2" if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN else "<u2"
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fp:
        pydicom.dcmwrite(fp, ds, enforce_file_format=True)
        fp.write(_pixel_data_header(transfer_syntax, pixel_length))
        for k in range(frames):
            # A per-frame offset keeps frames distinct without a new random buffer each time.
            np.add(base, k % 16, out=frame)
            _write_chunked(fp, frame.astype(dtype, copy=False).tobytes())
    return out


def _pixel_data_header(transfer_syntax: str, length: int) -> bytes:
    """The (7FE0,0010) element header for ``length`` bytes of OW pixel data."""
    if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        return struct.pack("<HHI", 0x7FE0, 0x0010, length)
    order = ">" if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN else "<"
    return struct.pack(order + "HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length)


def _write_chunked(fp: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), _FRAME_WRITE_CHUNK):
        fp.write(view[start : start + _FRAME_WRITE_CHUNK])
