"""Checking produced data sets against their IOD's type 1 and type 2 attributes.

Not a full ``dciodvfy``: it covers the IODs this factory produces (CT, PET, MR,
secondary capture, encapsulated PDF) and the mistakes a blueprint can make
(a module left out, a type 1 value left empty, pixel attributes that disagree with
PixelData). Type 1 means present and non-empty, type 2 present (possibly empty).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from aiodicom.errors import IODValidationError
from aiodicom.factory.blueprints import (
    CT_IMAGE_STORAGE,
    ENCAPSULATED_PDF_STORAGE,
    MR_IMAGE_STORAGE,
    PET_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
)

__all__ = ["validate", "validate_or_raise"]

Rules = tuple[tuple[str, int], ...]

_SOP_COMMON: Rules = (("SOPClassUID", 1), ("SOPInstanceUID", 1))
_PATIENT: Rules = (
    ("PatientName", 2),
    ("PatientID", 2),
    ("PatientBirthDate", 2),
    ("PatientSex", 2),
)
_GENERAL_STUDY: Rules = (
    ("StudyInstanceUID", 1),
    ("StudyDate", 2),
    ("StudyTime", 2),
    ("ReferringPhysicianName", 2),
    ("StudyID", 2),
    ("AccessionNumber", 2),
)
_GENERAL_SERIES: Rules = (("Modality", 1), ("SeriesInstanceUID", 1), ("SeriesNumber", 2))
_FRAME_OF_REFERENCE: Rules = (("FrameOfReferenceUID", 1), ("PositionReferenceIndicator", 2))
_GENERAL_EQUIPMENT: Rules = (("Manufacturer", 2),)
_GENERAL_IMAGE: Rules = (("InstanceNumber", 2),)
_IMAGE_PLANE: Rules = (
    ("PixelSpacing", 1),
    ("ImageOrientationPatient", 1),
    ("ImagePositionPatient", 1),
    ("SliceThickness", 2),
)
_IMAGE_PIXEL: Rules = (
    ("SamplesPerPixel", 1),
    ("PhotometricInterpretation", 1),
    ("Rows", 1),
    ("Columns", 1),
    ("BitsAllocated", 1),
    ("BitsStored", 1),
    ("HighBit", 1),
    ("PixelRepresentation", 1),
    ("PixelData", 1),
)
_IMAGE_BASE = _SOP_COMMON + _PATIENT + _GENERAL_STUDY + _GENERAL_SERIES + _GENERAL_EQUIPMENT
_CROSS_SECTIONAL = _IMAGE_BASE + _FRAME_OF_REFERENCE + _GENERAL_IMAGE + _IMAGE_PLANE + _IMAGE_PIXEL

_RULES: dict[str, Rules] = {
    CT_IMAGE_STORAGE: _CROSS_SECTIONAL
    + (
        ("ImageType", 1),
        ("RescaleIntercept", 1),
        ("RescaleSlope", 1),
        ("KVP", 2),
        ("AcquisitionNumber", 2),
        ("PatientPosition", 2),
    ),
    MR_IMAGE_STORAGE: _CROSS_SECTIONAL
    + (
        ("ImageType", 1),
        ("ScanningSequence", 1),
        ("SequenceVariant", 1),
        ("ScanOptions", 2),
        ("MRAcquisitionType", 2),
        ("EchoTime", 2),
        ("EchoTrainLength", 2),
        ("PatientPosition", 2),
    ),
    PET_IMAGE_STORAGE: _CROSS_SECTIONAL
    + (
        ("SeriesDate", 1),
        ("SeriesTime", 1),
        ("Units", 1),
        ("CountsSource", 1),
        ("SeriesType", 1),
        ("NumberOfSlices", 1),
        ("CorrectedImage", 2),
        ("DecayCorrection", 1),
        ("CollimatorType", 2),
        ("RadiopharmaceuticalInformationSequence", 2),
        ("PatientOrientationCodeSequence", 2),
        ("PatientGantryRelationshipCodeSequence", 2),
        ("ImageType", 1),
        ("RescaleIntercept", 1),
        ("RescaleSlope", 1),
        ("FrameReferenceTime", 1),
        ("ImageIndex", 1),
        ("AcquisitionDate", 2),
        ("AcquisitionTime", 2),
        ("ActualFrameDuration", 2),
    ),
    SECONDARY_CAPTURE_IMAGE_STORAGE: _IMAGE_BASE
    + _GENERAL_IMAGE
    + _IMAGE_PIXEL
    + (("ConversionType", 1), ("PatientOrientation", 2)),
    ENCAPSULATED_PDF_STORAGE: _SOP_COMMON
    + _PATIENT
    + _GENERAL_STUDY
    + _GENERAL_SERIES
    + _GENERAL_EQUIPMENT
    + (
        ("SeriesNumber", 1),
        ("ConversionType", 1),
        ("InstanceNumber", 1),
        ("ContentDate", 2),
        ("ContentTime", 2),
        ("AcquisitionDateTime", 2),
        ("BurnedInAnnotation", 1),
        ("DocumentTitle", 2),
        ("ConceptNameCodeSequence", 2),
        ("MIMETypeOfEncapsulatedDocument", 1),
        ("EncapsulatedDocument", 1),
    ),
}


def _empty(dataset: Dataset, keyword: str) -> bool:
    value = dataset[keyword].value
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _pixel_problems(dataset: Dataset) -> list[str]:
    needed = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel")
    if "PixelData" not in dataset or any(not dataset.get(k) for k in needed):
        return []
    problems = []
    allocated, stored = int(dataset.BitsAllocated), int(dataset.BitsStored)
    if stored > allocated:
        problems.append(f"BitsStored {stored} > BitsAllocated {allocated}")
    if int(dataset.HighBit) != stored - 1:
        problems.append(f"HighBit {dataset.HighBit} is not BitsStored - 1")
    frames = int(dataset.get("NumberOfFrames") or 1)
    expected = (
        int(dataset.Rows)
        * int(dataset.Columns)
        * int(dataset.SamplesPerPixel)
        * frames
        * allocated
        // 8
    )
    length = len(dataset.PixelData)
    if length not in (expected, expected + 1):
        problems.append(f"PixelData has {length} bytes, the pixel attributes say {expected}")
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, PET_IMAGE_STORAGE) and allocated != 16:
        problems.append(f"BitsAllocated must be 16 for this IOD, not {allocated}")
    if sop_class == PET_IMAGE_STORAGE and float(dataset.get("RescaleIntercept", 0) or 0) != 0:
        problems.append("PET RescaleIntercept must be 0")
    return problems


def validate(dataset: Dataset) -> list[str]:
    """Problems found in ``dataset`` (empty list: valid for what we check)."""
    sop_class = str(dataset.get("SOPClassUID", ""))
    rules = _RULES.get(sop_class)
    if rules is None:
        return [f"SOP class {sop_class or '(missing)'} is not one we validate"]
    problems = []
    for keyword, kind in rules:
        if keyword not in dataset:
            problems.append(f"type {kind} {keyword} is missing")
        elif kind == 1 and _empty(dataset, keyword):
            problems.append(f"type 1 {keyword} is empty")
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        if meta.MediaStorageSOPInstanceUID != dataset.get("SOPInstanceUID"):
            problems.append("file meta MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    problems.extend(_pixel_problems(dataset))
    return problems


def validate_or_raise(dataset: Dataset) -> None:
    """Raise :class:`IODValidationError` listing every problem :func:`validate` finds."""
    problems = validate(dataset)
    if problems:
        raise IODValidationError("; ".join(problems), problems)
