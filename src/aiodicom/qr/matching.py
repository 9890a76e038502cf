"""C-FIND attribute matching (PS3.4 C.2.2.2) as pure functions: a key in, a predicate out.

:func:`compile_key` turns one query key (its VR and text value) into a predicate on a
stored value, or ``None`` for universal matching (an empty value, or ``*`` alone):

- single value matching, exact; PN case-insensitive (C.2.2.2.1 allows it);
- wildcards ``*`` and ``?`` (C.2.2.2.4), except for UIDs, dates, times and numbers;
- list of UID matching (C.2.2.2.2): any of ``a\\b\\c``;
- range matching of DA, TM and DT (C.2.2.2.5): ``a-b``, ``-b``, ``a-``; a partial time or
  date-time end covers its whole unit (``-12`` ends at 12:59:59.999999);
- multiple value matching (C.2.2.2.8): ``CT\\MR`` matches either, and a stored
  multi-valued attribute (ModalitiesInStudy) matches when any of its values does.

A stored value that is empty matches only universal matching. A key that cannot be a
valid query (a malformed date, a range where none is allowed) raises
:class:`MatchingKeyError` naming the tag, which the SCP answers with a failure status.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from aiodicom.codec.vr import BULK_VRS, NUMERIC_VR_NAMES, TEMPORAL_VR_NAMES
from aiodicom.errors import AiodicomError

__all__ = ["MatchingKeyError", "Predicate", "compile_key", "matches"]

#: A compiled key: does this stored value (multiple values joined by ``\\``) match?
Predicate = Callable[[str], bool]


class MatchingKeyError(AiodicomError, ValueError):
    """A query key that is not a valid matching key; ``tag`` is the offending element."""

    def __init__(self, message: str, tag: int = 0) -> None:
        super().__init__(message)
        self.tag = tag


#: VRs matched by ranges, and without wildcards: the dates and times.
_RANGED: Final = TEMPORAL_VR_NAMES
#: VRs for which ``*`` and ``?`` are plain characters (the list of C.2.2.2.4: a matching rule).
_NO_WILDCARDS: Final = frozenset({"UI", "AS", "AT"}) | TEMPORAL_VR_NAMES | NUMERIC_VR_NAMES | BULK_VRS
#: Numbers kept as text: compared as numbers when both sides parse.
_NUMERIC_TEXT: Final = frozenset({"IS", "DS"})

_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DATETIME = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")
#: Full precision of each ranged VR, so a partial end value covers its whole unit.
_FULL: Final = {"TM": ("000000.000000", "595959.999999"), "DT": ("00000000000000.000000", "99999999999999.999999")}


def compile_key(vr: str, value: str, tag: int = 0) -> Predicate | None:
    """The predicate of one query key, or None for universal matching."""
    value = value.strip(" \0")
    if value == "" or value == "*":
        return None
    values = [part.strip(" ") for part in value.split("\\")]
    predicates = [_compile_one(vr, part, tag) for part in values]
    if len(predicates) == 1:
        return _any_stored(predicates[0])
    return _any_stored(lambda stored: any(predicate(stored) for predicate in predicates))


def matches(predicate: Predicate | None, stored: str | None) -> bool:
    """Whether a stored value (``None``: absent) satisfies a compiled key."""
    if predicate is None:
        return True
    return bool(stored) and predicate(stored or "")


def _any_stored(predicate: Predicate) -> Predicate:
    def check(stored: str) -> bool:
        if "\\" not in stored:
            return predicate(stored.strip(" "))
        return any(predicate(part.strip(" ")) for part in stored.split("\\"))

    return check


def _compile_one(vr: str, value: str, tag: int) -> Predicate:
    if vr in _RANGED:
        return _range(vr, value, tag)
    if vr in _NUMERIC_TEXT:
        return _number(value)
    if vr == "PN":
        value = _name(value)
    if vr not in _NO_WILDCARDS and ("*" in value or "?" in value):
        return _wildcard(value, vr == "PN")
    if vr == "PN":
        folded = value.casefold()
        return lambda stored: _name(stored).casefold() == folded
    return lambda stored: stored == value


def _name(value: str) -> str:
    """A person name without trailing empty components (``DOE^JOHN^^`` is ``DOE^JOHN``)."""
    return value.rstrip("^ ")


def _wildcard(pattern: str, fold: bool) -> Predicate:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    compiled = re.compile(regex, re.DOTALL | (re.IGNORECASE if fold else 0))
    if fold:
        return lambda stored: compiled.fullmatch(_name(stored)) is not None
    return lambda stored: compiled.fullmatch(stored) is not None


def _number(value: str) -> Predicate:
    try:
        wanted = float(value)
    except ValueError:
        return lambda stored: stored == value

    def check(stored: str) -> bool:
        try:
            return float(stored) == wanted
        except ValueError:
            return False

    return check


def _range(vr: str, value: str, tag: int) -> Predicate:
    if value.count("-") > 1 + (vr == "DT") * 2:  # a DT may carry -ZZXX offsets
        raise MatchingKeyError(f"{_label(tag)}: {value!r} is not a {vr} value or range", tag)
    low, dash, high = _split_range(vr, value)
    low = _checked(vr, low, tag, value) if low else ""
    high = _checked(vr, high, tag, value) if high else ""
    if not dash:
        return lambda stored: _normal(vr, stored, 0) == _normal(vr, low, 0)
    start, end = _normal(vr, low, 0) if low else "", _normal(vr, high, 1) if high else ""
    if start and end and start > end:
        raise MatchingKeyError(f"{_label(tag)}: range {value!r} ends before it starts", tag)

    def check(stored: str) -> bool:
        point = _normal(vr, stored, 0)
        return (not start or point >= start) and (not end or point <= end)

    return check


def _split_range(vr: str, value: str) -> tuple[str, str, str]:
    """``(low, "-", high)``, or ``(value, "", "")`` for a single value.

    A DT may carry a ``-ZZXX`` offset of its own: the range dash is the one with a valid
    date-time (or nothing) on both sides.
    """
    if vr != "DT":
        return value.partition("-")
    for index, char in enumerate(value):
        left, right = value[:index], value[index + 1 :]
        if char == "-" and all(not side or _DATETIME.fullmatch(side) for side in (left, right)):
            return left, "-", right
    return value, "", ""


#: What a date, time or date-time in a query may look like (PS3.5 6.2, as a matching rule).
_FORMATS: Final = {"DA": _DATE, "TM": _TIME, "DT": _DATETIME}


def _checked(vr: str, value: str, tag: int, whole: str) -> str:
    if not _FORMATS[vr].fullmatch(value) or (vr == "DA" and not _plausible_date(value)):
        raise MatchingKeyError(f"{_label(tag)}: {whole!r} is not a valid {vr} value or range", tag)
    return value


def _plausible_date(value: str) -> bool:
    month, day = int(value[4:6]), int(value[6:8])
    return 1 <= month <= 12 and 1 <= day <= 31


def _normal(vr: str, value: str, end: int) -> str:
    """A comparable form: DA as is; TM and DT padded to full precision (zeros, or nines at an end)."""
    full = _FULL.get(vr)
    if full is None:
        return value
    if vr == "DT":
        value = value[:-5] if len(value) > 5 and value[-5] in "+-" else value
    value = value.replace(":", "")
    if "." not in value and len(value) < len(full[end]) - 7:
        return value + full[end][len(value) :]
    whole, _, fraction = value.partition(".")
    digits = len(full[end]) - 7
    whole = whole + full[end][len(whole) : digits]
    return f"{whole}.{(fraction + full[end][digits + 1 + len(fraction) :])[:6]}"


def _label(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
