"""What a running server acknowledges: only whole data sets, under their own name.

A data set cut inside any element (header, value, sequence, encapsulated fragment) or
made of garbage is answered 0xC000 with an Error Comment, logged in one line without a
traceback, and nothing of it is stored. A data set whose SOP Class or Instance UID differs
from its command is answered 0xA900 and never replaces what was stored under the
command's UID. Meanwhile another client is served. On the sending side, our client
refuses such files itself and goes on with the rest.
"""

from __future__ import annotations

import logging
import random
import struct
import sys
from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from aiodicom.cli.receive import FileWriter
from aiodicom.codec import uids
from aiodicom.codec.uids import new_uid
from aiodicom.dimse import client as client_module
from aiodicom.dimse import status as S
from aiodicom.dimse.client import connect
from aiodicom.dimse.command import CStoreRSP
from aiodicom.errors import MalformedDatasetError
from aiodicom.synthetic import CT_IMAGE_STORAGE, make_dataset
from aiodicom.ul import pdu as P
from peers import aiodicom_command, storescp

from .conftest import (
    FAST,
    HOST,
    SERVER_AE,
    TEST_TIMEOUT,
    associate_rq,
    pdata,
    raw_peer,
    running_server,
)

pytestmark = pytest.mark.anyio

JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
SYNTAXES = [
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
    uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_LOSSLESS,
]
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


