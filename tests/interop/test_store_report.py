"""``aiodicom store`` tells what got through, always (issue 8, item 3).

The real command runs as a process against DCMTK ``storescp`` (with its fault
injection) and against our own Server whose handler answers warnings and
failures with an Error Comment. Each case checks the printed summary and the
``--report`` JSON, file by file.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pydicom
import pytest

from aiodicom.codec.part10 import read_file_meta
from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.dimse.server import Server
from aiodicom.dimse.status import Status
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.synthetic import write_study
from peers import aiodicom_command, compress_jpeg_lossless, compress_rle, run_dcmtk, storescp

from .helpers import TEST_TIMEOUT, Traced, files_by_uid, serving, sop_instance_uid

pytestmark = pytest.mark.anyio


def store(*args: str, timeout: float = TEST_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        aiodicom_command("store", *args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout,
    )


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    assert report["version"] == 1
    assert sum(report["counts"].values()) == len(report["files"])
    return report


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {Path(entry["path"]).name: entry["outcome"] for entry in report["files"]}


def study(folder: Path, count: int, **kwargs: Any) -> list[Path]:
    return write_study(folder, images_per_series=count, rows=8, columns=8, **kwargs)


def with_odd_length_value(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose (0010,0020) Patient ID holds 3 bytes (odd, PS3.5 7.1.1 forbids it)."""
    data = src.read_bytes()
    meta = read_file_meta(data)
    assert meta.transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
    at = data.index(b"\x10\x00\x20\x00LO", meta.dataset_offset)
    (length,) = struct.unpack_from("<H", data, at + 6)
    dst.write_bytes(data[:at] + b"\x10\x00\x20\x00LO\x03\x00ODD" + data[at + 8 + length :])
    return dst


# --- against DCMTK ---------------------------------------------------------------------------


