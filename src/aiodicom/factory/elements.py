"""Virtual elements: the recipe for one attribute of the data sets a blueprint builds.

A derived series is mostly the parent's header with a few attributes changed, a
few computed and a few dropped. Writing that as data (one element per tag) instead
of as code lets pipelines share and override recipes with ``+`` and lets the
factory decide *when* to evaluate each one: series-level elements run once per
series (so every instance gets the same SeriesInstanceUID), per-instance elements
run once per slice.

An element's value may be the sentinel :data:`ABSENT`, which means "this attribute
must not appear" (a ``Discard``, an optional ``Copy`` with nothing to copy).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from aiodicom.data.geometry import orientation_and_positions
from aiodicom.errors import FactoryError, MissingParentValue

if TYPE_CHECKING:
    from aiodicom.factory.blueprint import Blueprint
    from aiodicom.factory.build import PixelEncoding

__all__ = [
    "ABSENT",
    "Copy",
    "Discard",
    "Functional",
    "ImageOrientation",
    "ImagePosition",
    "InstanceCopy",
    "InstanceEnvironment",
    "PixelSpacing",
    "PrivateTag",
    "Sequence",
    "Series",
    "SeriesEnvironment",
    "Static",
    "VirtualElement",
    "WithVR",
    "format_ds",
]


class _Absent:
    """Type of :data:`ABSENT`; a class (not ``None``) because ``None`` is a valid empty value."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


#: Value meaning "leave this attribute out of the data set".
ABSENT: Final = _Absent()


@dataclass(frozen=True)
class PrivateTag:
    """A private attribute named by its creator rather than by a fixed tag.

    The element number of a private attribute depends on which block (gggg,0010-00FF)
    the creator happens to occupy in each data set, so a fixed tag would be wrong as
    soon as a parent uses another block; the factory allocates the block when it writes.
    """

    group: int
    creator: str
    offset: int

    def __post_init__(self) -> None:
        if self.group % 2 == 0 or not 0x0009 <= self.group <= 0xFFFF:
            raise FactoryError(f"private group must be odd and > 0x0008, got {self.group:#06x}")
        if not 0 <= self.offset <= 0xFF:
            raise FactoryError(f"private element offset must be 0x00-0xFF, got {self.offset:#x}")
        if not self.creator:
            raise FactoryError("a private tag needs a non-empty creator")

    def __str__(self) -> str:
        return f"({self.group:04X},xx{self.offset:02X}) [{self.creator}]"


TagLike = int | str | tuple[int, int] | PrivateTag
Key = BaseTag | PrivateTag


def to_key(tag: TagLike) -> Key:
    """Normalise a tag number, (group, element), keyword or PrivateTag."""
    if isinstance(tag, PrivateTag):
        return tag
    try:
        key = Tag(tag)
    except (ValueError, TypeError, OverflowError) as exc:
        raise FactoryError(f"not a DICOM tag or keyword: {tag!r}") from exc
    if key.is_private:
        raise FactoryError(
            f"{key} is private: name it as PrivateTag(group, creator, offset) so the "
            "creator block can be allocated in each data set"
        )
    return key


def describe(key: Key) -> str:
    """Human name of a key for error messages."""
    if isinstance(key, PrivateTag):
        return str(key)
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(key) or str(key)


