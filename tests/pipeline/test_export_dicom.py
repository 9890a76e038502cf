"""DicomExport and the outbox against DCMTK ``storescp``: what arrives, in which encoding.

One ``storescp`` (``+xa``: it accepts every transfer syntax, and keeps what it got) serves
the module; each test looks only at the SOP Instance UIDs it generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pydicom
import pytest
from pydicom.encaps import encapsulate

from aiodicom.codec.uids import IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.pipeline.export import Address, DicomExport, ExportError, FileExport
from aiodicom.pipeline.outbox import Outbox
from peers import LOCALHOST, Peer, compress_jpeg_lossless, storescp

from .export_helpers import same_data, small_datasets, snapshot, stored_by_uid

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

pytestmark = [pytest.mark.anyio, pytest.mark.dcmtk("storescp", "dcmcjpeg")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Path]]:
    out = tmp_path_factory.mktemp("storescp")
    with storescp(output_dir=out, aet="DEST", args=("+xa",)) as peer:
        yield peer, out


def _address(scp: tuple[Peer, Path]) -> Address:
    return Address(LOCALHOST, scp[0].port, "DEST", "EXPORTER")


async def test_a_list_arrives_whole_and_unchanged(scp: tuple[Peer, Path]) -> None:
    datasets = small_datasets(3)
    before = snapshot(datasets)
    await DicomExport(_address(scp), datasets).export()
    stored = stored_by_uid(scp[1])
    for ds in datasets:
        assert same_data(stored[str(ds.SOPInstanceUID)], ds)
    assert snapshot(datasets) == before  # the caller's data sets are never modified


async def test_a_generator_is_read_once_and_each_instance_keeps_its_encoding(
    scp: tuple[Peer, Path], tmp_path: Path
) -> None:
    implicit = small_datasets(2, transfer_syntax=IMPLICIT_VR_LITTLE_ENDIAN)
    plain = small_datasets(1)[0]
    plain_path = tmp_path / "plain.dcm"
    plain.save_as(plain_path, enforce_file_format=True)
    jpeg = compress_jpeg_lossless(plain_path, tmp_path / "jpeg.dcm")
    consumed = []

    def items() -> Iterator[object]:
        for item in (*implicit, jpeg):
            consumed.append(item)
            yield item

    await DicomExport(f"DEST@{LOCALHOST}:{scp[0].port}", items()).export()  # type: ignore[arg-type]
    assert len(consumed) == 3
    stored = stored_by_uid(scp[1])
    for ds in implicit:
        path = stored[str(ds.SOPInstanceUID)]
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
    jpeg_uid = str(pydicom.dcmread(jpeg).SOPInstanceUID)
    assert pydicom.dcmread(stored[jpeg_uid]).file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1


async def test_an_instance_the_peer_cannot_take_fails_alone(tmp_path: Path) -> None:
    plain = small_datasets(2)
    lossy = small_datasets(1)[0]
    lossy.file_meta.TransferSyntaxUID = JPEG_BASELINE  # never decoded: only proposed
    lossy.PixelData = encapsulate([b"\xff\xd8" + bytes(64) + b"\xff\xd9"])
    lossy["PixelData"].VR = "OB"
    lossy["PixelData"].is_undefined_length = True
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, aet="DEST") as peer:  # uncompressed syntaxes only
        with pytest.raises(ExportError) as caught:
            await DicomExport(Address(LOCALHOST, peer.port, "DEST"), [plain[0], lossy, plain[1]]).export()
    ((uid, reason),) = caught.value.failures
    assert uid == str(lossy.SOPInstanceUID) and "lossy" in reason
    assert set(stored_by_uid(out)) == {str(ds.SOPInstanceUID) for ds in plain}


@pytest.mark.parametrize("durable", [True, False], ids=["directory", "memory"])
async def test_the_outbox_runs_a_batch_of_several_exporters(
    scp: tuple[Peer, Path], tmp_path: Path, durable: bool
) -> None:
    datasets = small_datasets(4)
    folder = tmp_path / "out"
    outbox = Outbox(tmp_path / "outbox" if durable else None, attempts=1)
    async with anyio.create_task_group() as group:
        await group.start(outbox.run)
        await outbox.submit("b1", [DicomExport(_address(scp), datasets), FileExport(folder, iter(datasets))])
        with anyio.fail_after(20):
            outcome = await outbox.wait("b1")
        group.cancel_scope.cancel()
    assert outcome.delivered, outcome
    stored = stored_by_uid(scp[1])
    written = stored_by_uid(folder)
    for ds in datasets:
        assert same_data(stored[str(ds.SOPInstanceUID)], ds)
        assert same_data(written[str(ds.SOPInstanceUID)], ds)
    assert outbox.status().delivered == 1
    if durable:
        assert not any((tmp_path / "outbox" / "pending").iterdir())
        assert (tmp_path / "outbox" / "done" / "b1.json").is_file()
