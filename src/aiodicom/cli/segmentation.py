"""``aiodicom masks`` and ``aiodicom contours``: segmentations to NIfTI masks and back.

``masks`` grinds an RT Structure Set or a DICOM SEG onto the grid of its image series
and writes a NIfTI label volume (each voxel its ROI's number) or, with ``--stack``, one
volume per ROI. ``contours`` does the reverse: a NIfTI mask on the series' grid (a
label volume, or a stack as ``masks --stack`` writes it) becomes an RT Structure Set,
or a SEG with ``--seg``. The NIfTI affine must be the series' own (as ``to-nifti`` and
``masks`` write it): masks are not resampled.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiodicom.errors import DataConversionError, DicomFileError, SegmentationError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``masks`` and ``contours``."""
    masks = subparsers.add_parser(
        "masks",
        help="an RT Structure Set or SEG as a NIfTI mask on its image series' grid",
        description="Rasterise the ROIs of STRUCT_OR_SEG (an RT Structure Set or a DICOM "
        "SEG) on the grid of the image series in SERIES_DIR and write a NIfTI label "
        "volume: each voxel holds its ROI's number, 0 outside. Overlapping ROIs need "
        "--stack (one volume per ROI).",
    )
    masks.add_argument("series_dir", type=Path, metavar="SERIES_DIR")
    masks.add_argument("source", type=Path, metavar="STRUCT_OR_SEG")
    masks.add_argument("output", type=Path, metavar="OUT.nii.gz", help=".nii or .nii.gz")
    masks.add_argument(
        "--roi",
        action="append",
        metavar="NAME_OR_NUMBER",
        help="only this ROI (repeatable; a number selects by ROI/segment number)",
    )
    masks.add_argument(
        "--stack",
        action="store_true",
        help="write a 4-D NIfTI, one volume per ROI in order (ROIs may overlap)",
    )
    masks.set_defaults(func=run_masks)

    contours = subparsers.add_parser(
        "contours",
        help="a NIfTI mask as an RT Structure Set (or a SEG) of its image series",
        description="Write the regions of MASK (a NIfTI label volume on the grid of the "
        "series in SERIES_DIR, or a 4-D stack of masks) as an RT Structure Set, or as a "
        "DICOM SEG with --seg. Label n becomes ROI/segment number n.",
    )
    contours.add_argument("series_dir", type=Path, metavar="SERIES_DIR")
    contours.add_argument("mask", type=Path, metavar="MASK.nii.gz")
    contours.add_argument("output", type=Path, metavar="OUT.dcm")
    contours.add_argument("--seg", action="store_true", help="write a DICOM SEG")
    contours.add_argument(
        "--names",
        metavar="NAME,...",
        help="ROI names in label order (default: 'ROI <label>')",
    )
    contours.set_defaults(func=run_contours)


#: Series of these modalities are segmentations, never the images they outline.
_NOT_IMAGES = frozenset({"RTSTRUCT", "SEG"})


def _image_instances(folder: Path) -> list[Any]:
    """Every image instance under ``folder`` (a LazyDataset each: headers only)."""
    from aiodicom.data.tree import discover

    if not folder.is_dir():
        raise DicomFileError(f"{folder}: not a folder")
    instances = [
        instance
        for series in discover(folder).series()
        if series.modality.upper() not in _NOT_IMAGES
        for instance in series.instances
    ]
    if not instances:
        raise DataConversionError(f"{folder}: no DICOM images found")
    return instances


def _selection(values: list[str] | None) -> list[str | int] | None:
    if values is None:
        return None
    return [int(v) if v.isdigit() else v for v in values]


