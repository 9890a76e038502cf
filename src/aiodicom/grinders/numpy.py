"""The numpy grinder: a series as one (z, y, x) volume with its geometry.

Speed and memory are the point. Headers are read without pixels; the output
array is allocated once, in its final dtype, and each frame's bytes are read
from the file straight into its slice of that array (native transfer
syntaxes), with rescale slope/intercept then applied in place. pydicom never
holds the pixel bytes, so peak memory stays close to the volume's size.
Compressed or deflated data goes through pydicom's pixel handlers instead, one
instance at a time; that needs the optional ``aiodicom[codecs]`` packages for
most compression schemes.

The output dtype is chosen from the *declared* range (BitsStored,
PixelRepresentation) mapped through every frame's rescale: the smallest
integer type that holds all values exactly when slopes and intercepts are
integers (e.g. CT's 12-bit stored values with intercept -1024 give int16),
float32 otherwise (float64 above 16 stored bits). Deciding before reading is
what lets us allocate once, and it makes the dtype a property of the series'
format rather than of its content.

Voxel order: ``array[k, j, i]`` with k along the slice normal (ascending),
j = row, i = column; colour images are ``(z, y, x, 3)`` RGB, not rescaled
(YBR data is converted to RGB by pydicom). ``affine @ [i, j, k, 1]`` is the
LPS position (mm) of that voxel's centre. Stored values are returned as they
are: MONOCHROME1 is not inverted, PALETTE COLOR gives the palette indices.
Float pixel data (FloatPixelData) is not supported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from aiodicom.data import _values as v
from aiodicom.data._values import value
from aiodicom.data.geometry import (
    FrameGeometry,
    affine_from_frames,
    frame_geometries,
    slice_normal,
    spacing_from_affine,
)
from aiodicom.data.lazy import Instance, LazyDataset, PixelLocation, read_header
from aiodicom.errors import (
    GeometryError,
    InconsistentSeriesError,
    PixelDecodeError,
)

__all__ = ["Volume", "numpy_grinder"]

#: Attributes every instance of one volume must agree on.
_SAME = (
    v.ROWS,
    v.COLUMNS,
    v.SAMPLES_PER_PIXEL,
    v.BITS_ALLOCATED,
    v.BITS_STORED,
    v.PIXEL_REPRESENTATION,
    v.PHOTOMETRIC,
    v.SERIES_INSTANCE_UID,
)
_AS_STORED = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB"})
_INT_TYPES_UNSIGNED = (np.uint8, np.uint16, np.uint32, np.uint64)
_INT_TYPES_SIGNED = (np.int8, np.int16, np.int32, np.int64)


@dataclass(frozen=True)
class Volume:
    """A series as a volume: voxels, where they are, and the headers they came from.

    ``array`` is (z, y, x) or (z, y, x, 3) for RGB; ``affine`` the 4x4 LPS
    affine of :mod:`aiodicom.data.geometry`; ``spacing`` (z, y, x) in mm;
    ``datasets`` the headers in slice order (one per instance, so a single
    multi-frame instance gives one). ``geometry_known`` is False when the
    instances carry no patient geometry at all (secondary captures): the
    affine is then a nominal one (identity orientation, PixelSpacing or 1 mm,
    origin 0) and slices are in InstanceNumber order.
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]
    datasets: list[Dataset] = field(default_factory=list)
    geometry_known: bool = True


@dataclass
class _Source:
    header: Dataset
    location: PixelLocation | None = None
    dataset: Dataset | None = None  # in-memory data set holding the pixels
    lazy: LazyDataset | None = None
    path: str | None = None


@dataclass(frozen=True)
class _Frame:
    source: int
    index: int
    geometry: FrameGeometry
    slope: float
    intercept: float


def _load(instance: Instance) -> _Source:
    if isinstance(instance, LazyDataset):
        return _Source(instance.header, instance.pixel_location, lazy=instance)
    if isinstance(instance, Dataset):
        return _Source(instance, dataset=instance)
    if isinstance(instance, str | os.PathLike):
        header, location = read_header(instance)
        return _Source(header, location, path=os.fspath(instance))
    raise TypeError(f"not a DICOM instance: {type(instance).__name__}")


def _number(value: Any, default: float, strict: str = "") -> float:
    """``value`` as a finite float; ``default`` when absent, or when invalid
    unless ``strict`` names the attribute (a guessed rescale would be silently wrong)."""
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if math.isfinite(out):
        return out
    if strict:
        raise InconsistentSeriesError(f"{strict} is not a number: {value!r}")
    return default


