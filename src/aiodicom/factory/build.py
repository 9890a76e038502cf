"""Turning a volume and a blueprint into a DICOM series.

Pixel values are stored in 16 bits (8-bit RGB for colour), which every image IOD
we produce accepts. Integers that fit are stored exactly; anything else (wide
integers, fractional floats) is stored through RescaleSlope/Intercept chosen from
the volume's range *after* rounding them to DS text, so that the value actually
written covers every voxel: nothing is clipped and the error is at most half a
slope step.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import ConstrainedList
from pydicom.uid import UID

from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
)
from aiodicom.data.geometry import sort_by_slice_position
from aiodicom.errors import AiodicomError, FactoryError, PixelEncodingError
from aiodicom.factory.blueprint import Blueprint
from aiodicom.factory.elements import InstanceEnvironment, SeriesEnvironment, format_ds

__all__ = [
    "PixelEncoding",
    "build_instance",
    "build_series",
    "encode_pixels",
    "nifti_to_lps",
    "write_series",
]

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class PixelEncoding:
    """How a volume's values become stored pixels: one rescale for the whole series.

    ``slope`` and ``intercept`` are the exact DS texts written, so that what a reader
    computes (stored * slope + intercept) is what we planned for.
    """

    dtype: np.dtype[Any]
    slope: str = "1"
    intercept: str = "0"
    rgb: bool = False

    @property
    def rescaled(self) -> bool:
        return self.slope != "1" or self.intercept != "0"

    @property
    def bits_allocated(self) -> int:
        return 8 * self.dtype.itemsize

    @property
    def pixel_representation(self) -> int:
        return 1 if self.dtype.kind == "i" else 0

    @property
    def photometric_interpretation(self) -> str:
        return "RGB" if self.rgb else "MONOCHROME2"

    @property
    def samples_per_pixel(self) -> int:
        return 3 if self.rgb else 1

    def stored(self, image: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The stored values of one slice (y, x) or (y, x, 3)."""
        if not self.rescaled:
            return image.astype(self.dtype, copy=False)
        info = np.iinfo(self.dtype)
        scaled = image.astype(np.float64)
        scaled -= float(self.intercept)
        scaled /= float(self.slope)
        np.rint(scaled, out=scaled)
        # Clipping only removes float noise at the ends: the slope covers the range.
        np.clip(scaled, info.min, info.max, out=scaled)
        return scaled.astype(self.dtype)

    def pixel_data(self, image: npt.NDArray[Any]) -> bytes:
        """PixelData bytes (little endian, padded to even length) of one slice."""
        data = self.stored(image).astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        return data + b"\0" if len(data) % 2 else data


_UINT16 = np.dtype(np.uint16)
_INT16 = np.dtype(np.int16)


def encode_pixels(volume: npt.NDArray[Any], *, zero_intercept: bool = False) -> PixelEncoding:
    """Choose stored dtype and rescale for ``volume`` so that no value is clipped.

    ``zero_intercept`` is for IODs that fix RescaleIntercept at 0 (PET).
    """
    if volume.size == 0:
        raise PixelEncodingError("the volume is empty")
    kind = volume.dtype.kind
    if volume.ndim == 4:
        if volume.shape[-1] != 3 or volume.dtype != np.uint8:
            raise PixelEncodingError("a 4-D volume must be (z, y, x, 3) uint8 RGB")
        return PixelEncoding(np.dtype(np.uint8), rgb=True)
    if kind == "b":
        return PixelEncoding(_UINT16)
    if kind not in "iuf":
        raise PixelEncodingError(f"cannot store {volume.dtype} voxels in DICOM")
    if kind in "iu" and volume.dtype.itemsize <= 2:
        return PixelEncoding(_INT16 if kind == "i" else _UINT16)
    low = volume.min()
    high = volume.max()
    if kind == "f":
        if not (np.isfinite(low) and np.isfinite(high)):
            raise PixelEncodingError("the volume has NaN or infinite values")
        exact = _all_integral(volume)
    else:
        exact = True
    low_f, high_f = float(low), float(high)
    if exact and -32768 <= low_f and high_f <= 32767:
        return PixelEncoding(_INT16)
    if exact and 0 <= low_f and high_f <= 65535:
        return PixelEncoding(_UINT16)
    if zero_intercept:
        return _slope_only(low_f, high_f)
    return _slope_and_intercept(low_f, high_f)


