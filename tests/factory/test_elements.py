"""Virtual elements and blueprint arithmetic, evaluated through the real factory."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from aiodicom.errors import FactoryError, GeometryError, MissingParentValue
from aiodicom.factory import (
    ABSENT,
    Blueprint,
    Copy,
    Discard,
    Functional,
    ImageOrientation,
    ImagePosition,
    InstanceCopy,
    PixelSpacing,
    PrivateTag,
    Sequence,
    Series,
    Static,
    build_instance,
    build_series,
)
from aiodicom.factory.blueprints import CT_SERIES, SOP_COMMON
from factory.helpers import OBLIQUE, make_affine

MINIMAL = SOP_COMMON + Static("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")


def test_plus_is_right_biased_and_not_commutative() -> None:
    left = Blueprint([Static("SeriesDescription", "left"), Static("StudyID", "1")])
    right = Blueprint([Static("SeriesDescription", "right")])
    assert build_instance(MINIMAL + left + right).SeriesDescription == "right"
    assert build_instance(MINIMAL + right + left).SeriesDescription == "left"
    assert len(left + right) == 2


def test_index_by_keyword_tag_number_and_tuple() -> None:
    element = Static("SeriesDescription", "x")
    blueprint = Blueprint([element])
    assert blueprint["SeriesDescription"] is element
    assert blueprint[0x0008103E] is element
    assert blueprint[(0x0008, 0x103E)] is element
    assert "SeriesDescription" in blueprint
    assert "StudyID" not in blueprint
    assert "NotAKeyword" not in blueprint
    with pytest.raises(KeyError):
        blueprint["StudyID"]


def test_adding_an_element_returns_a_new_blueprint() -> None:
    base = Blueprint([Static("StudyID", "1")])
    grown = base + Static("StudyID", "2")
    assert base["StudyID"].value == "1"  # type: ignore[attr-defined]
    assert grown["StudyID"].value == "2"  # type: ignore[attr-defined]
    assert "StudyID" not in grown.without("StudyID")


def test_unknown_keyword_and_raw_private_tag_are_refused() -> None:
    with pytest.raises(FactoryError):
        Static("NoSuchKeyword", 1)
    with pytest.raises(FactoryError, match="PrivateTag"):
        Static(0x00191010, "x", vr="LO")
    with pytest.raises(FactoryError):
        PrivateTag(0x0018, "X", 1)  # even group is not private
    with pytest.raises(FactoryError, match="VR"):
        Static(PrivateTag(0x0019, "X", 1), "x")


def test_copy_required_optional_default(parent: list[Dataset]) -> None:
    blueprint = MINIMAL + Copy("PatientName") + Copy("PatientComments", optional=True)
    ds = build_instance(blueprint + Copy("OperatorsName", default="nobody"), parent)
    assert ds.PatientName == "Doe^Jane"
    assert "PatientComments" not in ds
    assert ds.OperatorsName == "nobody"
    with pytest.raises(MissingParentValue, match="PatientComments"):
        build_instance(MINIMAL + Copy("PatientComments"), parent)
    with pytest.raises(MissingParentValue, match="none was given"):
        build_instance(MINIMAL + Copy("PatientName"))


def test_copy_default_may_be_computed_from_the_environment() -> None:
    blueprint = MINIMAL + Copy("StudyID", default=lambda env: f"n{len(env.parent)}")
    assert build_instance(blueprint).StudyID == "n0"


def test_discard_beats_fill_copy(parent: list[Dataset]) -> None:
    kept = build_instance(MINIMAL, parent, fill="copy")
    assert kept.InstitutionName == "General Hospital"
    dropped = build_instance(MINIMAL + Discard("InstitutionName"), parent, fill="copy")
    assert "InstitutionName" not in dropped
    assert "InstitutionName" not in build_instance(MINIMAL, parent)  # fill="discard"


def test_series_element_runs_once_functional_per_instance() -> None:
    calls: list[int] = []

    def series_uid(env: object) -> str:
        calls.append(1)
        return "1.2.3.4"

    blueprint = (
        CT_SERIES
        + Series("SeriesInstanceUID", series_uid)
        + Functional("ImageComments", lambda env: f"{env.instance_number}/{env.total}")
    )
    datasets = build_series(np.zeros((3, 2, 2), np.int16), blueprint, affine=make_affine())
    assert calls == [1]
    assert {ds.SeriesInstanceUID for ds in datasets} == {"1.2.3.4"}
    assert [ds.ImageComments for ds in datasets] == ["1/3", "2/3", "3/3"]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3


def test_functional_sees_the_slice_and_user_kwargs() -> None:
    blueprint = CT_SERIES + Functional(
        "ImageComments", lambda env: f"{env.kwargs['tag']} max={int(env.image.max())}"
    )
    volume = np.arange(12, dtype=np.int16).reshape(3, 2, 2)
    datasets = build_series(volume, blueprint, affine=make_affine(), kwargs={"tag": "t"})
    assert [ds.ImageComments for ds in datasets] == ["t max=3", "t max=7", "t max=11"]


def test_functional_may_return_absent() -> None:
    blueprint = CT_SERIES + Functional(
        "ImageComments", lambda env: "first" if env.index == 0 else ABSENT
    )
    datasets = build_series(np.zeros((2, 2, 2), np.int16), blueprint, affine=make_affine())
    assert datasets[0].ImageComments == "first"
    assert "ImageComments" not in datasets[1]


def test_instance_copy_pairs_parent_slices_by_position(parent: list[Dataset]) -> None:
    # Give the parent's slices distinct per-instance values, then shuffle its order:
    # pairing must follow slice position, not list order.
    for n, ds in enumerate(parent):
        ds.AcquisitionTime = f"10000{n}"
    shuffled = [parent[2], parent[0], parent[3], parent[1]]
    blueprint = CT_SERIES + InstanceCopy("AcquisitionTime")
    volume = np.zeros((4, 6, 5), np.int16)
    datasets = build_series(volume, blueprint, shuffled, affine=make_affine())
    assert [ds.AcquisitionTime for ds in datasets] == ["100000", "100001", "100002", "100003"]
    with pytest.raises(MissingParentValue):
        build_series(np.zeros((5, 6, 5), np.int16), blueprint, parent, affine=make_affine())


def test_sequence_items_from_blueprints_and_per_instance_items() -> None:
    code = Blueprint(
        [
            Static("CodeValue", "T-D3000"),
            Static("CodingSchemeDesignator", "SRT"),
            Static("CodeMeaning", "Chest"),
        ]
    )
    per_slice = Blueprint([Functional("ReferencedFrameNumber", lambda env: env.instance_number)])
    blueprint = (
        CT_SERIES
        + Sequence("AnatomicRegionSequence", [code])
        + Sequence("ReferencedImageSequence", [per_slice])
    )
    assert not blueprint["AnatomicRegionSequence"].per_instance
    assert blueprint["ReferencedImageSequence"].per_instance
    datasets = build_series(np.zeros((2, 2, 2), np.int16), blueprint, affine=make_affine())
    assert datasets[1].AnatomicRegionSequence[0].CodeMeaning == "Chest"
    assert [ds.ReferencedImageSequence[0].ReferencedFrameNumber for ds in datasets] == [1, 2]


def test_private_tags_get_a_creator_block() -> None:
    first = PrivateTag(0x0011, "AIODICOM TEST", 0x01)
    second = PrivateTag(0x0011, "OTHER CREATOR", 0x01)
    blueprint = (
        MINIMAL
        + Static(first, "one", vr="LO")
        + Static(second, "two", vr="LO")
        + Static(PrivateTag(0x0011, "AIODICOM TEST", 0x02), 7, vr="US")
    )
    ds = build_instance(blueprint)
    creators = {
        int(t) & 0xFF: ds[t].value for t in ds.keys() if t.group == 0x0011 and t.element < 0x100
    }
    assert sorted(creators.values()) == ["AIODICOM TEST", "OTHER CREATOR"]
    block = ds.private_block(0x0011, "AIODICOM TEST")
    assert block[0x01].value == "one"
    assert block[0x02].value == 7
    assert ds.private_block(0x0011, "OTHER CREATOR")[0x01].value == "two"


def test_private_copy_finds_the_creator_whatever_its_block(parent: list[Dataset]) -> None:
    # Move the parent's creator to another block: the copy must still find it.
    source = parent[0]
    old = source.private_block(0x0019, "VENDOR X")
    value = old[0x10].value
    del source[old.get_tag(0x10)]
    del source[0x00190010]
    source.add_new(0x00190010, "LO", "SOMEONE ELSE")
    source.private_block(0x0019, "VENDOR X", create=True).add_new(0x10, "LO", value)
    assert source.private_block(0x0019, "VENDOR X").block_start == 0x1100
    tag = PrivateTag(0x0019, "VENDOR X", 0x10)
    ds = build_instance(MINIMAL + Copy(tag), parent)
    assert ds.private_block(0x0019, "VENDOR X")[0x10].value == "secret vendor note"
    assert ds.private_block(0x0019, "VENDOR X").block_start == 0x1000


def test_geometry_elements_follow_the_affine() -> None:
    blueprint = MINIMAL + ImageOrientation() + ImagePosition() + PixelSpacing()
    datasets = build_series(np.zeros((3, 2, 2), np.int16), CT_SERIES + blueprint, affine=OBLIQUE)
    row = OBLIQUE[:3, 0] / np.linalg.norm(OBLIQUE[:3, 0])
    column = OBLIQUE[:3, 1] / np.linalg.norm(OBLIQUE[:3, 1])
    for k, ds in enumerate(datasets):
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient], [*row, *column], atol=1e-12
        )
        expected = OBLIQUE @ [0, 0, k, 1]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected[:3])
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [1.1, 0.9])
        assert all(len(str(v)) <= 16 for v in ds.ImagePositionPatient)


def test_geometry_elements_need_an_affine_and_a_perpendicular_plane() -> None:
    with pytest.raises(FactoryError, match="affine"):
        build_series(np.zeros((1, 2, 2), np.int16), CT_SERIES)
    skewed = make_affine()
    skewed[:3, 1] = [0.5, 0.5, 0.0]
    with pytest.raises(GeometryError, match="orthogonal"):
        build_series(np.zeros((1, 2, 2), np.int16), CT_SERIES, affine=skewed)


def test_instances_share_no_mutable_values(parent: list[Dataset]) -> None:
    datasets = build_series(np.zeros((2, 6, 5), np.int16), CT_SERIES, parent, affine=make_affine())
    datasets[0].RelatedSeriesSequence[0].SeriesInstanceUID = "1.2.3"
    datasets[0].ImageType[0] = "ORIGINAL"
    assert datasets[1].RelatedSeriesSequence[0].SeriesInstanceUID == parent[0].SeriesInstanceUID
    assert datasets[1].ImageType[0] == "DERIVED"


MODULE_ATTRIBUTES = {
    "SOP_COMMON": ["SOPInstanceUID", "SpecificCharacterSet", "InstanceCreationDate"],
    "PATIENT": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
    "GENERAL_STUDY": ["StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber"],
    "GENERAL_SERIES": ["Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDate"],
    "FRAME_OF_REFERENCE": ["FrameOfReferenceUID", "PositionReferenceIndicator"],
    "GENERAL_EQUIPMENT": ["Manufacturer", "SoftwareVersions"],
    "GENERAL_IMAGE": ["InstanceNumber", "ImageType", "ContentDate"],
    "IMAGE_PLANE": ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"],
    "IMAGE_PIXEL": ["Rows", "Columns", "BitsAllocated", "PixelData", "RescaleSlope"],
    "DERIVED_FROM": ["DerivationDescription", "SourceImageSequence", "RelatedSeriesSequence"],
    "CT_IMAGE": ["KVP", "AcquisitionNumber", "RescaleType"],
    "PET_IMAGE": ["Units", "DecayCorrection", "ImageIndex", "FrameReferenceTime"],
    "MR_IMAGE": ["ScanningSequence", "SequenceVariant", "EchoTime"],
    "SECONDARY_CAPTURE": ["ConversionType", "PatientOrientation"],
}


@pytest.mark.parametrize("name", sorted(MODULE_ATTRIBUTES))
def test_module_blueprints_fill_their_modules(name: str, parent: list[Dataset]) -> None:
    from aiodicom.factory import blueprints

    module = getattr(blueprints, name)
    # The module alone, plus what any image needs, on top of a SOP class.
    blueprint = MINIMAL + blueprints.IMAGE_PIXEL + module
    volume = np.zeros((4, 6, 5), np.int16)
    ds = build_series(volume, blueprint, parent, affine=make_affine())[0]
    for keyword in MODULE_ATTRIBUTES[name]:
        assert keyword in ds, keyword
        assert keyword in module, keyword


def test_patient_and_study_come_from_the_parent(parent: list[Dataset]) -> None:
    ds = build_series(np.zeros((1, 6, 5), np.int16), CT_SERIES, parent, affine=make_affine())[0]
    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate) == (
        "Doe^Jane",
        "PID-12345",
        "19700101",
    )
    assert ds.StudyDescription == "Thorax" and ds.AccessionNumber == "ACC1"
    assert ds.KVP == 120
    orphan = build_series(np.zeros((1, 6, 5), np.int16), CT_SERIES, affine=make_affine())[0]
    assert orphan.PatientName == "" and orphan.StudyInstanceUID.startswith("2.25.")
    assert "StudyDescription" not in orphan


def test_ambiguous_dictionary_vr_is_resolved_from_the_value() -> None:
    blueprint = (
        MINIMAL + Static("SmallestImagePixelValue", -5) + Static("LargestImagePixelValue", 9)
    )
    ds = build_instance(blueprint)
    assert ds["SmallestImagePixelValue"].VR == "SS" and ds.SmallestImagePixelValue == -5
    assert ds["LargestImagePixelValue"].VR == "US"
