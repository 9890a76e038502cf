"""No DIMSE request, whatever any of its fields holds, takes the server down.

Every field of every request command the decoder accepts gets hostile values (UIDs
over 64 characters, empty, NULs, backslashes, non-ASCII, odd lengths; 16-bit fields of
the wrong size or at their limits; AE titles too long or with control characters). The
server must answer that request (any status) or abort that association, and meanwhile
keep serving a well-behaved client that was associated before the attack and one that
comes after. Our client, in turn, meets hostile responses with a status or a clear
:class:`~aiodicom.errors.AiodicomError`, never another exception.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.uids import VERIFICATION_SOP_CLASS
from aiodicom.dimse import command as C
from aiodicom.dimse.client import connect
from aiodicom.errors import AiodicomError
from aiodicom.synthetic import CT_IMAGE_STORAGE
from aiodicom.transport.association import Timeouts
from aiodicom.ul import pdu as P

from .conftest import (
    CLIENT_TIMEOUTS,
    CT_CONTEXT,
    ECHO_CONTEXT,
    ECHO_ONLY,
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    accept_all,
    assert_still_serving,
    echo_rq,
    pdata,
    raw_acceptor,
    raw_peer,
    read_pdu,
    running_server,
)

pytestmark = pytest.mark.anyio

#: Idle timeouts longer than one exchange, so the clients wait for the server, not the reverse.
PATIENT = Timeouts(connect=2.0, acse=2.0, dimse=5.0, network_idle=10.0, artim=0.5)

UID = b"1.2.826.0.1.3680043.8.498.77"
RESPONSES = (C.CEchoRSP, C.CStoreRSP, C.CFindRSP, C.CGetRSP, C.CMoveRSP)


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def command_bytes(elements: dict[int, bytes]) -> bytes:
    """A command set from raw values, no questions asked (odd lengths stay odd)."""
    body = b"".join(
        struct.pack("<HHI", 0, elem, len(v)) + v for elem, v in sorted(elements.items())
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


#: Well-formed requests as raw elements: (context, elements, sends a data set).
REQUESTS: dict[str, tuple[int, dict[int, bytes], bool]] = {
    "C-ECHO-RQ": (
        ECHO_CONTEXT,
        {
            0x0002: VERIFICATION_SOP_CLASS.encode() + b"\0",
            0x0100: us(0x0030),
            0x0110: us(1),
            0x0800: us(0x0101),
        },
        False,
    ),
    "C-STORE-RQ": (
        CT_CONTEXT,
        {
            0x0002: CT_IMAGE_STORAGE.encode() + b"\0",
            0x0100: us(0x0001),
            0x0110: us(1),
            0x0700: us(0),
            0x0800: us(0x0001),
            0x1000: UID,
            0x1030: b"MOVER ",
            0x1031: us(7),
        },
        True,
    ),
    "C-FIND-RQ": (
        CT_CONTEXT,
        {
            0x0002: CT_IMAGE_STORAGE.encode() + b"\0",
            0x0100: us(0x0020),
            0x0110: us(1),
            0x0700: us(0),
            0x0800: us(1),
        },
        True,
    ),
    "C-GET-RQ": (
        CT_CONTEXT,
        {
            0x0002: CT_IMAGE_STORAGE.encode() + b"\0",
            0x0100: us(0x0010),
            0x0110: us(1),
            0x0700: us(0),
            0x0800: us(1),
        },
        True,
    ),
    "C-MOVE-RQ": (
        CT_CONTEXT,
        {
            0x0002: CT_IMAGE_STORAGE.encode() + b"\0",
            0x0100: us(0x0021),
            0x0110: us(1),
            0x0600: b"DEST",
            0x0700: us(0),
            0x0800: us(1),
        },
        True,
    ),
    "C-CANCEL-RQ": (ECHO_CONTEXT, {0x0100: us(0x0FFF), 0x0120: us(1), 0x0800: us(0x0101)}, False),
    # Responses sent to the server, which asked nothing: ignored, the association goes on.
    "C-ECHO-RSP": (
        ECHO_CONTEXT,
        {0x0100: us(0x8030), 0x0120: us(1), 0x0800: us(0x0101), 0x0900: us(0)},
        False,
    ),
    "C-STORE-RSP": (
        CT_CONTEXT,
        {
            0x0002: CT_IMAGE_STORAGE.encode() + b"\0",
            0x0100: us(0x8001),
            0x0120: us(1),
            0x0800: us(0x0101),
            0x0900: us(0xC000),
            0x0901: struct.pack("<HH", 0x0008, 0x0018),
            0x0902: b"comment ",
            0x1000: UID,
        },
        False,
    ),
}

UID_VALUES = {
    "65-chars": b"1." * 32 + b"1",
    "66-chars": b"1." * 32 + b"12",
    "1000-chars": b"1.2" * 333 + b"4",
    "empty": b"",
    "nuls": b"\0" * 8,
    "embedded-nul": b"1.2\x003.4\0",
    "backslash": b"1.2\\3.4\0",
    "path": b"../../../etc/x\0",
    "non-ascii": b"1.2.\xe9\xff",
    "odd-length": b"1.2.3",
    "spaces": b"      ",
    "control-chars": b"1.2\r\n3\x1b",
}
US_VALUES = {
    "max": us(0xFFFF),
    "zero": us(0),
    "one-byte": b"\x01",
    "four-bytes": b"\x01\0\0\0",
    "empty": b"",
}
AE_VALUES = {
    "17-chars": b"ABCDEFGHIJKLMNOPQ ",
    "64-chars": b"A" * 64,
    "backslash": b"A\\B ",
    "nuls": b"\0\0\0\0",
    "non-ascii": b"\xe9\xe9",
    "empty": b"",
    "control-chars": b"A\r\nB\x1b",
}
FIELDS: dict[str, tuple[int, dict[str, bytes]]] = {
    "affected-sop-class": (0x0002, UID_VALUES),
    "affected-sop-instance": (0x1000, UID_VALUES),
    "message-id": (0x0110, US_VALUES),
    "message-id-being-responded-to": (0x0120, US_VALUES),
    "priority": (0x0700, US_VALUES),
    "data-set-type": (0x0800, {**US_VALUES, "dataset-on-echo": us(0x0000)}),
    "move-destination": (0x0600, AE_VALUES),
    "move-originator-ae": (0x1030, AE_VALUES),
    "move-originator-id": (0x1031, US_VALUES),
    "status": (0x0900, US_VALUES),
    "offending-element": (0x0901, {"odd": b"\x08\x00\x18", "empty": b"", "many": b"\xff" * 4000}),
    "error-comment": (0x0902, AE_VALUES),
}

CASES = [
    (request, field, value)
    for request, (_, elements, _) in REQUESTS.items()
    for field, (elem, values) in FIELDS.items()
    if elem in elements
    for value in values
]


def dataset_for(elements: dict[int, bytes]) -> bytes:
    """A small explicit VR LE data set naming the command's (possibly hostile) UIDs."""

    def element(elem: int, vr: bytes, value: bytes) -> bytes:
        value = value if len(value) % 2 == 0 else value + b"\0"
        return struct.pack("<HH2sH", 0x0008, elem, vr, len(value) & 0xFFFF) + value[:0xFFFF]

    return element(0x0016, b"UI", elements.get(0x0002, b"")) + element(
        0x0018, b"UI", elements.get(0x1000, UID)
    )


