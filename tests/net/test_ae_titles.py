"""AE titles (PS3.5 AE value representation) on both sides of an association.

What used to go wrong: a calling AE title with a backslash was accepted and then every
C-STORE on that association failed 0xC000 (its Source AE Title could not be written),
and titles over 16 characters were cut silently, so ``require_called_ae`` with a long
title of our own rejected every peer. Now one rule (``aiodicom.codec.ae``) decides:

* our own titles (Server, connect, the CLI) are checked at start and raise
  :class:`InvalidAETitleError` before any connection exists;
* as acceptor, an invalid called title is rejected permanently by the service user with
  reason 7 and an invalid calling title with reason 3, and the server keeps serving;
* as requestor, the titles an A-ASSOCIATE-AC echoes are not tested (PS3.8 9.3.3): odd
  ones neither abort the association nor replace our own.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import anyio
import pytest

from aiodicom.codec.ae import ae_title_problem, normalize_ae_title
from aiodicom.codec.part10 import encode_file_meta
from aiodicom.dimse import command as C
from aiodicom.dimse.client import connect
from aiodicom.dimse.server import Server
from aiodicom.errors import (
    AiodicomError,
    AssociationRejected,
    DicomFileError,
    InvalidAETitleError,
    MalformedCommandError,
)
from aiodicom.synthetic import CT_IMAGE_STORAGE
from aiodicom.ul import pdu as P
from aiodicom.ul.negotiation import build_request
from peers import aiodicom_command, run_dcmtk_async

from .conftest import (
    CLIENT_TIMEOUTS,
    ECHO_ONLY,
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    RunningServer,
    accept_all,
    assert_still_serving,
    associate_rq,
    raw_acceptor,
    raw_peer,
    read_pdu,
    running_server,
)

pytestmark = pytest.mark.anyio

VALID = ["A", "SIXTEEN-CHARS-AE", "  PADDED  ", "with space", "lower_case", "a.b-c:d@e/f[g]~"]
#: Titles that break the AE VR: (title, what the message says).
INVALID = {
    "seventeen-chars": ("SEVENTEEN-CHARS-X", "17 characters"),
    "backslash": ("A\\B", "backslash"),
    "tab": ("TAB\tAE", "control character"),
    "newline": ("LINE\nAE", "control character"),
    "escape": ("ESC\x1bAE", "control character"),
    "nul": ("NUL\0AE", "control character"),
    "delete": ("DEL\x7fAE", "control character"),
    "non-ascii": ("\u00c9CHO", "non-ASCII"),
    "empty": ("", "empty"),
    "all-spaces": ("    ", "empty"),
}
#: Raw 16-byte AE fields a hostile peer can put on the wire (the encoder refuses them).
BAD_FIELDS = {
    "backslash": b"A\\B",
    "tab": b"TAB\tAE",
    "nul-inside": b"NUL\0AE",
    "escape": b"ESC\x1bAE",
    "delete": b"DEL\x7fAE",
    "latin-1": b"\xc9CHO",
    "utf-8": "\u00c9CHO".encode(),
    "all-spaces": b"",
    "all-nul": b"\0" * 16,
}


def _field(raw: bytes) -> bytes:
    return raw.ljust(16, b" ")


def rq_with_fields(called: bytes | None = None, calling: bytes | None = None) -> bytes:
    """A valid A-ASSOCIATE-RQ whose called/calling fields are replaced byte for byte."""
    raw = bytearray(P.encode(associate_rq()))
    if called is not None:
        raw[10:26] = _field(called)
    if calling is not None:
        raw[26:42] = _field(calling)
    return bytes(raw)


# --- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("title", VALID)
def test_valid_titles_lose_only_their_padding(title: str) -> None:
    assert ae_title_problem(title) is None
    assert normalize_ae_title(title) == title.strip(" ")


@pytest.mark.parametrize(("title", "why"), INVALID.values(), ids=INVALID.keys())
def test_invalid_titles_raise_one_clear_line(title: str, why: str) -> None:
    with pytest.raises(InvalidAETitleError) as info:
        normalize_ae_title(title, "--aet")
    message = str(info.value)
    assert why in message and message.startswith("--aet ") and "\n" not in message
    assert isinstance(info.value, AiodicomError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(("title", "why"), INVALID.values(), ids=INVALID.keys())
def test_part10_source_ae_follows_the_same_rule(title: str, why: str) -> None:
    with pytest.raises(DicomFileError, match=why):
        encode_file_meta(CT_IMAGE_STORAGE, "1.2.3", "1.2.840.10008.1.2.1", source_ae=title)


@pytest.mark.parametrize(("title", "why"), INVALID.values(), ids=INVALID.keys())
def test_ae_title_elements_of_commands_follow_the_same_rule(title: str, why: str) -> None:
    """Move Originator AE Title and Move Destination are AE titles too."""
    with pytest.raises(MalformedCommandError, match=why):
        C.encode_command(C.CStoreRQ(1, CT_IMAGE_STORAGE, "1.2.3", move_originator_ae_title=title), has_dataset=True)
    with pytest.raises(MalformedCommandError, match=why):
        C.encode_command(C.CMoveRQ(1, CT_IMAGE_STORAGE, title), has_dataset=True)
    message, _ = C.decode_command(C.encode_command(C.CMoveRQ(1, CT_IMAGE_STORAGE, " DEST "), has_dataset=True))
    assert isinstance(message, C.CMoveRQ) and message.move_destination == "DEST"


# --- our own titles: refused at start ----------------------------------------------------------


@pytest.mark.parametrize(("title", "why"), INVALID.values(), ids=INVALID.keys())
def test_server_refuses_an_invalid_title_of_its_own(title: str, why: str) -> None:
    with pytest.raises(InvalidAETitleError, match=why):
        Server(title, HOST, 0)
    with pytest.raises(InvalidAETitleError, match=why):
        Server("GOOD", HOST, 0, calling_ae_allowlist=["OK", title])


@pytest.mark.parametrize(("title", "why"), INVALID.values(), ids=INVALID.keys())
async def test_connect_refuses_invalid_titles_before_connecting(title: str, why: str) -> None:
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1

    async with raw_acceptor(count) as port:
        for options in ({"called_ae": title}, {"calling_ae": title}):
            with anyio.fail_after(TEST_TIMEOUT), pytest.raises(InvalidAETitleError, match=why):
                async with connect(HOST, port, timeouts=CLIENT_TIMEOUTS, **options):
                    pytest.fail("an association was opened with an invalid AE title")
        await anyio.sleep(0.05)
    assert connections == 0


async def test_a_sixteen_character_title_is_required_exactly(tmp_path: Path) -> None:
    """The former bug: a long title of ours was cut on the wire and then matched nobody."""
    title = "SIXTEEN-CHARS-AE"
    server = Server(f" {title} ", HOST, 0, require_called_ae=True, timeouts=FAST, spool_dir=tmp_path / "spool")
    assert server.ae_title == title
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(server.serve)
        try:
            with anyio.fail_after(TEST_TIMEOUT):
                async with connect(HOST, port, called_ae=title, timeouts=FAST) as assoc:
                    assert (await assoc.echo()).is_success
                with pytest.raises(AssociationRejected) as info:
                    async with connect(HOST, port, called_ae=title[:15], timeouts=FAST):
                        pytest.fail("a different called AE title was accepted")
            assert info.value.reason == P.RJ_USER_CALLED_AE_NOT_RECOGNIZED
        finally:
            server.shutdown(grace=1.0)


# --- acceptor: rejections with the right result, source and reason -------------------------------


async def _expect_rejection(running: RunningServer, raw: bytes, reason: int) -> None:
    async with raw_peer(running.port) as peer:
        await peer.send(raw)
        answer = await peer.expect_pdu()
        assert answer == P.AssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, reason)
        await peer.expect_closed()


async def test_invalid_titles_are_rejected_with_reasons_3_and_7(tmp_path: Path) -> None:
    """Every bad field, in either position, against one running server that keeps serving."""
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            for raw in BAD_FIELDS.values():
                await _expect_rejection(
                    running, rq_with_fields(calling=raw), P.RJ_USER_CALLING_AE_NOT_RECOGNIZED
                )
                await _expect_rejection(
                    running, rq_with_fields(called=raw), P.RJ_USER_CALLED_AE_NOT_RECOGNIZED
                )
                # Both bad: the called title is checked first.
                await _expect_rejection(
                    running, rq_with_fields(raw, raw), P.RJ_USER_CALLED_AE_NOT_RECOGNIZED
                )
        assert running.server.active_associations == 0
        await assert_still_serving(running)


async def test_rejections_interleave_with_a_client_that_keeps_storing(tmp_path: Path) -> None:
    """Hostile titles on some connections never disturb a good association meanwhile."""
    from aiodicom.synthetic import write_study

    files = write_study(tmp_path / "study", images_per_series=6, rows=16, columns=16)
    async with running_server(tmp_path) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                HOST, running.port, called_ae=SERVER_AE, calling_ae="GOOD", timeouts=FAST
            ) as assoc:
                for path, raw in zip(files, BAD_FIELDS.values(), strict=False):
                    await _expect_rejection(
                        running, rq_with_fields(calling=raw), P.RJ_USER_CALLING_AE_NOT_RECOGNIZED
                    )
                    assert (await assoc.store(path)).is_success
        assert len(running.stored_files()) == len(files)


@pytest.mark.parametrize("field", [b"  PADDED", b"PADDED\0\0\0\0", b"SIXTEEN-CHARS-AE"])
async def test_padded_and_full_length_titles_are_accepted(server: RunningServer, field: bytes) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        async with raw_peer(server.port) as peer:
            await peer.send(rq_with_fields(calling=field))
            answer = await peer.expect_pdu()
            assert isinstance(answer, P.AssociateAC)
            assert answer.calling_ae == field.strip(b"\0 ").decode()
            assert (await peer.echo()).status == 0


async def test_backslash_calling_ae_never_gets_to_store(server: RunningServer) -> None:
    """The reported case: refused at association time, nothing half-stored."""
    with anyio.fail_after(TEST_TIMEOUT):
        await _expect_rejection(server, rq_with_fields(calling=b"MOD\\ALITY"), P.RJ_USER_CALLING_AE_NOT_RECOGNIZED)
    assert server.stored_files() == [] and server.partial_files() == []
    await assert_still_serving(server)


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("option", "title", "reason"),
    [
        ("-aet", "A\\B", "Calling AE Title Not Recognized"),
        ("-aet", "TAB\tAE", "Calling AE Title Not Recognized"),
        ("-aet", "    ", "Calling AE Title Not Recognized"),
        ("-aet", "\u00c9CHO", "Calling AE Title Not Recognized"),
        ("-aec", "A\\B", "Called AE Title Not Recognized"),
        ("-aec", "ESC\x1bAE", "Called AE Title Not Recognized"),
    ],
)
async def test_dcmtk_echoscu_with_odd_titles_is_told_why(
    server: RunningServer, option: str, title: str, reason: str
) -> None:
    with anyio.fail_after(TEST_TIMEOUT):
        result = await run_dcmtk_async(["echoscu", option, title, HOST, str(server.port)], timeout=15)
    output = result.stdout + result.stderr
    assert "Rejected Permanent, Source: Service User" in output, output
    assert reason in output, output
    await assert_still_serving(server)


# --- requestor: echoed titles are not tested ------------------------------------------------------


@pytest.mark.parametrize("field", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
async def test_client_ignores_odd_titles_echoed_in_the_ac(field: bytes) -> None:
    """PS3.8 9.3.3: the AC's title fields "shall not be tested". The association works and
    keeps our own titles."""

    async def acceptor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ac = bytearray(accept_all(await read_pdu(reader)))
        ac[10:26] = ac[26:42] = _field(field)
        writer.write(bytes(ac))
        message = await read_pdu(reader)
        assert isinstance(message, P.PDataTF)
        rsp = C.encode_command(C.CEchoRSP(1, 0), has_dataset=False)
        writer.write(P.encode(P.PDataTF([P.PDV(1, True, True, rsp)])))
        assert isinstance(await read_pdu(reader), P.ReleaseRQ)
        writer.write(P.encode(P.ReleaseRP()))
        await writer.drain()

    async with raw_acceptor(acceptor) as port:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                HOST, port, called_ae="THEM", calling_ae="US", contexts=ECHO_ONLY, timeouts=CLIENT_TIMEOUTS
            ) as assoc:
                assert (await assoc.echo()).is_success
                assert (assoc.association.called_ae, assoc.association.calling_ae) == ("THEM", "US")


def test_build_request_sends_titles_without_padding() -> None:
    rq = build_request("  THEM ", " US", ECHO_ONLY)
    assert (rq.called_ae, rq.calling_ae) == ("THEM", "US")
    assert P.encode(rq)[10:42] == b"THEM".ljust(16) + b"US".ljust(16)


# --- the command line ---------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiodicom_command(*args), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("receive", "--port", "0", "--aet", "SEVENTEEN-CHARS-X"), "--aet"),
        (("receive", "--port", "0", "--allow", "A\\B"), "--allow"),
        (("echo", HOST, "9", "--aec", "A\\B"), "--aec"),
        (("store", HOST, "9", "nothing-here", "--aet", "   "), "--aet"),
    ],
    ids=["receive-long-aet", "receive-allow-backslash", "echo-aec-backslash", "store-blank-aet"],
)
def test_cli_refuses_bad_titles_at_start_in_one_line(tmp_path: Path, args: tuple[str, ...], option: str) -> None:
    extra = ("--output-dir", str(tmp_path / "out")) if args[0] == "receive" else ()
    result = _cli(*args, *extra)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aiodicom {args[0]}: error: {option} "), result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was created