class CountingWriter(FileWriter):
    """The CLI's writer, counting the handler calls (a refused data set makes none)."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(output_dir)
        self.calls = 0

    async def __call__(self, instance: Any) -> int:
        self.calls += 1
        return await super().__call__(instance)


def rich(uid: str, transfer_syntax: str) -> Dataset:
    """A CT instance with an undefined-length sequence, and encapsulated pixels when compressed."""
    ds = make_dataset(rows=32, columns=32, sop_instance_uid=uid)
    item = Dataset()
    item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    item.ReferencedSOPInstanceUID = new_uid()
    ds.ReferencedImageSequence = Sequence([item, item])
    ds[0x00081140].is_undefined_length = True
    for each in ds.ReferencedImageSequence:
        each.is_undefined_length_sequence_item = True
    if transfer_syntax == JPEG_LOSSLESS:
        ds.PixelData = encapsulate([bytes(range(256)) * 3, b"\x55" * 300])
        ds[0x7FE00010].VR = "OB"
        ds[0x7FE00010].is_undefined_length = True
    return ds


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    import zlib

    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != uids.EXPLICIT_VR_BIG_ENDIAN
    fp.is_implicit_VR = transfer_syntax == uids.IMPLICIT_VR_LITTLE_ENDIAN
    write_dataset(fp, ds)
    raw = bytes(fp.getvalue())
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        raw = deflater.compress(raw) + deflater.flush()
    return raw


def element_boundaries(ds: Dataset, transfer_syntax: str) -> set[int]:
    partial = Dataset()
    out = {0}
    for element in ds:
        partial.add(element)
        out.add(len(encode(partial, transfer_syntax)))
    return out


def cut_offsets(ds: Dataset, data: bytes, transfer_syntax: str) -> list[int]:
    """Cuts inside headers, values, the sequence and the pixel data (or its fragments)."""
    if transfer_syntax == uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return sorted({1, 7, len(data) // 3, len(data) // 2, len(data) - 2, len(data) - 1})
    big = transfer_syntax == uids.EXPLICIT_VR_BIG_ENDIAN

    def at(group: int, elem: int) -> int:
        return data.index(struct.pack(">HH" if big else "<HH", group, elem))

    sq, px = at(0x0008, 0x1140), at(0x7FE0, 0x0010)
    chosen = {
        3,
        9,
        sq + 2,
        sq + 10,
        sq + 14,
        sq + 30,
        px + 3,
        px + 10,
        px + 40,
        px + 200,
        len(data) - 1,
        len(data) - 5,
    }
    rng = random.Random(transfer_syntax)
    chosen |= {rng.randrange(1, len(data)) for _ in range(12)}
    return sorted(chosen - element_boundaries(ds, transfer_syntax))


async def store_raw(
    peer: Any,
    context: int,
    uid: str,
    data: bytes,
    message_id: int,
    sop_class: str = CT_IMAGE_STORAGE,
) -> CStoreRSP:
    from aiodicom.dimse import command as C

    command = C.encode_command(C.CStoreRQ(message_id, sop_class, uid), has_dataset=True)
    await peer.send(pdata((context, True, True, command), (context, False, True, data)))
    response: CStoreRSP = await peer.expect_response(CStoreRSP)
    return response


@pytest.mark.parametrize("transfer_syntax", SYNTAXES)
async def test_cut_data_sets_are_refused_and_nothing_is_stored(
    tmp_path: Path, transfer_syntax: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicom")
    writer = CountingWriter(tmp_path / "out")
    refused = 0
    async with running_server(
        tmp_path, on_store=writer, accept_any_transfer_syntax=True
    ) as running:
        with anyio.fail_after(TEST_TIMEOUT * 2):
            async with connect(
                HOST, running.port, called_ae=SERVER_AE, calling_ae="GOOD", timeouts=FAST
            ) as good:
                async with raw_peer(running.port) as peer:
                    await peer.associate(associate_rq([(CT_IMAGE_STORAGE, [transfer_syntax])]))
                    uid = new_uid()
                    ds = rich(uid, transfer_syntax)
                    data = encode(ds, transfer_syntax)
                    offsets = cut_offsets(ds, data, transfer_syntax)
                    assert len(offsets) >= 6
                    for message_id, cut in enumerate(offsets, start=1):
                        response = await store_raw(peer, 1, uid, data[:cut], message_id)
                        assert response.status == S.CANNOT_UNDERSTAND, (cut, response)
                        assert response.error_comment and "malformed" in response.error_comment
                        refused += 1
                        assert running.stored_files() == [] and running.partial_files() == []
                        assert (await good.echo()).is_success  # served meanwhile
                    # The whole data set, after all that, is stored.
                    response = await store_raw(peer, 1, uid, data, 999)
                    assert response.status == S.SUCCESS
                    await peer.send(P.encode(P.ReleaseRQ()))
                    assert await peer.expect_pdu() == P.ReleaseRP()
    assert writer.calls == 1
    [stored] = running.stored_files()
    assert stored.read_bytes().endswith(data)
    assert_one_line_each(caplog, refused)


def assert_one_line_each(caplog: pytest.LogCaptureFixture, refused: int) -> None:
    """One ``store_refused`` record per refusal, and no traceback anywhere."""
    events = [getattr(record, "aiodicom_event", {}).get("event") for record in caplog.records]
    assert events.count("store_refused") == refused
    assert not any(record.exc_info for record in caplog.records)


def garbage_cases() -> dict[str, bytes]:
    rng = random.Random(6)
    return {
        "zeros": bytes(8192),
        "random": bytes(rng.randrange(256) for _ in range(5000)),
        "wrong-vr": struct.pack("<HH2sH", 0x0008, 0x0016, b"Q!", 26)
        + CT_IMAGE_STORAGE.encode()
        + b"\0",
        "length-past-end": struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", 26)
        + CT_IMAGE_STORAGE.encode()
        + b"\0"
        + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 1 << 20)
        + bytes(4000),
        "text": b"Hello, this is a text file, not a data set.\n" * 50,
    }


async def test_garbage_is_refused_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicom")
    writer = CountingWriter(tmp_path / "out")
    cases = garbage_cases()
    async with running_server(tmp_path, on_store=writer) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                for message_id, (case, data) in enumerate(sorted(cases.items()), start=1):
                    response = await store_raw(peer, 3, new_uid(), data, message_id)
                    # Not 0xA700: that would tell the sender to retry the same garbage forever.
                    assert response.status == S.CANNOT_UNDERSTAND, case
                    assert response.error_comment, case
    assert writer.calls == 0
    assert running.stored_files() == [] and running.partial_files() == []
    assert_one_line_each(caplog, len(cases))


# --- the data set must be the instance its command names -------------------------------------------


def _dataset(sop_class: str | None, sop_instance: str | None, marker: str) -> bytes:
    ds = make_dataset(rows=16, columns=16, sop_instance_uid=sop_instance or new_uid())
    ds.StudyDescription = marker
    ds.SOPClassUID = sop_class or ""
    if sop_class is None:
        del ds.SOPClassUID
    if sop_instance is None:
        del ds.SOPInstanceUID
    return encode(ds, uids.EXPLICIT_VR_LITTLE_ENDIAN)


def mismatch_cases(first: str, other: str) -> list[tuple[str, str | None, str | None, int, int]]:
    """(command instance, data set class, data set instance, expected status, offending tag)."""
    return [
        (first, CT_IMAGE_STORAGE, other, S.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, 0x00080018),
        (other, CT_IMAGE_STORAGE, first, S.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, 0x00080018),
        (first, MR_IMAGE_STORAGE, first, S.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, 0x00080016),
        (first, CT_IMAGE_STORAGE, None, S.CANNOT_UNDERSTAND, 0x00080018),
        (first, None, first, S.CANNOT_UNDERSTAND, 0x00080016),
        (first, "", first, S.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, 0x00080016),
    ]


@pytest.mark.dcmtk
async def test_mismatch_statuses_are_the_ones_dcmtk_storescp_answers(tmp_path: Path) -> None:
    """The reference: DCMTK's storescp answers the same cases with the same codes."""
    first, other = new_uid(), new_uid()
    with storescp(output_dir=tmp_path, aet=SERVER_AE) as peer_process:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(peer_process.port) as peer:
                await peer.associate()
                for message_id, (command_uid, ds_class, ds_instance, expected, _) in enumerate(
                    mismatch_cases(first, other), start=1
                ):
                    data = _dataset(ds_class, ds_instance, "IMPOSTOR")
                    response = await store_raw(peer, 3, command_uid, data, message_id)
                    assert response.status == expected, (
                        command_uid,
                        ds_class,
                        ds_instance,
                        response,
                    )


