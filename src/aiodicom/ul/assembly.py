"""Reassembly of DIMSE messages from P-DATA fragments (PS3.8 annex E), sans I/O.

A message is command fragments, then (if the command says so) data set
fragments, all on one presentation context. Command bytes are small and are
joined; data set fragments are handed, as they arrive and without copying, to
a :class:`DataSink` chosen by whoever decoded the command (a sink copies what it
keeps: the fragment's buffer is the transport's to reuse). That is what lets a
receiver stream a data set to disk without ever holding it whole.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Generic, Protocol, TypeVar

from aiodicom._record import Record
from aiodicom.errors import ProtocolError
from aiodicom.ul.pdu import PDV, REASON_INVALID_PARAMETER, REASON_UNEXPECTED_PARAMETER

#: A command set larger than this is not a command set.
MAX_COMMAND_LENGTH = 1024 * 1024

#: Fragments a message may have for free, and the bytes each further fragment
#: must bring on average. Real peers fragment at their maximum PDU length (4 KiB
#: or more); a stream of empty or one-byte PDVs costs a Python object and a few
#: microseconds per fragment for no data, so such a message is aborted early.
FREE_FRAGMENTS = 128
MIN_FRAGMENT_AVERAGE = 256


class DataSink(Protocol):
    """Receives one data set's fragments."""

    def write(self, data: memoryview) -> None:
        """Take one fragment.

        ``data`` is valid only during the call: a transport may read the next bytes
        into the same buffer afterwards (that saves a copy of every fragment), so a
        sink that keeps bytes copies them.
        """

    def finish(self) -> None:
        """The last fragment arrived."""

    def discard(self) -> None:
        """The message will never complete (abort, protocol error); drop what was kept."""


class BoundedMemorySink:
    """A :class:`DataSink` holding a small data set in memory: identifiers, queries, a
    response's matches (here, beside the protocol, so a client needs no storage code).

    More than 16 MiB is not a query: the association is aborted rather than
    letting a peer grow our memory without bound.
    """

    limit = 16 * 1024 * 1024

    def __init__(self) -> None:
        # One buffer, not one object per fragment: tiny fragments cost only their bytes.
        self.buffer = bytearray()

    @property
    def size(self) -> int:
        return len(self.buffer)

    def write(self, data: memoryview) -> None:
        if len(self.buffer) + len(data) > self.limit:
            raise ProtocolError("a non-storage data set exceeds 16 MiB", REASON_INVALID_PARAMETER)
        self.buffer += data

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        self.buffer = bytearray()

    def data(self) -> bytes:
        return bytes(self.buffer)


C = TypeVar("C")


class AssembledMessage(Record, Generic[C]):
    context_id: int
    command: C
    #: The sink that received the data set, or None for a command without one.
    dataset: DataSink | None


#: Decodes a command set: ``(context_id, command bytes) -> (command, sink)``,
#: where sink is None when the command announces no data set.
CommandDecoder = Callable[[int, bytes], tuple[C, DataSink | None]]


class MessageAssembler(Generic[C]):
    def __init__(self, accepted_context_ids: Container[int], decode_command: CommandDecoder[C]) -> None:
        self._accepted = accepted_context_ids
        self._decode = decode_command
        self._command_parts = bytearray()
        #: Bytes the current message may still fall short of the fragment average.
        self._credit = FREE_FRAGMENTS * MIN_FRAGMENT_AVERAGE
        self._context_id: int | None = None
        self._command: C | None = None
        self._sink: DataSink | None = None
        self._in_dataset = False

    @property
    def idle(self) -> bool:
        """True between messages (nothing partially received)."""
        return self._context_id is None

    def feed(self, pdvs: list[PDV]) -> list[AssembledMessage[C]]:
        done: list[AssembledMessage[C]] = []
        for pdv in pdvs:
            context_id = pdv.context_id
            if self._context_id is None:
                if context_id not in self._accepted:
                    raise ProtocolError(
                        f"P-DATA on presentation context {context_id}, which was not accepted",
                        REASON_INVALID_PARAMETER,
                    )
                if not pdv.is_command:
                    raise ProtocolError(
                        "data set fragment arrived before its command", REASON_UNEXPECTED_PARAMETER
                    )
                self._context_id = context_id
            elif context_id != self._context_id:
                raise ProtocolError(
                    f"fragment on context {context_id} interleaved into a message on context "
                    f"{self._context_id}",
                    REASON_UNEXPECTED_PARAMETER,
                )
            data = pdv.data
            self._credit += len(data) - MIN_FRAGMENT_AVERAGE
            if self._credit < 0:
                raise ProtocolError(
                    f"message fragments average under {MIN_FRAGMENT_AVERAGE} bytes",
                    REASON_INVALID_PARAMETER,
                )
            if self._in_dataset:
                if pdv.is_command:
                    raise ProtocolError(
                        "command fragment arrived inside a data set", REASON_UNEXPECTED_PARAMETER
                    )
                assert self._sink is not None
                self._sink.write(data)  # type: ignore[arg-type]
                if pdv.is_last:
                    self._sink.finish()
                    done.append(AssembledMessage(context_id, self._command, self._sink))  # type: ignore[arg-type]
                    self._reset()
                continue
            if not pdv.is_command:
                raise ProtocolError(
                    "data set fragment arrived before the command was complete",
                    REASON_UNEXPECTED_PARAMETER,
                )
            parts = self._command_parts
            if len(parts) + len(data) > MAX_COMMAND_LENGTH:
                raise ProtocolError("command set exceeds 1 MiB", REASON_INVALID_PARAMETER)
            if not pdv.is_last:
                parts += data  # joined as they come, into one buffer: no object per fragment
                continue
            if parts:
                parts += data
                encoded = bytes(parts)
                self._command_parts = bytearray()
            else:
                encoded = bytes(data)  # the usual case: one fragment
            command, sink = self._decode(context_id, encoded)
            if sink is None:
                done.append(AssembledMessage(context_id, command, None))
                self._reset()
            else:
                self._command = command
                self._sink = sink
                self._in_dataset = True
        return done

    def abandon(self) -> None:
        """Drop a partially received message (the association ended)."""
        if self._sink is not None:
            self._sink.discard()
        self._reset()

    def _reset(self) -> None:
        self._context_id = None
        self._command = None
        self._sink = None
        self._in_dataset = False
        if self._command_parts:
            self._command_parts = bytearray()
        self._credit = FREE_FRAGMENTS * MIN_FRAGMENT_AVERAGE
