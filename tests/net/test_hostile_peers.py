"""Malformed and out-of-order PDUs from a raw-bytes peer against a running server.

Each case checks the exact answer on the wire (PS3.8: A-ABORT source/reason, or
A-ASSOCIATE-RJ result/source/reason, or a plain close), then that the server still
serves a well-behaved peer and holds no leftover association.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import tracemalloc

import anyio
import pytest

from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, new_uid
from aiodicom.dimse import status as S
from aiodicom.dimse.client import connect
from aiodicom.dimse.command import CEchoRSP, CStoreRSP
from aiodicom.errors import AssociationAborted, AssociationError, DicomTimeoutError
from aiodicom.synthetic import CT_IMAGE_STORAGE, make_dataset
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import build_request

from .conftest import (
    CLIENT_TIMEOUTS,
    CT_CONTEXT,
    ECHO_CONTEXT,
    ECHO_ONLY,
    FAST,
    HOST,
    SERVER_AE,
    SERVER_MAX_PDU,
    SERVER_PDU_CAP,
    TEST_TIMEOUT,
    RunningServer,
    accept_all,
    assert_still_serving,
    associate_rq,
    echo_rq,
    encode_dataset,
    pdata,
    pdu,
    raw_acceptor,
    raw_pdv,
    raw_peer,
    read_pdu,
    store_rq,
)

pytestmark = pytest.mark.anyio

PROVIDER = P.AbortSource.SERVICE_PROVIDER


# --- framing ---------------------------------------------------------------------------------


async def test_unknown_pdu_type_before_association_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(pdu(0x09, bytes(4)))
            await peer.expect_abort(PROVIDER, P.REASON_UNRECOGNIZED_PDU)
    await assert_still_serving(server)


async def test_unknown_pdu_type_on_an_association_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdu(0xFF, bytes(16)))
            await peer.expect_abort(PROVIDER, P.REASON_UNRECOGNIZED_PDU)
    await assert_still_serving(server)


async def test_truncated_header_then_close_gets_a_plain_close(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(b"\x01\x00\x00")
            peer.half_close()
            await peer.expect_closed()
    await assert_still_serving(server)


async def test_length_beyond_the_bytes_sent_then_close(server: RunningServer) -> None:
    body = P.encode(associate_rq())[6:]
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(pdu(P.PDUType.ASSOCIATE_RQ, body[:40], length=len(body)))
            peer.half_close()
            await peer.expect_closed()
    await assert_still_serving(server)


async def test_partial_data_set_then_close_stores_nothing(server: RunningServer) -> None:
    data = encode_dataset(make_dataset(rows=64, columns=64))
    uid = new_uid()
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdata((CT_CONTEXT, True, True, store_rq(uid))))
            # A P-DATA-TF announcing the whole data set, of which only half ever comes.
            whole = pdata((CT_CONTEXT, False, True, data))
            await peer.send(whole[: len(whole) // 2])
            peer.half_close()
            await peer.expect_closed()
    await assert_still_serving(server)
    assert server.stored_files() == []
    assert server.partial_files() == []


@pytest.mark.parametrize("pdu_type", [P.PDUType.ASSOCIATE_RQ, P.PDUType.P_DATA_TF])
async def test_announced_length_0xffffffff_is_refused_before_any_body(
    server: RunningServer, pdu_type: int
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            if pdu_type == P.PDUType.P_DATA_TF:
                await peer.associate()
            tracemalloc.start()
            try:
                before, _ = tracemalloc.get_traced_memory()
                # Only the header: the abort must come without waiting for any body byte.
                await peer.send(struct.pack(">BxI", pdu_type, 0xFFFFFFFF))
                await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak - before < 1024 * 1024, f"{peak - before} bytes allocated for a refused PDU"
    await assert_still_serving(server)


async def test_pdu_above_our_maximum_but_under_the_cap_is_accepted(server: RunningServer) -> None:
    """Lenient: some peers ignore the maximum we announce; within the hard cap we read them."""
    uid = new_uid()
    data = encode_dataset(make_dataset(rows=128, columns=128, sop_instance_uid=uid))
    assert SERVER_MAX_PDU < len(data) + 12 < SERVER_PDU_CAP
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(
                pdata((CT_CONTEXT, True, True, store_rq(uid)), (CT_CONTEXT, False, True, data))
            )
            response = await peer.expect_response(CStoreRSP)
            assert response.status == S.SUCCESS
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
    [stored] = server.stored_files()
    assert stored.name == f"{uid}.dcm"
    assert stored.read_bytes().endswith(data)
    await assert_still_serving(server)


async def test_pdu_above_the_cap_is_aborted_before_its_body(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(struct.pack(">BxI", P.PDUType.P_DATA_TF, SERVER_PDU_CAP + 1))
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


@pytest.mark.parametrize(
    ("header", "associated"),
    [
        (struct.pack(">BxI", P.PDUType.ASSOCIATE_RQ, 67), False),
        (struct.pack(">BxI", P.PDUType.RELEASE_RQ, 100), True),
        (struct.pack(">BxI", P.PDUType.ABORT, 2), True),
    ],
    ids=[
        "associate-rq-shorter-than-its-fixed-fields",
        "release-rq-of-100-bytes",
        "abort-of-2-bytes",
    ],
)
async def test_impossible_lengths_are_aborted_at_the_header(
    server: RunningServer, header: bytes, associated: bool
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            if associated:
                await peer.associate()
            await peer.send(header)
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


async def test_pdus_split_into_single_bytes_and_coalesced_are_framed(server: RunningServer) -> None:
    """TCP keeps no message boundaries: one byte per segment, or many PDUs in one."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            for byte in P.encode(associate_rq()):
                await peer.send(bytes((byte,)))
            assert isinstance(await peer.expect_pdu(), P.AssociateAC)
            burst = b"".join(pdata((ECHO_CONTEXT, True, True, echo_rq(mid))) for mid in (1, 2, 3))
            await peer.send(burst + P.encode(P.ReleaseRQ()))
            for mid in (1, 2, 3):
                response = await peer.expect_response(CEchoRSP)
                assert response.message_id_being_responded_to == mid
            assert await peer.expect_pdu() == P.ReleaseRP()
            await peer.expect_closed()
    await assert_still_serving(server)


