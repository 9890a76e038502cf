"""The Query/Retrieve information model table: SOP classes, levels, unique keys, lookups."""

from __future__ import annotations

import pytest

from aiodicom.codec import uids
from aiodicom.dimse.services.models import (
    PATIENT_ROOT,
    STUDY_ROOT,
    QueryLevel,
    UnknownModelError,
    model_by_name,
    model_by_sop_class,
    operation_by_sop_class,
)


def test_study_root_has_no_patient_level() -> None:
    assert QueryLevel.PATIENT not in STUDY_ROOT.levels
    with pytest.raises(UnknownModelError, match="no PATIENT level"):
        STUDY_ROOT.level("PATIENT")
    assert PATIENT_ROOT.level("patient") is QueryLevel.PATIENT


@pytest.mark.parametrize(
    ("level", "key"),
    [
        ("PATIENT", "PatientID"),
        ("STUDY", "StudyInstanceUID"),
        ("SERIES", "SeriesInstanceUID"),
        ("IMAGE", "SOPInstanceUID"),
    ],
)
def test_unique_key_per_level(level: str, key: str) -> None:
    assert PATIENT_ROOT.unique_key(level) == key


def test_keys_above() -> None:
    assert PATIENT_ROOT.keys_above("IMAGE") == (
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    )
    assert STUDY_ROOT.keys_above("SERIES") == ("StudyInstanceUID",)


@pytest.mark.parametrize(
    ("uid", "model", "operation"),
    [
        (uids.PATIENT_ROOT_FIND, PATIENT_ROOT, "find"),
        (uids.PATIENT_ROOT_MOVE, PATIENT_ROOT, "move"),
        (uids.PATIENT_ROOT_GET, PATIENT_ROOT, "get"),
        (uids.STUDY_ROOT_FIND, STUDY_ROOT, "find"),
        (uids.STUDY_ROOT_MOVE, STUDY_ROOT, "move"),
        (uids.STUDY_ROOT_GET, STUDY_ROOT, "get"),
    ],
)
def test_lookup_by_sop_class(uid: str, model: object, operation: str) -> None:
    assert operation_by_sop_class(uid) == (model, operation)
    assert model_by_sop_class(uid) is model


def test_lookup_by_name_and_errors() -> None:
    assert model_by_name("Study") is STUDY_ROOT
    assert model_by_name("patient root") is PATIENT_ROOT
    with pytest.raises(UnknownModelError, match="unknown information model"):
        model_by_name("worklist")
    with pytest.raises(UnknownModelError, match="not a Patient or Study Root"):
        model_by_sop_class(uids.VERIFICATION_SOP_CLASS)
    with pytest.raises(UnknownModelError, match="unknown query level"):
        PATIENT_ROOT.level("FRAME")


def test_the_query_keys_agree_with_the_dicom_dictionary() -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    from aiodicom.dimse.services.models import QUERY_KEYS, QUERY_KEYWORDS, UNIQUE_KEYS

    for keyword, (tag, vr) in QUERY_KEYS.items():
        assert (tag_for_keyword(keyword), dictionary_VR(tag)) == (tag, vr), keyword
        assert QUERY_KEYWORDS[tag] == keyword
    assert set(UNIQUE_KEYS.values()) <= set(QUERY_KEYS)
