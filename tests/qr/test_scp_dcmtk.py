"""DCMTK's findscu, movescu and getscu against ``aiodicom qrscp`` (a process), on 127.0.0.1.

One qrscp serves the whole module (a small synthetic archive, see ``scp_helpers``), with
move destinations: a DCMTK storescp, one that refuses every association, and a port
where nothing listens. Failure paths end in the right DICOM status, never a stall.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import LOCALHOST, Peer, free_port, run_dcmtk, storescp

from .scp_helpers import (
    MANY,
    Archive,
    final_counts,
    final_status,
    find_matches,
    qrscp,
    write_archive,
)

pytestmark = [pytest.mark.dcmtk("findscu", "movescu", "getscu", "storescp"), pytest.mark.timeout(60)]

MAX_MATCHES = 40


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return write_archive(tmp_path_factory.mktemp("qrscp-archive"))


@pytest.fixture(scope="module")
def destination(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Path]]:
    out = tmp_path_factory.mktemp("moved")
    with storescp(output_dir=out, aet="STORESCP") as peer:
        yield peer, out


@pytest.fixture(scope="module")
def refuser() -> Iterator[Peer]:
    with storescp(aet="REFUSER", args=("--refuse",)) as peer:
        yield peer


@pytest.fixture(scope="module")
def server(archive: Archive, destination: tuple[Peer, Path], refuser: Peer) -> Iterator[Peer]:
    destinations = {"STORESCP": destination[0].port, "REFUSER": refuser.port, "NOBODY": free_port()}
    with qrscp(archive.root, destinations, args=("--max-matches", str(MAX_MATCHES))) as peer:
        yield peer


def _find(server: Peer, out: Path, *keys: str, model: str = "-S") -> tuple[int, list]:  # type: ignore[type-arg]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    args = ["findscu", "-d", model, "-aec", "QRSCP", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk([*args, LOCALHOST, str(server.port)], timeout=30)
    return final_status(result.stdout + result.stderr), find_matches(out)


def test_study_level_wildcard_on_patient_name_is_case_insensitive(server: Peer, archive: Archive, tmp_path: Path) -> None:
    status, matches = _find(
        server, tmp_path / "r", "QueryRetrieveLevel=STUDY", "PatientName=synthetic^p*", "StudyInstanceUID",
        "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries", "PatientID",
        "StudyDate=20000101-", "AccessionNumber", "RetrieveAETitle",
    )  # fmt: skip
    assert status == 0x0000
    found = {m.PatientID: m for m in matches}
    assert set(found) == {"P1", "P2", "P3"}
    assert found["P1"].StudyInstanceUID == archive.studies["P1"]
    assert found["P1"].ModalitiesInStudy == "CT"
    assert int(found["P1"].NumberOfStudyRelatedInstances) == 6
    assert int(found["P1"].NumberOfStudyRelatedSeries) == 2
    assert found["P2"].ModalitiesInStudy == "MR"
    assert found["P1"].QueryRetrieveLevel == "STUDY"
    assert "AccessionNumber" in found["P1"]  # a return key comes back, empty or not
    assert found["P1"].RetrieveAETitle == "QRSCP"


def test_patient_root_every_level(server: Peer, archive: Archive, tmp_path: Path) -> None:
    status, patients = _find(server, tmp_path / "p", "QueryRetrieveLevel=PATIENT", "PatientID=P1",
                             "NumberOfPatientRelatedInstances", "PatientName", model="-P")  # fmt: skip
    assert status == 0 and [p.PatientID for p in patients] == ["P1"]
    assert int(patients[0].NumberOfPatientRelatedInstances) == 6
    status, studies = _find(server, tmp_path / "s", "QueryRetrieveLevel=STUDY", "PatientID=P2",
                            "StudyInstanceUID", model="-P")  # fmt: skip
    assert status == 0 and [s.StudyInstanceUID for s in studies] == [archive.studies["P2"]]
    status, series = _find(server, tmp_path / "e", "QueryRetrieveLevel=SERIES", "PatientID=P1",
                           f"StudyInstanceUID={archive.studies['P1']}", "SeriesInstanceUID", "Modality",
                           "NumberOfSeriesRelatedInstances", model="-P")  # fmt: skip
    assert status == 0 and {s.SeriesInstanceUID for s in series} == set(archive.series["P1"])
    assert all(int(s.NumberOfSeriesRelatedInstances) == 3 for s in series)
    status, images = _find(server, tmp_path / "i", "QueryRetrieveLevel=IMAGE", "PatientID=P1",
                           f"StudyInstanceUID={archive.studies['P1']}", f"SeriesInstanceUID={archive.series['P1'][0]}",
                           "SOPInstanceUID", "InstanceNumber", "SOPClassUID", model="-P")  # fmt: skip
    assert status == 0 and {i.SOPInstanceUID for i in images} == set(archive.instances["P1"][:3])


def test_uid_list_and_series_keys(server: Peer, archive: Archive, tmp_path: Path) -> None:
    uids = "\\".join((archive.studies["P1"], archive.studies["P2"], "1.2.3.4"))
    status, matches = _find(server, tmp_path / "r", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uids}")
    assert status == 0 and {m.StudyInstanceUID for m in matches} == {archive.studies["P1"], archive.studies["P2"]}
    status, matches = _find(server, tmp_path / "m", "QueryRetrieveLevel=SERIES", "Modality=MR", "SeriesInstanceUID")
    assert status == 0 and [m.SeriesInstanceUID for m in matches] == archive.series["P2"]


@pytest.mark.parametrize("date", ["2010-2030", "20201301", "yesterday"])
def test_malformed_date_is_refused_with_a900(server: Peer, tmp_path: Path, date: str) -> None:
    status, matches = _find(server, tmp_path / "r", "QueryRetrieveLevel=STUDY", f"StudyDate={date}")
    assert status == 0xA900 and matches == []


def test_wildcard_only_at_image_level_over_many_instances_stops_at_the_limit(server: Peer, tmp_path: Path) -> None:
    status, matches = _find(server, tmp_path / "r", "QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "PatientName=*")
    assert status == 0xA700
    assert len(matches) == MAX_MATCHES


def _move(server: Peer, destination: str, *keys: str, extra: tuple[str, ...] = ()) -> tuple[int, dict[str, int | None], str]:
    args = ["movescu", "-d", "-S", "-aec", "QRSCP", "-aem", destination, *extra]
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk([*args, LOCALHOST, str(server.port)], timeout=30)
    output = result.stdout + result.stderr
    return final_status(output), final_counts(output), output


def test_move_a_study_to_a_known_destination(server: Peer, archive: Archive, destination: tuple[Peer, Path]) -> None:
    status, counts, _ = _move(server, "STORESCP", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.studies['P1']}")
    assert status == 0x0000
    assert counts == {"remaining": None, "completed": 6, "failed": 0, "warning": 0}
    stored = {path.name.split(".", 1)[1] for path in destination[1].iterdir()}  # storescp: CT.<uid>
    assert set(archive.instances["P1"]) <= stored


def test_move_a_series_and_an_image(server: Peer, archive: Archive) -> None:
    status, counts, _ = _move(server, "STORESCP", "QueryRetrieveLevel=SERIES",
                              f"StudyInstanceUID={archive.studies['P1']}", f"SeriesInstanceUID={archive.series['P1'][1]}")  # fmt: skip
    assert status == 0 and counts["completed"] == 3
    status, counts, _ = _move(server, "STORESCP", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={archive.studies['P2']}",
                              f"SeriesInstanceUID={archive.series['P2'][0]}", f"SOPInstanceUID={archive.instances['P2'][1]}")  # fmt: skip
    assert status == 0 and counts["completed"] == 1


def test_unknown_destination_is_a801(server: Peer, archive: Archive) -> None:
    status, counts, output = _move(server, "ELSEWHERE", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.studies['P1']}")
    assert status == 0xA801
    assert "unknown move destination 'ELSEWHERE'" in output


@pytest.mark.parametrize("where", ["REFUSER", "NOBODY"])
def test_destination_refusing_fails_every_sub_operation(server: Peer, archive: Archive, where: str) -> None:
    status, counts, output = _move(server, where, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.studies['P2']}")
    assert status == 0xA702
    assert counts["failed"] == 2 and counts["completed"] == 0
    for uid in archive.instances["P2"]:
        assert uid in output  # the Failed SOP Instance UID List
    assert where in output  # the Error Comment says which destination failed


def test_move_without_the_unique_key_is_refused(server: Peer) -> None:
    status, _, _ = _move(server, "STORESCP", "QueryRetrieveLevel=IMAGE", "SOPInstanceUID=")
    assert status == 0xA900


def test_move_cancel_stops_within_a_sub_operation(server: Peer, archive: Archive) -> None:
    status, counts, _ = _move(server, "STORESCP", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.studies['P3']}",
                              extra=("--cancel", "1"))  # fmt: skip
    assert status == 0xFE00
    assert counts["remaining"] is not None and counts["remaining"] > 0
    assert counts["completed"] is not None and counts["completed"] + counts["remaining"] == MANY
    # The server goes on serving after the cancel.
    status, counts, _ = _move(server, "STORESCP", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.studies['P2']}")
    assert status == 0 and counts["completed"] == 2


def test_get_a_study_on_the_same_association(server: Peer, archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = run_dcmtk(["getscu", "-d", "-S", "-aec", "QRSCP", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                        "-k", f"StudyInstanceUID={archive.studies['P1']}", LOCALHOST, str(server.port)], timeout=30)  # fmt: skip
    output = result.stdout + result.stderr
    assert final_status(output) == 0x0000, output[-2000:]
    names = {path.name for path in out.iterdir()}
    assert {f"CT.{uid}" for uid in archive.instances["P1"]} == names
