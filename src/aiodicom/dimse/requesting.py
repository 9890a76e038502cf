"""What a requestor decides between the bytes, whichever driver carries them (sans I/O).

The contexts to propose, the accepted context a file goes on, the C-STORE-RQ and the
payload that goes with it (checked, repaired, decompressed when the peer needs it),
the message decoder of a requestor, and a failure answer to a request we do not serve.
Both drivers call these: :func:`aiodicom.connect` (asyncio) and the blocking one of
one-shot commands (:mod:`aiodicom.dimse.blocking`), so neither writes them twice and
this module imports neither asyncio nor a socket.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

from aiodicom._record import FrozenRecord
from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    is_compressed,
    transfer_syntax_name,
)
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.errors import (
    AiodicomError,
    DicomFileError,
    DimseError,
    MalformedDatasetError,
    NoPresentationContext,
    ProtocolError,
)
from aiodicom.ul import pdu as P
from aiodicom.ul.assembly import BoundedMemorySink, CommandDecoder, DataSink
from aiodicom.ul.negotiation import AcceptedContext, select_context

if TYPE_CHECKING:
    from aiodicom.codec.part10 import FileMeta

# The Part 10 reader and the data set walker (codec.part10, codec.walk) are imported by
# the functions that send files: ``aiodicom echo`` starts without them.

#: A file path as the caller gives it (``str`` or ``pathlib.Path``...). Paths are used as
#: given, never converted to ``Path``: pathlib's import (urllib.parse, ipaddress) would be
#: a sizeable part of a one-file ``aiodicom store``'s start-up.
StrPath: TypeAlias = str | os.PathLike[str]

#: Data sets up to this size are read whole; larger ones are streamed from disk.
STREAM_THRESHOLD = 32 * 1024 * 1024

ContextSpec = tuple[str, Sequence[str]]
#: Presentation contexts one association can propose (odd IDs 1-255, PS3.8 9.3.2.2).
MAX_CONTEXTS = 128

#: Builds a request from its Message ID.
RequestFactory: TypeAlias = Callable[[int], C.Message]
#: A message ready to send: (context ID, request by message ID, data set, what was
#: changed locally to send it).
Prepared: TypeAlias = tuple[int, RequestFactory, "bytes | memoryview", tuple[str, ...]]
#: A file too large to read whole: (context ID, request by message ID, the data set
#: converted for the peer or None to stream it as it is, its offset and length in the file).
LargePlan: TypeAlias = tuple[int, RequestFactory, "bytes | None", int, int]


# --- contexts to propose ------------------------------------------------------------------


def verification_contexts() -> list[ContextSpec]:
    """Verification alone, in implicit VR little endian (what every SCP accepts): all
    ``echo`` needs, as ``echoscu`` proposes; 27 contexts would only make both sides work."""
    return [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]


def contexts_for_encodings(encodings: Iterable[tuple[str, str]]) -> list[list[ContextSpec]]:
    """Presentation contexts to send data sets of these ``(SOP class, transfer syntax)``
    pairs, split into groups of at most 128 (see :func:`aiodicom.contexts_for_files`)."""
    by_class: dict[str, dict[tuple[str, ...], None]] = {}
    for sop_class, ts in dict.fromkeys(encodings):
        syntaxes = by_class.setdefault(sop_class, {})
        syntaxes[(ts,)] = None
        if not is_compressed(ts) or ts in LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES:
            syntaxes[(EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)] = None
    groups: list[list[ContextSpec]] = [[]]
    for sop_class, syntaxes in by_class.items():
        if groups[-1] and len(groups[-1]) + len(syntaxes) > 127:
            groups.append([])
        groups[-1].extend((sop_class, list(ts)) for ts in syntaxes)
    return [[*verification_contexts(), *group] for group in groups]


# --- the accepted context a message goes on -----------------------------------------------


def verification_context(contexts: Iterable[AcceptedContext]) -> AcceptedContext:
    """The context a C-ECHO goes on."""
    context = select_context(contexts, VERIFICATION_SOP_CLASS)
    if context is None:
        raise NoPresentationContext("the peer did not accept the Verification SOP class")
    return context


def store_context(contexts: Collection[AcceptedContext], sop_class: str, transfer_syntax: str) -> AcceptedContext:
    """The context a data set of ``sop_class`` in ``transfer_syntax`` goes on.

    Its own syntax when accepted; else an uncompressed one it is converted (or, when
    losslessly compressed, decompressed) for; a lossy one never is.
    """
    exact = select_context(contexts, sop_class, (transfer_syntax,))
    if exact is not None and exact.transfer_syntax == transfer_syntax:
        return exact
    if is_compressed(transfer_syntax) and transfer_syntax not in LOSSLESS_COMPRESSED_TRANSFER_SYNTAXES:
        raise NoPresentationContext(
            f"the peer accepted no presentation context for {sop_class} in "
            f"{transfer_syntax_name(transfer_syntax)}, which is lossy and is never decompressed"
        )
    fallback = select_context(contexts, sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
    if fallback is None or is_compressed(fallback.transfer_syntax):
        what = f" in {transfer_syntax_name(transfer_syntax)} or any uncompressed syntax" if is_compressed(
            transfer_syntax) else ""
        raise NoPresentationContext(f"the peer accepted no presentation context for SOP class {sop_class}{what}")
    return fallback


# --- C-STORE requests and their payloads -------------------------------------------------------


class StoreOptions(FrozenRecord):
    """What every C-STORE-RQ of a call carries besides the instance: its priority and,
    for the sub-operations of a C-MOVE we serve, the Move Originator (PS3.7 9.3.1.1)."""

    priority: int = C.Priority.MEDIUM
    move_originator_ae: str | None = None
    move_originator_message_id: int | None = None


DEFAULT_STORE_OPTIONS = StoreOptions()


def store_request(sop_class: str, sop_instance: str, options: StoreOptions = DEFAULT_STORE_OPTIONS) -> RequestFactory:
    """The C-STORE-RQ of one instance, once its Message ID is known."""
    priority, originator_ae, originator_mid = options.priority, options.move_originator_ae, options.move_originator_message_id

    def make(mid: int) -> C.CStoreRQ:
        return C.CStoreRQ(mid, sop_class, sop_instance, priority, originator_ae, originator_mid)

    return make


def prepare_store(
    data: bytes,
    contexts: Collection[AcceptedContext],
    options: StoreOptions = DEFAULT_STORE_OPTIONS,
) -> Prepared:
    """A Part 10 file's C-STORE, checked whole before any byte of it is sent.

    Not DICOM, or a data set cut short or garbage: :class:`MalformedDatasetError`.
    Odd-length values are padded and a data set the peer needs in another syntax is
    converted; ``changes`` says so.
    """
    from aiodicom.codec.part10 import transcode
    from aiodicom.codec.walk import walk_dataset

    meta = checked_meta(data)
    context = store_context(contexts, meta.sop_class_uid, meta.transfer_syntax)
    rq_factory = store_request(meta.sop_class_uid, meta.sop_instance_uid, options)
    payload: bytes | memoryview = memoryview(data)[meta.dataset_offset :]
    walk_dataset(payload, meta.transfer_syntax)
    payload, changes = _repair(payload, meta.transfer_syntax)
    if context.transfer_syntax != meta.transfer_syntax:
        payload = transcode(bytes(payload), meta.transfer_syntax, context.transfer_syntax)
        if is_compressed(meta.transfer_syntax):
            changes += (f"decompressed from {transfer_syntax_name(meta.transfer_syntax)}",)
    return context.id, rq_factory, payload, changes


def prepare_file(
    path: StrPath,
    contexts: Collection[AcceptedContext],
    options: StoreOptions = DEFAULT_STORE_OPTIONS,
) -> Prepared | None:
    """Read a file once and get its message ready; None when it must be streamed.

    A file that is not DICOM, or whose data set is cut short or garbage,
    raises :class:`~aiodicom.errors.MalformedDatasetError` naming the file:
    nothing of it goes on the wire, so a peer never acknowledges half a file.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > STREAM_THRESHOLD:
            return None
        data = handle.read()
    return prepare_store(data, contexts, options)


