"""Status codes: categories, meanings and raise_for_status (PS3.7 annex C)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.status import code_to_category

from aiodicom.dimse import status as st_mod
from aiodicom.dimse.status import Status, StatusCategory
from aiodicom.errors import AiodicomError, StatusError

S = StatusCategory


@pytest.mark.parametrize(
    ("code", "category", "words"),
    [
        (0x0000, S.SUCCESS, "success"),
        (0x0001, S.WARNING, "optional attributes"),
        (0x0107, S.WARNING, "attribute list"),
        (0x0116, S.WARNING, "out of range"),
        (0xB000, S.WARNING, "coercion"),
        (0xB006, S.WARNING, "discarded"),
        (0xB007, S.WARNING, "does not match"),
        (0xA700, S.FAILURE, "out of resources"),
        (0xA7FF, S.FAILURE, "out of resources"),
        (0xA701, S.FAILURE, "number of matches"),
        (0xA702, S.FAILURE, "sub-operations"),
        (0xA801, S.FAILURE, "move destination unknown"),
        (0xA900, S.FAILURE, "does not match sop class"),
        (0xA9AB, S.FAILURE, "does not match sop class"),
        (0xC000, S.FAILURE, "cannot understand"),
        (0xC001, S.FAILURE, "cannot understand"),
        (0xCFFF, S.FAILURE, "unable to process"),
        (0x0110, S.FAILURE, "processing failure"),
        (0x0111, S.FAILURE, "duplicate sop instance"),
        (0x0112, S.FAILURE, "no such sop instance"),
        (0x0117, S.FAILURE, "invalid object instance"),
        (0x0118, S.FAILURE, "no such sop class"),
        (0x0119, S.FAILURE, "class-instance conflict"),
        (0x0122, S.FAILURE, "sop class not supported"),
        (0x0124, S.FAILURE, "not authorized"),
        (0x0210, S.FAILURE, "duplicate invocation"),
        (0x0211, S.FAILURE, "unrecognized operation"),
        (0x0212, S.FAILURE, "mistyped argument"),
        (0x0213, S.FAILURE, "resource limitation"),
        (0xFE00, S.CANCEL, "cancel"),
        (0xFF00, S.PENDING, "pending"),
        (0xFF01, S.PENDING, "optional keys"),
    ],
)
def test_known_codes(code: int, category: StatusCategory, words: str) -> None:
    status = Status(code)
    assert status == code
    assert status.code == code and type(status.code) is int
    assert status.category is category
    assert words in status.description.lower()
    assert f"0x{code:04X}" in str(status)
    flags = {
        S.SUCCESS: status.is_success,
        S.WARNING: status.is_warning,
        S.FAILURE: status.is_failure,
        S.CANCEL: status.is_cancel,
        S.PENDING: status.is_pending,
    }
    assert [c for c, flag in flags.items() if flag] == [category]


def test_unknown_codes_are_classified_by_range() -> None:
    assert Status(0xB123).category is S.WARNING
    assert Status(0xA123).category is S.FAILURE
    assert Status(0xC5A5).category is S.FAILURE
    # Outside every range: never success or pending, which would mislead the caller.
    assert Status(0x1234).category is S.FAILURE
    assert Status(0xFF02).category is S.FAILURE
    assert "0x1234" in Status(0x1234).description


def test_named_constants() -> None:
    assert st_mod.SUCCESS == 0
    assert st_mod.OUT_OF_RESOURCES == 0xA700
    assert st_mod.DATA_SET_DOES_NOT_MATCH_SOP_CLASS == 0xA900
    assert st_mod.CANNOT_UNDERSTAND == 0xC000
    assert st_mod.SOP_CLASS_NOT_SUPPORTED == 0x0122
    assert st_mod.DUPLICATE_SOP_INSTANCE == 0x0111
    assert st_mod.PROCESSING_FAILURE == 0x0110
    assert st_mod.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert st_mod.CANCEL == 0xFE00
    assert st_mod.PENDING == 0xFF00
    assert st_mod.PENDING_WARNING == 0xFF01
    assert st_mod.COERCION_OF_DATA_ELEMENTS == 0xB000
    assert st_mod.ELEMENTS_DISCARDED == 0xB006
    assert st_mod.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING == 0xB007
    for name in st_mod.__all__:
        value = getattr(st_mod, name)
        if name.isupper():
            assert isinstance(value, Status), name


def test_int_behaviour() -> None:
    assert {Status(0xA700): "x"}[0xA700] == "x"
    assert hash(Status(0x0110)) == hash(0x0110)
    assert repr(Status(0xC000)) == "Status(0xC000)"
    with pytest.raises(ValueError):
        Status(0x10000)
    with pytest.raises(ValueError):
        Status(-1)


@pytest.mark.parametrize("code", [0x0000, 0x0001, 0xB000, 0xFF00, 0xFF01])
def test_raise_for_status_quiet(code: int) -> None:
    Status(code).raise_for_status()


@pytest.mark.parametrize("code", [0x0110, 0xA700, 0xC000, 0xFE00, 0x0122, 0x4242])
def test_raise_for_status_raises(code: int) -> None:
    with pytest.raises(StatusError) as info:
        Status(code).raise_for_status()
    assert info.value.status == code
    assert f"0x{code:04X}" in str(info.value)
    assert isinstance(info.value, AiodicomError)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFF))
def test_every_code_is_classified(code: int) -> None:
    status = Status(code)
    assert isinstance(status.category, StatusCategory)
    assert status.description
    # pynetdicom is an independent reading of the same tables.
    theirs = code_to_category(code)
    if theirs != "Unknown":
        assert status.category.name == theirs.upper()