def _rescales(ds: Dataset, n_frames: int) -> list[tuple[float, float]]:
    """(slope, intercept) per frame: functional groups first, then top level."""
    top = (
        _number(value(ds, v.RESCALE_SLOPE), 1.0, "RescaleSlope"),
        _number(value(ds, v.RESCALE_INTERCEPT), 0.0, "RescaleIntercept"),
    )
    if 0x52009229 not in ds and 0x52009230 not in ds:  # no functional groups
        return [top] * n_frames
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    out = []
    for index in range(n_frames):
        found = top
        groups = (per_frame[index] if per_frame and index < len(per_frame) else None, shared)
        for group in groups:
            if group is None:
                continue
            seq = group.get("PixelValueTransformationSequence")
            if seq:
                item = seq[0]
                found = (
                    _number(item.get("RescaleSlope"), 1.0, "RescaleSlope"),
                    _number(item.get("RescaleIntercept"), 0.0, "RescaleIntercept"),
                )
                break
        out.append(found)
    return out


def _check_consistent(sources: Sequence[_Source]) -> None:
    first = sources[0].header
    for name in _SAME:
        expected = value(first, name)
        for n, source in enumerate(sources[1:], start=1):
            found = value(source.header, name)
            if found != expected:
                raise InconsistentSeriesError(
                    f"instances disagree on {name.keyword}: instance 0 has {expected!r}, "
                    f"instance {n} has {found!r}"
                )


def _stored_dtype(header: Dataset, big_endian: bool) -> np.dtype[Any]:
    bits = int(value(header, v.BITS_ALLOCATED) or 0)
    if bits not in (8, 16, 32):
        raise PixelDecodeError(f"BitsAllocated {bits} is not supported (8, 16 or 32)")
    signed = int(value(header, v.PIXEL_REPRESENTATION) or 0) == 1
    kind = "i" if signed else "u"
    return np.dtype(f"{'>' if big_endian else '<'}{kind}{bits // 8}")