def _all_integral(volume: npt.NDArray[Any]) -> bool:
    """Whether every value is a whole number, slice by slice (stops at the first fraction)."""
    return all(bool(np.all(np.mod(plane, 1) == 0)) for plane in volume)


def _covering_slope(needed: float) -> str:
    """DS text of the smallest representable slope >= ``needed``."""
    slope = needed
    text = format_ds(slope)
    while float(text) < needed:
        slope = slope * (1 + 1e-13) + 1e-300
        text = format_ds(slope)
    return text


def _slope_and_intercept(low: float, high: float) -> PixelEncoding:
    target = low
    text = format_ds(target)
    while float(text) > low:
        target = target - abs(target) * 1e-13 - 1e-300
        text = format_ds(target)
    intercept = float(text)
    span = high - intercept
    slope = _covering_slope(span / 65535) if span > 0 else "1"
    return PixelEncoding(_UINT16, slope=slope, intercept=text)


def _slope_only(low: float, high: float) -> PixelEncoding:
    if low >= 0:
        return PixelEncoding(_UINT16, slope=_covering_slope(high / 65535) if high else "1")
    slope = _covering_slope(max(-low / 32768, high / 32767))
    return PixelEncoding(_INT16, slope=slope)


def nifti_to_lps(image: Any) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """A nibabel image as a (z, y, x) array and an LPS affine.

    NIfTI indexes voxels [i, j, k] with a RAS affine; ours index [k, j, i] (slice,
    row, column) with an LPS affine, so the data are transposed, not copied.
    """
    data = np.asarray(np.asanyarray(image.dataobj))
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise PixelEncodingError(f"NIfTI image must be 3-D, got shape {data.shape}")
    affine = _RAS_TO_LPS @ np.asarray(image.affine, dtype=np.float64)
    if data.dtype.names == ("R", "G", "B"):
        # NIfTI RGB24 voxels: three uint8 fields, stored like our (..., 3) RGB.
        rgb = np.ascontiguousarray(data).view(np.uint8).reshape(*data.shape, 3)
        return rgb.transpose(2, 1, 0, 3), affine
    return data.transpose(2, 1, 0), affine


def _as_volume(
    volume: Any, affine: npt.ArrayLike | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None]:
    if isinstance(volume, nib.spatialimages.SpatialImage):
        if affine is not None:
            raise FactoryError("a NIfTI image carries its own affine; do not pass one")
        return nifti_to_lps(volume)
    if not isinstance(volume, np.ndarray) and hasattr(volume, "array"):
        # A grinder's Volume: the array and its affine travel together.
        if affine is None:
            affine = getattr(volume, "affine", None)
        volume = volume.array
    array = np.asarray(volume)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim not in (3, 4):
        raise PixelEncodingError(f"expected a (z, y, x) volume, got shape {array.shape}")
    if affine is None:
        return array, None
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise FactoryError("the affine must be a finite 4x4 matrix")
    return array, matrix


def _sorted_parent(parent: Dataset | Iterable[Dataset] | None) -> tuple[Dataset, ...]:
    """The parent in slice order, so ``InstanceCopy`` pairs slices that lie together.

    Along the slice normal (the order grinders produce volumes in) when the parent
    has geometry, else by InstanceNumber, else as given.
    """
    if parent is None:
        return ()
    if isinstance(parent, Dataset):
        return (parent,)
    datasets = tuple(parent)
    try:
        return tuple(sort_by_slice_position(datasets))
    except AiodicomError:
        pass
    if datasets and all(ds.get("InstanceNumber") not in (None, "") for ds in datasets):
        return tuple(sorted(datasets, key=lambda ds: int(ds.InstanceNumber)))
    return datasets


def _filled(pivot: Dataset | None, fill: str) -> Dataset:
    if fill == "copy" and pivot is not None:
        dataset = copy.deepcopy(pivot)
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.file_meta = FileMetaDataset()
        return dataset
    if fill not in ("copy", "discard"):
        raise FactoryError(f"fill must be 'copy' or 'discard', not {fill!r}")
    return Dataset()