async def test_command_set_over_1_mib_is_aborted(server: RunningServer) -> None:
    chunk = bytes(200 * 1024)  # within the PDU cap; six of them exceed the command limit
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            for _ in range(6):
                await peer.send(pdata((ECHO_CONTEXT, True, False, chunk)))
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


# --- A-ASSOCIATE-RQ items ----------------------------------------------------------------------


def _rq_body(rq: P.AssociateRQ | None = None) -> bytes:
    return P.encode(rq or associate_rq())[6:]


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _fixed_fields() -> bytes:
    """Protocol version 1, called/calling AE titles, 32 reserved bytes."""
    return b"\x00\x01\x00\x00" + SERVER_AE.encode().ljust(16) + b"RAW-PEER".ljust(16) + bytes(32)


def _app_context() -> bytes:
    return _item(0x10, b"1.2.840.10008.3.1.1.1")


def _context(context_id: int, abstract: str = CT_IMAGE_STORAGE) -> bytes:
    return _item(
        0x20,
        bytes((context_id, 0, 0, 0))
        + _item(0x30, abstract.encode())
        + _item(0x40, EXPLICIT_VR_LITTLE_ENDIAN.encode()),
    )


def _user_info() -> bytes:
    return _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))


INVALID = P.REASON_INVALID_PARAMETER
UNEXPECTED = P.REASON_UNEXPECTED_PARAMETER

