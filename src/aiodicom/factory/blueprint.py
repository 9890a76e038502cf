"""Blueprint: a set of virtual elements, one per attribute, that composes with ``+``.

Module blueprints (patient, general series, CT image, ...) are written once and
combined; a pipeline then overrides a few attributes by adding its own elements on
the right, which win. Keeping the blueprint immutable means a shared default can
never be changed by accident from one pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag

from aiodicom.errors import FactoryError
from aiodicom.factory.elements import (
    ABSENT,
    InstanceEnvironment,
    Key,
    PrivateTag,
    SeriesEnvironment,
    TagLike,
    VirtualElement,
    WithVR,
    describe,
    to_key,
)

__all__ = ["Blueprint"]


def _order(key: Key) -> tuple[int, int, str, int]:
    # Standard attributes first in tag order, then private ones by group and creator,
    # so creator blocks are allocated in the same order in every instance.
    if isinstance(key, PrivateTag):
        return (1, key.group, key.creator, key.offset)
    return (0, int(key), "", 0)


class Blueprint(Mapping[Key, VirtualElement]):
    """An immutable mapping from tag to :class:`VirtualElement`.

    ``a + b`` keeps every element of both, ``b``'s winning where both name the same
    attribute; ``b`` may also be a single element. Index by tag number, keyword,
    (group, element) or :class:`PrivateTag`.
    """

    def __init__(self, elements: Iterable[VirtualElement] = ()) -> None:
        table: dict[Key, VirtualElement] = {}
        for element in elements:
            if not isinstance(element, VirtualElement):
                raise FactoryError(f"a blueprint holds virtual elements, not {element!r}")
            table[element.key] = element
        self._elements = dict(sorted(table.items(), key=lambda item: _order(item[0])))

    def __add__(self, other: Blueprint | VirtualElement) -> Blueprint:
        if isinstance(other, VirtualElement):
            return Blueprint([*self._elements.values(), other])
        if isinstance(other, Blueprint):
            return Blueprint([*self._elements.values(), *other._elements.values()])
        return NotImplemented

    def __getitem__(self, tag: TagLike) -> VirtualElement:
        return self._elements[to_key(tag)]

    def __contains__(self, tag: object) -> bool:
        try:
            return to_key(tag) in self._elements  # type: ignore[arg-type]
        except FactoryError:
            return False

    def __iter__(self) -> Iterator[Key]:
        return iter(self._elements)

    def __len__(self) -> int:
        return len(self._elements)

    def __repr__(self) -> str:
        inner = ", ".join(repr(element) for element in self._elements.values())
        return f"Blueprint([{inner}])"

    def without(self, *tags: TagLike) -> Blueprint:
        """A copy with the named attributes' elements removed (not discarded: unmentioned)."""
        drop = {to_key(tag) for tag in tags}
        return Blueprint(e for k, e in self._elements.items() if k not in drop)

    @property
    def per_instance(self) -> bool:
        """Whether any element varies from instance to instance."""
        return any(element.per_instance for element in self._elements.values())

    # --- evaluation (used by the factory) ---------------------------------------

    def apply_series(self, dataset: Dataset, env: SeriesEnvironment) -> None:
        """Write every series-level element into ``dataset``."""
        for element in self._elements.values():
            if not element.per_instance:
                put(dataset, element, element.series_value(env))

    def apply_instance(self, dataset: Dataset, env: InstanceEnvironment) -> None:
        """Write every per-instance element into ``dataset``."""
        for element in self._elements.values():
            if element.per_instance:
                put(dataset, element, element.instance_value(env))

    def evaluate(self, env: SeriesEnvironment, instance: InstanceEnvironment | None) -> Dataset:
        """One data set from all elements (a sequence item, or a lone instance)."""
        dataset = Dataset()
        self.apply_series(dataset, env)
        if instance is None:
            instance = InstanceEnvironment(index=0, series=env)
        self.apply_instance(dataset, instance)
        return dataset


def put(dataset: Dataset, element: VirtualElement, value: Any) -> None:
    """Write (or, for :data:`ABSENT`, remove) one element's value."""
    key = element.key
    if isinstance(value, WithVR):
        vr, value = value.vr, value.value
    elif value is ABSENT:
        _remove(dataset, key)
        return
    else:
        vr = element.vr_for(value)
    if vr == "SQ" and not isinstance(value, DicomSequence):
        value = DicomSequence(list(value or []))
    try:
        if isinstance(key, PrivateTag):
            block = dataset.private_block(key.group, key.creator, create=True)
            block.add_new(key.offset, vr, value)
        else:
            dataset.add_new(key, vr, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise FactoryError(f"{describe(key)}: cannot write {value!r} as {vr}: {exc}") from exc


def _remove(dataset: Dataset, key: Key) -> None:
    if isinstance(key, BaseTag):
        if key in dataset:
            del dataset[key]
        return
    try:
        block = dataset.private_block(key.group, key.creator)
    except KeyError:
        return
    if key.offset in block:
        del block[key.offset]