async def test_a_data_set_naming_another_instance_never_replaces_one(tmp_path: Path) -> None:
    writer = CountingWriter(tmp_path / "out")
    first, other = new_uid(), new_uid()
    original = _dataset(CT_IMAGE_STORAGE, first, "ORIGINAL")
    cases = mismatch_cases(first, other)
    async with running_server(tmp_path, on_store=writer) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with raw_peer(running.port) as peer:
                await peer.associate()
                assert (await store_raw(peer, 3, first, original, 1)).status == S.SUCCESS
                [stored] = running.stored_files()
                for message_id, (command_uid, ds_class, ds_instance, expected, tag) in enumerate(
                    cases, start=2
                ):
                    data = _dataset(ds_class, ds_instance, "IMPOSTOR")
                    response = await store_raw(peer, 3, command_uid, data, message_id)
                    assert response.status == expected, (command_uid, ds_class, ds_instance)
                    assert response.offending_element == (tag,)
                    assert response.error_comment
                    assert running.stored_files() == [stored]
                    assert stored.read_bytes().endswith(original)
    assert writer.calls == 1


# --- the sending side -----------------------------------------------------------------------


def _files(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Good files and bad ones (cut, not DICOM, empty, cut in a header), interleaved."""
    folder = tmp_path / "files"
    folder.mkdir()
    good: list[Path] = []
    bad: list[Path] = []
    for index in range(3):
        ds = make_dataset(rows=64, columns=64)
        path = folder / f"good{index}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        good.append(path)
    whole = good[0].read_bytes()
    px = whole.index(struct.pack("<HH", 0x7FE0, 0x0010))
    for name, content in {
        "cut-in-pixels": whole[: len(whole) - 100],
        "cut-in-a-header": whole[: px + 5],
        "not-dicom": b"just some text\n" * 100,
        "empty": b"",
    }.items():
        path = folder / f"bad-{name}.dcm"
        path.write_bytes(content)
        bad.append(path)
    return good, bad


@pytest.mark.parametrize("streamed", [False, True], ids=["read-whole", "streamed"])
async def test_client_refuses_bad_files_itself_and_goes_on(
    tmp_path: Path, streamed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if streamed:  # every file takes the large-file path (walked by seeking, sent from disk)
        monkeypatch.setattr(client_module, "_STREAM_THRESHOLD", 1024)
    good, bad = _files(tmp_path)
    order = [good[0], *bad[:2], good[1], *bad[2:], good[2]]
    writer = CountingWriter(tmp_path / "out")
    results: dict[Path, object] = {}
    async with running_server(tmp_path, on_store=writer) as running:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(HOST, running.port, called_ae=SERVER_AE, timeouts=FAST) as assoc:
                async for path, outcome in assoc.store_files(order):
                    results[path] = outcome
                for path in bad:  # one at a time, as a path and as bytes: refused, nothing sent
                    with pytest.raises(MalformedDatasetError, match=path.name):
                        await assoc.store(path)
                    with pytest.raises(MalformedDatasetError):
                        await assoc.store(path.read_bytes())
                assert (await assoc.echo()).is_success  # the association is fine
    for path in good:
        assert results[path] == S.SUCCESS, results[path]
    for path in bad:
        error = results[path]
        assert isinstance(error, MalformedDatasetError), (path, error)
        assert str(error)
    assert writer.calls == len(good)  # nothing of a bad file reached the server
    assert len(running.stored_files()) == len(good)


async def test_cli_store_reports_bad_files_and_sends_the_rest(tmp_path: Path) -> None:
    good, bad = _files(tmp_path)
    async with running_server(tmp_path, on_store=CountingWriter(tmp_path / "out")) as running:
        with anyio.fail_after(TEST_TIMEOUT * 2):
            result = await anyio.run_process(
                aiodicom_command(
                    "store",
                    HOST,
                    str(running.port),
                    str(tmp_path / "files"),
                    "--aec",
                    SERVER_AE,
                    "--no-progress",
                ),
                check=False,
            )
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 1, out
    assert "Traceback" not in out
    # The cut files are refused by the client itself (the non-DICOM ones are skipped as
    # such when found in a folder); each is named once, with what is wrong.
    assert "acknowledged  3" in out and "refused       2" in out
    for path in bad[:2]:
        assert out.count(str(path)) == 1, out
    assert "data set ends inside" in out
    assert len(running.stored_files()) == len(good)
    assert sys.executable  # the command ran under this interpreter (aiodicom_command)
