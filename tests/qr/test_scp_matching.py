"""C-FIND matching (PS3.4 C.2.2.2) as pure functions, table-driven; and the identifier codec."""

from __future__ import annotations

import pytest

from aiodicom.codec.identifier import decode_identifier, encode_identifier
from aiodicom.codec.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.dimse.services.models import PATIENT_ROOT, STUDY_ROOT, QueryLevel
from aiodicom.errors import MalformedDatasetError
from aiodicom.qr.matching import MatchingKeyError, compile_key, matches
from aiodicom.qr.query import compile_query

# (VR, query value, stored value, expected)
CASES = [
    # universal matching: empty or "*" alone matches everything, empty values included
    ("LO", "", "anything", True),
    ("LO", "", "", True),
    ("LO", "*", "", True),
    ("UI", "", "1.2.3", True),
    # single value matching, exact and case-sensitive except PN
    ("LO", "ABC", "ABC", True),
    ("LO", "ABC", "abc", False),
    ("LO", "ABC", "ABCD", False),
    ("LO", "ABC ", "ABC", True),  # padding is not significant
    ("LO", "ABC", "", False),  # an empty stored value matches only universal matching
    ("CS", "CT", "ct", False),
    ("PN", "DOE^JOHN", "doe^john", True),
    ("PN", "DOE^JOHN", "DOE^JOHN^^", True),  # trailing empty components
    ("PN", "DOE^JOHN", "DOE^JANE", False),
    # wildcards
    ("PN", "DOE*", "Doe^John", True),
    ("PN", "*JOHN", "DOE^JOHN", True),
    ("PN", "D?E^*", "DOE^X", True),
    ("PN", "D?E^*", "DOOE^X", False),
    ("LO", "A*C", "ABBBC", True),
    ("LO", "A*C", "abbbc", False),  # not PN: case-sensitive
    ("LO", "A?C", "AC", False),
    ("LO", "a.c*", "abcd", False),  # regular expression characters are literal
    ("LO", "a.c*", "a.cd", True),
    ("SH", "12*", "123", True),
    # no wildcards in UIDs, dates, numbers
    ("UI", "1.2.*", "1.2.3", False),
    ("IS", "1?", "12", False),
    # list of UID matching
    ("UI", "1.2.3\\1.2.4", "1.2.4", True),
    ("UI", "1.2.3\\1.2.4", "1.2.5", False),
    ("UI", "1.2.3", "1.2.3", True),
    # multiple values (C.2.2.2.8) and multi-valued stored attributes
    ("CS", "CT\\MR", "MR", True),
    ("CS", "CT", "MR\\CT", True),
    ("CS", "US", "MR\\CT", False),
    # numbers kept as text
    ("IS", "7", "07", True),
    ("IS", "7", "8", False),
    # date ranges
    ("DA", "20200101", "20200101", True),
    ("DA", "20200101", "20200102", False),
    ("DA", "20200101-20201231", "20200615", True),
    ("DA", "20200101-20201231", "20210101", False),
    ("DA", "20200101-20201231", "20201231", True),
    ("DA", "-20200101", "19991231", True),
    ("DA", "-20200101", "20200102", False),
    ("DA", "20200101-", "20300101", True),
    ("DA", "20200101-", "", False),
    # time ranges: partial values cover their unit
    ("TM", "1000-1200", "113000", True),
    ("TM", "1000-1200", "120059.5", True),
    ("TM", "1000-1200", "130000", False),
    ("TM", "10-", "095959", False),
    ("TM", "-10", "105959.999", True),
    ("TM", "1030", "103000", True),
    ("TM", "103000.5-", "103000.6", True),
    # date-times, with an offset
    ("DT", "20200101-20200102", "20200101120000", True),
    ("DT", "20200101-20200102", "20200103", False),
    ("DT", "2020-", "20211231235959+0100", True),
]


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), CASES)
def test_matching(vr: str, query: str, stored: str, expected: bool) -> None:
    assert matches(compile_key(vr, query), stored) is expected


@pytest.mark.parametrize(
    ("vr", "query"),
    [
        ("DA", "2010-2030"),  # years are not dates
        ("DA", "20201301"),  # month 13
        ("DA", "2020-01-01"),
        ("DA", "20200101-20200102-20200103"),
        ("DA", "20201231-20200101"),  # ends before it starts
        ("TM", "25x"),
        ("TM", "1200-1000"),
        ("DT", "yesterday"),
    ],
)
def test_malformed_ranges_name_the_tag(vr: str, query: str) -> None:
    with pytest.raises(MatchingKeyError) as caught:
        compile_key(vr, query, 0x00080020)
    assert caught.value.tag == 0x00080020
    assert "(0008,0020)" in str(caught.value)


def _identifier(*elements: tuple[int, str, str]) -> dict[int, tuple[str, bytes]]:
    return {tag: (vr, value.encode()) for tag, vr, value in elements}


def test_query_levels_and_return_keys() -> None:
    identifier = _identifier(
        (0x00080052, "CS", "SERIES"),
        (0x0020000D, "UI", "1.2.3\\1.2.4"),
        (0x00100010, "PN", "DOE*"),
        (0x00080060, "CS", ""),
        (0x00080018, "UI", ""),  # below the level: returned empty, never matched
        (0x00091001, "LO", "private"),  # unknown: returned empty
    )
    query = compile_query(identifier, STUDY_ROOT)
    assert query.level is QueryLevel.SERIES
    assert set(query.predicates) == {"StudyInstanceUID", "PatientName"}
    assert query.exact == {"StudyInstanceUID": ["1.2.3", "1.2.4"]}
    assert query.template[0x00080018][1] is None
    assert query.template[0x00091001][1] is None
    assert query.template[0x00080060][1] is not None
    assert query.unsupported == (0x00091001,)  # answered with a warning status (0xFF01)


@pytest.mark.parametrize(
    ("level", "model"),
    [("", STUDY_ROOT), ("PATIENT", STUDY_ROOT), ("FRAME", PATIENT_ROOT)],
)
def test_a_level_the_model_lacks_is_refused(level: str, model: object) -> None:
    identifier = _identifier((0x00080052, "CS", level)) if level else {}
    with pytest.raises(MatchingKeyError) as caught:
        compile_query(identifier, model)  # type: ignore[arg-type]
    assert caught.value.tag == 0x00080052


@pytest.mark.parametrize("syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN])
def test_identifier_round_trip(syntax: str) -> None:
    elements = [
        (0x00080052, "CS", b"STUDY "),
        (0x0020000D, "UI", b"1.2.3\0"),
        (0x00100010, "PN", "Müller^Jörg".encode()),
        (0x00081110, "SQ", b""),
        (0x00201208, "IS", b"12"),
    ]
    encoded = encode_identifier(elements, syntax)
    decoded = decode_identifier(encoded, syntax)
    assert [tag for tag in decoded] == sorted(tag for tag, _, _ in elements)
    for tag, vr, value in elements:
        assert decoded[tag][1].rstrip(b" \0") == value.rstrip(b" \0")
        assert decoded[tag][0] == vr


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x00\x52\x00CS\x10\x00STUDY",  # value runs past the end
        b"\x08\x00\x52\x00",  # header cut short
        b"\x08\x00\x52\x00Q!\x02\x00AB",  # not a VR
        b"\x08\x00\x52\x00CS\x02\x00AB" * 5000,  # too many elements
    ],
)
def test_malformed_identifiers_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedDatasetError):
        decode_identifier(data, EXPLICIT_VR_LITTLE_ENDIAN)
