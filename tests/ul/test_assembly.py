"""Reassembly of DIMSE messages from PDVs (PS3.8 annex E, PS3.7 section 9.3).

The command decoder here is a tiny stand-in: the command bytes are ``b"CMD:<name>:<0|1>"``
where the last field says whether a data set follows. That keeps these tests about the
assembler's rules (order, contexts, limits, streaming), not about the DIMSE codec.
"""

from __future__ import annotations

import pytest

from aiodicom.errors import ProtocolError
from aiodicom.ul import pdu as P
from aiodicom.ul.assembly import (
    FREE_FRAGMENTS,
    MAX_COMMAND_LENGTH,
    MIN_FRAGMENT_AVERAGE,
    AssembledMessage,
    DataSink,
    MessageAssembler,
)


class RecordingSink:
    """A real DataSink that keeps every fragment object it was given (to check for copies)."""

    def __init__(self) -> None:
        self.fragments: list[memoryview] = []
        self.finished = False
        self.discarded = False

    def write(self, data: memoryview) -> None:
        assert not self.finished and not self.discarded
        self.fragments.append(data)

    def finish(self) -> None:
        self.finished = True

    def discard(self) -> None:
        self.discarded = True

    @property
    def data(self) -> bytes:
        return b"".join(bytes(f) for f in self.fragments)


class Decoder:
    def __init__(self) -> None:
        self.sinks: list[RecordingSink] = []
        self.calls: list[tuple[int, bytes]] = []

    def __call__(self, context_id: int, command: bytes) -> tuple[str, DataSink | None]:
        self.calls.append((context_id, command))
        tag, name, has_data = command.split(b":")
        assert tag == b"CMD"
        if has_data == b"1":
            sink = RecordingSink()
            self.sinks.append(sink)
            return name.decode(), sink
        return name.decode(), None


def make(accepted: tuple[int, ...] = (1, 3)) -> tuple[MessageAssembler[str], Decoder]:
    decoder = Decoder()
    return MessageAssembler(set(accepted), decoder), decoder


def cmd(context_id: int, data: bytes, last: bool = True) -> P.PDV:
    return P.PDV(context_id, True, last, data)


def ds(context_id: int, data: bytes | bytearray | memoryview, last: bool = True) -> P.PDV:
    return P.PDV(context_id, False, last, data)


def test_command_without_data_set() -> None:
    assembler, decoder = make()
    (message,) = assembler.feed([cmd(1, b"CMD:echo:0")])
    assert message == AssembledMessage(1, "echo", None)
    assert decoder.calls == [(1, b"CMD:echo:0")]
    assert assembler.idle


def test_command_split_in_many_fragments_across_feeds() -> None:
    assembler, decoder = make()
    raw = b"CMD:" + b"x" * 500 + b":0"
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    for piece in pieces[:-1]:
        assert assembler.feed([cmd(3, piece, last=False)]) == []
        assert not assembler.idle
    (message,) = assembler.feed([cmd(3, pieces[-1])])
    assert message.command == "x" * 500 and message.context_id == 3
    assert decoder.calls == [(3, raw)]  # decoded once, from the joined bytes


def test_data_set_fragments_are_streamed_in_order_without_copies() -> None:
    assembler, decoder = make()
    assert assembler.feed([cmd(1, b"CMD:store:1")]) == []
    (sink,) = decoder.sinks
    body = bytearray(b"".join(bytes([i]) * 100 for i in range(10)))
    view = memoryview(body)
    fragments = [view[i * 100 : (i + 1) * 100] for i in range(10)]
    for fragment in fragments[:-1]:
        assert assembler.feed([ds(1, fragment, last=False)]) == []
        # Streamed as it arrives: the sink already holds it before the message completes.
        assert sink.fragments[-1] is fragment
        assert not sink.finished
    (message,) = assembler.feed([ds(1, fragments[-1])])
    assert message.dataset is sink and message.command == "store"
    assert sink.finished and not sink.discarded
    assert sink.data == bytes(body)
    assert all(got is sent for got, sent in zip(sink.fragments, fragments, strict=True))
    assert assembler.idle


def test_several_messages_in_one_feed() -> None:
    assembler, decoder = make()
    messages = assembler.feed(
        [
            cmd(1, b"CMD:a:0"),
            cmd(3, b"CMD:b:1"),
            ds(3, b"12", last=False),
            ds(3, b"34"),
            cmd(1, b"CMD:c:0"),
        ]
    )
    assert [(m.context_id, m.command) for m in messages] == [(1, "a"), (3, "b"), (1, "c")]
    assert decoder.sinks[0].data == b"1234"


def test_empty_last_data_fragment_completes_the_message() -> None:
    assembler, decoder = make()
    assembler.feed([cmd(1, b"CMD:s:1"), ds(1, b"abc", last=False)])
    (message,) = assembler.feed([ds(1, b"")])
    assert decoder.sinks[0].data == b"abc" and decoder.sinks[0].finished
    assert message.command == "s"


def test_fragments_from_the_pdu_codec_reassemble() -> None:
    """End to end with the codec: fragment() -> bytes -> decode -> assembler."""
    assembler, decoder = make()
    payload = bytes(range(256)) * 40
    pdvs: list[P.PDV] = []
    for parts in [*P.fragment(1, True, b"CMD:store:1", 8), *P.fragment(1, False, payload, 1000)]:
        decoded = P.decode_bytes(b"".join(bytes(p) for p in parts))
        assert isinstance(decoded, P.PDataTF)
        pdvs += decoded.pdvs
    (message,) = assembler.feed(pdvs)
    assert message.command == "store" and decoder.sinks[0].data == payload


