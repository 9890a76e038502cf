"""De-identification with the PS3.15 basic profile, on series the factory makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from aiodicom.data.anonymize import BASIC_PROFILE, IdentityMapping, deidentify
from aiodicom.errors import DeidentificationError
from aiodicom.factory import build_series, encapsulate_pdf, validate
from aiodicom.factory.blueprints import CT_SERIES, PET_SERIES
from factory.conftest import DcmdumpCheck
from factory.helpers import ct_parent, make_affine

pytestmark = pytest.mark.filterwarnings("error::UserWarning")

IDENTIFYING = ("Doe^Jane", "PID-12345", "19700101", "General Hospital", "ACC1", "Thorax")


def identified_series() -> list[Dataset]:
    series = ct_parent()
    for ds in series:
        ds.OtherPatientIDs = "OTHER-1"
        ds.InstitutionAddress = "1 Main Street"
        ds.add_new(0x60003000, "OW", b"\0\0")  # overlay data
        ds.add_new(0x60004000, "LT", "overlay comment")
        ds.add_new(0x50000010, "US", 1)  # a retired curve attribute
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = series[0].SOPInstanceUID
        ds.ReferencedImageSequence = [item]
        person = Dataset()
        person.PatientName = "Doe^Jane"
        ds.ReferencedPatientSequence = [person]
    return series


def all_text(ds: Dataset) -> str:
    return repr(ds) + repr(getattr(ds, "file_meta", ""))


def test_identifying_values_are_gone_everywhere() -> None:
    mapping = IdentityMapping()
    for original in identified_series():
        clean = deidentify(original, mapping)
        text = all_text(clean)
        for value in IDENTIFYING:
            assert value not in text
        assert "OTHER-1" not in text and "Main Street" not in text
        assert not any(tag.is_private for tag in clean.keys())
        assert 0x60003000 not in clean and 0x60004000 not in clean and 0x50000010 not in clean
        assert "ReferencedPatientSequence" not in clean
        assert clean.PatientIdentityRemoved == "YES"
        assert clean.LongitudinalTemporalInformationModified == "REMOVED"
        assert clean.StudyDate == "" and clean.PatientBirthDate == ""
        assert [c.CodeValue for c in clean.DeidentificationMethodCodeSequence] == ["113100"]
        # Type 1 and 2 attributes the IOD needs are still there.
        assert clean.Modality == "CT" and "PatientSex" in clean
        np.testing.assert_array_equal(clean.pixel_array, original.pixel_array)


def test_uids_are_replaced_consistently_across_a_study() -> None:
    series = identified_series()
    mapping = IdentityMapping()
    clean = [deidentify(ds, mapping) for ds in series]
    assert len({ds.StudyInstanceUID for ds in clean}) == 1
    assert len({ds.SeriesInstanceUID for ds in clean}) == 1
    assert clean[0].StudyInstanceUID != series[0].StudyInstanceUID
    assert clean[0].FrameOfReferenceUID != series[0].FrameOfReferenceUID
    assert len({ds.SOPInstanceUID for ds in clean}) == len(series)
    for ds in clean:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        # References inside sequences follow the same mapping...
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == clean[0].SOPInstanceUID
        # ...and well-known DICOM UIDs (SOP classes) are kept.
        assert ds.SOPClassUID == series[0].SOPClassUID
        assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == series[0].SOPClassUID
        assert all(len(uid) <= 64 for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID))
    assert len({ds.PatientID for ds in clean}) == 1
    assert clean[0].PatientID == clean[0].PatientName == "ANON000001"


def test_same_mapping_same_answers_across_runs(tmp_path: Path) -> None:
    original = identified_series()[1]
    mapping = IdentityMapping()
    first = deidentify(original, mapping)
    mapping.save(tmp_path / "mapping.json")
    assert (tmp_path / "mapping.json").stat().st_mode & 0o777 == 0o600
    again = deidentify(original, IdentityMapping.load(tmp_path / "mapping.json"))
    assert again.SOPInstanceUID == first.SOPInstanceUID and again.PatientID == first.PatientID
    other = deidentify(original, IdentityMapping())
    assert other.SOPInstanceUID != first.SOPInstanceUID
    with pytest.raises(DeidentificationError):
        IdentityMapping.from_json('{"secret": "zz"}')


def test_two_patients_get_two_pseudonyms() -> None:
    mapping = IdentityMapping(prefix="SUBJ")
    a = identified_series()[0]
    b = identified_series()[0]
    b.PatientID = "PID-99"
    assert deidentify(a, mapping).PatientID == "SUBJ000001"
    assert deidentify(b, mapping).PatientID == "SUBJ000002"
    assert deidentify(a, mapping).PatientID == "SUBJ000001"


def test_retain_uids_and_dates_options() -> None:
    original = identified_series()[0]
    clean = deidentify(original, retain_uids=True, retain_dates=True)
    assert clean.SOPInstanceUID == original.SOPInstanceUID
    assert clean.StudyInstanceUID == original.StudyInstanceUID
    assert clean.StudyDate == "20240102" and clean.StudyTime == "101500"
    assert clean.PatientBirthDate == "19700101"
    assert clean.PatientName != "Doe^Jane"  # names are never retained
    assert clean.LongitudinalTemporalInformationModified == "UNMODIFIED"
    codes = [c.CodeValue for c in clean.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113106"]


def test_original_untouched_unless_in_place() -> None:
    original = identified_series()[0]
    deidentify(original)
    assert original.PatientName == "Doe^Jane"
    deidentify(original, in_place=True)
    assert original.PatientName != "Doe^Jane"


def test_burned_in_annotation_is_refused() -> None:
    pdf = encapsulate_pdf(b"%PDF-1.4\n", ct_parent()[0])
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation"):
        deidentify(pdf)


def test_profile_table_names_real_attributes() -> None:
    from pydicom.datadict import tag_for_keyword

    assert all(tag_for_keyword(keyword) is not None for keyword in BASIC_PROFILE)
    assert set(BASIC_PROFILE.values()) == {"X", "Z", "D"}


@pytest.mark.dcmtk
def test_deidentified_files_parse_cleanly(dcmdump_clean: DcmdumpCheck, tmp_path: Path) -> None:
    mapping = IdentityMapping()
    volume = np.zeros((2, 3, 3), np.int16)
    series = build_series(volume, CT_SERIES, identified_series(), affine=make_affine())
    pet = build_series(volume, PET_SERIES, identified_series(), affine=make_affine())
    clean = [deidentify(ds, mapping) for ds in series + pet]
    assert all(validate(ds) == [] for ds in clean)  # still valid CT and PET instances
    dcmdump_clean(clean, tmp_path)


_TEXT_VRS = {"LO", "SH", "PN", "LT", "ST", "UT", "CS", "DA", "TM", "DT", "AS"}
_TEXT_KEYWORDS = sorted(
    k
    for k in BASIC_PROFILE
    if dictionary_VR(tag_for_keyword(k)) in _TEXT_VRS  # type: ignore[arg-type]
)


@settings(max_examples=40, deadline=None)
@given(keywords=st.lists(st.sampled_from(_TEXT_KEYWORDS), min_size=1, max_size=12, unique=True))
def test_no_profile_attribute_keeps_its_value(keywords: list[str]) -> None:
    ds = ct_parent(n_slices=1, rows=2, columns=2)[0]
    nested = Dataset()
    markers: dict[str, str] = {}
    for keyword in keywords:
        vr = dictionary_VR(tag_for_keyword(keyword))  # type: ignore[arg-type]
        marker = markers[keyword] = {
            "DA": "20010203", "TM": "040506", "DT": "20010203040506", "AS": "042Y"
        }.get(vr, "MARKER")  # fmt: skip
        ds.add_new(tag_for_keyword(keyword), vr, marker)  # type: ignore[arg-type]
        nested.add_new(tag_for_keyword(keyword), vr, marker)  # type: ignore[arg-type]
    item = Dataset()
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.update(nested)
    ds.SourceImageSequence = [item]  # kept, with its contents cleaned too
    clean = deidentify(ds)
    (cleaned_item,) = clean.SourceImageSequence
    for where in (clean, cleaned_item):
        for keyword in keywords:
            # Exactly the marker we set: a random UID that happens to contain "040506" is no match.
            value = where.get(keyword)
            assert value is None or str(value) != markers[keyword], keyword
