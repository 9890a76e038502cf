"""Orthanc querying and retrieving from ``aiodicom qrscp`` through its REST API.

Orthanc (its own configuration, see ``orthanc.py``) knows our qrscp as a modality; our
qrscp knows Orthanc as a move destination. ``/modalities/{id}/query`` makes Orthanc send
C-FINDs, ``/modalities/{id}/move`` C-MOVEs whose C-STOREs land in Orthanc.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from peers import LOCALHOST, free_port

from .orthanc import Orthanc, orthanc
from .scp_helpers import Archive, qrscp, write_archive

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, Archive]]:
    archive = write_archive(tmp_path_factory.mktemp("qrscp-archive"))
    port = free_port()
    with orthanc(tmp_path_factory.mktemp("orthanc"), modalities={"qrscp": ("QRSCP", LOCALHOST, port)}) as pacs:
        with qrscp(archive.root, {"ORTHANC": pacs.port}, port=port):
            yield pacs, archive


def _query(pacs: Orthanc, level: str, query: dict[str, str]) -> list[dict[str, str]]:
    answer = pacs.rest("POST", "/modalities/qrscp/query", {"Level": level, "Query": query})
    count = len(pacs.rest("GET", f"/queries/{answer['ID']}/answers"))
    return [pacs.rest("GET", f"/queries/{answer['ID']}/answers/{i}/content?simplify") for i in range(count)]


def test_orthanc_queries_every_level(setup: tuple[Orthanc, Archive]) -> None:
    pacs, archive = setup
    studies = _query(pacs, "Study", {"PatientName": "SYNTHETIC*", "StudyDate": "20000101-", "ModalitiesInStudy": ""})
    assert {s["StudyInstanceUID"] for s in studies} == set(archive.studies.values())
    assert {s["PatientID"]: s["ModalitiesInStudy"] for s in studies}["P2"] == "MR"
    patients = _query(pacs, "Patient", {"PatientID": "P1"})
    assert [p["PatientID"] for p in patients] == ["P1"]
    series = _query(pacs, "Series", {"StudyInstanceUID": archive.studies["P1"], "Modality": ""})
    assert {s["SeriesInstanceUID"] for s in series} == set(archive.series["P1"])
    images = _query(pacs, "Instance", {"StudyInstanceUID": archive.studies["P2"],
                                       "SeriesInstanceUID": archive.series["P2"][0]})  # fmt: skip
    assert {i["SOPInstanceUID"] for i in images} == set(archive.instances["P2"])


def test_orthanc_moves_a_study_to_itself(setup: tuple[Orthanc, Archive]) -> None:
    pacs, archive = setup
    pacs.clear()
    pacs.rest("POST", "/modalities/qrscp/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": archive.studies["P1"]}],
        "TargetAet": "ORTHANC", "Synchronous": True,
    })  # fmt: skip
    stored = {pacs.rest("GET", f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in pacs.instances()}
    assert stored == set(archive.instances["P1"])


def test_orthanc_move_to_an_unknown_destination_fails(setup: tuple[Orthanc, Archive]) -> None:
    from .orthanc import OrthancError

    pacs, archive = setup
    with pytest.raises(OrthancError):
        pacs.rest("POST", "/modalities/qrscp/move", {
            "Level": "Study", "Resources": [{"StudyInstanceUID": archive.studies["P2"]}],
            "TargetAet": "NOT-KNOWN", "Synchronous": True,
        })  # fmt: skip