#: Broken A-ASSOCIATE-RQ bodies and the A-ABORT reason (PS3.8 table 9-26) each must get.
MALFORMED_RQ_BODIES: dict[str, tuple[bytes, int]] = {
    # An item claiming more bytes than the PDU holds.
    "item-length-overruns": (
        _fixed_fields() + _app_context() + b"\x20\x00\xff\xff" + _context(1)[4:] + _user_info(),
        INVALID,
    ),
    # A presentation context whose abstract syntax sub-item overruns the context item.
    "sub-item-length-overruns": (
        _fixed_fields()
        + _app_context()
        + _item(0x20, b"\x01\x00\x00\x00" + b"\x30\x00\x00\x40" + CT_IMAGE_STORAGE.encode())
        + _user_info(),
        INVALID,
    ),
    "no-application-context": (_fixed_fields() + _context(1) + _user_info(), INVALID),
    "no-user-information": (_fixed_fields() + _app_context() + _context(1), INVALID),
    "two-application-contexts": (
        _fixed_fields() + _app_context() + _app_context() + _context(1) + _user_info(),
        UNEXPECTED,
    ),
    "two-user-information-items": (
        _fixed_fields() + _app_context() + _context(1) + _user_info() + _user_info(),
        UNEXPECTED,
    ),
    "two-maximum-length-sub-items": (
        _fixed_fields()
        + _app_context()
        + _context(1)
        + _item(0x50, _item(0x51, bytes(4)) + _item(0x51, bytes(4)) + _item(0x52, b"1.2.3.4")),
        UNEXPECTED,
    ),
    "unknown-item-type": (
        _fixed_fields() + _app_context() + _item(0x99, b"?") + _context(1) + _user_info(),
        P.REASON_UNRECOGNIZED_PARAMETER,
    ),
    "unknown-sub-item-in-a-context": (
        _fixed_fields()
        + _app_context()
        + _item(0x20, _context(1)[4:] + _item(0x77, b"??"))
        + _user_info(),
        P.REASON_UNRECOGNIZED_PARAMETER,
    ),
    "context-without-transfer-syntax": (
        _fixed_fields()
        + _app_context()
        + _item(0x20, b"\x01\x00\x00\x00" + _item(0x30, CT_IMAGE_STORAGE.encode()))
        + _user_info(),
        INVALID,
    ),
    "no-implementation-class-uid": (
        _fixed_fields() + _app_context() + _context(1) + _item(0x50, _item(0x51, bytes(4))),
        INVALID,
    ),
    "maximum-length-sub-item-of-2-bytes": (
        _fixed_fields()
        + _app_context()
        + _context(1)
        + _item(0x50, _item(0x51, bytes(2)) + _item(0x52, b"1.2")),
        INVALID,
    ),
    # A non-ASCII (or otherwise invalid) AE title is not malformed: it is rejected with
    # reason 3 or 7 (tests/net/test_ae_titles.py).
    "duplicate-context-id": (
        _fixed_fields() + _app_context() + _context(1) + _context(1) + _user_info(),
        INVALID,
    ),
    "even-context-id": (_fixed_fields() + _app_context() + _context(2) + _user_info(), INVALID),
    "zero-context-id": (_fixed_fields() + _app_context() + _context(0) + _user_info(), INVALID),
    # IDs are odd bytes, so 1..255 are all 128 there can be: a 129th context must reuse one.
    "129-contexts": (
        _fixed_fields()
        + _app_context()
        + b"".join(_context(2 * i + 1) for i in range(128))
        + _context(255)
        + _user_info(),
        INVALID,
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RQ_BODIES))
async def test_malformed_associate_rq_is_aborted(server: RunningServer, case: str) -> None:
    body, reason = MALFORMED_RQ_BODIES[case]
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(pdu(P.PDUType.ASSOCIATE_RQ, body))
            await peer.expect_abort(PROVIDER, reason)
    await assert_still_serving(server)


async def test_128_contexts_are_accepted(server: RunningServer) -> None:
    contexts = [(CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN])] * 127 + [
        ("1.2.840.10008.1.1", [IMPLICIT_VR_LITTLE_ENDIAN])
    ]
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            ac = await peer.associate(associate_rq(contexts))
            assert len(ac.presentation_contexts) == 128
            assert all(c.result == P.ContextResult.ACCEPTANCE for c in ac.presentation_contexts)
            await peer.send(pdata((255, True, True, echo_rq())))
            assert (await peer.expect_response(CEchoRSP)).status == S.SUCCESS
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
    await assert_still_serving(server)


async def test_protocol_version_without_bit_0_is_rejected(server: RunningServer) -> None:
    rq = associate_rq()
    rq.protocol_version = 2
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(P.encode(rq))
            answer = await peer.expect_pdu()
            assert answer == P.AssociateRJ(
                P.RJ_PERMANENT, P.RJ_SOURCE_ACSE, P.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED
            )
            await peer.expect_closed()
    await assert_still_serving(server)


async def test_protocol_version_3_is_accepted(server: RunningServer) -> None:
    """PS3.8 9.3.2: bit 0 set means version 1 is supported, whatever else is set."""
    rq = associate_rq()
    rq.protocol_version = 3
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate(rq)
            assert (await peer.echo()).status == S.SUCCESS
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
    await assert_still_serving(server)


# --- P-DATA ---------------------------------------------------------------------------------


