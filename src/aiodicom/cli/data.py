"""``aiodicom show`` and ``aiodicom to-nifti``: looking at DICOM data and converting it.

``show`` answers "what is in this file?" without a DICOM viewer: every header
element on one line (sequences indented), then what the pixels hold after
rescale. ``to-nifti`` turns a folder holding one series into a NIfTI volume
whose RAS affine comes from the series geometry (see
:mod:`aiodicom.grinders.nifti`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from aiodicom.codec.vr import BULK_VRS
from aiodicom.errors import DataConversionError, DicomFileError

_INDENT = "  "


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``show`` and ``to-nifti``."""
    show = subparsers.add_parser(
        "show",
        help="print a DICOM file's header and a summary of its pixels",
        description="Print every header element of FILE (one per line, sequences "
        "indented) and a summary of its pixel data after rescale.",
    )
    show.add_argument("file", type=Path, metavar="FILE", help="a DICOM Part 10 file")
    show.add_argument(
        "--width",
        type=int,
        default=100,
        help="truncate lines to this many characters (0: never; default 100)",
    )
    show.add_argument("--no-pixels", action="store_true", help="skip the pixel summary")
    show.set_defaults(func=run_show)

    to_nifti = subparsers.add_parser(
        "to-nifti",
        help="convert one DICOM series to NIfTI (RAS affine from the series geometry)",
        description="Convert the series in SERIES_DIR to a NIfTI-1 file. Slices are "
        "ordered along the slice normal; the affine is the series geometry in RAS.",
    )
    to_nifti.add_argument("series_dir", type=Path, metavar="SERIES_DIR")
    to_nifti.add_argument("output", type=Path, metavar="OUT.nii.gz", help=".nii or .nii.gz")
    to_nifti.add_argument(
        "--series",
        metavar="UID",
        help="SeriesInstanceUID to convert when SERIES_DIR holds several series",
    )
    to_nifti.set_defaults(func=run_to_nifti)


# --- show ---------------------------------------------------------------------


def _value_text(element: DataElement) -> str:
    if element.VR in BULK_VRS or element.tag == 0x7FE00010:
        length = len(element.value) if element.value is not None else 0
        return f"<{length} bytes>"
    value = element.value
    if value is None or value == "":
        return ""
    text = repr(value) if isinstance(value, bytes) else str(value)
    if element.VR == "UI":
        name = UID(str(value)).name
        if name and name != str(value):
            text = f"{value} ({name})"
    return text


def _lines(ds: Dataset, depth: int = 0) -> Iterator[str]:
    pad = _INDENT * depth
    for element in ds:
        keyword = element.keyword or element.name
        head = f"{pad}({element.tag.group:04X},{element.tag.element:04X}) {element.VR:2} {keyword}"
        if element.VR == "SQ":
            items = element.value or []
            yield f"{head}: {len(items)} item(s)"
            for n, item in enumerate(items, start=1):
                yield f"{pad}{_INDENT}item {n}"
                yield from _lines(item, depth + 2)
            continue
        yield f"{head}: {_value_text(element)}"


def _clip(line: str, width: int) -> str:
    line = line.replace("\r", " ").replace("\n", " ")
    if width > 0 and len(line) > width:
        return line[: max(width - 3, 1)] + "..."
    return line


def _pixel_summary(path: Path, header: Dataset) -> list[str]:
    if "Rows" not in header:
        return ["pixels: none"]
    frames = int(header.get("NumberOfFrames") or 1)
    samples = int(header.get("SamplesPerPixel") or 1)
    bits = header.get("BitsAllocated")
    stored = header.get("BitsStored")
    sign = "signed" if int(header.get("PixelRepresentation") or 0) else "unsigned"
    lines = [
        f"pixels: {header.Rows} x {header.Columns}, {frames} frame(s), {samples} sample(s), "
        f"{bits}/{stored} bits {sign}, {header.get('PhotometricInterpretation', '?')}"
    ]
    from aiodicom.grinders.numpy import numpy_grinder

    try:
        volume = numpy_grinder([path])
    except (DataConversionError, DicomFileError) as exc:
        lines.append(f"values: not decoded ({exc})")
        return lines
    array = volume.array
    lines.append(
        f"values: {array.dtype}, min {array.min():g}, max {array.max():g}, "
        f"mean {float(array.mean()):.6g} (rescale slope/intercept applied)"
    )
    if volume.geometry_known:
        dz, dy, dx = volume.spacing
        lines.append(f"voxel: {dx:g} x {dy:g} x {dz:g} mm (column x row x slice)")
    return lines


def run_show(args: argparse.Namespace) -> int:
    """Print the header and the pixel summary."""
    from aiodicom.data.lazy import read_header

    path: Path = args.file
    if not path.is_file():
        raise DicomFileError(f"{path}: no such file")
    header, _ = read_header(path)
    meta = getattr(header, "file_meta", None)
    out = [f"file: {path}"]
    if meta is not None and "TransferSyntaxUID" in meta:
        ts = UID(str(meta.TransferSyntaxUID))
        out.append(f"transfer syntax: {ts.name} ({ts})")
    out.extend(_lines(header))
    if not args.no_pixels:
        out.extend(_pixel_summary(path, header))
    for line in out:
        print(_clip(line, args.width))
    return 0


# --- to-nifti -----------------------------------------------------------------


def run_to_nifti(args: argparse.Namespace) -> int:
    """Convert one series and print one summary line."""
    import nibabel

    from aiodicom.data.tree import discover
    from aiodicom.grinders.nifti import nifti_grinder

    source: Path = args.series_dir
    output: Path = args.output
    if not (output.name.endswith(".nii") or output.name.endswith(".nii.gz")):
        raise DataConversionError(f"{output}: the output must end in .nii or .nii.gz")
    if not source.is_dir():
        raise DicomFileError(f"{source}: not a folder")
    tree = discover(source)
    all_series = list(tree.series())
    if not all_series:
        raise DataConversionError(f"{source}: no DICOM series found")
    if args.series:
        try:
            series = tree.find_series(args.series)
        except KeyError:
            raise DataConversionError(f"{source}: no series {args.series}") from None
    elif len(all_series) > 1:
        listing = "; ".join(
            f"{s.uid} ({s.modality} {s.description!r}, {len(s)} instances)" for s in all_series[:10]
        ) + ("; ..." if len(all_series) > 10 else "")
        raise DataConversionError(
            f"{source} holds {len(all_series)} series, choose one with --series: {listing}"
        )
    else:
        series = all_series[0]
    nib: Any = nibabel  # only partly typed
    image = nifti_grinder(series.instances)
    if output.parent and not output.parent.exists():
        raise DataConversionError(f"{output.parent}: no such folder")
    tmp = output.with_name(
        f".{output.name}.partial{'.nii.gz' if output.name.endswith('.gz') else '.nii'}"
    )
    try:
        nib.save(image, tmp)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shape = "x".join(str(n) for n in image.shape)
    zooms = " x ".join(f"{z:g}" for z in image.header.get_zooms()[:3])
    codes = "".join(nib.aff2axcodes(image.affine))
    print(
        f"wrote {output}: {shape} {image.get_data_dtype()} voxels of {zooms} mm, "
        f"axes {codes} (RAS+), from {len(series)} instance(s) of series {series.uid}"
    )
    return 0


__all__ = ["register", "run_show", "run_to_nifti"]