@dataclass(frozen=True)
class SeriesEnvironment:
    """What series-level elements can look at.

    ``parent`` is the series the new one derives from (sorted by InstanceNumber when
    every instance has one), empty when building from scratch. ``affine`` maps voxel
    indices (column, row, slice) to patient LPS millimetres.
    """

    parent: tuple[Dataset, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    affine: npt.NDArray[np.float64] | None = None
    encoding: PixelEncoding | None = None

    @property
    def pivot(self) -> Dataset | None:
        """The parent instance series-level values are copied from."""
        return self.parent[0] if self.parent else None

    @property
    def total(self) -> int:
        """Number of instances being built."""
        return self.shape[0] if self.shape else 1


@dataclass(frozen=True)
class InstanceEnvironment:
    """What per-instance elements can look at: one slice and its neighbours in the parent."""

    index: int
    series: SeriesEnvironment
    image: npt.NDArray[Any] | None = None
    parent: Dataset | None = None

    @property
    def instance_number(self) -> int:
        """1-based, as InstanceNumber counts."""
        return self.index + 1

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return self.series.kwargs

    @property
    def total(self) -> int:
        return self.series.total


class VirtualElement(ABC):
    """The recipe for one attribute.

    Subclasses that vary per instance set ``per_instance`` and override
    :meth:`instance_value`; the rest only implement :meth:`series_value`, which the
    factory calls once per series.
    """

    per_instance: bool = False
    #: Elements that write a value of their own need a VR for private tags
    #: (no dictionary knows them); copies take the parent's, discards write none.
    needs_vr: bool = True

    def __init__(self, tag: TagLike, vr: str | None = None) -> None:
        self.key: Key = to_key(tag)
        if vr is None and self.needs_vr and isinstance(self.key, PrivateTag):
            raise FactoryError(f"{self.key}: a private element needs an explicit VR")
        self.vr = vr

    @abstractmethod
    def series_value(self, env: SeriesEnvironment) -> Any:
        """The value shared by the whole series (or :data:`ABSENT`)."""

    def instance_value(self, env: InstanceEnvironment) -> Any:
        """The value for one instance; series-level elements reuse their series value."""
        return self.series_value(env.series)

    def vr_for(self, value: Any) -> str:
        """The VR to write; from the data dictionary unless given."""
        if self.vr is not None:
            return self.vr
        assert isinstance(self.key, BaseTag)
        try:
            vr = str(dictionary_VR(self.key))
        except KeyError as exc:
            raise FactoryError(f"{self.key} is not in the data dictionary: give a VR") from exc
        if vr == "US or SS":  # pixel-valued attributes: signed only when they must be
            negative = isinstance(value, int) and value < 0
            return "SS" if negative else "US"
        return vr.split(" or ")[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({describe(self.key)})"


class Static(VirtualElement):
    """A fixed value, known when the blueprint is written (e.g. SeriesDescription)."""

    def __init__(self, tag: TagLike, value: Any, vr: str | None = None) -> None:
        super().__init__(tag, vr)
        self.value = value

    def series_value(self, env: SeriesEnvironment) -> Any:
        return self.value


class Discard(VirtualElement):
    """Keep the attribute out, even when the parent has it and filling would copy it."""

    needs_vr = False

    def series_value(self, env: SeriesEnvironment) -> Any:
        return ABSENT


_NO_DEFAULT: Final = object()


def _lookup(dataset: Dataset, key: Key) -> tuple[Any, str] | None:
    """Value and VR of ``key`` in ``dataset`` (private tags through their creator)."""
    if isinstance(key, PrivateTag):
        try:
            block = dataset.private_block(key.group, key.creator)
            element = block[key.offset]
        except KeyError:
            return None
    else:
        if key not in dataset:
            return None
        element = dataset[key]
    return element.value, element.VR


class Copy(VirtualElement):
    """The parent series' value, the same for every instance.

    Required by default, so a derived series never silently loses (say) its PatientID.
    ``optional=True`` leaves the attribute out when the parent lacks it; ``default`` is
    written instead (for type 2 attributes pass ``""``); a callable default is called
    with the :class:`SeriesEnvironment`, e.g. to mint a new UID when there is no parent.
    """

    needs_vr = False

    def __init__(
        self,
        tag: TagLike,
        *,
        optional: bool = False,
        default: Any = _NO_DEFAULT,
        vr: str | None = None,
    ) -> None:
        super().__init__(tag, vr)
        self.optional = optional
        self.default = default
        if vr is None and default is not _NO_DEFAULT and isinstance(self.key, PrivateTag):
            raise FactoryError(f"{self.key}: a private copy with a default needs a VR")

    def _missing(self, env: SeriesEnvironment) -> Any:
        if self.default is not _NO_DEFAULT:
            return self.default(env) if callable(self.default) else self.default
        if self.optional:
            return ABSENT
        where = "the parent series" if env.parent else "a parent (none was given)"
        raise MissingParentValue(f"required {describe(self.key)} not found in {where}")

    def _from(self, dataset: Dataset | None, env: SeriesEnvironment) -> Any:
        found = _lookup(dataset, self.key) if dataset is not None else None
        if found is None:
            return self._missing(env)
        return WithVR(found[0], found[1])

    def series_value(self, env: SeriesEnvironment) -> Any:
        return self._from(env.pivot, env)


class InstanceCopy(Copy):
    """The value of the parent instance at the same position (e.g. AcquisitionTime)."""

    per_instance = True

    def instance_value(self, env: InstanceEnvironment) -> Any:
        return self._from(env.parent, env.series)


@dataclass(frozen=True)
class WithVR:
    """A value that brings its own VR: copied ones keep the parent's (private, unknown
    attributes), and PixelData is OB or OW depending on the encoding."""

    value: Any
    vr: str


class Series(VirtualElement):
    """A value computed once per series, e.g. a fresh SeriesInstanceUID."""

    def __init__(
        self, tag: TagLike, function: Callable[[SeriesEnvironment], Any], vr: str | None = None
    ) -> None:
        super().__init__(tag, vr)
        self.function = function

    def series_value(self, env: SeriesEnvironment) -> Any:
        return self.function(env)


class Functional(VirtualElement):
    """A value computed for each instance from its :class:`InstanceEnvironment`."""

    per_instance = True

    def __init__(
        self, tag: TagLike, function: Callable[[InstanceEnvironment], Any], vr: str | None = None
    ) -> None:
        super().__init__(tag, vr)
        self.function = function

    def series_value(self, env: SeriesEnvironment) -> Any:
        return self.function(InstanceEnvironment(index=0, series=env))

    def instance_value(self, env: InstanceEnvironment) -> Any:
        return self.function(env)


class Sequence(VirtualElement):
    """A sequence whose items are each built from a blueprint.

    Per-instance as soon as one item's blueprint has a per-instance element, so
    nested UIDs or references stay consistent with their instance.
    """

    def __init__(self, tag: TagLike, items: abc.Iterable[Blueprint]) -> None:
        super().__init__(tag, "SQ")
        self.items = tuple(items)
        self.per_instance = any(item.per_instance for item in self.items)

    def series_value(self, env: SeriesEnvironment) -> Any:
        return [item.evaluate(env, None) for item in self.items]

    def instance_value(self, env: InstanceEnvironment) -> Any:
        return [item.evaluate(env.series, env) for item in self.items]


# --- geometry ------------------------------------------------------------------


def format_ds(value: float) -> str:
    """A float as DS text (at most 16 characters), as precise as the VR allows.

    The most significant digits that fit, so positions and slopes lose as little as
    possible (pydicom's own formatter can exceed 16 characters near powers of ten).
    """
    if not math.isfinite(value):
        raise FactoryError(f"DS cannot hold {value}")
    if value == 0:
        return "0"  # not "-0"
    for digits in range(17, 0, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    raise FactoryError(f"DS cannot hold {value}")  # pragma: no cover - 1 digit always fits


def _require_affine(env: SeriesEnvironment) -> npt.NDArray[np.float64]:
    if env.affine is None:
        raise FactoryError("geometry elements need a volume with an affine")
    return env.affine


def orientation(affine: npt.NDArray[np.float64]) -> list[float]:
    """ImageOrientationPatient (row direction, column direction) of an LPS affine.

    DICOM's first triple is the direction in which the column index grows (along a
    row), which is the affine's first column.
    """
    cosines, _ = orientation_and_positions(affine, 0)
    return cosines


def position(affine: npt.NDArray[np.float64], index: int) -> list[float]:
    """ImagePositionPatient (centre of the first voxel) of slice ``index``."""
    return [float(v) for v in affine[:3, 2] * index + affine[:3, 3]]


def spacing(affine: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """(between columns, between rows, between slices) in mm."""
    x, y, z = (float(np.linalg.norm(affine[:3, axis])) for axis in range(3))
    return x, y, z


class ImageOrientation(VirtualElement):
    """ImageOrientationPatient from the volume's affine (the same for every slice)."""

    def __init__(self) -> None:
        super().__init__("ImageOrientationPatient", "DS")

    def series_value(self, env: SeriesEnvironment) -> Any:
        return [format_ds(round(v, 15)) for v in orientation(_require_affine(env))]


class ImagePosition(VirtualElement):
    """ImagePositionPatient of each slice from the volume's affine."""

    per_instance = True

    def __init__(self) -> None:
        super().__init__("ImagePositionPatient", "DS")

    def series_value(self, env: SeriesEnvironment) -> Any:
        return [format_ds(v) for v in position(_require_affine(env), 0)]

    def instance_value(self, env: InstanceEnvironment) -> Any:
        return [format_ds(v) for v in position(_require_affine(env.series), env.index)]


class PixelSpacing(VirtualElement):
    """PixelSpacing (between rows, between columns) from the volume's affine."""

    def __init__(self) -> None:
        super().__init__("PixelSpacing", "DS")

    def series_value(self, env: SeriesEnvironment) -> Any:
        column_step, row_step, _ = spacing(_require_affine(env))
        return [format_ds(row_step), format_ds(column_step)]
