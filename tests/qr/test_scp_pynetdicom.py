"""pynetdicom's SCUs against ``aiodicom qrscp`` (a process): C-FIND, C-GET, C-MOVE, cancel, abort.

pynetdicom is only a peer here: its blocking AE API runs in the test, the server is our
CLI in its own process. A pynetdicom storage SCP is the move destination whose answers
the test chooses (failures, warnings), and which records the Move Originator fields.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from peers import LOCALHOST, Peer, free_port

from .scp_helpers import MANY, Archive, qrscp, write_archive

pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, build_role, evt  # noqa: E402
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # noqa: E402
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

pytestmark = pytest.mark.timeout(60)

DESTINATION_PORT = free_port()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return write_archive(tmp_path_factory.mktemp("qrscp-archive"))


@pytest.fixture(scope="module")
def server(archive: Archive) -> Iterator[Peer]:
    with qrscp(archive.root, {"PYNSCP": DESTINATION_PORT}) as peer:
        yield peer


def _requestor(*contexts: str, roles: tuple[str, ...] = ()) -> tuple[AE, list]:  # type: ignore[type-arg]
    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for uid in contexts:
        ae.add_requested_context(uid)
    return ae, [build_role(uid, scp_role=True) for uid in roles]


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for name, value in keys.items():
        setattr(ds, name, value)
    return ds


def _still_serving(server: Peer) -> None:
    """The server answers another requestor's C-FIND (after one aborted on it)."""
    ae, _ = _requestor(StudyRootQueryRetrieveInformationModelFind)
    other = ae.associate(LOCALHOST, server.port, ae_title="QRSCP")
    try:
        found = list(other.send_c_find(_query("STUDY", PatientID="P3"), StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in found] == [0xFF00, 0x0000]
    finally:
        other.release()
    assert server.returncode is None


def test_find_study_and_patient_root(server: Peer, archive: Archive) -> None:
    ae, _ = _requestor(StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP")
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_find(_query("STUDY", PatientID="P?", StudyInstanceUID="", PatientName=""),
                                         StudyRootQueryRetrieveInformationModelFind))  # fmt: skip
        assert [status.Status for status, _ in answers] == [0xFF00] * 3 + [0x0000]
        assert {ds.StudyInstanceUID for _, ds in answers[:-1]} == set(archive.studies.values())
        answers = list(assoc.send_c_find(_query("PATIENT", PatientID="P2", PatientName=""),
                                         PatientRootQueryRetrieveInformationModelFind))  # fmt: skip
        assert [ds.PatientName for _, ds in answers[:-1]] == ["Synthetic^P2"]
        # A key the archive does not index comes back empty, under a warning status.
        answers = list(assoc.send_c_find(_query("STUDY", PatientID="P2", StationName="", StudyInstanceUID=""),
                                         StudyRootQueryRetrieveInformationModelFind))  # fmt: skip
        assert [status.Status for status, _ in answers] == [0xFF01, 0x0000]
        assert answers[0][1].StationName == "" and answers[0][1].StudyInstanceUID == archive.studies["P2"]
    finally:
        assoc.release()


def test_get_cancel_stops_within_a_sub_operation(server: Peer, archive: Archive) -> None:
    ae, roles = _requestor(StudyRootQueryRetrieveInformationModelGet, CTImageStorage, roles=(CTImageStorage,))
    assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])  # fmt: skip
    try:
        answers = []
        for status, identifier in assoc.send_c_get(_query("STUDY", StudyInstanceUID=archive.studies["P3"]),
                                                   StudyRootQueryRetrieveInformationModelGet, msg_id=9):  # fmt: skip
            answers.append((status, identifier))
            if len(answers) == 1:
                assoc.send_c_cancel(9, query_model=StudyRootQueryRetrieveInformationModelGet)
        final, identifier = answers[-1]
        assert final.Status == 0xFE00
        assert 0 < final.NumberOfRemainingSuboperations < MANY
        assert final.NumberOfCompletedSuboperations + final.NumberOfRemainingSuboperations == MANY
        # The association goes on.
        again = list(assoc.send_c_get(_query("IMAGE", StudyInstanceUID=archive.studies["P3"],
                                             SeriesInstanceUID=archive.series["P3"][0],
                                             SOPInstanceUID=archive.instances["P3"][0]),
                                      StudyRootQueryRetrieveInformationModelGet))  # fmt: skip
        assert again[-1][0].Status == 0x0000
    finally:
        assoc.release()