def prepare_next(
    path: StrPath,
    contexts: Collection[AcceptedContext],
    options: StoreOptions = DEFAULT_STORE_OPTIONS,
) -> Prepared | None | AiodicomError:
    """:func:`prepare_file` for a file of a batch: its error is returned, the batch goes on."""
    try:
        return prepare_file(path, contexts, options)
    except AiodicomError as exc:
        return exc
    except OSError as exc:
        return DicomFileError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}")


_P = TypeVar("_P", bound=StrPath)


class FileQueue(Generic[_P]):
    """The files of a batch in order, each read and checked while the peer answers the
    one before (:meth:`prepare_ahead`, called once a request is on the wire).

    Iterating gives ``(path, step)``: a :data:`Prepared` message, None for a file too
    large to read whole (:func:`plan_large`), or the error that refuses this file only.
    """

    def __init__(
        self,
        paths: Iterable[_P],
        contexts: Collection[AcceptedContext],
        options: StoreOptions = DEFAULT_STORE_OPTIONS,
    ) -> None:
        self._paths = list(paths)
        self._contexts = contexts
        self._options = options
        self._index = 0
        self._ahead: tuple[int, Prepared | None | AiodicomError] | None = None

    def _prepare(self, index: int) -> Prepared | None | AiodicomError:
        return prepare_next(self._paths[index], self._contexts, self._options)

    def __iter__(self) -> Iterator[tuple[_P, Prepared | None | AiodicomError]]:
        for index, path in enumerate(self._paths):
            self._index = index
            ahead, self._ahead = self._ahead, None
            yield path, ahead[1] if ahead is not None and ahead[0] == index else self._prepare(index)

    def prepare_ahead(self) -> None:
        """Read the next file now (the peer is storing the current one meanwhile)."""
        following = self._index + 1
        if following < len(self._paths):
            self._ahead = (following, self._prepare(following))


