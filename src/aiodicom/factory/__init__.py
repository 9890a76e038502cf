"""DICOM factory: new series from numpy volumes or NIfTI images, by blueprint.

A :class:`Blueprint` maps each attribute to a virtual element (a recipe);
:func:`build_series` evaluates it once per series and once per slice. Default
module and IOD blueprints are in :mod:`aiodicom.factory.blueprints`; RT Structure
Sets and Segmentations from masks in :mod:`aiodicom.factory.segmentation`.
"""

from aiodicom.factory.blueprint import Blueprint
from aiodicom.factory.build import (
    PixelEncoding,
    build_instance,
    build_series,
    encode_pixels,
    write_series,
)
from aiodicom.factory.elements import (
    ABSENT,
    Copy,
    Discard,
    Functional,
    ImageOrientation,
    ImagePosition,
    InstanceCopy,
    InstanceEnvironment,
    PixelSpacing,
    PrivateTag,
    Sequence,
    Series,
    SeriesEnvironment,
    Static,
    VirtualElement,
)
from aiodicom.factory.pdf import encapsulate_pdf
from aiodicom.factory.segmentation import (
    RTSTRUCT,
    SEGMENTATION,
    Code,
    Segment,
    build_rtstruct,
    build_seg,
)
from aiodicom.factory.validate import validate, validate_or_raise

__all__ = [
    "ABSENT",
    "Blueprint",
    "Code",
    "Copy",
    "Discard",
    "Functional",
    "ImageOrientation",
    "ImagePosition",
    "InstanceCopy",
    "InstanceEnvironment",
    "PixelEncoding",
    "PixelSpacing",
    "PrivateTag",
    "RTSTRUCT",
    "SEGMENTATION",
    "Segment",
    "Sequence",
    "Series",
    "SeriesEnvironment",
    "Static",
    "VirtualElement",
    "build_instance",
    "build_rtstruct",
    "build_seg",
    "build_series",
    "encapsulate_pdf",
    "encode_pixels",
    "validate",
    "validate_or_raise",
    "write_series",
]
