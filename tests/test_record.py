"""Records (aiodicom._record): the dataclass behaviour the PDU, event and message classes rely on."""

from __future__ import annotations

import copy
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


class Stamped(FrozenRecord):
    """Like AssociationInfo: an identity plus values that ride along and do not compare."""

    name: str
    seen: list[int] = field(default_factory=list, compare=False)


class Checked(Record):
    """Like AcceptorPolicy: ``__post_init__`` normalizes what the constructor got."""

    title: str
    count: int = 0

    def __post_init__(self) -> None:
        self.title = self.title.strip()


def test_fields_left_out_of_comparison_do_not_change_equality_or_hash() -> None:
    first, second = Stamped("a", [1]), Stamped("a", [2])
    assert first == second and hash(first) == hash(second)
    assert Stamped("a") != Stamped("b")
    assert repr(first) == "Stamped(name='a', seen=[1])"  # still shown


def test_post_init_runs_on_construction_and_replace() -> None:
    assert Checked("  x ").title == "x"
    assert Checked(title=" y", count=2) == Checked("y", 2)
    assert replace(Checked("x"), title=" z ").title == "z"


@pytest.mark.parametrize("record", [Point(1, 2), Stamped("a", [3]), Bag("b", [1]), Checked("c", 4)], ids=repr)
def test_frozen_and_mutable_records_pickle_and_copy(record: object) -> None:
    for copied in (pickle.loads(pickle.dumps(record)), copy.copy(record), copy.deepcopy(record)):
        assert type(copied) is type(record) and copied == record
        assert repr(copied) == repr(record)


def test_replace_protocol_and_asdict() -> None:
    point = Point(1, 2)
    assert point.__replace__(y=3) == Point(1, 3)  # copy.replace(point, y=3) on Python 3.13
    assert Bag("a", [1])._asdict() == {"name": "a", "items": [1]}