def test_a_folder_without_dicom_files_is_an_error_not_a_success(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here\n")
    result = store("127.0.0.1", "11112", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == "aiodicom store: error: no DICOM files to send (1 non-DICOM files skipped)"


@pytest.mark.dcmtk
def test_bad_files_do_not_end_the_run_and_every_file_is_accounted_for(tmp_path: Path) -> None:
    src = tmp_path / "src"
    good = study(src / "ct", 3)
    (src / "README.txt").write_text("not DICOM\n")
    (src / "ct" / "thumbs.db").write_bytes(b"\0" * 300)
    odd = with_odd_length_value(study(tmp_path / "raw3", 1, seed=5)[0], src / "odd.dcm")
    pydicom_odd_uid = sop_instance_uid(odd)
    named_junk = tmp_path / "junk.dcm"
    named_junk.write_bytes(b"DICM" * 10)
    lossless = compress_jpeg_lossless(study(tmp_path / "raw", 1, seed=3)[0], src / "lossless.dcm")
    lossy = src / "lossy.dcm"
    run_dcmtk(["dcmcjpeg", "+ee", str(study(tmp_path / "raw2", 1, seed=4)[0]), str(lossy)], check=True)
    odd.rename(src / "zz-odd.dcm")  # sorted last: the file after it must still go
    report_path = tmp_path / "report.json"
    out = tmp_path / "out"
    out.mkdir()
    # storescp accepts uncompressed syntaxes only by default: the JPEG files get no context.
    with storescp(output_dir=out) as peer:
        result = store("127.0.0.1", str(peer.port), str(src), str(named_junk), "--aec", "STORESCP",
                       "--report", str(report_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    report = read_report(report_path)
    assert outcomes(report) == {
        **{p.name: "acknowledged" for p in good},
        "README.txt": "skipped",
        "thumbs.db": "skipped",
        "lossless.dcm": "acknowledged",
        "lossy.dcm": "failed",
        "zz-odd.dcm": "acknowledged",
        "junk.dcm": "refused",
    }
    entries = {Path(e["path"]).name: e for e in report["files"]}
    assert "lossy" in entries["lossy.dcm"]["reason"] and "JPEG Extended" in entries["lossy.dcm"]["reason"]
    assert entries["lossless.dcm"]["local_changes"] == ["decompressed from JPEG Lossless, Non-Hierarchical, "
                                                        "First-Order Prediction (Process 14 [Selection Value 1])"]
    assert entries["zz-odd.dcm"]["local_changes"] == ["padded odd-length (0010,0020)"]
    assert report["counts"] == {"acknowledged": 5, "warning": 0, "failed": 1, "refused": 1, "not_sent": 0,
                                "skipped": 2}
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sent 5 of 7 files to 127.0.0.1")
    assert "  skipped       2 non-DICOM files found in folders" in lines
    assert any(line.startswith("  repaired      1 (odd-length values padded") for line in lines)
    assert any(line.startswith("  decompressed  1 (lossless") for line in lines)
    assert any(line.startswith("  refused       1") for line in lines)
    assert any(line.startswith("failed: ") and "lossy.dcm" in line for line in result.stderr.splitlines())
    # What the peer stored: the padded value, and the lossless file decompressed under its own UID.
    stored = files_by_uid(out)
    assert pydicom.dcmread(stored[pydicom_odd_uid]).PatientID == "ODD"
    decompressed = pydicom.dcmread(stored[sop_instance_uid(lossless)])
    assert decompressed.file_meta.TransferSyntaxUID in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    assert (decompressed.pixel_array == pydicom.dcmread(lossless).pixel_array).all()


@pytest.mark.dcmtk
def test_compressed_files_go_untouched_when_accepted_and_decompressed_only_when_not(tmp_path: Path) -> None:
    """storescp +xs accepts JPEG lossless (and uncompressed) only: the RLE file is decompressed."""
    src = tmp_path / "src"
    src.mkdir()
    jpeg = compress_jpeg_lossless(study(tmp_path / "a", 1, seed=1)[0], src / "jpeg.dcm")
    rle = compress_rle(study(tmp_path / "b", 1, seed=2)[0], src / "rle.dcm")
    report_path = tmp_path / "report.json"
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+xs",)) as peer:
        result = store("127.0.0.1", str(peer.port), str(src), "--aec", "STORESCP", "--report", str(report_path))
    assert result.returncode == 0, result.stdout + result.stderr
    entries = {Path(e["path"]).name: e for e in read_report(report_path)["files"]}
    assert entries["jpeg.dcm"]["local_changes"] == []
    assert entries["rle.dcm"]["local_changes"] == ["decompressed from RLE Lossless"]
    stored = files_by_uid(out)
    assert pydicom.dcmread(stored[sop_instance_uid(jpeg)]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    unpacked = pydicom.dcmread(stored[sop_instance_uid(rle)])
    assert unpacked.file_meta.TransferSyntaxUID in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    assert (unpacked.pixel_array == pydicom.dcmread(rle).pixel_array).all()
    assert "  decompressed  1 (lossless" in result.stdout


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("fault", "extra", "stopped", "failed"),
    [
        (("--abort-after",), (), "peer aborted the association", 1),
        (("--refuse",), (), "association rejected permanently", 0),
        (("--sleep-during", "3"), ("--dimse-timeout", "1"), "no dimse response within 1.0 s", 1),
    ],
    ids=["abort", "refuse", "timeout"],
)
def test_a_run_cut_short_still_reports_every_file(
    tmp_path: Path, fault: tuple[str, ...], extra: tuple[str, ...], stopped: str, failed: int
) -> None:
    files = study(tmp_path / "src", 4)
    report_path = tmp_path / "report.json"
    with storescp(args=fault) as peer:
        result = Traced("store", "127.0.0.1", str(peer.port), str(tmp_path / "src"), "--aec", "STORESCP",
                        "--report", str(report_path), *extra)
    result.assert_blocking()  # the one-shot command's blocking driver met the fault
    assert result.code == 1
    report = read_report(report_path)
    assert report["counts"]["failed"] == failed
    assert report["counts"]["not_sent"] == len(files) - failed
    assert report["counts"]["acknowledged"] == 0
    assert len(report["stopped"]) == 1 and report["stopped"][0].lower().startswith(stopped), report["stopped"]
    for entry in report["files"]:
        assert entry["reason"], entry  # every file says why it did not get through
    assert result.stdout.startswith(f"sent 0 of {len(files)} files")
    assert f"  not sent      {len(files) - failed}" in result.stdout.splitlines()
    assert any(line.startswith("stopped: ") for line in result.stderr.splitlines())


# --- against our own Server ----------------------------------------------------------------------


class Answers:
    """A store handler answering from a script, by arrival order, with Error Comments."""

    def __init__(self, script: list[Status | None], folder: Path) -> None:
        self.script = script
        self.folder = folder
        self.seen = 0
        self.arrived = anyio.Event()

    async def __call__(self, instance: ReceivedInstance) -> Status | None:
        answer = self.script[self.seen]
        self.seen += 1
        if answer is None or not answer.is_failure:
            instance.save(self.folder / f"{self.seen}.dcm")
        return answer


async def run_store(*args: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(TEST_TIMEOUT):
        return await anyio.run_process(aiodicom_command("store", *args), check=False)


async def test_warnings_and_failures_carry_the_peers_error_comment(tmp_path: Path) -> None:
    files = study(tmp_path / "src", 4)
    handler = Answers(
        [None, Status(0xB000, error_comment="PatientName coerced"),
         Status(0xA900, error_comment="no PatientID here"), None],
        tmp_path,
    )
    report_path = tmp_path / "report.json"
    async with serving(Server("SCP", "127.0.0.1", 0, on_store=handler)) as port:
        result = await run_store("127.0.0.1", str(port), str(tmp_path / "src"), "--report", str(report_path))
    assert result.returncode == 1
    report = read_report(report_path)
    entries = report["files"]
    assert [e["outcome"] for e in entries] == ["acknowledged", "warning", "failed", "acknowledged"]
    assert [e["status"] for e in entries] == [0, 0xB000, 0xA900, 0]
    assert [e["error_comment"] for e in entries] == [None, "PatientName coerced", "no PatientID here", None]
    assert [e["sop_instance_uid"] for e in entries] == [sop_instance_uid(p) for p in files]
    stderr = result.stderr.decode().splitlines()
    assert any(line.startswith("warning: ") and line.endswith("0xB000 (Warning: coercion of data elements (C-STORE), "
               "or sub-operations complete with one or more failures or warnings (C-MOVE/C-GET)): "
               "PatientName coerced") for line in stderr), stderr
    assert any(line.startswith("failed: ") and line.endswith(": no PatientID here") for line in stderr), stderr
    stdout = result.stdout.decode().splitlines()
    assert stdout[0].startswith("sent 3 of 4 files")
    assert "  acknowledged  3 (1 with warnings)" in stdout
    assert "  failed        1" in stdout


async def test_peer_abort_mid_batch_reports_the_acknowledged_files(tmp_path: Path) -> None:
    """The peer acknowledges 2 of 6 files, then aborts while the third is in flight."""
    study(tmp_path / "src", 6)
    report_path = tmp_path / "report.json"
    server: Server

    class AbortOnThird(Answers):
        async def __call__(self, instance: ReceivedInstance) -> Status | None:
            if self.seen == 2:
                server.shutdown(grace=0)  # aborts the association with this instance unanswered
                await anyio.sleep(TEST_TIMEOUT)
            return await super().__call__(instance)

    server = Server("SCP", "127.0.0.1", 0, on_store=AbortOnThird([None] * 6, tmp_path))
    async with anyio.create_task_group() as task_group:
        port = await task_group.start(server.serve)
        result = await run_store("127.0.0.1", str(port), str(tmp_path / "src"), "--report", str(report_path))
        server.shutdown(grace=0)
    assert result.returncode == 1
    report = read_report(report_path)
    assert [e["outcome"] for e in report["files"]] == ["acknowledged"] * 2 + ["failed"] + ["not_sent"] * 3
    assert report["files"][2]["reason"].startswith("no response: peer aborted the association")
    assert "peer aborted the association" in report["stopped"][0]
    stdout = result.stdout.decode().splitlines()
    assert stdout[0].startswith("sent 2 of 6 files")
    assert "  not sent      3" in stdout and "  failed        1" in stdout


async def test_ctrl_c_reports_what_got_through(tmp_path: Path) -> None:
    study(tmp_path / "src", 5)
    report_path = tmp_path / "report.json"

    class HoldSecond(Answers):
        async def __call__(self, instance: ReceivedInstance) -> Status | None:
            if self.seen == 1:
                self.arrived.set()
                await anyio.sleep(TEST_TIMEOUT)
            return await super().__call__(instance)

    handler = HoldSecond([None] * 5, tmp_path)
    async with serving(Server("SCP", "127.0.0.1", 0, on_store=handler)) as port:
        with anyio.fail_after(TEST_TIMEOUT):
            command = aiodicom_command("store", "127.0.0.1", str(port), str(tmp_path / "src"),
                                       "--report", str(report_path))
            async with await anyio.open_process(command) as process:
                await handler.arrived.wait()
                process.send_signal(signal.SIGINT)
                code = await process.wait()
                assert process.stdout is not None
                stdout = (await process.stdout.receive()).decode()
    assert code == 130
    report = read_report(report_path)
    assert [e["outcome"] for e in report["files"]] == ["acknowledged", "failed"] + ["not_sent"] * 3
    assert report["stopped"] == ["interrupted (Ctrl-C)"]
    assert stdout.startswith("sent 1 of 5 files")
