"""Exception hierarchy.

Every error aiodicom raises on purpose derives from :class:`AiodicomError`, so
an application can tell our failures (bad peer, refused association, timeout)
apart from bugs, and the CLI can print them as one line instead of a traceback.
This module imports nothing, so every layer can import it without cycles.
"""


class AiodicomError(Exception):
    """Base class of all errors raised on purpose by aiodicom."""


# --- Upper Layer --------------------------------------------------------------


class ProtocolError(AiodicomError):
    """The peer broke PS3.8 (malformed PDU, unexpected PDU in this state, ...).

    ``abort_reason`` is the A-ABORT reason (PS3.8 table 9-26) we send because
    of it: 0 not specified, 1 unrecognized PDU, 2 unexpected PDU,
    4 unrecognized PDU parameter, 5 unexpected PDU parameter,
    6 invalid PDU parameter value.
    """

    def __init__(self, message: str, abort_reason: int = 0) -> None:
        super().__init__(message)
        self.abort_reason = abort_reason


class PDUTooLargeError(ProtocolError):
    """A PDU announced more bytes than our hard cap; we abort without reading them."""


class InvalidPortError(AiodicomError, ValueError):
    """A TCP port outside 1-65535 (0 allowed only to listen on any free port)."""


class AssociationError(AiodicomError):
    """The association could not be used (closed, aborted, not established)."""


# A-ASSOCIATE-RJ source and reason texts (PS3.8 table 9-21), keyed by (source, reason).
_RJ_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_RJ_SOURCES = {1: "service user", 2: "service provider (ACSE)", 3: "service provider (presentation)"}
_RJ_RESULTS = {1: "permanently", 2: "transiently"}


def describe_rejection(result: int, source: int, reason: int) -> str:
    """A one-line human explanation of an A-ASSOCIATE-RJ (PS3.8 table 9-21).

    It lives here, not in :mod:`aiodicom.ul.pdu`, so that this module imports nothing
    and every layer can import it without cycles.
    """
    kind = _RJ_RESULTS.get(result, f"(result {result})")
    why = _RJ_REASONS.get((source, reason), f"reason {reason}")
    return f"association rejected {kind} by {_RJ_SOURCES.get(source, f'source {source}')}: {why}"


class AssociationRejected(AssociationError):
    """The peer answered our A-ASSOCIATE-RQ with A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(describe_rejection(result, source, reason))
        self.result = result
        self.source = source
        self.reason = reason


class AssociationAborted(AssociationError):
    """The association ended with an A-ABORT (from the peer or from us)."""

    def __init__(self, message: str, source: int = 0, reason: int = 0) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


class DicomTimeoutError(AiodicomError, TimeoutError):
    """A network wait (connect, ACSE, DIMSE, idle, ARTIM) ran out of time."""


class InvalidAETitleError(AiodicomError, ValueError):
    """An AE title breaks PS3.5's AE value representation.

    At most 16 characters of the default repertoire, no backslash, no control
    character, not empty or all spaces (leading and trailing spaces do not
    count). Raised for our own titles (``Server(ae_title=...)``, ``connect()``,
    ``--aet``/``--aec``) before any connection is made, so a typo is a clear
    error at start instead of a server that rejects everyone.
    """


# --- DIMSE --------------------------------------------------------------------


class ConfigurationError(AiodicomError, ValueError):
    """Options that cannot work together (e.g. a memory budget below the PDU cap), found at start."""


class DimseError(AiodicomError):
    """A DIMSE message was malformed or could not be exchanged."""


class NoPresentationContext(DimseError):
    """No accepted presentation context fits what the caller wants to send."""


class StatusError(DimseError):
    """A DIMSE operation ended with a failure status (raised by ``raise_for_status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --- Data ---------------------------------------------------------------------


class DicomFileError(AiodicomError):
    """A file or byte string is not a DICOM data set we can read."""


class MalformedDatasetError(DicomFileError):
    """A data set's elements do not fit together: cut short, garbage, lengths past the end.

    Raised by the structure walk (:mod:`aiodicom.codec.walk`) that a receiver
    runs before acknowledging a data set and a sender runs before sending a
    file. ``offset`` is where the problem was found, in data set bytes (after
    the file meta; inflated bytes for a deflated data set).
    """

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


# --- Codec and DIMSE command set (byte-level codecs) ---------------------------


class MalformedCommandError(DimseError):
    """A DIMSE command set could not be decoded or encoded.

    The message names the offending element, e.g. ``(0000,0110) Message ID``,
    so a peer's bug can be reported without a hex dump.
    """


# --- Factory (building series, validation, de-identification) ----------------


class FactoryError(AiodicomError):
    """A blueprint could not be turned into data sets (bad element, bad input)."""


class MissingParentValue(FactoryError):
    """A required ``Copy``/``InstanceCopy`` found nothing to copy in the parent."""


class PixelEncodingError(FactoryError):
    """A volume cannot be stored as DICOM pixels (NaN, complex, wrong shape, ...)."""


class IODValidationError(FactoryError):
    """A produced data set lacks type 1/2 attributes its IOD requires.

    ``problems`` lists one line per missing or empty attribute.
    """

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class DeidentificationError(AiodicomError):
    """A data set could not be de-identified safely (so nothing is written)."""


# --- Synthetic data (aiodicom.synthetic) --------------------------------------


class SyntheticDataError(AiodicomError, ValueError):
    """A synthetic study was asked for with parameters we cannot honour."""


# --- Data conversion (grinders, geometry, lazy datasets, trees) ---------------


class DataConversionError(AiodicomError):
    """Instances could not be turned into what a grinder promises."""


class GeometryError(DataConversionError):
    """A series' geometry is missing or inconsistent (orientation, spacing, size).

    Raised instead of guessing, because a wrong affine silently misplaces every
    voxel of every result computed from it.
    """


class InconsistentSeriesError(DataConversionError):
    """The instances do not form one volume (mixed sizes, pixel formats, series)."""


class MissingTagError(DataConversionError, KeyError):
    """A required attribute is absent from a data set."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class PixelDecodeError(DataConversionError):
    """Pixel data could not be decoded (unsupported format or missing codec)."""


class SegmentationError(DataConversionError):
    """A structure set or segmentation cannot be read, or does not fit its images
    (another frame of reference, an unknown ROI, frames off the image grid)."""
