"""The NIfTI grinder: a series as a nibabel image with a RAS affine we computed.

The affine is built from the series geometry by :mod:`aiodicom.data.geometry`
(no dicom2nifti, no resampling), then flipped from DICOM's LPS to NIfTI's RAS.

Voxel order: NIfTI arrays are indexed ``[i, j, k]`` = (column, row, slice), so
the image's data is the numpy grinder's ``(z, y, x)`` array transposed (a view,
no copy) and ``img.affine @ [i, j, k, 1]`` is the RAS position in mm of
``volume.array[k, j, i]``. Slices run along the slice normal, as in the numpy
grinder. Colour series become NIfTI RGB24 voxels. Both qform and sform are
set, with code 1 (scanner) when the geometry is known and 0 when it is only
nominal (see :attr:`Volume.geometry_known`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nibabel as nib
import numpy as np

from aiodicom.data.geometry import lps_to_ras
from aiodicom.data.lazy import Instance
from aiodicom.grinders.numpy import Volume, numpy_grinder

__all__ = ["RGB24", "nifti_grinder", "volume_to_nifti"]

#: nibabel's structured dtype for NIfTI RGB24 voxels.
RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def volume_to_nifti(volume: Volume) -> Any:
    """A ``nibabel.Nifti1Image`` of an already ground volume (see the module doc)."""
    array = volume.array
    if array.ndim == 4:
        if array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError("only 8-bit RGB colour volumes can be written as NIfTI RGB24")
        array = np.ascontiguousarray(array).view(RGB24)[..., 0]
    data = array.transpose(2, 1, 0)
    affine = lps_to_ras(volume.affine)
    nibabel: Any = nib  # nibabel is only partly typed
    image = nibabel.Nifti1Image(data, affine)
    code = 1 if volume.geometry_known else 0
    image.set_qform(affine, code=code)
    image.set_sform(affine, code=code)
    image.header.set_xyzt_units(xyz="mm")
    return image


def nifti_grinder(instances: Iterable[Instance]) -> Any:
    """Grind one series into a ``nibabel.Nifti1Image`` (RAS affine, [i, j, k] voxels)."""
    return volume_to_nifti(numpy_grinder(instances))