async def send_hostile(
    port: int, context: int, elements: dict[int, bytes], with_dataset: bool
) -> None:
    """Send one request, then a C-ECHO on the same association.

    Any answer is fine as long as it is valid: responses that decode (the echo's
    among them, so the association still works), an A-ABORT, or a close.
    """
    async with raw_peer(port) as peer:
        await peer.associate()
        pdvs = [(context, True, True, command_bytes(elements))]
        if with_dataset or elements.get(0x0800) not in (None, us(0x0101)):
            pdvs.append((context, False, True, dataset_for(elements)))
        await peer.send(pdata(*pdvs))
        await peer.send(pdata((ECHO_CONTEXT, True, True, echo_rq(2))))
        for _ in range(3):
            answer = await peer.read_pdu(timeout=5.0)
            if answer is None:
                return
            decoded = P.decode(*answer)
            if not isinstance(decoded, P.PDataTF):
                assert isinstance(decoded, P.Abort), decoded
                return
            command = b"".join(bytes(pdv.data) for pdv in decoded.pdvs if pdv.is_command)
            response, _ = C.decode_command(command)  # what we answered must itself be valid
            assert isinstance(response, RESPONSES), response
            if isinstance(response, C.CEchoRSP) and response.message_id_being_responded_to == 2:
                assert response.status.is_success
                await peer.send(P.encode(P.ReleaseRQ()))
                assert isinstance(await peer.expect_pdu(), P.ReleaseRP)
                return
        raise AssertionError("no answer to the C-ECHO after the hostile request")


@pytest.mark.parametrize(("request_name", "field", "value"), CASES)
async def test_no_request_field_takes_the_server_down(
    tmp_path: Path, request_name: str, field: str, value: str
) -> None:
    context, elements, with_dataset = REQUESTS[request_name]
    elem, values = FIELDS[field]
    elements = {**elements, elem: values[value]}
    async with running_server(tmp_path, timeouts=PATIENT) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            # A well-behaved client, associated before the attack, is served throughout.
            async with connect(
                HOST, running.port, called_ae=SERVER_AE, calling_ae="GOOD", timeouts=FAST
            ) as good:
                assert (await good.echo()).is_success
                await send_hostile(running.port, context, elements, with_dataset)
                assert (await good.echo()).is_success
        await assert_still_serving(running)
        for path in running.stored_files():  # whatever was stored sits where it belongs
            assert path.resolve().is_relative_to(running.output_dir.resolve())


