"""Grinders: turn an input's instances into what a pipeline's ``process`` wants.

A grinder is a plain callable ``(instances) -> T``; instances may be pydicom
data sets, :class:`~aiodicom.data.LazyDataset` objects or file paths. Plain
callables compose and test without any framework: the simple ones live here,
the heavy ones in :mod:`aiodicom.grinders.numpy`,
:mod:`aiodicom.grinders.nifti` and :mod:`aiodicom.grinders.segmentation` (RT
Structure Sets and SEGs to masks; imported on demand, so a pipeline that only
lists data sets never pays for nibabel).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from aiodicom.data.geometry import affine_from_datasets, sort_by_slice_position
from aiodicom.data.lazy import Instance, header_of
from aiodicom.data.tree import DicomTree
from aiodicom.errors import InconsistentSeriesError, MissingTagError

__all__ = [
    "Grinder",
    "Series",
    "identity_grinder",
    "list_grinder",
    "many_grinder",
    "series_grinder",
    "tags_grinder",
    "tree_grinder",
]

T = TypeVar("T")

#: The type of a grinder.
Grinder = Callable[[Iterable[Instance]], Any]


def identity_grinder(instances: T) -> T:
    """Hand the instances over untouched (the pipeline does its own thing)."""
    return instances


def list_grinder(instances: Iterable[Instance]) -> list[Instance]:
    """The instances as a list, in arrival order."""
    return list(instances)


def tree_grinder(instances: Iterable[Instance]) -> DicomTree:
    """The instances grouped patient -> study -> series (see :class:`DicomTree`)."""
    return DicomTree.from_instances(instances)


@dataclass(frozen=True)
class Series:
    """One series' headers in slice order with its LPS affine (voxel [i, j, k] -> mm)."""

    datasets: list[Dataset]
    affine: npt.NDArray[np.float64]


def series_grinder(instances: Iterable[Instance]) -> Series:
    """Headers of one series sorted along the slice normal, with the affine.

    Sorting by position instead of InstanceNumber keeps slice order tied to
    anatomy. Raises when instances belong to several series or their geometry
    is inconsistent.
    """
    headers = [header_of(instance) for instance in instances]
    if not headers:
        raise InconsistentSeriesError("no instances: nothing to grind")
    uids = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    if len(uids) > 1:
        raise InconsistentSeriesError(f"instances belong to {len(uids)} series: {sorted(uids)}")
    ordered = sort_by_slice_position(headers)
    return Series(datasets=ordered, affine=affine_from_datasets(ordered))


def _keyword(tag: int | str) -> str:
    if isinstance(tag, str):
        if tag_for_keyword(tag) is None:
            raise ValueError(f"unknown DICOM keyword {tag!r}")
        return tag
    return keyword_for_tag(Tag(tag)) or f"{int(Tag(tag)):08X}"


def tags_grinder(
    tags: Sequence[int | str], *, optional: Sequence[int | str] = ()
) -> Callable[[Iterable[Instance]], dict[str, Any]]:
    """A grinder giving the values of chosen attributes of the first instance.

    The result maps keyword (or ``GGGGEEEE`` hex for private tags) to value;
    a missing ``tags`` attribute raises :class:`MissingTagError`, a missing
    ``optional`` one maps to ``None``. Names are checked now, not per call, so
    a typo fails when the pipeline is defined.
    """
    required = [(_keyword(t), Tag(t)) for t in tags]
    maybe = [(_keyword(t), Tag(t)) for t in optional]

    def grind(instances: Iterable[Instance]) -> dict[str, Any]:
        first = next(iter(instances), None)
        if first is None:
            raise InconsistentSeriesError("no instances: nothing to grind")
        header = header_of(first)
        out: dict[str, Any] = {}
        for name, tag in required:
            if tag not in header or header[tag].value in (None, ""):
                raise MissingTagError(f"required attribute {name} is missing")
            out[name] = header[tag].value
        for name, tag in maybe:
            element = header.get(tag)
            out[name] = None if element is None else element.value
        return out

    return grind


def many_grinder(**grinders: Grinder) -> Callable[[Iterable[Instance]], dict[str, Any]]:
    """A grinder running several grinders on the same instances, results by name.

    The instances are materialised once, so generators are safe.
    """

    def grind(instances: Iterable[Instance]) -> dict[str, Any]:
        items = list(instances)
        return {name: grinder(items) for name, grinder in grinders.items()}

    return grind