def _copy_header(header: Dataset) -> Dataset:
    """A copy of the series-level data set for one instance.

    Shallow for immutable values (strings, numbers, bytes), deep for lists and
    sequences so that editing one instance never edits its siblings. A deepcopy of
    the whole data set cost more than everything else ``build_series`` does.
    """
    dataset = Dataset()
    for element in header:
        clone = copy.copy(element)
        if isinstance(element.value, list | ConstrainedList):
            clone.value = copy.deepcopy(element.value)
        dataset.add(clone)
    return dataset


def _finish(dataset: Dataset) -> Dataset:
    """Add the Part 10 file meta, which needs the SOP class and instance."""
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not dataset.get(keyword):
            raise FactoryError(f"the blueprint produced no {keyword} (add the SOP common module)")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(dataset.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(dataset.SOPInstanceUID)
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    dataset.file_meta = meta
    return dataset


def _static_sop_class(blueprint: Blueprint) -> str | None:
    element = blueprint.get("SOPClassUID")  # type: ignore[call-overload]
    value = getattr(element, "value", None)
    return str(value) if value is not None else None


def build_series(
    volume: Any,
    blueprint: Blueprint,
    parent: Dataset | Iterable[Dataset] | None = None,
    *,
    affine: npt.ArrayLike | None = None,
    fill: Literal["discard", "copy"] = "discard",
    zero_intercept: bool | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> list[Dataset]:
    """One data set per slice of ``volume``, ready to write or send.

    ``volume`` is a (z, y, x) numpy array with ``affine`` (voxel [column, row,
    slice, 1] -> patient LPS mm), a grinder ``Volume`` (array + affine), or a nibabel
    image (its RAS affine is converted). ``parent`` is the series ``Copy`` and
    ``InstanceCopy`` read from; ``fill="copy"`` also keeps the parent's attributes
    the blueprint does not mention. ``zero_intercept`` defaults to True for PET,
    whose IOD fixes RescaleIntercept at 0. ``kwargs`` reach elements through their
    environment.
    """
    array, lps = _as_volume(volume, affine)
    parents = _sorted_parent(parent)
    if zero_intercept is None:
        zero_intercept = _static_sop_class(blueprint) == PET_IMAGE_STORAGE
    encoding = encode_pixels(array, zero_intercept=zero_intercept)
    env = SeriesEnvironment(
        parent=parents,
        kwargs=dict(kwargs or {}),
        shape=tuple(array.shape),
        affine=lps,
        encoding=encoding,
    )
    header = _filled(env.pivot, fill)
    blueprint.apply_series(header, env)
    datasets = []
    for index in range(array.shape[0]):
        dataset = _copy_header(header)
        instance = InstanceEnvironment(
            index=index,
            series=env,
            image=array[index],
            parent=parents[index] if index < len(parents) else None,
        )
        blueprint.apply_instance(dataset, instance)
        if "PixelData" not in dataset:
            raise FactoryError("the blueprint produced no PixelData (add the image pixel module)")
        if encoding.rescaled and "RescaleSlope" not in dataset:
            raise FactoryError(
                "the volume needs RescaleSlope/RescaleIntercept but the blueprint drops them"
            )
        datasets.append(_finish(dataset))
    return datasets


def build_instance(
    blueprint: Blueprint,
    parent: Dataset | Iterable[Dataset] | None = None,
    *,
    fill: Literal["discard", "copy"] = "discard",
    kwargs: Mapping[str, Any] | None = None,
) -> Dataset:
    """One data set without a volume (a report, a message, a PDF wrapper).

    Elements see an environment with index 0 and no image; geometry and pixel
    elements therefore fail, so use a blueprint without them.
    """
    parents = _sorted_parent(parent)
    env = SeriesEnvironment(parent=parents, kwargs=dict(kwargs or {}))
    dataset = _filled(env.pivot, fill)
    blueprint.apply_series(dataset, env)
    blueprint.apply_instance(dataset, InstanceEnvironment(index=0, series=env, parent=env.pivot))
    return _finish(dataset)


def write_series(datasets: Iterable[Dataset], directory: str | os.PathLike[str]) -> list[Path]:
    """Write each data set as ``<SOPInstanceUID>.dcm`` in ``directory``.

    Files appear atomically (written aside, then renamed), so a reader watching the
    folder never sees half a file.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset in datasets:
        target = folder / f"{dataset.SOPInstanceUID}.dcm"
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as stream:
                dataset.save_as(stream, enforce_file_format=True)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        paths.append(target)
    return paths