async def test_over_long_uid_answers_a_failure_without_the_uid(tmp_path: Path) -> None:
    """The exact crash of the report: a C-ECHO whose SOP class UID has 65 characters."""
    _, elements, _ = REQUESTS["C-ECHO-RQ"]
    elements = {**elements, 0x0002: UID_VALUES["65-chars"] + b"\0"}
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(pdata((ECHO_CONTEXT, True, True, command_bytes(elements))))
                response = await peer.expect_response(C.CEchoRSP)
        await assert_still_serving(running)
    assert response.status.is_failure
    assert response.affected_sop_class_uid == ""  # left out: it cannot be encoded


def test_encode_response_never_fails_over_echoed_values() -> None:
    long_uid = "1." * 40
    for response in (
        C.CStoreRSP(1, C.Status(0xC000), long_uid, long_uid, error_comment="é" * 100),
        C.CEchoRSP(1, C.Status(0x0122), long_uid),
        C.CFindRSP(1, C.Status(0x0211), long_uid, error_comment="x\\y" * 40),
    ):
        message, _ = C.decode_command(C.encode_response(response))
        assert type(message) is type(response)
        comment = getattr(message, "error_comment", None)
        assert comment is None or (len(comment) <= 64 and comment.isascii())


# --- our client against hostile responses ------------------------------------------------------


def _response(elements: dict[int, bytes]) -> bytes:
    return pdata((1, True, True, command_bytes(elements)))


ECHO_RSP = {
    0x0002: VERIFICATION_SOP_CLASS.encode() + b"\0",
    0x0100: us(0x8030),
    0x0120: us(1),
    0x0800: us(0x0101),
    0x0900: us(0),
}
HOSTILE_RESPONSES: dict[str, bytes] = {
    "long-uid": _response({**ECHO_RSP, 0x0002: UID_VALUES["1000-chars"]}),
    "non-ascii-uid": _response({**ECHO_RSP, 0x0002: b"\xe9\xe9"}),
    "no-status": _response({k: v for k, v in ECHO_RSP.items() if k != 0x0900}),
    "status-one-byte": _response({**ECHO_RSP, 0x0900: b"\x01"}),
    "status-ffff": _response({**ECHO_RSP, 0x0900: us(0xFFFF)}),
    "pending-forever": _response({**ECHO_RSP, 0x0900: us(0xFF00)}),
    "wrong-message-id": _response({**ECHO_RSP, 0x0120: us(999)}),
    "cancel-instead": _response({0x0100: us(0x0FFF), 0x0120: us(1), 0x0800: us(0x0101)}),
    "request-instead": _response(
        {0x0002: b"1.2\0", 0x0100: us(0x0030), 0x0110: us(1), 0x0800: us(0x0101)}
    ),
    "unknown-command": _response({**ECHO_RSP, 0x0100: us(0x7777)}),
    "odd-length": _response({**ECHO_RSP, 0x0002: b"1.2.3"}),
    "data-set-that-never-ends": pdata(
        (1, True, True, command_bytes({**ECHO_RSP, 0x0800: us(1)})), (1, False, False, b"\0" * 64)
    ),
    "error-comment-garbage": _response({**ECHO_RSP, 0x0900: us(0xC000), 0x0902: b"\xff\0\\" * 30}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RESPONSES))
async def test_client_meets_hostile_responses_with_a_status_or_a_clear_error(case: str) -> None:
    async def acceptor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        await read_pdu(reader)  # the C-ECHO-RQ
        writer.write(HOSTILE_RESPONSES[case])
        await writer.drain()
        await asyncio.sleep(2)

    outcome: object = None
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_acceptor(acceptor) as port:
            try:
                async with connect(
                    HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS
                ) as assoc:
                    outcome = await assoc.echo()
            except AiodicomError as exc:
                outcome = exc
    assert isinstance(outcome, (C.Status, AiodicomError)), outcome
    assert str(outcome)


async def test_a_bug_while_handling_one_request_answers_it_and_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: an unexpected exception inside the server's own request handling."""
    from aiodicom.dimse.services import storage as server_module

    def broken(*args: object) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(server_module, "_identity", broken)
    _, elements, _ = REQUESTS["C-STORE-RQ"]
    async with running_server(tmp_path, timeouts=PATIENT) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                await peer.send(
                    pdata(
                        (CT_CONTEXT, True, True, command_bytes(elements)),
                        (CT_CONTEXT, False, True, dataset_for(elements)),
                    )
                )
                response = await peer.expect_response(C.CStoreRSP)
                assert response.status == 0xA700  # the sender keeps its data
                assert response.error_comment and "RuntimeError" in response.error_comment
                assert (await peer.echo(2)).status.is_success  # the association goes on
        await assert_still_serving(running)
    assert running.stored_files() == []