def _atomically(output: Path, suffix: str, write: Callable[[str], None]) -> None:
    """Call ``write`` on a temporary file beside ``output``, then rename it into place,
    so a reader watching the folder never sees half a file."""
    handle, temporary = tempfile.mkstemp(dir=output.parent, suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _nifti(array: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> Any:
    """A NIfTI image of a (z, y, x) volume or an (n, z, y, x) stack."""
    from aiodicom.grinders.nifti import volume_to_nifti
    from aiodicom.grinders.numpy import Volume

    first = array if array.ndim == 3 else array[0]
    image = volume_to_nifti(Volume(first, affine, (1.0, 1.0, 1.0)))
    if array.ndim == 3:
        return image
    import nibabel

    nib: Any = nibabel
    return nib.Nifti1Image(array.transpose(3, 2, 1, 0), image.affine, image.header)


def run_masks(args: argparse.Namespace) -> int:
    """Grind the structure set or SEG and write the NIfTI."""
    from aiodicom.data.lazy import LazyDataset
    from aiodicom.grinders.segmentation import masks_grinder_for

    output: Path = args.output
    if not (output.name.endswith(".nii") or output.name.endswith(".nii.gz")):
        raise DataConversionError(f"{output}: the output must end in .nii or .nii.gz")
    if not args.source.is_file():
        raise DicomFileError(f"{args.source}: no such file")
    images = _image_instances(args.series_dir)
    masks = masks_grinder_for(_selection(args.roi))([*images, LazyDataset(args.source)])
    if args.stack:
        stack = np.stack(
            [
                roi.mask.astype(np.float32 if roi.mask.dtype.kind == "f" else np.uint8)
                for roi in masks
            ]
        )
        data: npt.NDArray[Any] = stack
    else:
        try:
            data = masks.label_volume()
        except SegmentationError as exc:
            raise SegmentationError(f"{exc}; use --stack or choose ROIs with --roi") from None
    import nibabel

    nib: Any = nibabel
    image = _nifti(data, masks.affine)
    suffix = ".nii.gz" if output.name.endswith(".gz") else ".nii"
    _atomically(output, suffix, lambda path: nib.save(image, path))
    for position, roi in enumerate(masks, start=1):
        where = f"volume {position}" if args.stack else f"label {roi.number}"
        print(f"{where}: {roi.name} ({int(np.count_nonzero(roi.mask))} voxels)")
    print(f"wrote {output}: {len(masks)} ROI(s) on a {'x'.join(map(str, masks.grid.shape))} grid")
    return 0


def _read_mask(path: Path) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """A NIfTI mask as (z, y, x) or (n, z, y, x) with its LPS affine."""
    import nibabel

    from aiodicom.data.geometry import ras_to_lps

    nib: Any = nibabel
    try:
        image = nib.load(path)
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise DataConversionError(f"cannot read {path} as NIfTI: {exc}") from exc
    data = np.asarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise DataConversionError(f"{path}: expected a 3-D or 4-D mask, got {data.shape}")
    array = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)  # labels stored as floats
    return array, ras_to_lps(image.affine)


def run_contours(args: argparse.Namespace) -> int:
    """Build the RT Structure Set or SEG and write it."""
    from aiodicom.factory.segmentation import build_rtstruct, build_seg
    from aiodicom.grinders.segmentation import ImageGrid

    grid = ImageGrid.of(_image_instances(args.series_dir))
    array, affine = _read_mask(args.mask)
    if not np.allclose(affine, grid.affine, rtol=1e-5, atol=1e-3):
        raise SegmentationError(
            f"{args.mask} is not on the grid of the series in {args.series_dir} "
            "(its affine differs): resample it onto the series first"
        )
    names = args.names.split(",") if args.names else None
    build = build_seg if args.seg else build_rtstruct
    dataset = build(array, grid, segments=names)
    output: Path = args.output
    _atomically(output, ".dcm", lambda path: dataset.save_as(path, enforce_file_format=True))
    kind = "SEG" if args.seg else "RT Structure Set"
    print(
        f"wrote {output}: {kind} with {_count(dataset)} region(s) of series {grid.datasets[0].SeriesInstanceUID}"
    )
    return 0


def _count(dataset: Any) -> int:
    sequence = dataset.get("SegmentSequence") or dataset.get("StructureSetROISequence") or []
    return len(sequence)
