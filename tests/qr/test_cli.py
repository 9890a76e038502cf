"""``aiodicom find``, ``get`` and ``move`` run as commands against DCMTK ``dcmqrscp``.

What a user sees: matches (text or JSON), files written as ``receive`` writes them, the
final sub-operation counts, the exit code, and one-line errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from aiodicom.dimse.server import Server
from peers import Peer, dcmqrscp, free_port, require_dcmtk
from qr.helpers import Receiver, Study, make_studies, run_aiodicom, saved_uids, serving

pytestmark = [pytest.mark.anyio, pytest.mark.dcmtk("dcmqrscp", "dcmqridx")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Archive:
    peer: Peer
    studies: list[Study]
    ports: dict[str, int]

    def args(self, *more: str) -> list[str]:
        return ["127.0.0.1", str(self.peer.port), "--aec", "QRSCP", "--timeout", "10", "--dimse-timeout", "10",
                *more]  # fmt: skip


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    require_dcmtk("dcmqrscp", "dcmqridx")
    root = tmp_path_factory.mktemp("cli")
    studies = make_studies(root / "data")
    ports = {name: free_port() for name in ("RECEIVER", "SELF")}
    with dcmqrscp(root / "db", files=[f for s in studies for f in s.files],
                  destinations={name: ("127.0.0.1", port) for name, port in ports.items()}) as peer:  # fmt: skip
        yield Archive(peer, studies, ports)


async def test_find_json_prints_one_object_per_match(archive: Archive) -> None:
    result = await run_aiodicom("find", *archive.args("-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                                                      "-k", "PatientID=QRPAT*", "--json"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    matches = [json.loads(line) for line in result.stdout.splitlines()]
    assert {m["StudyInstanceUID"] for m in matches} == {s.study_uid for s in archive.studies}
    assert all(m["QueryRetrieveLevel"] == "STUDY" for m in matches)


async def test_find_patient_root_text(archive: Archive) -> None:
    result = await run_aiodicom("find", *archive.args("-P", "-k", "0010,0020", "-k", "PatientName"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("QueryRetrieveLevel=PATIENT" in line for line in lines)
    assert "PatientID=QRPAT1" in result.stdout and "2 matches" in result.stderr


async def test_get_writes_files_like_receive_and_prints_the_counts(archive: Archive, tmp_path: Path) -> None:
    study = archive.studies[0]
    result = await run_aiodicom("get", *archive.args("-k", "QueryRetrieveLevel=STUDY",
                                                     "-k", f"StudyInstanceUID={study.study_uid}",
                                                     "--storage-class", "1.2.840.10008.5.1.4.1.1.2",
                                                     "--output-dir", str(tmp_path)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "C-GET: 6 completed, 0 failed, 0 warning" in result.stdout
    assert saved_uids(tmp_path) == set(study.sop_uids)
    assert all(p.parent.parent.name == study.study_uid for p in tmp_path.rglob("*.dcm"))  # DIR/<Study>/<Series>/
    assert not (tmp_path / ".incoming").exists()


async def test_move_to_a_destination(archive: Archive, tmp_path: Path) -> None:
    study = archive.studies[1]
    server = Server("RECEIVER", port=archive.ports["RECEIVER"], on_store=Receiver(tmp_path),
                    spool_dir=tmp_path / "spool")  # fmt: skip
    with anyio.fail_after(60):
        async with serving(server):
            result = await run_aiodicom("move", *archive.args("-k", f"StudyInstanceUID={study.study_uid}",
                                                              "--dest", "RECEIVER"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "C-MOVE: 2 completed, 0 failed" in result.stdout
    assert saved_uids(tmp_path) == set(study.sop_uids)


async def test_move_to_self_writes_what_arrives(archive: Archive, tmp_path: Path) -> None:
    study = archive.studies[0]
    result = await run_aiodicom("move", *archive.args(
        "--aet", "SELF", "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study.study_uid}",
        "-k", f"SeriesInstanceUID={study.series_uids[0]}",
        "--to-self", "--port", str(archive.ports["SELF"]), "--output-dir", str(tmp_path)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "C-MOVE: 3 completed, 0 failed" in result.stdout
    assert saved_uids(tmp_path) == set(study.sop_uids[:3])


async def test_failed_sub_operations_exit_non_zero_with_the_counts(archive: Archive, tmp_path: Path) -> None:
    study = archive.studies[1]
    refused = {study.sop_uids[0]}
    server = Server("RECEIVER", port=archive.ports["RECEIVER"], on_store=Receiver(tmp_path, refuse=refused),
                    spool_dir=tmp_path / "spool")  # fmt: skip
    with anyio.fail_after(60):
        async with serving(server):
            result = await run_aiodicom("move", *archive.args("-k", f"StudyInstanceUID={study.study_uid}",
                                                              "--dest", "RECEIVER"))  # fmt: skip
    assert result.returncode == 1
    assert "C-MOVE: 1 completed, 1 failed, 0 warning: 0xB000" in result.stdout
    assert f"failed: {study.sop_uids[0]}" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["move", "-k", "PatientID=QRPAT2", "--dest", "NOWHERE"], "C-MOVE failed: .*0xA801"),
        (["find", "-k", "NoSuchKeyword=1"], "unknown DICOM keyword"),
        (["move", "-k", "StudyInstanceUID=1", "--to-self", "--output-dir", "x"], "--to-self needs --port"),
        (["find", "-k", "QueryRetrieveLevel=PATIENT"], "no PATIENT level"),
    ],
)
async def test_errors_are_one_line(archive: Archive, args: list[str], message: str) -> None:
    import re

    result = await run_aiodicom(args[0], *archive.args(*args[1:]))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"aiodicom {args[0]}: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
    assert "Traceback" not in result.stderr