def _output_dtype(header: Dataset, rescales: Iterable[tuple[float, float]]) -> np.dtype[Any]:
    bits_allocated = int(value(header, v.BITS_ALLOCATED) or 0)
    bits = int(value(header, v.BITS_STORED) or bits_allocated)
    if int(value(header, v.SAMPLES_PER_PIXEL) or 1) != 1:
        return np.dtype(f"u{max(1, bits_allocated // 8)}")
    signed = int(value(header, v.PIXEL_REPRESENTATION) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    pairs = set(rescales)
    if all(float(s).is_integer() and float(i).is_integer() for s, i in pairs):
        ends = [int(s) * v + int(i) for s, i in pairs for v in (lo, hi)]
        low, high = min(ends), max(ends)
        candidates = _INT_TYPES_UNSIGNED if low >= 0 else _INT_TYPES_SIGNED
        for candidate in candidates:
            info = np.iinfo(candidate)
            if info.min <= low and high <= info.max:
                return np.dtype(candidate)
        raise PixelDecodeError(f"rescaled values {low}..{high} do not fit in 64 bits")
    return np.dtype(np.float32 if bits <= 16 else np.float64)


def _apply_rescale(dst: npt.NDArray[Any], slope: float, intercept: float) -> None:
    """Rescale integer ``dst`` in place, modulo 2**n (exact when the result fits)."""
    if slope != 1:
        np.multiply(dst, np.array(int(slope)).astype(dst.dtype), out=dst)
    if intercept != 0:
        np.add(dst, np.array(int(intercept)).astype(dst.dtype), out=dst)


def _convert(src: npt.NDArray[Any], dst: npt.NDArray[Any], slope: float, intercept: float) -> None:
    """Write ``src * slope + intercept`` into ``dst`` (already the final dtype)."""
    if dst.dtype.kind == "f":
        if slope == 1 and intercept == 0:
            np.copyto(dst, src, casting="unsafe")
        else:
            dst[...] = src * np.float64(slope) + np.float64(intercept)
        return
    if src.dtype.kind == "f":
        raise PixelDecodeError("decoded pixels are floating point; expected integers")
    np.copyto(dst, src, casting="unsafe")  # modular: exact once rescaled
    _apply_rescale(dst, slope, intercept)


def _readinto(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from ``fd`` at ``offset`` (no intermediate copy)."""
    view = buffer.cast("B")
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - Windows
            os.lseek(fd, offset + done, os.SEEK_SET)
            n = os.readv(fd, [view[done:]])
        if n <= 0:
            raise PixelDecodeError("file ended inside PixelData")
        done += n


class _Reader:
    """Puts the frames of one volume into a preallocated array."""

    def __init__(self, out: npt.NDArray[Any], header: Dataset) -> None:
        self.out = out
        self.rows = int(value(header, v.ROWS))
        self.columns = int(value(header, v.COLUMNS))
        self.samples = int(value(header, v.SAMPLES_PER_PIXEL) or 1)
        planar = int(value(header, v.PLANAR_CONFIGURATION) or 0) == 1
        self.planar = planar and self.samples > 1
        self.bits = int(value(header, v.BITS_ALLOCATED) or 0)
        self.frame_bytes = self.rows * self.columns * self.samples * self.bits // 8
        self.header = header

    def _frame_shape(self) -> tuple[int, ...]:
        if self.samples == 1:
            return (self.rows, self.columns)
        if self.planar:
            return (self.samples, self.rows, self.columns)
        return (self.rows, self.columns, self.samples)

    def _store(self, src: npt.NDArray[Any], k: int, slope: float, intercept: float) -> None:
        if self.planar:
            src = np.moveaxis(src, 0, -1)
        _convert(src, self.out[k], slope, intercept)

    def _can_read_in_place(self, stored: np.dtype[Any]) -> bool:
        dst = self.out.dtype
        return (
            not self.planar
            and dst.kind in "iu"
            and stored.itemsize == dst.itemsize
            and stored.isnative
        )

    def check_length(self, length: int, n_frames: int, where: str) -> None:
        needed = self.frame_bytes * n_frames
        if length < needed:
            raise PixelDecodeError(
                f"{where}: PixelData has {length} bytes, {needed} expected "
                f"for {n_frames} frame(s) of {self.rows}x{self.columns}"
            )

    def from_file(self, location: PixelLocation, frames: list[tuple[int, _Frame]]) -> None:
        n_frames = max(f.index for _, f in frames) + 1
        self.check_length(location.length, n_frames, str(location.path))
        stored = _stored_dtype(self.header, location.big_endian)
        in_place = self._can_read_in_place(stored)
        scratch = None if in_place else np.empty(self._frame_shape(), dtype=stored)
        fd = os.open(location.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            for k, frame in frames:
                offset = location.offset + frame.index * self.frame_bytes
                if in_place:
                    _readinto(fd, self.out[k].data, offset)
                    _apply_rescale(self.out[k], frame.slope, frame.intercept)
                else:
                    assert scratch is not None
                    _readinto(fd, scratch.data, offset)
                    self._store(scratch, k, frame.slope, frame.intercept)
        finally:
            os.close(fd)

    def from_bytes(self, data: bytes, big_endian: bool, frames: list[tuple[int, _Frame]]) -> None:
        n_frames = max(f.index for _, f in frames) + 1
        self.check_length(len(data), n_frames, "in-memory data set")
        stored = _stored_dtype(self.header, big_endian)
        count = self.frame_bytes // stored.itemsize
        for k, frame in frames:
            src = np.frombuffer(
                data, dtype=stored, count=count, offset=frame.index * self.frame_bytes
            ).reshape(self._frame_shape())
            self._store(src, k, frame.slope, frame.intercept)

    def from_array(self, decoded: npt.NDArray[Any], frames: list[tuple[int, _Frame]]) -> None:
        shape = (self.rows, self.columns) + ((self.samples,) if self.samples > 1 else ())
        decoded = decoded.reshape((-1, *shape))
        for k, frame in frames:
            _convert(decoded[frame.index], self.out[k], frame.slope, frame.intercept)


def _decode_with_pydicom(ds: Dataset) -> npt.NDArray[Any]:
    """Decode through pydicom's handlers; say which extra is missing if it fails."""
    meta = getattr(ds, "file_meta", None)
    ts = UID(str(getattr(meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2.1"))
    try:
        array: npt.NDArray[Any] = ds.pixel_array
    except (RuntimeError, NotImplementedError, ImportError) as exc:
        name = ts.name if ts.is_transfer_syntax else str(ts)
        detail = " ".join(str(exc).split())  # pydicom lists plugins on several lines
        raise PixelDecodeError(
            f"cannot decode pixel data in {name} ({ts}): install the optional codecs "
            f"with `pip install aiodicom[codecs]` ({detail})"
        ) from exc
    except (ValueError, AttributeError, KeyError) as exc:
        raise PixelDecodeError(f"cannot decode pixel data in {ts}: {exc}") from exc
    return array


def _native_bytes(ds: Dataset) -> tuple[bytes, bool] | None:
    """The raw native pixel bytes of an in-memory data set, or None if encoded."""
    if "PixelData" not in ds:
        return None
    meta = getattr(ds, "file_meta", None)
    ts_value = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts_value is None:
        return (ds.PixelData, False)  # built in memory: native little endian
    ts = UID(str(ts_value))
    if ts.is_compressed or ts == "1.2.840.10008.1.2.1.99":
        return None
    if not ts.is_little_endian and ds.get("BitsAllocated", 0) > 8:
        # pydicom may already have swapped the bytes it read; let it decode.
        return None
    return (ds.PixelData, False)


def _order(sources: list[_Source], frames: list[_Frame]) -> tuple[list[_Frame], bool]:
    """Frames in slice order and whether patient geometry is known."""
    with_plane = [f.geometry.has_plane for f in frames]
    if all(with_plane):
        nx, ny, nz = (float(v) for v in slice_normal(frames[0].geometry.orientation or ()))

        def along(frame: _Frame) -> float:
            x, y, z = frame.geometry.position or (0.0, 0.0, 0.0)
            return nx * x + ny * y + nz * z

        return sorted(frames, key=along), True
    if any(with_plane):
        raise GeometryError(
            "some instances have ImageOrientationPatient/ImagePositionPatient and others "
            "do not: not one volume"
        )

    def instance_number(frame: _Frame) -> float:
        return _number(value(sources[frame.source].header, v.INSTANCE_NUMBER), 0.0)

    return sorted(frames, key=lambda f: (instance_number(f), f.source, f.index)), False


def _nominal_affine(first: FrameGeometry) -> npt.NDArray[np.float64]:
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    dz = first.spacing_between_slices or first.slice_thickness or 1.0
    return np.diag([dx, dy, dz, 1.0]).astype(np.float64)


def numpy_grinder(instances: Iterable[Instance]) -> Volume:
    """Turn one series' instances into a :class:`Volume` (see the module doc).

    Accepts pydicom data sets, :class:`~aiodicom.data.LazyDataset` objects and
    file paths, in any order. Raises :class:`InconsistentSeriesError` or
    :class:`GeometryError` when they do not form one volume, and
    :class:`PixelDecodeError` when the pixels cannot be decoded.
    """
    sources = [_load(instance) for instance in instances]
    if not sources:
        raise InconsistentSeriesError("no instances: nothing to grind")
    for n, source in enumerate(sources):
        if "Rows" not in source.header or "Columns" not in source.header:
            raise InconsistentSeriesError(f"instance {n} has no image (Rows/Columns missing)")
    _check_consistent(sources)
    header = sources[0].header

    frames: list[_Frame] = []
    for s, source in enumerate(sources):
        geometries = frame_geometries(source.header)
        rescales = _rescales(source.header, len(geometries))
        for index, (geometry, (slope, intercept)) in enumerate(
            zip(geometries, rescales, strict=True)
        ):
            frames.append(_Frame(s, index, geometry, slope, intercept))

    ordered, geometry_known = _order(sources, frames)
    if geometry_known:
        affine = affine_from_frames([f.geometry for f in ordered])
    else:
        affine = _nominal_affine(ordered[0].geometry)

    samples = int(value(header, v.SAMPLES_PER_PIXEL) or 1)
    shape: tuple[int, ...] = (
        len(ordered),
        int(value(header, v.ROWS)),
        int(value(header, v.COLUMNS)),
    )
    if samples > 1:
        shape = (*shape, samples)
    out = np.empty(shape, dtype=_output_dtype(header, ((f.slope, f.intercept) for f in frames)))
    reader = _Reader(out, header)

    by_source: dict[int, list[tuple[int, _Frame]]] = {}
    for k, frame in enumerate(ordered):
        by_source.setdefault(frame.source, []).append((k, frame))
    # Only these are stored as we return them; YBR and palette data go through
    # pydicom, which converts YBR to RGB.
    native_ok = (
        str(value(header, v.PHOTOMETRIC) or "") in _AS_STORED
        and value(header, v.BITS_ALLOCATED) in (8, 16, 32)  # 1-bit data: pydicom unpacks
    )
    for s, placed in by_source.items():
        source = sources[s]
        if native_ok and source.location is not None:
            reader.from_file(source.location, placed)
            continue
        full = source.dataset
        if full is None:
            full = source.lazy.dataset if source.lazy is not None else dcmread(source.path or "")
        if "PixelData" not in full:
            raise PixelDecodeError(
                f"instance {s} has no (integer) PixelData; float pixel data is not supported"
            )
        native = _native_bytes(full) if native_ok else None
        if native is not None:
            reader.from_bytes(native[0], native[1], placed)
        else:
            reader.from_array(_decode_with_pydicom(full), placed)

    seen: dict[int, None] = {}
    for frame in ordered:
        seen.setdefault(frame.source, None)
    datasets = [sources[s].header for s in seen]
    return Volume(
        array=out,
        affine=affine,
        spacing=spacing_from_affine(affine),
        datasets=datasets,
        geometry_known=geometry_known,
    )
