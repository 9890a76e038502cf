"""DIMSE status codes (PS3.7 annex C, PS3.4 service annexes).

A :class:`Status` *is* its 16-bit code (an ``int`` subclass), so it can be
compared with literals from the standard, used as a dict key and packed with
``struct`` directly, while still answering the questions a caller actually
asks: did it work, is more coming, and what does the code mean. Codes we do
not know are classified by the ranges of PS3.7 annex C instead of raising,
because a peer may legitimately send service-specific codes.
"""

from __future__ import annotations

import enum
from typing import Final

from aiodicom.errors import StatusError

__all__ = [
    "CANCEL",
    "CANNOT_UNDERSTAND",
    "CLASS_INSTANCE_CONFLICT",
    "COERCION_OF_DATA_ELEMENTS",
    "DATA_SET_DOES_NOT_MATCH_SOP_CLASS",
    "DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING",
    "DUPLICATE_INVOCATION",
    "DUPLICATE_SOP_INSTANCE",
    "ELEMENTS_DISCARDED",
    "IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS",
    "INVALID_OBJECT_INSTANCE",
    "MISTYPED_ARGUMENT",
    "MOVE_DESTINATION_UNKNOWN",
    "NOT_AUTHORIZED",
    "NO_SUCH_SOP_CLASS",
    "NO_SUCH_SOP_INSTANCE",
    "OUT_OF_RESOURCES",
    "OUT_OF_RESOURCES_MATCHES",
    "OUT_OF_RESOURCES_SUB_OPERATIONS",
    "PENDING",
    "PENDING_WARNING",
    "PROCESSING_FAILURE",
    "RESOURCE_LIMITATION",
    "SOP_CLASS_NOT_SUPPORTED",
    "SUB_OPERATIONS_COMPLETE_WITH_FAILURES",
    "SUCCESS",
    "UNABLE_TO_PROCESS",
    "UNRECOGNIZED_OPERATION",
    "Status",
    "StatusCategory",
]


class StatusCategory(enum.Enum):
    """The five outcomes PS3.7 annex C sorts every status code into."""

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"
    CANCEL = "cancel"
    PENDING = "pending"


_S = StatusCategory

# Exact codes with their standard meaning and category. Where one code means
# different things in different services (0xB000, 0xA900, 0xC000 ranges) the
# description names both, since the code alone cannot tell which was meant.
_KNOWN: Final[dict[int, tuple[StatusCategory, str]]] = {
    0x0000: (_S.SUCCESS, "Success"),
    # Warnings (PS3.7 C.4, PS3.4 B.2.3, C.4)
    0x0001: (_S.WARNING, "Warning: requested optional attributes are not supported"),
    0x0107: (_S.WARNING, "Warning: attribute list error"),
    0x0116: (_S.WARNING, "Warning: attribute value out of range"),
    0xB000: (
        _S.WARNING,
        "Warning: coercion of data elements (C-STORE), or sub-operations complete "
        "with one or more failures or warnings (C-MOVE/C-GET)",
    ),
    0xB006: (_S.WARNING, "Warning: elements discarded"),
    0xB007: (_S.WARNING, "Warning: data set does not match SOP class"),
    # Failures (PS3.7 C.5)
    0x0105: (_S.FAILURE, "Failure: no such attribute"),
    0x0106: (_S.FAILURE, "Failure: invalid attribute value"),
    0x0110: (_S.FAILURE, "Failure: processing failure"),
    0x0111: (_S.FAILURE, "Failure: duplicate SOP instance"),
    0x0112: (_S.FAILURE, "Failure: no such SOP instance"),
    0x0114: (_S.FAILURE, "Failure: no such argument"),
    0x0115: (_S.FAILURE, "Failure: invalid argument value"),
    0x0117: (_S.FAILURE, "Failure: invalid object instance"),
    0x0118: (_S.FAILURE, "Failure: no such SOP class"),
    0x0119: (_S.FAILURE, "Failure: class-instance conflict"),
    0x0120: (_S.FAILURE, "Failure: missing attribute"),
    0x0121: (_S.FAILURE, "Failure: missing attribute value"),
    0x0122: (_S.FAILURE, "Refused: SOP class not supported"),
    0x0123: (_S.FAILURE, "Failure: no such action"),
    0x0124: (_S.FAILURE, "Refused: not authorized"),
    0x0210: (_S.FAILURE, "Failure: duplicate invocation"),
    0x0211: (_S.FAILURE, "Failure: unrecognized operation"),
    0x0212: (_S.FAILURE, "Failure: mistyped argument"),
    0x0213: (_S.FAILURE, "Failure: resource limitation"),
    # Service-specific failures (PS3.4 B.2.3 storage, C.4 query/retrieve)
    0xA700: (_S.FAILURE, "Refused: out of resources"),
    0xA701: (_S.FAILURE, "Refused: out of resources, unable to calculate number of matches"),
    0xA702: (_S.FAILURE, "Refused: out of resources, unable to perform sub-operations"),
    0xA801: (_S.FAILURE, "Refused: move destination unknown"),
    0xA900: (
        _S.FAILURE,
        "Error: data set does not match SOP class (C-STORE), or identifier does "
        "not match SOP class (C-FIND/C-MOVE/C-GET)",
    ),
    0xC000: (
        _S.FAILURE,
        "Error: cannot understand (C-STORE), or unable to process (C-FIND/C-MOVE/C-GET)",
    ),
    # Cancel and pending
    0xFE00: (_S.CANCEL, "Cancel: operation terminated by a C-CANCEL request"),
    0xFF00: (_S.PENDING, "Pending: matches or sub-operations are continuing"),
    0xFF01: (
        _S.PENDING,
        "Pending: matches are continuing, one or more optional keys were not supported",
    ),
}


