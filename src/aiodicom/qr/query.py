"""A C-FIND identifier made into a query on the index, and each match made into an answer.

:func:`compile_query` reads the Query/Retrieve Level, compiles every key the index knows
(:mod:`aiodicom.qr.matching`) and keeps the request's elements as the answer's template:
every key of the request is returned, filled when the index knows it and empty otherwise
(PS3.4 C.4.1.1.3.2). Keys of any level at or above the query level are matched (relational
matching is a superset of hierarchical, and the common SCUs send only the latter); keys
below the level are returned empty. Unique keys given as values narrow the index search
itself (``IN`` on an indexed column), so a query for one study never reads the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from aiodicom.codec.identifier import Identifier
from aiodicom.codec.scan import text
from aiodicom.dimse.services.models import InformationModel, QueryLevel, UnknownModelError
from aiodicom.qr.index import Attribute, attribute
from aiodicom.qr.matching import MatchingKeyError, Predicate, compile_key

__all__ = ["Query", "compile_query", "QUERY_RETRIEVE_LEVEL", "SPECIFIC_CHARACTER_SET"]

QUERY_RETRIEVE_LEVEL: Final = 0x00080052
SPECIFIC_CHARACTER_SET: Final = 0x00080005
RETRIEVE_AE_TITLE: Final = 0x00080054
_ORDER: Final = (QueryLevel.PATIENT, QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE)
#: Elements of a request that the answer fills without the index.
_ANSWERED_ELSEWHERE: Final = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE})
#: Unique keys whose values may narrow the index search itself (no wildcards in UIDs).
_NARROWING: Final = frozenset({"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})


@dataclass(slots=True)
class Query:
    """A compiled C-FIND (or C-MOVE/C-GET) identifier."""

    level: QueryLevel
    #: Indexed attributes with a matching value -> predicate.
    predicates: dict[str, Predicate] = field(default_factory=dict)
    #: Unique keys given as values (no wildcards): keyword -> the values allowed.
    exact: dict[str, list[str]] = field(default_factory=dict)
    #: The request's elements: tag -> (VR, the attribute the index fills it from, or None).
    template: dict[int, tuple[str, Attribute | None]] = field(default_factory=dict)
    #: Computed attributes (counts, ModalitiesInStudy) the answer or the matching needs.
    computed: tuple[str, ...] = ()
    #: Keys of the request the index does not hold (returned empty): the answers are
    #: then pending with a warning, 0xFF01 (PS3.4 C.4.1.1.4).
    unsupported: tuple[int, ...] = ()


def compile_query(identifier: Identifier, model: InformationModel, *, retrieve: bool = False) -> Query:
    """Compile an identifier for ``model``; bad keys raise :class:`MatchingKeyError`.

    For a retrieve (``retrieve``), only the unique keys are matched: PS3.4 C.4.2.2.1 and
    C.4.3.2.1 let a C-MOVE or C-GET carry nothing else.
    """
    level_element = identifier.get(QUERY_RETRIEVE_LEVEL)
    if level_element is None:
        raise MatchingKeyError("the identifier lacks (0008,0052) Query/Retrieve Level", QUERY_RETRIEVE_LEVEL)
    try:
        level = model.level(text(level_element[1]))
    except UnknownModelError as exc:
        raise MatchingKeyError(str(exc), QUERY_RETRIEVE_LEVEL) from None
    query = Query(level)
    depth = _ORDER.index(level)
    computed: list[str] = []
    unsupported: list[int] = []
    for tag, (vr, raw) in identifier.items():
        known = attribute(tag)
        if known is None and tag not in _ANSWERED_ELSEWHERE:
            unsupported.append(tag)
        if known is not None and (
            _ORDER.index(known.level) > depth or (not known.stored and known.level is not level)
        ):
            known = None  # below the query level (or a count of another level): returned empty
        query.template[tag] = (vr, known)
        if known is None or vr == "SQ" or tag == QUERY_RETRIEVE_LEVEL:
            continue
        if retrieve and known.keyword not in _NARROWING:
            continue
        value = text(raw)
        predicate = compile_key(known.vr, value, tag)
        if not known.stored:
            computed.append(known.keyword)
        if predicate is None:
            continue
        query.predicates[known.keyword] = predicate
        if known.keyword in _NARROWING and "*" not in value and "?" not in value:
            query.exact[known.keyword] = [part.strip() for part in value.split("\\") if part.strip()]
    query.computed = tuple(dict.fromkeys(computed))
    query.unsupported = tuple(unsupported)
    return query


def answer(
    query: Query, row: Mapping[str, str], charset: str | None, retrieve_ae: str = ""
) -> list[tuple[int, str, bytes]]:
    """The identifier answering one matching row: the request's keys with their values.

    Text is encoded as UTF-8; when any value is not ASCII, Specific Character Set is
    ISO_IR 192 (``charset`` is what the answer then carries; None when all is ASCII).
    Retrieve AE Title, when asked, is ``retrieve_ae`` (where the match can be retrieved).
    """
    elements: list[tuple[int, str, bytes]] = []
    for tag, (vr, known) in query.template.items():
        if tag == QUERY_RETRIEVE_LEVEL:
            elements.append((tag, vr, query.level.value.encode()))
        elif tag == RETRIEVE_AE_TITLE:
            elements.append((tag, vr, retrieve_ae.encode()))
        elif tag == SPECIFIC_CHARACTER_SET:
            continue
        else:
            value = row.get(known.keyword, "") if known is not None else ""
            elements.append((tag, vr, value.encode("utf-8")))
    if charset is not None:
        elements.append((SPECIFIC_CHARACTER_SET, "CS", charset.encode()))
    return elements
