"""Inputs: which instances they take (tags, values, single series/date), unions, dynamic inputs.

Instances are real Part 10 files read back the way a restarted pipeline reads them
(:func:`aiodicom.pipeline.storage.read_stored`), so the routing values are the raw bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

import aiodicom
from aiodicom.errors import ConfigurationError
from aiodicom.grinders import list_grinder
from aiodicom.pipeline import AnyOf, DynamicInput, Input, Not
from aiodicom.pipeline.inputs import StoredInstance, resolve
from aiodicom.pipeline.storage import read_stored

from .helpers import series, write


def stored(datasets: list[Dataset], folder: Path, kind: type[Input]) -> list[StoredInstance]:
    return [read_stored(path, kind.routing_tags()) for path in write(datasets, folder)]


def takes(kind: type[Input], instance: StoredInstance) -> bool:
    return kind().accepts(instance)


def make(required_values: dict[int | str, object], required_tags: tuple[int | str, ...] = ()) -> type[Input]:
    return type("Probe", (Input,), {"required_values": required_values, "required_tags": required_tags})


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        ("CT", True), ("MR", False), ("ct", False),            # equality
        ("C*", True), ("?T", True), ("M*", False),              # wildcards as in C-FIND
        (re.compile("c.", re.I), True), (re.compile("C"), False),  # regex: fullmatch
        (AnyOf("MR", "CT"), True), (["MR", "PT"], False), ({"CT"}, True),  # any of
        (Not("MR"), True), (Not(AnyOf("CT", "PT")), False),    # negation
        (lambda value: value == "CT", True),                    # a predicate
    ],
)  # fmt: skip
def test_required_values_matchers(tmp_path: Path, matcher: object, expected: bool) -> None:
    kind = make({"Modality": matcher})
    [instance] = stored(series("P", "CT", 1), tmp_path, kind)
    assert takes(kind, instance) is expected


def test_numbers_binary_values_ints_as_tags_and_absent_elements(tmp_path: Path) -> None:
    probe = make({"Rows": 8, 0x00200011: 1, "ContrastBolusAgent": Not("CHEST")}, ("SOPInstanceUID", 0x7FE00010))
    [instance] = stored(series("P", "CT", 1), tmp_path, probe)
    assert takes(probe, instance)  # US Rows decoded as a number, IS SeriesNumber too
    assert not takes(make({"Rows": 9}), instance)
    assert not takes(make({"ContrastBolusAgent": "*"}, ()), instance)  # absent: only Not matches
    assert not takes(make({}, ("PatientWeight",)), instance)


def test_bad_definitions_fail_when_the_pipeline_is_made() -> None:
    class Typo(Input):
        required_tags = ["PatientIdd"]

    class Node(aiodicom.Pipeline):
        inputs = {"x": Typo}

    with pytest.raises(ConfigurationError, match="PatientIdd"):
        Node()
    ok = type("Ok", (aiodicom.Pipeline,), {"inputs": {"x": Input}})
    with pytest.raises(ConfigurationError, match="no setting"):
        ok(prot=1)
    with pytest.raises(ConfigurationError, match="not server_options workers"):
        ok(server_options={"workers": 2})
    with pytest.raises(ConfigurationError, match="workers must be at least 1"):
        ok(workers=0)

    class OneSeries(Input):
        enforce_single_series = True

    for kind in (OneSeries, Input | OneSeries):  # workers cannot know an input's first instance
        node = type("Node", (aiodicom.Pipeline,), {"inputs": {"x": kind}})
        with pytest.raises(ConfigurationError, match="use workers=1"):
            node(workers=2)
        node(workers=1)
    with pytest.raises(ConfigurationError, match="unroutable"):
        ok(unroutable="drop")


def test_single_series_and_single_study_date(tmp_path: Path) -> None:
    class OneSeries(Input):
        enforce_single_series = True

    class OneDate(Input):
        enforce_single_study_date = True

    first, second = series("P", "CT", 2), series("P", "CT", 1)
    second[0].StudyDate = "19990101"
    for kind in (OneSeries, OneDate):
        a, b, other = stored([*first, *second], tmp_path / kind.__name__, kind)
        holder = kind()
        holder.add(a)
        assert holder.accepts(b) and not holder.accepts(other)
        holder.add(b)
        assert len(holder) == 2


@pytest.mark.anyio
async def test_either_input_takes_the_first_alternative_that_matches(tmp_path: Path) -> None:
    class Contrast(Input):
        required_values = {"SeriesDescription": "*CONTRAST*"}

        def validate(self) -> bool:
            return len(self) >= 2

    class Plain(Input):
        required_values = {"Modality": "CT"}

    either = Contrast | Plain
    assert either.__name__ == "Contrast | Plain" and issubclass(either, Input)
    contrast = series("P", "CT", 2)
    for ds in contrast:
        ds.SeriesDescription = "CT WITH CONTRAST"
    plain = series("P", "CT", 1)
    instances = stored([*contrast, *plain], tmp_path, either)
    holder = either()
    for instance in instances[:1] + instances[2:]:
        holder.add(instance)
    assert await resolve(holder.validate())  # Contrast has 1 (not enough): Plain validates
    assert [Path(p).name for p in holder.grind_job()[1]] == [instances[2].path.name]  # type: ignore[union-attr]
    holder.add(instances[1])
    assert await resolve(holder.validate())  # now Contrast, the first alternative, validates
    assert sorted(Path(p).name for p in holder.grind_job()[1]) == sorted(i.path.name for i in instances[:2])  # type: ignore[union-attr]


def test_dynamic_input_groups_by_series(tmp_path: Path) -> None:
    class Many(DynamicInput):
        grinder = list_grinder

    a, b = series("P", "CT", 2), series("P", "CT", 1)
    holder = Many()
    for instance in stored([*a, *b], tmp_path, Many):
        holder.add(instance)
    function, argument = holder.grind_job()
    ground = function(argument)
    assert isinstance(ground, dict)
    assert {key: len(value) for key, value in ground.items()} == {a[0].SeriesInstanceUID: 2, b[0].SeriesInstanceUID: 1}
    view = holder.datasets_view()
    assert isinstance(view, dict) and str(view[b[0].SeriesInstanceUID][0].SOPInstanceUID) == b[0].SOPInstanceUID
