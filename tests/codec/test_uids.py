"""UID tables against pydicom's dictionary and pynetdicom's storage list."""

from __future__ import annotations

import re

import pytest
from pydicom.uid import UID
from pynetdicom import sop_class

from aiodicom.codec import uids

UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def numeric(uid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in uid.split("."))


def test_storage_sop_classes_shape() -> None:
    classes = uids.STORAGE_SOP_CLASSES
    assert isinstance(classes, tuple) and len(classes) == len(set(classes)) > 150
    assert list(classes) == sorted(classes, key=numeric)
    for uid in classes:
        assert UID_PATTERN.fullmatch(uid) and len(uid) <= 64, uid
        assert "Storage" in uids.sop_class_name(uid), uid


def test_storage_covers_pynetdicom_defaults() -> None:
    # pynetdicom's storage SCP accepts these by default; so must we.
    assert set(sop_class._STORAGE_CLASSES.values()) <= set(uids.STORAGE_SOP_CLASSES)


def test_storage_covers_pydicom_dictionary() -> None:
    from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

    expected = {
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name
    }
    expected -= {
        "1.2.840.10008.1.3.10",  # Media Storage Directory Storage: never C-STOREd
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model: N-ACTION
        "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model (retired)
    }
    assert expected <= set(uids.STORAGE_SOP_CLASSES)
    for uid in expected:
        assert uids.sop_class_name(uid) == UID(uid).name


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.2",  # CT
        "1.2.840.10008.5.1.4.1.1.4",  # MR
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.5",  # NM (retired)
        "1.2.840.10008.5.1.4.1.1.6",  # US (retired)
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    ],
)
def test_common_storage_classes_present(uid: str) -> None:
    assert uid in uids.STORAGE_SOP_CLASSES


def test_storage_exclusions() -> None:
    for uid in ("1.2.840.10008.1.3.10", "1.2.840.10008.1.20.1", uids.VERIFICATION_SOP_CLASS):
        assert uid not in uids.STORAGE_SOP_CLASSES


def test_query_retrieve_classes() -> None:
    qr = uids.QUERY_RETRIEVE_SOP_CLASSES
    assert len(qr) == len(set(qr))
    for uid in (
        uids.PATIENT_ROOT_FIND,
        uids.PATIENT_ROOT_MOVE,
        uids.PATIENT_ROOT_GET,
        uids.STUDY_ROOT_FIND,
        uids.STUDY_ROOT_MOVE,
        uids.STUDY_ROOT_GET,
        uids.COMPOSITE_INSTANCE_ROOT_GET,
    ):
        assert uid in qr
    for uid in qr:
        assert uids.sop_class_name(uid) == UID(uid).name
        assert "Retrieve" in uids.sop_class_name(uid)
    assert uids.STUDY_ROOT_FIND == sop_class.StudyRootQueryRetrieveInformationModelFind
    assert uids.PATIENT_ROOT_GET == sop_class.PatientRootQueryRetrieveInformationModelGet
    assert uids.COMPOSITE_INSTANCE_ROOT_GET == sop_class.CompositeInstanceRootRetrieveGet


def test_known_transfer_syntaxes_match_pydicom() -> None:
    from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

    expected = {uid: v[0] for uid, v in UID_dictionary.items() if v[1] == "Transfer Syntax"}
    assert dict(uids.KNOWN_TRANSFER_SYNTAXES) == expected
    for ts in uids.UNCOMPRESSED_TRANSFER_SYNTAXES:
        assert ts in uids.KNOWN_TRANSFER_SYNTAXES
    with pytest.raises(TypeError):
        uids.KNOWN_TRANSFER_SYNTAXES["1.2"] = "x"  # type: ignore[index]


def test_names() -> None:
    assert uids.transfer_syntax_name("1.2.840.10008.1.2") == "Implicit VR Little Endian"
    assert uids.transfer_syntax_name("1.2.840.10008.1.2.4.50") == "JPEG Baseline (Process 1)"
    assert uids.transfer_syntax_name("9.9.9") == "9.9.9"
    assert uids.sop_class_name("1.2.840.10008.5.1.4.1.1.2") == "CT Image Storage"
    assert uids.sop_class_name(uids.VERIFICATION_SOP_CLASS) == "Verification SOP Class"
    # outside our tables: pydicom's dictionary, and the UID itself otherwise
    assert (
        uids.sop_class_name("1.2.840.10008.3.1.2.3.3")
        == "Modality Performed Procedure Step SOP Class"
    )
    assert uids.sop_class_name("1.2.840.10008.1.2") == "1.2.840.10008.1.2"  # not a SOP class
    assert uids.sop_class_name("1.2.3.4.5") == "1.2.3.4.5"


def test_is_compressed() -> None:
    uncompressed = set(uids.UNCOMPRESSED_TRANSFER_SYNTAXES) | {
        uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    }
    for ts in uids.KNOWN_TRANSFER_SYNTAXES:
        assert uids.is_compressed(ts) is (ts not in uncompressed), ts


def test_deflated_data_set_syntaxes() -> None:
    for ts in uids.DEFLATED_DATA_SET_SYNTAXES:
        assert "Deflate" in uids.transfer_syntax_name(ts)


def test_new_uid() -> None:
    made = {uids.new_uid() for _ in range(100)}
    assert len(made) == 100
    for uid in made:
        assert uid.startswith("2.25.") and len(uid) <= 64 and UID_PATTERN.fullmatch(uid)
