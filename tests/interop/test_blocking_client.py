"""``aiodicom echo`` and ``aiodicom store`` run on the blocking driver (issue 8, start-up).

Each case runs the real command as a process under ``python -X importtime`` against a
real peer (DCMTK ``storescp``, our own ``aiodicom receive``), so it proves two things at
once: the blocking driver (:mod:`aiodicom.dimse.blocking`) carried the exchange, without
asyncio ever being imported, and the outcome is the one the asyncio client gives
(the same summaries, reports, error lines and exit codes, which the other CLI tests
check in detail). Failures included: a refused association, a peer that aborts in the
middle of a batch, a response that never comes (those three with DCMTK's fault injection in
``test_store_report.py``, which runs the command the same way), a file that is not DICOM. ``-v`` keeps
the asyncio client (its association logs come from it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.dimse import requesting
from aiodicom.dimse.blocking import connect_blocking
from aiodicom.synthetic import write_study
from aiodicom.transport.timeouts import Timeouts
from peers import aiodicom_receive, dataset_bytes, storescp

from .helpers import TEST_TIMEOUT, Traced, files_by_uid, sop_instance_uid


def study(folder: Path, count: int, transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN) -> list[Path]:
    return write_study(folder, images_per_series=count, rows=8, columns=8, transfer_syntax=transfer_syntax)


def read_report(path: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads(path.read_text())
    return report


# --- talking to real peers ----------------------------------------------------------------------


def test_echo_and_store_to_our_receive_on_the_blocking_driver(tmp_path: Path) -> None:
    files = study(tmp_path / "explicit", 2) + study(tmp_path / "implicit", 1, IMPLICIT_VR_LITTLE_ENDIAN)
    with aiodicom_receive(tmp_path / "out") as peer:
        where = ("127.0.0.1", str(peer.port), "--aec", "AIODICOM")
        echo = Traced("echo", *where)
        store = Traced("store", where[0], where[1], *map(str, files), *where[2:], "--no-progress")
    for run in (echo, store):
        run.assert_blocking()
        assert run.code == 0, run.stdout + run.stderr
    assert "(AIODICOM): 0x0000 (Success) in " in echo.stdout
    assert store.stdout.startswith("sent 3 of 3 files to 127.0.0.1"), store.stdout
    stored = files_by_uid(tmp_path / "out")
    for source in files:  # the data set arrives as it was in the file
        assert dataset_bytes(stored[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
def test_echo_and_store_to_dcmtk_on_the_blocking_driver(tmp_path: Path) -> None:
    files = study(tmp_path / "src", 3)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B",)) as peer:
        where = ("127.0.0.1", str(peer.port), "--aec", "STORESCP")
        echo = Traced("echo", *where)
        store = Traced("store", where[0], where[1], str(tmp_path / "src"), *where[2:], "--no-progress")
    for run in (echo, store):
        run.assert_blocking()
        assert run.code == 0, run.stdout + run.stderr
    stored = files_by_uid(out)
    for source in files:
        assert dataset_bytes(stored[sop_instance_uid(source)]) == dataset_bytes(source)


# --- failures ---------------------------------------------------------------------------------


def test_a_non_dicom_file_is_refused_and_the_others_still_go(tmp_path: Path) -> None:
    (good,) = study(tmp_path / "src", 1)
    junk = tmp_path / "notes.dcm"
    junk.write_text("this is not DICOM\n")
    report_path = tmp_path / "report.json"
    with aiodicom_receive(tmp_path / "out") as peer:
        run = Traced("store", "127.0.0.1", str(peer.port), str(junk), str(good), "--aec", "AIODICOM",
                     "--no-progress", "--report", str(report_path))  # fmt: skip
    run.assert_blocking()
    assert run.code == 1, run.stdout + run.stderr
    outcomes = {Path(str(entry["path"])).name: entry["outcome"] for entry in read_report(report_path)["files"]}
    assert outcomes == {"notes.dcm": "refused", good.name: "acknowledged"}
    assert any(line.startswith("refused: ") and "notes.dcm" in line for line in run.stderr.splitlines()), run.stderr
    assert set(files_by_uid(tmp_path / "out")) == {sop_instance_uid(good)}


def test_an_unreachable_peer_is_one_line(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out") as peer:
        port = peer.port
    run = Traced("echo", "127.0.0.1", str(port), "--timeout", "5")  # the peer is gone
    run.assert_blocking()
    assert run.code == 1
    assert run.stderr.strip() == f"aiodicom echo: error: cannot connect to 127.0.0.1:{port}: Connection refused"


# --- the rule: -v keeps the asyncio client -------------------------------------------------------


def test_verbose_uses_the_asyncio_client_with_the_same_output(tmp_path: Path) -> None:
    with aiodicom_receive(tmp_path / "out") as peer:
        run = Traced("echo", "127.0.0.1", str(peer.port), "--aec", "AIODICOM", "-v")
    assert run.code == 0, run.stdout + run.stderr
    assert {"asyncio", "aiodicom.dimse.client"} <= run.modules
    assert "aiodicom.dimse.blocking" not in run.modules
    assert "(AIODICOM): 0x0000 (Success) in " in run.stdout


# --- the driver as a library: files too large to read whole ---------------------------------------


@pytest.mark.dcmtk
def test_large_files_are_streamed_or_converted_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the threshold, a file goes from disk in chunks as it is; a peer that accepts
    only implicit VR gets the explicit file converted (storescp ``+xi``)."""
    monkeypatch.setattr(requesting, "STREAM_THRESHOLD", 1024)  # every test file counts as large
    explicit = study(tmp_path / "explicit", 2)
    implicit = study(tmp_path / "implicit", 1, IMPLICIT_VR_LITTLE_ENDIAN)
    assert all(path.stat().st_size > 1024 for path in explicit + implicit)
    out = tmp_path / "out"
    out.mkdir()
    contexts = requesting.contexts_for_encodings(
        [(str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID), ts) for p, ts in
         [(explicit[0], EXPLICIT_VR_LITTLE_ENDIAN), (implicit[0], IMPLICIT_VR_LITTLE_ENDIAN)]]
    )  # fmt: skip
    timeouts = Timeouts(connect=TEST_TIMEOUT, acse=TEST_TIMEOUT, dimse=TEST_TIMEOUT)
    with storescp(output_dir=out, args=("+B", "+xi")) as peer:
        with connect_blocking("127.0.0.1", peer.port, called_ae="STORESCP", contexts=contexts[0],
                              timeouts=timeouts, max_pdu_length=16384) as assoc:  # fmt: skip
            outcomes = list(assoc.store_files(explicit + implicit))
    assert [(path, status.is_success) for path, status in outcomes] == [
        (path, True) for path in explicit + implicit
    ]
    stored = files_by_uid(out)
    for source in explicit + implicit:
        received = pydicom.dcmread(stored[sop_instance_uid(source)])
        assert received.file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
        assert received.PixelData == pydicom.dcmread(source).PixelData
    assert dataset_bytes(stored[sop_instance_uid(implicit[0])]) == dataset_bytes(implicit[0])
