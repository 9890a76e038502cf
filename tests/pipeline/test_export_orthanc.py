"""DicomExport to Orthanc, a PACS: what its REST API says it stored, byte for byte."""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from aiodicom.codec.uids import IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.pipeline.export import Address, DicomExport, ExportError
from peers import LOCALHOST, compress_jpeg_lossless, dataset_bytes
from qr.orthanc import Orthanc, orthanc

from .export_helpers import small_datasets, snapshot

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with orthanc(tmp_path_factory.mktemp("orthanc"), extra={"DicomCheckCalledAet": True}) as running:
        yield running


@pytest.mark.dcmtk("dcmcjpeg")
async def test_orthanc_stores_each_instance_as_it_was_encoded(pacs: Orthanc, tmp_path: Path) -> None:
    explicit = small_datasets(2, patient_id="ORTHANC1")
    implicit = small_datasets(2, patient_id="ORTHANC2", transfer_syntax=IMPLICIT_VR_LITTLE_ENDIAN)
    source = tmp_path / "plain.dcm"
    small_datasets(1, patient_id="ORTHANC3")[0].save_as(source, enforce_file_format=True)
    jpeg = compress_jpeg_lossless(source, tmp_path / "jpeg.dcm")
    before = snapshot(explicit + implicit)

    await DicomExport(Address(LOCALHOST, pacs.port, pacs.aet), (*explicit, *implicit, jpeg)).export()

    stored = _by_uid(pacs)
    for ds in (*explicit, *implicit):
        orthanc_id = stored[str(ds.SOPInstanceUID)]
        assert _raw(pacs, f"/instances/{orthanc_id}/metadata/TransferSyntax").decode() == ds.file_meta.TransferSyntaxUID
        assert pydicom.dcmread(io.BytesIO(_raw(pacs, f"/instances/{orthanc_id}/file"))) == ds
    jpeg_id = stored[str(pydicom.dcmread(jpeg).SOPInstanceUID)]
    assert _raw(pacs, f"/instances/{jpeg_id}/metadata/TransferSyntax").decode() == JPEG_LOSSLESS_SV1
    stored_jpeg = tmp_path / "stored-jpeg.dcm"
    stored_jpeg.write_bytes(_raw(pacs, f"/instances/{jpeg_id}/file"))
    assert dataset_bytes(stored_jpeg) == dataset_bytes(jpeg)
    assert snapshot(explicit + implicit) == before


async def test_a_rejected_association_fails_every_instance_and_stores_nothing(pacs: Orthanc) -> None:
    datasets = small_datasets(2, patient_id="ORTHANC4")
    with pytest.raises(ExportError) as caught:
        await DicomExport(Address(LOCALHOST, pacs.port, "NOT-ORTHANC"), datasets).export()
    assert sorted(uid for uid, _ in caught.value.failures) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    assert "reject" in str(caught.value).lower()
    assert not set(_by_uid(pacs)) & {str(ds.SOPInstanceUID) for ds in datasets}



def _by_uid(pacs: Orthanc) -> dict[str, str]:
    """SOP Instance UID -> Orthanc's instance id, for everything Orthanc stored."""
    return {pacs.rest("GET", f"/instances/{i}/simplified-tags")["SOPInstanceUID"]: i for i in pacs.instances()}


def _raw(pacs: Orthanc, path: str) -> bytes:
    """A REST resource that is not JSON (a file, a metadata value)."""
    with urllib.request.urlopen(pacs.url + path, timeout=10) as answer:
        data: bytes = answer.read()
    return data
