"""Records (aiodicom._record): the dataclass behaviour the PDU, event and message classes rely on."""

from __future__ import annotations

import pickle

import pytest

from aiodicom._record import FrozenRecord, FrozenRecordError, Record, field, replace
from aiodicom.ul import pdu as P


class Point(FrozenRecord):
    x: int
    y: int = 0


class Bag(Record):
    name: str
    items: list[int] = field(default_factory=list)


def test_binding_like_a_dataclass() -> None:
    assert Point(1) == Point(x=1) == Point(1, 0) and Point(1, 2) != Point(2, 1)
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    for bad in ((), (1, 2, 3)):
        with pytest.raises(TypeError):
            Point(*bad)
    with pytest.raises(TypeError):
        Point(1, x=1)
    with pytest.raises(TypeError):
        Point(1, z=1)  # type: ignore[call-arg]


def test_defaults_made_by_a_factory_are_not_shared() -> None:
    first, second = Bag("a"), Bag("b")
    first.items.append(1)
    assert second.items == [] and first.items == [1]


def test_frozen_records_are_hashable_and_immutable_mutable_ones_are_not_hashable() -> None:
    point = Point(1, 2)
    assert hash(point) == hash(Point(1, 2))
    with pytest.raises(FrozenRecordError):
        point.x = 3  # type: ignore[misc]
    assert replace(point, y=5) == Point(1, 5)
    bag = Bag("a")
    bag.name = "b"
    assert bag == Bag("b")
    with pytest.raises(TypeError):
        hash(bag)


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):

        class Wrong(Record):  # noqa: F841
            a: int = 0
            b: int


def test_records_pickle_and_have_slots() -> None:
    rq = P.AssociateRJ(1, 2, 3)
    assert pickle.loads(pickle.dumps(rq)) == rq
    assert not hasattr(rq, "__dict__")