async def test_pdv_length_0_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdu(P.PDUType.P_DATA_TF, raw_pdv(0, ECHO_CONTEXT, 3)))
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


async def test_pdv_longer_than_its_pdu_is_aborted(server: RunningServer) -> None:
    command = echo_rq()
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(
                pdu(P.PDUType.P_DATA_TF, raw_pdv(len(command) + 100, ECHO_CONTEXT, 3, command))
            )
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


async def test_command_fragment_after_a_data_fragment_is_aborted(server: RunningServer) -> None:
    data = encode_dataset(make_dataset(rows=16, columns=16))
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdata((CT_CONTEXT, True, True, store_rq(new_uid()))))
            await peer.send(pdata((CT_CONTEXT, False, False, data[:100])))
            await peer.send(pdata((CT_CONTEXT, True, True, echo_rq(2))))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PARAMETER)
    await assert_still_serving(server)
    assert server.stored_files() == []
    assert server.partial_files() == []


@pytest.mark.parametrize("context_id", [5, 99], ids=["rejected-context", "never-proposed"])
async def test_pdata_on_a_context_that_was_not_accepted_is_aborted(
    server: RunningServer, context_id: int
) -> None:
    rq = associate_rq(
        [
            ("1.2.840.10008.1.1", [IMPLICIT_VR_LITTLE_ENDIAN]),
            (CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN]),
            ("1.2.3.4.5.6.7.8.9", [IMPLICIT_VR_LITTLE_ENDIAN]),  # context 5: no such SOP class
        ]
    )
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            ac = await peer.associate(rq)
            assert {c.id: c.result for c in ac.presentation_contexts}[
                5
            ] == P.ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
            await peer.send(pdata((context_id, True, True, echo_rq())))
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


def _without_element(command: bytes, element: int) -> bytes:
    """Drop one group 0000 element (implicit VR) and fix the group length."""
    out = []
    pos = 0
    while pos < len(command):
        _group, elem, length = struct.unpack_from("<HHI", command, pos)
        if elem not in (element, 0x0000):
            out.append(command[pos : pos + 8 + length])
        pos += 8 + length
    rest = b"".join(out)
    return struct.pack("<HHII", 0, 0, 4, len(rest)) + rest


async def test_command_set_missing_a_required_element_is_aborted(server: RunningServer) -> None:
    broken = _without_element(echo_rq(), 0x0110)  # C-ECHO-RQ without its Message ID
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdata((ECHO_CONTEXT, True, True, broken)))
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


# --- out-of-order and empty conversations ---------------------------------------------------------


async def test_connect_and_close_without_a_pdu_is_quiet(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Load balancers and monitoring probe the port this way: not an error, not a crash."""
    with caplog.at_level(logging.DEBUG, logger="aiodicom"):
        for _ in range(3):
            with anyio.fail_after(TEST_TIMEOUT):
                async with raw_peer(server.port) as peer:
                    peer.half_close()
                    await peer.expect_closed()
        await assert_still_serving(server)
    events = [getattr(record, "aiodicom_event", {}).get("event") for record in caplog.records]
    assert "association_released" in events, "logs were not captured"
    bad = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert bad == []
    assert not any(record.exc_info for record in caplog.records)


async def test_abort_before_associate_rq_closes_quietly(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(P.encode(P.Abort(0, 0)))
            await peer.expect_closed()
    await assert_still_serving(server)


async def test_pdata_before_associate_rq_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(pdata((ECHO_CONTEXT, True, True, echo_rq())))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PDU)
    await assert_still_serving(server)


async def test_pdata_after_release_rq_is_aborted(server: RunningServer) -> None:
    """PS3.8 table 9-10: P-DATA in Sta8 (release requested, not yet answered) is AA-8."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            # One segment, so both arrive before the server answers the release.
            await peer.send(P.encode(P.ReleaseRQ()) + pdata((ECHO_CONTEXT, True, True, echo_rq())))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PDU)
    await assert_still_serving(server)