def _classify(code: int) -> tuple[StatusCategory, str]:
    """Category and meaning of ``code``, falling back to the annex C ranges."""
    known = _KNOWN.get(code)
    if known is not None:
        return known
    hi = code >> 8
    if hi == 0xA7:
        return _S.FAILURE, f"Refused: out of resources (0x{code:04X})"
    if hi == 0xA9:
        return _S.FAILURE, f"Error: data set or identifier does not match SOP class (0x{code:04X})"
    if 0xC0 <= hi <= 0xCF:
        return _S.FAILURE, f"Error: cannot understand / unable to process (0x{code:04X})"
    if 0xB0 <= hi <= 0xBF:
        return _S.WARNING, f"Warning (service-specific code 0x{code:04X})"
    if 0xA0 <= hi <= 0xAF:
        return _S.FAILURE, f"Failure (service-specific code 0x{code:04X})"
    # Anything else is unknown: treating it as a failure is the only safe reading,
    # success or pending would make the caller trust or wait for something.
    return _S.FAILURE, f"Failure (unrecognized status code 0x{code:04X})"


class Status(int):
    """A DIMSE status code that knows its category and standard meaning.

    Equal to (and hashes like) its plain integer code. Valid codes are
    0..0xFFFF; anything else is a programming error and raises ``ValueError``.
    """

    #: The peer's Error Comment (0000,0902), free text explaining a warning or failure.
    error_comment: str | None = None
    #: What the sender changed in the data set before sending it (padding odd-length
    #: values, decompressing for a peer that accepted no compressed context).
    local_changes: tuple[str, ...] = ()

    def __new__(
        cls, code: int, *, error_comment: str | None = None, local_changes: tuple[str, ...] = ()
    ) -> Status:
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"a DIMSE status is a 16-bit code, got {code!r}")
        status = super().__new__(cls, code)
        # Only set when given: the common case keeps the class defaults and no per-instance values.
        if error_comment:
            status.error_comment = error_comment
        if local_changes:
            status.local_changes = local_changes
        return status

    def with_local_changes(self, changes: tuple[str, ...]) -> Status:
        """The same status and comment, noting what the sender changed before sending."""
        if not changes:
            return self
        return Status(self, error_comment=self.error_comment, local_changes=self.local_changes + changes)

    @property
    def code(self) -> int:
        """The code as a plain ``int``."""
        return int(self)

    @property
    def category(self) -> StatusCategory:
        """Success, warning, failure, cancel or pending (PS3.7 annex C)."""
        return _classify(self)[0]

    @property
    def description(self) -> str:
        """The standard's meaning of the code, for logs and error messages."""
        return _classify(self)[1]

    @property
    def is_success(self) -> bool:
        """True only for 0x0000."""
        return self == 0

    @property
    def is_warning(self) -> bool:
        """The operation was done but not exactly as asked."""
        return self.category is _S.WARNING

    @property
    def is_failure(self) -> bool:
        """The operation was refused or failed."""
        return self.category is _S.FAILURE

    @property
    def is_pending(self) -> bool:
        """More responses to the same request will follow."""
        return self == 0xFF00 or self == 0xFF01

    @property
    def is_cancel(self) -> bool:
        """The operation stopped because the requester cancelled it."""
        return self == 0xFE00

    def raise_for_status(self) -> None:
        """Raise :class:`~aiodicom.errors.StatusError` for a failure or cancel.

        Success, warning and pending return quietly: a warning means the data
        were stored (maybe coerced) and the caller should not lose them.
        """
        category = self.category
        if category is _S.FAILURE or category is _S.CANCEL:
            raise StatusError(f"status {self}", int(self))

    def __repr__(self) -> str:
        return f"Status(0x{int(self):04X})"

    def __str__(self) -> str:
        comment = f": {self.error_comment}" if self.error_comment else ""
        return f"0x{int(self):04X} ({self.description}){comment}"


SUCCESS: Final = Status(0x0000)
# Warnings
COERCION_OF_DATA_ELEMENTS: Final = Status(0xB000)
SUB_OPERATIONS_COMPLETE_WITH_FAILURES: Final = Status(0xB000)
ELEMENTS_DISCARDED: Final = Status(0xB006)
DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Final = Status(0xB007)
# Failures
PROCESSING_FAILURE: Final = Status(0x0110)
DUPLICATE_SOP_INSTANCE: Final = Status(0x0111)
NO_SUCH_SOP_INSTANCE: Final = Status(0x0112)
INVALID_OBJECT_INSTANCE: Final = Status(0x0117)
NO_SUCH_SOP_CLASS: Final = Status(0x0118)
CLASS_INSTANCE_CONFLICT: Final = Status(0x0119)
SOP_CLASS_NOT_SUPPORTED: Final = Status(0x0122)
NOT_AUTHORIZED: Final = Status(0x0124)
DUPLICATE_INVOCATION: Final = Status(0x0210)
UNRECOGNIZED_OPERATION: Final = Status(0x0211)
MISTYPED_ARGUMENT: Final = Status(0x0212)
RESOURCE_LIMITATION: Final = Status(0x0213)
OUT_OF_RESOURCES: Final = Status(0xA700)
OUT_OF_RESOURCES_MATCHES: Final = Status(0xA701)
OUT_OF_RESOURCES_SUB_OPERATIONS: Final = Status(0xA702)
MOVE_DESTINATION_UNKNOWN: Final = Status(0xA801)
DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Final = Status(0xA900)
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = Status(0xA900)
CANNOT_UNDERSTAND: Final = Status(0xC000)
UNABLE_TO_PROCESS: Final = Status(0xC000)
# Cancel / pending
CANCEL: Final = Status(0xFE00)
PENDING: Final = Status(0xFF00)
PENDING_WARNING: Final = Status(0xFF01)
