"""Default module blueprints (PS3.3 modules) and the IOD blueprints built from them.

Each module blueprint covers the type 1 and type 2 attributes of its module (and a
few useful type 3 ones), so that ``CT_SERIES`` etc. pass :mod:`aiodicom.factory.validate`
out of the box. Patient and study attributes are copied from the parent so a derived
series files under the same patient and study; without a parent, type 2 attributes
are left empty (allowed) and study/frame UIDs are minted. Treat them as baselines:
add your own elements on the right of ``+`` to override.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from aiodicom.codec.uids import IMPLEMENTATION_VERSION_NAME, new_uid
from aiodicom.errors import FactoryError
from aiodicom.factory.blueprint import Blueprint
from aiodicom.factory.build import PixelEncoding
from aiodicom.factory.elements import (
    ABSENT,
    Copy,
    Functional,
    ImageOrientation,
    ImagePosition,
    InstanceEnvironment,
    PixelSpacing,
    Series,
    SeriesEnvironment,
    Static,
    WithVR,
    format_ds,
    orientation,
    position,
    spacing,
)

__all__ = [
    "CT_IMAGE",
    "CT_SERIES",
    "DERIVED_FROM",
    "ENCAPSULATED_DOCUMENT",
    "ENCAPSULATED_PDF",
    "FRAME_OF_REFERENCE",
    "GENERAL_EQUIPMENT",
    "GENERAL_IMAGE",
    "GENERAL_SERIES",
    "GENERAL_STUDY",
    "IMAGE_PIXEL",
    "IMAGE_PLANE",
    "MR_IMAGE",
    "MR_SERIES",
    "PATIENT",
    "PET_IMAGE",
    "PET_SERIES",
    "SC_EQUIPMENT",
    "SECONDARY_CAPTURE",
    "SECONDARY_CAPTURE_SERIES",
    "SOP_COMMON",
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "PET_IMAGE_STORAGE",
    "SECONDARY_CAPTURE_IMAGE_STORAGE",
    "ENCAPSULATED_PDF_STORAGE",
    "for_modality",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def _now(env: SeriesEnvironment) -> _dt.datetime:
    # One timestamp per series (callers may pin it through kwargs for reproducibility).
    moment = env.kwargs.get("now")
    return moment if isinstance(moment, _dt.datetime) else _dt.datetime.now()


def _date(env: SeriesEnvironment) -> str:
    return _now(env).strftime("%Y%m%d")


def _time(env: SeriesEnvironment) -> str:
    return _now(env).strftime("%H%M%S")


def _encoding(env: SeriesEnvironment) -> PixelEncoding:
    if env.encoding is None:
        raise FactoryError("image pixel elements need a volume (use build_series)")
    return env.encoding


def _rows_columns(env: SeriesEnvironment, axis: int) -> int:
    if env.shape is None:
        raise FactoryError("image pixel elements need a volume (use build_series)")
    return int(env.shape[axis])


def _pixel_data(env: InstanceEnvironment) -> WithVR:
    if env.image is None:
        raise FactoryError("PixelData needs a volume (use build_series)")
    encoding = _encoding(env.series)
    return WithVR(encoding.pixel_data(env.image), "OB" if encoding.bits_allocated == 8 else "OW")


SOP_COMMON = Blueprint(
    [
        Static("SpecificCharacterSet", "ISO_IR 192"),
        Functional("SOPInstanceUID", lambda env: new_uid()),
        Series("InstanceCreationDate", _date),
        Series("InstanceCreationTime", _time),
    ]
)

PATIENT = Blueprint(
    [
        Copy("PatientName", default=""),
        Copy("PatientID", default=""),
        Copy("IssuerOfPatientID", optional=True),
        Copy("PatientBirthDate", default=""),
        Copy("PatientSex", default=""),
        Copy("PatientAge", optional=True),
        Copy("PatientWeight", optional=True),
        Copy("PatientSize", optional=True),
    ]
)

GENERAL_STUDY = Blueprint(
    [
        Copy("StudyInstanceUID", default=lambda env: new_uid()),
        Copy("StudyDate", default=""),
        Copy("StudyTime", default=""),
        Copy("ReferringPhysicianName", default=""),
        Copy("StudyID", default=""),
        Copy("AccessionNumber", default=""),
        Copy("StudyDescription", optional=True),
    ]
)


def _series_number(env: SeriesEnvironment) -> int:
    # A derived series is numbered after its parent so viewers list it beside it.
    pivot = env.pivot
    number = pivot.get("SeriesNumber") if pivot is not None else None
    return 1000 + int(number) if number not in (None, "") else 1000


GENERAL_SERIES = Blueprint(
    [
        Copy("Modality", default="OT"),
        Series("SeriesInstanceUID", lambda env: new_uid()),
        Series("SeriesNumber", _series_number),
        Series("SeriesDate", _date),
        Series("SeriesTime", _time),
        Copy("SeriesDescription", optional=True),
        Copy("PatientPosition", default=""),
        Copy("BodyPartExamined", optional=True),
    ]
)

FRAME_OF_REFERENCE = Blueprint(
    [
        # Same frame as the parent: derived voxels live in the parent's space.
        Copy("FrameOfReferenceUID", default=lambda env: new_uid()),
        Copy("PositionReferenceIndicator", default=""),
    ]
)

GENERAL_EQUIPMENT = Blueprint(
    [
        Static("Manufacturer", "aiodicom"),
        Static("ManufacturerModelName", "aiodicom"),
        Static("SoftwareVersions", IMPLEMENTATION_VERSION_NAME),
    ]
)

GENERAL_IMAGE = Blueprint(
    [
        Functional("InstanceNumber", lambda env: env.instance_number),
        Static("ImageType", ["DERIVED", "SECONDARY"]),
        Series("ContentDate", _date),
        Series("ContentTime", _time),
        Static("BurnedInAnnotation", "NO"),
    ]
)


def _slice_thickness(env: SeriesEnvironment) -> str:
    if env.affine is None:
        raise FactoryError("SliceThickness needs a volume with an affine")
    return format_ds(spacing(env.affine)[2])


def _slice_location(env: InstanceEnvironment) -> str:
    affine = env.series.affine
    if affine is None:
        raise FactoryError("SliceLocation needs a volume with an affine")
    cosines = orientation(affine)
    normal = np.cross(cosines[:3], cosines[3:])
    return format_ds(float(normal @ np.asarray(position(affine, env.index))))


IMAGE_PLANE = Blueprint(
    [
        PixelSpacing(),
        ImageOrientation(),
        ImagePosition(),
        Series("SliceThickness", _slice_thickness),
        Functional("SliceLocation", _slice_location),
    ]
)


def _planar(env: SeriesEnvironment) -> Any:
    return 0 if _encoding(env).rgb else ABSENT


def _rescale_slope(env: SeriesEnvironment) -> str:
    return _encoding(env).slope


def _rescale_intercept(env: SeriesEnvironment) -> str:
    return _encoding(env).intercept


IMAGE_PIXEL = Blueprint(
    [
        Series("SamplesPerPixel", lambda env: _encoding(env).samples_per_pixel),
        Series("PhotometricInterpretation", lambda env: _encoding(env).photometric_interpretation),
        Series("Rows", lambda env: _rows_columns(env, 1)),
        Series("Columns", lambda env: _rows_columns(env, 2)),
        Series("BitsAllocated", lambda env: _encoding(env).bits_allocated),
        Series("BitsStored", lambda env: _encoding(env).bits_allocated),
        Series("HighBit", lambda env: _encoding(env).bits_allocated - 1),
        Series("PixelRepresentation", lambda env: _encoding(env).pixel_representation),
        Series("PlanarConfiguration", _planar),
        # The modality LUT travels with the pixels: without it the stored values lie.
        Series("RescaleIntercept", _rescale_intercept),
        Series("RescaleSlope", _rescale_slope),
        Functional("PixelData", _pixel_data, vr="OW"),
    ]
)


def _source_images(env: InstanceEnvironment) -> Any:
    parent = env.parent
    if parent is None or "SOPInstanceUID" not in parent:
        return ABSENT
    item = Dataset()
    item.ReferencedSOPClassUID = parent.SOPClassUID
    item.ReferencedSOPInstanceUID = parent.SOPInstanceUID
    return [item]


def _related_series(env: SeriesEnvironment) -> Any:
    pivot = env.pivot
    if pivot is None or "SeriesInstanceUID" not in pivot or "StudyInstanceUID" not in pivot:
        return ABSENT
    item = Dataset()
    item.StudyInstanceUID = pivot.StudyInstanceUID
    item.SeriesInstanceUID = pivot.SeriesInstanceUID
    item.PurposeOfReferenceCodeSequence = []
    return [item]


#: References from a derived series to what it was derived from (no enhanced IODs).
DERIVED_FROM = Blueprint(
    [
        Static("DerivationDescription", "derived by an aiodicom pipeline"),
        Functional("SourceImageSequence", _source_images, vr="SQ"),
        Series("RelatedSeriesSequence", _related_series, vr="SQ"),
    ]
)

CT_IMAGE = Blueprint(
    [
        Static("SOPClassUID", CT_IMAGE_STORAGE),
        Static("Modality", "CT"),
        Static("ImageType", ["DERIVED", "SECONDARY", "AXIAL"]),
        Copy("KVP", default=""),
        Copy("AcquisitionNumber", default=""),
        Static("RescaleType", "HU"),
    ]
)

PET_IMAGE = Blueprint(
    [
        Static("SOPClassUID", PET_IMAGE_STORAGE),
        Static("Modality", "PT"),
        # PET series module
        Copy("Units", default="BQML"),
        Copy("CountsSource", default="EMISSION"),
        Copy("SeriesType", default=["STATIC", "IMAGE"]),
        Series("NumberOfSlices", lambda env: env.total),
        Copy("CorrectedImage", default=""),
        Copy("DecayCorrection", default="NONE"),
        Copy("CollimatorType", default=""),
        # PET isotope and NM/PET patient orientation modules (type 2 sequences)
        Copy("RadiopharmaceuticalInformationSequence", default=[]),
        Copy("PatientOrientationCodeSequence", default=[]),
        Copy("PatientGantryRelationshipCodeSequence", default=[]),
        # PET image module
        Copy("FrameReferenceTime", default="0"),
        Functional("ImageIndex", lambda env: env.instance_number),
        Copy("AcquisitionDate", default=""),
        Copy("AcquisitionTime", default=""),
        Copy("ActualFrameDuration", default=""),
        Copy("DecayFactor", optional=True),
    ]
)

MR_IMAGE = Blueprint(
    [
        Static("SOPClassUID", MR_IMAGE_STORAGE),
        Static("Modality", "MR"),
        # "RM" (research mode) and "NONE" are what the standard offers when unknown.
        Copy("ScanningSequence", default="RM"),
        Copy("SequenceVariant", default="NONE"),
        Copy("ScanOptions", default=""),
        Copy("MRAcquisitionType", default=""),
        Copy("RepetitionTime", default=""),
        Copy("EchoTime", default=""),
        Copy("EchoTrainLength", default=""),
        Copy("MagneticFieldStrength", optional=True),
    ]
)

SC_EQUIPMENT = Blueprint([Static("ConversionType", "WSD")])

SECONDARY_CAPTURE = (
    Blueprint(
        [
            Static("SOPClassUID", SECONDARY_CAPTURE_IMAGE_STORAGE),
            Static("PatientOrientation", ""),
        ]
    )
    + SC_EQUIPMENT
)

_IMAGE_COMMON = (
    SOP_COMMON
    + PATIENT
    + GENERAL_STUDY
    + GENERAL_SERIES
    + GENERAL_EQUIPMENT
    + GENERAL_IMAGE
    + IMAGE_PIXEL
    + DERIVED_FROM
)
_CROSS_SECTIONAL = _IMAGE_COMMON + FRAME_OF_REFERENCE + IMAGE_PLANE

#: Complete blueprints of the IODs we produce.
CT_SERIES = _CROSS_SECTIONAL + CT_IMAGE
PET_SERIES = _CROSS_SECTIONAL + PET_IMAGE
MR_SERIES = _CROSS_SECTIONAL + MR_IMAGE
#: Secondary capture keeps the geometry (extended SOP class) so round trips survive.
SECONDARY_CAPTURE_SERIES = _CROSS_SECTIONAL + SECONDARY_CAPTURE


def _document(env: InstanceEnvironment) -> Any:
    document = env.kwargs.get("document")
    if not isinstance(document, bytes | bytearray):
        raise FactoryError("EncapsulatedDocument needs kwargs['document'] (bytes)")
    data = bytes(document)
    return data + b"\0" if len(data) % 2 else data


def _document_length(env: InstanceEnvironment) -> Any:
    document = env.kwargs.get("document")
    return len(document) if isinstance(document, bytes | bytearray) else ABSENT


ENCAPSULATED_DOCUMENT = Blueprint(
    [
        Functional("InstanceNumber", lambda env: 1),
        Series("ContentDate", _date),
        Series("ContentTime", _time),
        Static("AcquisitionDateTime", ""),
        Static("BurnedInAnnotation", "YES"),
        Series("DocumentTitle", lambda env: str(env.kwargs.get("title", ""))),
        Static("ConceptNameCodeSequence", []),
        Series(
            "MIMETypeOfEncapsulatedDocument",
            lambda env: str(env.kwargs.get("mime_type", "application/pdf")),
        ),
        Functional("EncapsulatedDocument", _document, vr="OB"),
        Functional("EncapsulatedDocumentLength", _document_length),
    ]
)

#: Encapsulated PDF IOD: the document series module is general series with Modality DOC.
ENCAPSULATED_PDF = (
    SOP_COMMON
    + PATIENT
    + GENERAL_STUDY
    + GENERAL_SERIES.without("PatientPosition")
    + GENERAL_EQUIPMENT
    + SC_EQUIPMENT
    + ENCAPSULATED_DOCUMENT
    + Static("SOPClassUID", ENCAPSULATED_PDF_STORAGE)
    + Static("Modality", "DOC")
)

_BY_MODALITY = {"CT": CT_SERIES, "PT": PET_SERIES, "MR": MR_SERIES}


def for_modality(modality: str | None) -> Blueprint:
    """The IOD blueprint for a parent's Modality; secondary capture for the rest."""
    return _BY_MODALITY.get((modality or "").upper(), SECONDARY_CAPTURE_SERIES)