async def test_pdata_after_release_rp_is_ignored_and_the_connection_closed(
    server: RunningServer,
) -> None:
    """Sta13 ignores P-DATA (AA-6); the connection ends by ARTIM at the latest."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
            await peer.send(pdata((ECHO_CONTEXT, True, True, echo_rq())))
            await peer.expect_closed(timeout=FAST.artim + 5)
    await assert_still_serving(server)


async def test_second_associate_rq_on_an_association_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(P.encode(associate_rq()))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PDU)
    await assert_still_serving(server)


# --- release collision, with our client as the requestor -------------------------------------------


async def test_release_collision_with_our_client() -> None:
    """The peer answers our A-RELEASE-RQ with its own (PS3.8 9.2.1): both RPs cross, all ends well.

    The acceptor here is a raw socket following the acceptor's side of the collision:
    Sta7 + A-RELEASE-RQ -> Sta10, then A-RELEASE-RP -> Sta12, then its own A-RELEASE-RP.
    """
    seen: list[P.PDU] = []
    done = anyio.Event()

    async def acceptor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def read() -> P.PDU:
            header = await reader.readexactly(6)
            pdu_type, length = struct.unpack(">BxI", header)
            received = P.decode(pdu_type, await reader.readexactly(length))
            seen.append(received)
            return received

        try:
            rq = await read()
            assert isinstance(rq, P.AssociateRQ)
            ac = P.AssociateAC(
                rq.called_ae,
                rq.calling_ae,
                [
                    P.PresentationContextAC(c.id, 0, c.transfer_syntaxes[0])
                    for c in rq.presentation_contexts
                ],
                P.UserInformation(max_pdu_length=16384, implementation_class_uid="1.2.3.4"),
            )
            writer.write(P.encode(ac))
            assert isinstance(await read(), P.ReleaseRQ)
            writer.write(P.encode(P.ReleaseRQ()))  # collision
            assert isinstance(await read(), P.ReleaseRP)
            writer.write(P.encode(P.ReleaseRP()))
            await writer.drain()
            assert await reader.read() == b""  # the requestor closes (AR-3)
        finally:
            writer.close()
            done.set()

    listener = await asyncio.start_server(acceptor, HOST, 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                HOST,
                port,
                called_ae="RAW-SCP",
                timeouts=FAST,
                contexts=[("1.2.840.10008.1.1", [IMPLICIT_VR_LITTLE_ENDIAN])],
            ) as assoc:
                pass  # leaving the block releases
            assert not assoc.association.is_open
            await done.wait()
    finally:
        listener.close()
        await listener.wait_closed()
    assert [type(p) for p in seen] == [P.AssociateRQ, P.ReleaseRQ, P.ReleaseRP]


async def test_many_echoes_on_one_association_still_work(server: RunningServer) -> None:
    """A control for the cases above: the raw peer itself is well formed."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate(
                build_request(
                    SERVER_AE, "RAW", [("1.2.840.10008.1.1", [IMPLICIT_VR_LITTLE_ENDIAN])]
                )
            )
            for message_id in range(1, 6):
                response = await peer.echo(message_id)
                assert response.status == S.SUCCESS
                assert response.message_id_being_responded_to == message_id
            await peer.send(P.encode(P.ReleaseRQ()))
            assert await peer.expect_pdu() == P.ReleaseRP()
            await peer.expect_closed()
    await assert_still_serving(server)


# --- more broken P-DATA -------------------------------------------------------------------------


async def test_data_fragment_before_any_command_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdata((CT_CONTEXT, False, True, b"\x08\x00\x16\x00")))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PARAMETER)
    await assert_still_serving(server)


async def test_fragments_interleaved_across_contexts_are_aborted(server: RunningServer) -> None:
    command = echo_rq()
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdata((ECHO_CONTEXT, True, False, command[:10])))
            await peer.send(pdata((CT_CONTEXT, True, True, command[10:])))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PARAMETER)
    await assert_still_serving(server)


async def test_pdv_with_reserved_control_bits_is_aborted(server: RunningServer) -> None:
    command = echo_rq()
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(
                pdu(P.PDUType.P_DATA_TF, raw_pdv(len(command) + 2, ECHO_CONTEXT, 0x83, command))
            )
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


async def test_pdata_tf_without_any_pdv_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(pdu(P.PDUType.P_DATA_TF, b""))
            await peer.expect_abort(PROVIDER, P.REASON_INVALID_PARAMETER)
    await assert_still_serving(server)


async def test_release_rp_without_a_release_rq_is_aborted(server: RunningServer) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.associate()
            await peer.send(P.encode(P.ReleaseRP()))
            await peer.expect_abort(PROVIDER, P.REASON_UNEXPECTED_PDU)
    await assert_still_serving(server)


# --- our client against hostile acceptors ----------------------------------------------------------


