"""AE titles (PS3.5 table 6.2-1, value representation AE): the one rule used everywhere.

An AE title is at most 16 characters of the default repertoire (printable
ASCII), without backslash (the value separator) or control characters, and not
empty or all spaces; leading and trailing spaces are not significant. The same
rule decides our own titles at start (:func:`normalize_ae_title`), what an
acceptor answers to a peer's titles (:func:`ae_title_problem`, reasons 3 and 7),
the A-ASSOCIATE PDU fields and the Part 10 Source AE Title. Checking one rule
in one place is what keeps a title we accept from failing later (a backslash
accepted at association time made every C-STORE fail when its Source AE Title
was written).
"""

from __future__ import annotations

from aiodicom.errors import InvalidAETitleError

#: The longest AE title; also the width of the A-ASSOCIATE PDU fields.
AE_TITLE_LENGTH = 16

#: Characters an AE title may hold: printable ASCII except the backslash.
_ALLOWED = frozenset(chr(code) for code in range(0x20, 0x7F)) - {"\\"}


def _describe(char: str) -> str:
    if char == "\\":
        return "a backslash"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"control character {char!r}"
    return f"non-ASCII character {char!r}"


def ae_title_problem(title: object) -> str | None:
    """Why ``title`` is not a valid AE title (a phrase), or None when it is valid."""
    if not isinstance(title, str):
        return f"must be text, not {type(title).__name__}"
    value = title.strip(" ")
    if not value:
        return "is empty or all spaces"
    if len(value) > AE_TITLE_LENGTH:
        return f"has {len(value)} characters (at most {AE_TITLE_LENGTH})"
    bad = next((char for char in value if char not in _ALLOWED), None)
    if bad is not None:
        return f"contains {_describe(bad)}"
    return None


def normalize_ae_title(title: object, what: str = "AE title") -> str:
    """``title`` without its insignificant spaces, or :class:`InvalidAETitleError`.

    ``what`` names the option in the one-line message, e.g. ``"called AE title"``.
    """
    problem = ae_title_problem(title)
    if problem is not None:
        raise InvalidAETitleError(f"{what} {title!r} {problem}")
    assert isinstance(title, str)
    return title.strip(" ")


__all__ = ["AE_TITLE_LENGTH", "ae_title_problem", "normalize_ae_title"]
