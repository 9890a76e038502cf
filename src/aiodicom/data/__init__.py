"""Data-set utilities of the data layer: geometry, lazy data sets, trees.

This package knows nothing of the network (it never imports ``aiodicom.ul``,
``aiodicom.transport`` or ``aiodicom.dimse``), so conversion code can be used
and tested without sockets.
"""

from __future__ import annotations

from aiodicom.data.geometry import (
    affine_from_datasets,
    lps_to_ras,
    orientation_and_positions,
    ras_to_lps,
    sort_by_slice_position,
    spacing_from_affine,
)
from aiodicom.data.lazy import Instance, LazyDataset, header_of, read_header
from aiodicom.data.tree import DicomTree, PatientNode, SeriesNode, StudyNode, discover

__all__ = [
    "DicomTree",
    "Instance",
    "LazyDataset",
    "PatientNode",
    "SeriesNode",
    "StudyNode",
    "affine_from_datasets",
    "discover",
    "header_of",
    "lps_to_ras",
    "orientation_and_positions",
    "ras_to_lps",
    "read_header",
    "sort_by_slice_position",
    "spacing_from_affine",
]
