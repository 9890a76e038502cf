"""The value representations of PS3.5 table 6.2-1: the one VR table of aiodicom.

Every module that needs to know something about a VR (its explicit-VR header size,
whether it may have an undefined length, how it is padded, whether its value is a
number or bulk bytes) reads it from :data:`VR_TABLE` through the sets derived here,
so the readers, the writers and the factory can never disagree about a VR (they did:
three copies of the "long header" set differed on SV and UV).
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "BULK_VRS",
    "LONG_VRS",
    "LONG_VR_NAMES",
    "NUMBER_CODES",
    "NUMERIC_VR_NAMES",
    "SHORT_VRS",
    "TEMPORAL_VR_NAMES",
    "UNDEFINED_LENGTH_VRS",
    "VR_TABLE",
    "VRInfo",
    "WORD_VRS",
    "pad_byte",
]


class VRInfo(NamedTuple):
    """What the codecs need to know about one VR."""

    #: Explicit VR encoding has 2 reserved bytes and a 32-bit length (PS3.5 7.1.2).
    long_header: bool
    #: The byte that pads an odd-length value to even length (PS3.5 6.2).
    pad: bytes
    #: The value is a number (or numbers), whether binary or as text.
    numeric: bool = False
    #: The value is opaque bytes (shown by length, never printed).
    bulk: bool = False
    #: The value may have an undefined length (sequences, encapsulated pixel data, UN holding a sequence).
    undefined_length: bool = False
    #: A date or time (DA, DT, TM).
    temporal: bool = False
    #: The ``struct`` code of one word of an "other" VR (OW, OF, OL, OD, OV), which a
    #: change of byte order swaps; "" for the rest.
    word: str = ""
    #: The ``struct`` code of one value of a binary number VR (US, SS, UL, FL...); "" for the rest.
    number: str = ""


_SPACE, _NUL = b" ", b"\0"

#: PS3.5 table 6.2-1, one row per VR.
VR_TABLE: Final[dict[str, VRInfo]] = {
    "AE": VRInfo(False, _SPACE),
    "AS": VRInfo(False, _SPACE),
    "AT": VRInfo(False, _NUL),
    "CS": VRInfo(False, _SPACE),
    "DA": VRInfo(False, _SPACE, temporal=True),
    "DS": VRInfo(False, _SPACE, numeric=True),
    "DT": VRInfo(False, _SPACE, temporal=True),
    "FD": VRInfo(False, _NUL, numeric=True, number="d"),
    "FL": VRInfo(False, _NUL, numeric=True, number="f"),
    "IS": VRInfo(False, _SPACE, numeric=True),
    "LO": VRInfo(False, _SPACE),
    "LT": VRInfo(False, _SPACE),
    "OB": VRInfo(True, _NUL, bulk=True, undefined_length=True),
    "OD": VRInfo(True, _NUL, bulk=True, word="d"),
    "OF": VRInfo(True, _NUL, bulk=True, word="f"),
    "OL": VRInfo(True, _NUL, bulk=True, word="I"),
    "OV": VRInfo(True, _NUL, bulk=True, word="Q"),
    "OW": VRInfo(True, _NUL, bulk=True, undefined_length=True, word="H"),
    "PN": VRInfo(False, _SPACE),
    "SH": VRInfo(False, _SPACE),
    "SL": VRInfo(False, _NUL, numeric=True, number="i"),
    "SQ": VRInfo(True, _NUL, undefined_length=True),
    "SS": VRInfo(False, _NUL, numeric=True, number="h"),
    "ST": VRInfo(False, _SPACE),
    "SV": VRInfo(True, _NUL, numeric=True, number="q"),
    "TM": VRInfo(False, _SPACE, temporal=True),
    "UC": VRInfo(True, _SPACE),
    "UI": VRInfo(False, _NUL),
    "UL": VRInfo(False, _NUL, numeric=True, number="I"),
    "UN": VRInfo(True, _NUL, bulk=True, undefined_length=True),
    "UR": VRInfo(True, _SPACE),
    "US": VRInfo(False, _NUL, numeric=True, number="H"),
    "UT": VRInfo(True, _SPACE),
    "UV": VRInfo(True, _NUL, numeric=True, number="Q"),
}

#: VR names (str) whose explicit encoding has a 4-byte length.
LONG_VR_NAMES: Final = frozenset(vr for vr, info in VR_TABLE.items() if info.long_header)
#: The same as two ASCII bytes, as the readers meet them in a buffer.
LONG_VRS: Final = frozenset(vr.encode("ascii") for vr in LONG_VR_NAMES)
#: VRs (bytes) whose explicit encoding has a 2-byte length.
SHORT_VRS: Final = frozenset(vr.encode("ascii") for vr, info in VR_TABLE.items() if not info.long_header)
#: VRs (bytes) that may have an undefined length.
UNDEFINED_LENGTH_VRS: Final = frozenset(
    vr.encode("ascii") for vr, info in VR_TABLE.items() if info.undefined_length
)
#: VR names whose value is a number.
NUMERIC_VR_NAMES: Final = frozenset(vr for vr, info in VR_TABLE.items() if info.numeric)
#: VR names whose value is opaque bytes.
BULK_VRS: Final = frozenset(vr for vr, info in VR_TABLE.items() if info.bulk)
#: VR names of dates and times.
TEMPORAL_VR_NAMES: Final = frozenset(vr for vr, info in VR_TABLE.items() if info.temporal)
#: "Other" VR name -> ``struct`` code of its words (swapped when the byte order changes).
WORD_VRS: Final = {vr: info.word for vr, info in VR_TABLE.items() if info.word}
#: Binary number VR name -> the ``struct`` code of one value.
NUMBER_CODES: Final = {vr: info.number for vr, info in VR_TABLE.items() if info.number}


def pad_byte(vr: str) -> bytes:
    """The byte that pads an odd-length value of ``vr`` (space for text, NUL otherwise)."""
    info = VR_TABLE.get(vr)
    return info.pad if info is not None else _SPACE