def test_get_receives_on_the_same_association(server: Peer, archive: Archive) -> None:
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae, roles = _requestor(StudyRootQueryRetrieveInformationModelGet, CTImageStorage, MRImageStorage,
                           roles=(CTImageStorage, MRImageStorage))  # fmt: skip
    assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        answers = list(assoc.send_c_get(_query("STUDY", StudyInstanceUID=archive.studies["P1"]),
                                        StudyRootQueryRetrieveInformationModelGet))  # fmt: skip
    finally:
        assoc.release()
    final = answers[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 6
    assert sorted(received) == sorted(archive.instances["P1"])


def test_get_without_role_selection_fails_each_sub_operation(server: Peer, archive: Archive) -> None:
    ae, _ = _requestor(StudyRootQueryRetrieveInformationModelGet, MRImageStorage)
    assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP")
    try:
        answers = list(assoc.send_c_get(_query("STUDY", StudyInstanceUID=archive.studies["P2"]),
                                        StudyRootQueryRetrieveInformationModelGet))  # fmt: skip
    finally:
        assoc.release()
    final, identifier = answers[-1]
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 2
    assert sorted(identifier.FailedSOPInstanceUIDList) == sorted(archive.instances["P2"])


def test_requestor_aborting_mid_get_leaves_the_server_serving(server: Peer, archive: Archive) -> None:
    first = threading.Event()

    def on_store(event: evt.Event) -> int:
        first.set()
        return 0x0000

    ae, roles = _requestor(StudyRootQueryRetrieveInformationModelGet, CTImageStorage, roles=(CTImageStorage,))
    assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    answers = assoc.send_c_get(_query("STUDY", StudyInstanceUID=archive.studies["P3"]),
                               StudyRootQueryRetrieveInformationModelGet)  # fmt: skip
    next(answers)  # the first pending response: a sub-operation is done
    assert first.is_set()
    assoc.abort()
    _still_serving(server)


def test_move_with_failing_and_warning_sub_operations(server: Peer, archive: Archive, tmp_path: Path) -> None:
    uids = archive.instances["P1"]
    answers_by_uid = {uids[1]: 0xA700, uids[4]: 0xB007}
    originators: list[tuple[str, int | None]] = []

    def on_store(event: evt.Event) -> int:
        request = event.request
        originators.append((str(request.MoveOriginatorApplicationEntityTitle).strip(), request.MoveOriginatorMessageID))
        return answers_by_uid.get(str(event.dataset.SOPInstanceUID), 0x0000)

    destination = AE(ae_title="PYNSCP")
    destination.add_supported_context(CTImageStorage)
    scp = destination.start_server((LOCALHOST, DESTINATION_PORT), block=False,
                                   evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        ae, _ = _requestor(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP")
        try:
            answers = list(assoc.send_c_move(_query("STUDY", StudyInstanceUID=archive.studies["P1"]), "PYNSCP",
                                             StudyRootQueryRetrieveInformationModelMove, msg_id=42))  # fmt: skip
        finally:
            assoc.release()
    finally:
        scp.shutdown()
    pending = [status for status, _ in answers[:-1]]
    assert [p.NumberOfRemainingSuboperations for p in pending] == [5, 4, 3, 2, 1]
    final, identifier = answers[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (4, 1, 1)  # fmt: skip
    assert identifier.FailedSOPInstanceUIDList == uids[1]
    assert originators == [("PYNSCU", 42)] * 6


def test_requestor_aborting_mid_move_stops_the_sub_operations(server: Peer, archive: Archive) -> None:
    """The move association to the destination ends too (aborted), and the server serves on."""
    stored: list[str] = []
    ended = threading.Event()
    destination = AE(ae_title="PYNSCP")
    destination.add_supported_context(CTImageStorage)
    handlers = [(evt.EVT_C_STORE, lambda event: stored.append(str(event.dataset.SOPInstanceUID)) or 0x0000),
                (evt.EVT_ABORTED, lambda event: ended.set()), (evt.EVT_RELEASED, lambda event: ended.set())]  # fmt: skip
    scp = destination.start_server((LOCALHOST, DESTINATION_PORT), block=False, evt_handlers=handlers)
    try:
        ae, _ = _requestor(StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate(LOCALHOST, server.port, ae_title="QRSCP")
        answers = assoc.send_c_move(_query("STUDY", StudyInstanceUID=archive.studies["P3"]), "PYNSCP",
                                    StudyRootQueryRetrieveInformationModelMove)  # fmt: skip
        next(answers)
        assoc.abort()
        assert ended.wait(15), "the move association was left open"
    finally:
        scp.shutdown()
    assert 0 < len(stored) < MANY
    _still_serving(server)