def _error(assembler: MessageAssembler[str], pdvs: list[P.PDV]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        assembler.feed(pdvs)
    return info.value


def test_data_before_command() -> None:
    assembler, _ = make()
    error = _error(assembler, [ds(1, b"data")])
    assert error.abort_reason == P.REASON_UNEXPECTED_PARAMETER


def test_data_fragment_before_the_command_is_complete() -> None:
    assembler, _ = make()
    error = _error(assembler, [cmd(1, b"CMD:s", last=False), ds(1, b"data")])
    assert error.abort_reason == P.REASON_UNEXPECTED_PARAMETER


def test_command_fragment_after_a_data_fragment() -> None:
    assembler, _ = make()
    error = _error(assembler, [cmd(1, b"CMD:s:1"), ds(1, b"part", last=False), cmd(1, b"CMD:t:0")])
    assert error.abort_reason == P.REASON_UNEXPECTED_PARAMETER


def test_context_switch_mid_command() -> None:
    assembler, _ = make()
    error = _error(assembler, [cmd(1, b"CMD:s", last=False), cmd(3, b":0")])
    assert error.abort_reason == P.REASON_UNEXPECTED_PARAMETER


def test_context_switch_mid_data_set() -> None:
    assembler, _ = make()
    error = _error(assembler, [cmd(1, b"CMD:s:1"), ds(1, b"a", last=False), ds(3, b"b")])
    assert error.abort_reason == P.REASON_UNEXPECTED_PARAMETER


def test_unaccepted_context() -> None:
    assembler, decoder = make(accepted=(1,))
    error = _error(assembler, [cmd(5, b"CMD:echo:0")])
    assert error.abort_reason == P.REASON_INVALID_PARAMETER
    assert decoder.calls == []


def test_oversized_command_set_is_refused_before_it_is_joined() -> None:
    assembler, decoder = make()
    chunk = b"C" * 65536
    pdvs = [cmd(1, chunk, last=False) for _ in range(MAX_COMMAND_LENGTH // len(chunk))]
    assert assembler.feed(pdvs) == []  # exactly the limit is still accepted
    error = _error(assembler, [cmd(1, b"C", last=False)])
    assert error.abort_reason == P.REASON_INVALID_PARAMETER
    assert decoder.calls == []


def test_abandon_discards_the_sink() -> None:
    assembler, decoder = make()
    assembler.feed([cmd(1, b"CMD:s:1"), ds(1, b"partial", last=False)])
    (sink,) = decoder.sinks
    assembler.abandon()
    assert sink.discarded and not sink.finished
    assert assembler.idle
    # The assembler is usable again afterwards (a fresh message on a fresh state).
    (message,) = assembler.feed([cmd(1, b"CMD:echo:0")])
    assert message.command == "echo"


def test_abandon_mid_command_and_when_idle() -> None:
    assembler, decoder = make()
    assembler.abandon()  # nothing to drop
    assembler.feed([cmd(1, b"CMD:pa", last=False)])
    assembler.abandon()
    assert assembler.idle
    (message,) = assembler.feed([cmd(1, b"CMD:new:0")])
    assert message.command == "new"
    assert decoder.calls == [(1, b"CMD:new:0")]  # the half command was not glued to it


def test_completed_sink_is_not_discarded_by_abandon() -> None:
    assembler, decoder = make()
    assembler.feed([cmd(1, b"CMD:s:1"), ds(1, b"all")])
    assembler.abandon()
    assert decoder.sinks[0].finished and not decoder.sinks[0].discarded


# --- fragments that bring too little: cost per fragment, not per byte ----------------------------


@pytest.mark.parametrize("size", [0, 1, MIN_FRAGMENT_AVERAGE // 4])
@pytest.mark.parametrize("part", ["command", "data set"])
def test_a_message_of_tiny_fragments_is_refused_after_the_free_ones(size: int, part: str) -> None:
    assembler, decoder = make()
    if part == "data set":
        assembler.feed([cmd(1, b"CMD:s:1")])
    make_pdv = cmd if part == "command" else ds
    free = [make_pdv(1, bytes(size), last=False) for _ in range(FREE_FRAGMENTS - 1)]
    assert assembler.feed(free) == []
    error = _error(assembler, [make_pdv(1, bytes(size), last=False) for _ in range(FREE_FRAGMENTS)])
    assert error.abort_reason == P.REASON_INVALID_PARAMETER


def test_fragments_at_the_average_never_run_out_and_each_message_starts_afresh() -> None:
    assembler, decoder = make()
    for _ in range(3):
        assembler.feed([cmd(1, b"CMD:s:1")])
        fragments = [ds(1, bytes(MIN_FRAGMENT_AVERAGE), last=False) for _ in range(10 * FREE_FRAGMENTS)]
        assert assembler.feed([*fragments, ds(1, b"")]) != []
        # Then a message of tiny fragments gets its free allowance again.
        pieces = [cmd(1, b"", last=False) for _ in range(FREE_FRAGMENTS - 2)]
        (echo,) = assembler.feed([*pieces, cmd(1, b"CMD:e:0")])
        assert echo.command == "e"
