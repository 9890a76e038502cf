"""UIDs aiodicom needs by name: transfer syntaxes, SOP classes, our own root."""

from __future__ import annotations

import uuid

# Our implementation identity. "2.25." UIDs are derived from a UUID (PS3.5 B.2)
# and need no registered root; this one is fixed for aiodicom.
UID_ROOT = "2.25."
IMPLEMENTATION_CLASS_UID = "2.25.176478331178914385496393620547474938716"
IMPLEMENTATION_VERSION_NAME = "AIODICOM_010"

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

#: Uncompressed transfer syntaxes in the order an SCP prefers them.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


def new_uid() -> str:
    """Return a fresh globally unique UID under the 2.25 (UUID) root."""
    return UID_ROOT + str(uuid.uuid4().int)


def is_compressed(transfer_syntax: str) -> bool:
    """True for encapsulated (compressed pixel data) transfer syntaxes.

    Deflate compresses the whole data set but is not encapsulated, so it counts
    as uncompressed here: its pixel data are native once inflated.
    """
    return transfer_syntax not in UNCOMPRESSED_TRANSFER_SYNTAXES and (
        transfer_syntax != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    )