def plan_large(
    path: StrPath,
    contexts: Collection[AcceptedContext],
    options: StoreOptions = DEFAULT_STORE_OPTIONS,
) -> LargePlan:
    """A file too large to read whole: walked on disk first, streamed as it is, or
    converted whole when the peer accepted only another syntax."""
    from aiodicom.codec.part10 import transcode
    from aiodicom.codec.walk import walk_file

    meta = checked_meta(path)
    walk_file(path, meta.dataset_offset, meta.transfer_syntax)
    dataset_length = os.stat(path).st_size - meta.dataset_offset
    context = store_context(contexts, meta.sop_class_uid, meta.transfer_syntax)
    rq_factory = store_request(meta.sop_class_uid, meta.sop_instance_uid, options)
    converted = None
    if context.transfer_syntax != meta.transfer_syntax:
        raw = read_range(path, meta.dataset_offset, dataset_length)
        converted = transcode(raw, meta.transfer_syntax, context.transfer_syntax)
    return context.id, rq_factory, converted, meta.dataset_offset, dataset_length


def _repair(payload: bytes | memoryview, transfer_syntax: str) -> tuple[bytes | memoryview, tuple[str, ...]]:
    """Pad odd-length values (PS3.5 7.1.1) before sending, as DCMTK does; say so."""
    from aiodicom.codec.part10 import pad_odd_lengths

    payload, padded = pad_odd_lengths(payload, transfer_syntax)
    if not padded:
        return payload, ()
    tags = ", ".join(f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in padded)
    return payload, (f"padded odd-length {tags}",)


def checked_meta(source: bytes | StrPath) -> FileMeta:
    """The file meta of something we are about to send; not DICOM at all is malformed too."""
    from aiodicom.codec.part10 import read_file_meta

    try:
        return read_file_meta(source)
    except MalformedDatasetError:
        raise
    except DicomFileError as exc:
        raise MalformedDatasetError(f"not a DICOM file: {exc}") from None


def naming(path: StrPath, error: MalformedDatasetError) -> MalformedDatasetError:
    """``error`` with the file named, for a caller of ``store(path)`` (store_files yields the path)."""
    name = os.fspath(path)
    if name in str(error):
        return error
    return MalformedDatasetError(f"{name}: {error}", error.offset)


def read_range(path: StrPath | None, offset: int, length: int) -> bytes:
    assert path is not None
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise DicomFileError(f"{path} changed while being read")
    return data


# --- messages the peer sends us ------------------------------------------------------------


#: Whatever the driver calls an association (what a data set sink may want to know).
A = TypeVar("A")


def message_decoder(
    sinks: Mapping[type, Callable[[C.Message, A, int], DataSink]], association: A
) -> CommandDecoder[C.Message]:
    """The Upper Layer's command decoder: a data set goes to the sink its service chose.

    Commands without a registered sink (responses, queries) get a bounded in-memory one.
    """

    def decode(context_id: int, data: bytes) -> tuple[C.Message, DataSink | None]:
        try:
            message, has_dataset = C.decode_command(data)
        except DimseError as exc:
            raise ProtocolError(f"malformed command set: {exc}", P.REASON_INVALID_PARAMETER) from exc
        if not has_dataset:
            return message, None
        factory = sinks.get(type(message))
        return message, (BoundedMemorySink() if factory is None else factory(message, association, context_id))

    return decode


def failure_response(request: C.Message, code: int, comment: str | None) -> C.Message | None:
    """A response of the request's own type with status ``code`` (None for C-CANCEL and responses)."""
    status = S.Status(code)
    mid = getattr(request, "message_id", None)
    if mid is None:
        return None
    sop_class = getattr(request, "affected_sop_class_uid", "")
    if isinstance(request, C.CStoreRQ):
        return C.CStoreRSP(mid, status, sop_class, request.affected_sop_instance_uid, error_comment=comment)
    if isinstance(request, C.CEchoRQ):
        return C.CEchoRSP(mid, status, sop_class)
    kind = _FAILURE_RESPONSES.get(type(request))
    return None if kind is None else kind(mid, status, sop_class, error_comment=comment)


_FAILURE_RESPONSES: dict[type, Callable[..., C.Message]] = {
    C.CFindRQ: C.CFindRSP,
    C.CMoveRQ: C.CMoveRSP,
    C.CGetRQ: C.CGetRSP,
}