async def test_client_aborts_an_ac_accepting_a_transfer_syntax_never_proposed() -> None:
    seen: list[P.PDU] = []

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rq = await read_pdu(reader)
        assert isinstance(rq, P.AssociateRQ)
        ac = P.AssociateAC(
            rq.called_ae,
            rq.calling_ae,
            [
                P.PresentationContextAC(c.id, 0, "1.2.840.10008.1.2.4.50")
                for c in rq.presentation_contexts
            ],
            P.UserInformation(max_pdu_length=16384, implementation_class_uid="1.2.3.4"),
        )
        writer.write(P.encode(ac))
        seen.append(await read_pdu(reader))

    async with raw_acceptor(liar) as port:
        with anyio.fail_after(TEST_TIMEOUT), pytest.raises(AssociationAborted):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS):
                pytest.fail("an association with a forged transfer syntax was used")
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0.01)
    # A provider abort, as for any invalid PDU (a user abort would carry no reason).
    assert seen == [P.Abort(PROVIDER, P.REASON_INVALID_PARAMETER)]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (pdu(0x0A, bytes(8)), P.REASON_UNRECOGNIZED_PDU),
        (struct.pack(">BxI", P.PDUType.P_DATA_TF, 0xFFFFFFFF), P.REASON_INVALID_PARAMETER),
        (pdu(P.PDUType.P_DATA_TF, raw_pdv(0, 1, 3)), P.REASON_INVALID_PARAMETER),
        (P.encode(P.AssociateRJ(1, 1, 1)), P.REASON_UNEXPECTED_PDU),
    ],
    ids=["unknown-type", "length-0xffffffff", "pdv-length-0", "rj-after-ac"],
)
async def test_client_aborts_garbage_instead_of_a_response(garbage: bytes, reason: int) -> None:
    seen: list[P.PDU] = []

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        assert isinstance(await read_pdu(reader), P.PDataTF)  # the C-ECHO-RQ
        writer.write(garbage)  # only a header for 0xFFFFFFFF: the client must not wait for more
        seen.append(await read_pdu(reader))

    async with raw_acceptor(hostile) as port:
        with anyio.fail_after(TEST_TIMEOUT), pytest.raises(AssociationAborted):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS) as assoc:
                await assoc.echo()
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0.01)
    assert seen == [P.Abort(PROVIDER, reason)]


async def test_client_aborts_a_malformed_response_command_set() -> None:
    seen: list[P.PDU] = []

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        assert isinstance(await read_pdu(reader), P.PDataTF)
        # A "response" that is not group 0000 at all.
        writer.write(pdata((1, True, True, b"\x08\x00\x16\x00\x02\x00\x00\x001\x00")))
        seen.append(await read_pdu(reader))

    async with raw_acceptor(hostile) as port:
        with anyio.fail_after(TEST_TIMEOUT), pytest.raises(AssociationAborted):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS) as assoc:
                await assoc.echo()
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0.01)
    assert seen == [P.Abort(PROVIDER, P.REASON_INVALID_PARAMETER)]


async def test_client_answers_a_release_requested_by_the_acceptor() -> None:
    """Either side may release (PS3.8 7.2); an outstanding request then fails, it does not hang."""
    seen: list[P.PDU] = []

    async def releasing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        assert isinstance(await read_pdu(reader), P.PDataTF)
        writer.write(P.encode(P.ReleaseRQ()))
        seen.append(await read_pdu(reader))

    async with raw_acceptor(releasing) as port:
        with anyio.fail_after(TEST_TIMEOUT), pytest.raises(AssociationError):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS) as assoc:
                await assoc.echo()
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0.01)
    assert seen == [P.ReleaseRP()]


async def test_client_gives_up_on_an_acceptor_ignoring_release() -> None:
    seen: list[P.PDU] = []

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(accept_all(await read_pdu(reader)))
        seen.append(await read_pdu(reader))  # A-RELEASE-RQ, never answered
        seen.append(await read_pdu(reader))

    async with raw_acceptor(deaf) as port:
        with anyio.fail_after(TEST_TIMEOUT), pytest.raises(DicomTimeoutError):
            async with connect(HOST, port, contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS):
                pass
        with anyio.fail_after(5):
            while len(seen) < 2:
                await anyio.sleep(0.01)
    assert seen[0] == P.ReleaseRQ()
    assert isinstance(seen[1], P.Abort)
