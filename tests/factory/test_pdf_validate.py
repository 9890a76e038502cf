"""Encapsulated PDF and the IOD validator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from aiodicom.errors import FactoryError, IODValidationError
from aiodicom.factory import Static, build_instance, build_series, encapsulate_pdf, validate
from aiodicom.factory.blueprints import (
    CT_SERIES,
    ENCAPSULATED_PDF_STORAGE,
    GENERAL_STUDY,
    MR_SERIES,
    PET_SERIES,
    SOP_COMMON,
)
from aiodicom.factory.validate import validate_or_raise
from factory.conftest import DcmdumpCheck
from factory.helpers import make_affine

pytestmark = pytest.mark.filterwarnings("error::UserWarning")

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"  # odd length on purpose


def test_pdf_is_wrapped_in_the_parents_study(parent: list[Dataset]) -> None:
    ds = encapsulate_pdf(PDF, parent, title="Dose report")
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.StudyInstanceUID == parent[0].StudyInstanceUID
    assert ds.PatientID == parent[0].PatientID
    assert ds.SeriesInstanceUID != parent[0].SeriesInstanceUID
    assert ds.DocumentTitle == "Dose report"
    assert ds.EncapsulatedDocumentLength == len(PDF)
    assert ds.EncapsulatedDocument[: len(PDF)] == PDF and len(ds.EncapsulatedDocument) % 2 == 0
    assert validate(ds) == []


def test_not_a_pdf_is_refused() -> None:
    with pytest.raises(FactoryError, match="PDF"):
        encapsulate_pdf(b"<html>")


@pytest.mark.dcmtk
def test_pdf_parses_cleanly(dcmdump_clean: DcmdumpCheck, tmp_path: Path) -> None:
    dcmdump_clean([encapsulate_pdf(PDF)], tmp_path)


def test_build_instance_needs_sop_common() -> None:
    with pytest.raises(FactoryError, match="SOPClassUID"):
        build_instance(GENERAL_STUDY)
    ds = build_instance(SOP_COMMON + Static("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"))
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_validator_finds_missing_and_empty_attributes() -> None:
    datasets = build_series(np.zeros((1, 2, 2), np.int16), MR_SERIES, affine=make_affine())
    ds = datasets[0]
    assert validate(ds) == []
    del ds.PatientName
    ds.ScanningSequence = ""
    problems = validate(ds)
    assert "type 2 PatientName is missing" in problems
    assert "type 1 ScanningSequence is empty" in problems
    with pytest.raises(IODValidationError) as caught:
        validate_or_raise(ds)
    assert caught.value.problems == problems


def test_validator_checks_pixel_attributes_against_pixel_data() -> None:
    ds = build_series(np.zeros((1, 2, 2), np.int16), CT_SERIES, affine=make_affine())[0]
    ds.Rows = 3
    ds.HighBit = 11
    problems = validate(ds)
    assert any("PixelData has 8 bytes" in p for p in problems)
    assert any("HighBit" in p for p in problems)


def test_validator_checks_pet_intercept_and_unknown_classes() -> None:
    ds = build_series(np.ones((1, 2, 2), np.float32) * 0.5, PET_SERIES, affine=make_affine())[0]
    assert validate(ds) == []
    ds.RescaleIntercept = "1"
    assert "PET RescaleIntercept must be 0" in validate(ds)
    ds.SOPClassUID = "1.2.3"
    assert validate(ds) == ["SOP class 1.2.3 is not one we validate"]
