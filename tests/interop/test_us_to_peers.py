"""Our client (``aiodicom.connect``) sending to DCMTK's and pynetdicom's ``storescp``.

The receiver is an independent implementation, so equality of what it wrote with what we
had proves our encoding, fragmentation and negotiation, not just agreement with
ourselves. DCMTK's storescp runs with ``+B`` (bit preserving): without it DCMTK re-encodes
the data set it parsed, which says nothing about what we sent. pynetdicom's storescp
always re-encodes with pydicom (for these synthetic files a faithful round trip), and
writes each file before it answers, so everything is on disk once ``store`` returns.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import anyio
import pydicom
import pytest

from aiodicom.codec.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.dimse.client import connect, contexts_for_files
from aiodicom.dimse.server import Server
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.errors import AssociationAborted, NoPresentationContext
from aiodicom.synthetic import CT_IMAGE_STORAGE, make_dataset, write_study
from peers import (
    compress_jpeg_lossless,
    dataset_bytes,
    pynetdicom_storescp,
    storescp,
)

from .helpers import (
    TEST_TIMEOUT,
    Collector,
    assert_same_elements,
    files_by_uid,
    serving,
    sop_instance_uid,
)

pytestmark = pytest.mark.anyio

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


async def send(port: int, paths: list[Path], **options: object) -> None:
    (contexts,) = contexts_for_files(paths)
    async with connect(
        "127.0.0.1",
        port,
        called_ae="STORESCP",
        contexts=contexts,
        **options,  # type: ignore[arg-type]
    ) as assoc:
        for path in paths:
            status = await assoc.store(path)
            assert status.is_success, (path, status)


@pytest.mark.dcmtk
@pytest.mark.parametrize("transfer_syntax", ["explicit", "implicit", "big"])
async def test_store_to_dcmtk_byte_for_byte(tmp_path: Path, transfer_syntax: str) -> None:
    from aiodicom.synthetic import TRANSFER_SYNTAXES

    # 256x256 pixels (128 KiB): more than storescp's 16 KiB maximum PDU, so we fragment.
    sources = write_study(
        tmp_path / "src", images_per_series=3, rows=256, columns=256,
        transfer_syntax=TRANSFER_SYNTAXES[transfer_syntax],
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B",)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, sources)
    received = files_by_uid(out)
    assert len(received) == len(sources), peer.output()
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_compressed_file_keeps_its_transfer_syntax(tmp_path: Path) -> None:
    plain = write_study(tmp_path / "plain", images_per_series=2, rows=64, columns=64)
    (tmp_path / "jpeg").mkdir()
    sources = [compress_jpeg_lossless(p, tmp_path / "jpeg" / p.name) for p in plain]
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B", "+xa")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, sources)
    received = files_by_uid(out)
    assert len(received) == len(sources), peer.output()
    for source in sources:
        stored = received[sop_instance_uid(source)]
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
        assert dataset_bytes(stored) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_explicit_file_converted_for_implicit_only_peer(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=2, rows=32, columns=32)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B", "+xi")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, sources)
    received = files_by_uid(out)
    assert len(received) == len(sources), peer.output()
    for source in sources:
        stored = received[sop_instance_uid(source)]
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
        assert_same_elements(source, stored)


@pytest.mark.dcmtk
@pytest.mark.parametrize("peer_options", [(), ("+xi",)], ids=["explicit", "implicit-only"])
async def test_storing_a_dataset_never_mutates_it(
    tmp_path: Path, peer_options: tuple[str, ...]
) -> None:
    ds = make_dataset(rows=32, columns=32)
    before = copy.deepcopy(ds)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B", *peer_options)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                "127.0.0.1", peer.port, called_ae="STORESCP",
                contexts=[(CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])],
            ) as assoc:  # fmt: skip
                assert (await assoc.store(ds)).is_success
                assert (await assoc.store(ds)).is_success
    assert ds == before
    assert ds.file_meta == before.file_meta
    assert ds.PixelData == before.PixelData
    (stored,) = files_by_uid(out).values()  # the same instance twice: one file
    assert_same_elements_ds(ds, pydicom.dcmread(stored))


def assert_same_elements_ds(a: pydicom.Dataset, b: pydicom.Dataset) -> None:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, a, enforce_file_format=True)
    buffer.seek(0)
    expected = pydicom.dcmread(buffer)
    assert {e.tag for e in expected} == {e.tag for e in b}
    for element in expected:
        if element.tag != 0x7FE00010:
            assert element.value == b[element.tag].value, element
    assert (expected.pixel_array == b.pixel_array).all()


@pytest.mark.dcmtk
async def test_store_on_refused_sop_class_raises(tmp_path: Path) -> None:
    unknown_class = "1.2.826.0.1.3680043.10.1447.99.1"  # not a storage class DCMTK knows
    ds = make_dataset(rows=16, columns=16)
    ds.SOPClassUID = unknown_class
    ds.file_meta.MediaStorageSOPClassUID = unknown_class
    with storescp(args=()) as peer:  # without -pm storescp refuses unknown SOP classes
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                "127.0.0.1", peer.port, called_ae="STORESCP",
                contexts=[(CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN]),
                          (unknown_class, [EXPLICIT_VR_LITTLE_ENDIAN])],
            ) as assoc:  # fmt: skip
                assert [c[1] for c in assoc.accepted_contexts] == [CT_IMAGE_STORAGE]
                with pytest.raises(NoPresentationContext):
                    await assoc.store(ds)
                # The association is still usable after the refusal.
                assert (await assoc.store(make_dataset(rows=16, columns=16))).is_success


@pytest.mark.parametrize("transfer_syntax", ["explicit", "implicit"])
async def test_store_to_pynetdicom_byte_for_byte(tmp_path: Path, transfer_syntax: str) -> None:
    from aiodicom.synthetic import TRANSFER_SYNTAXES

    sources = write_study(
        tmp_path / "src", images_per_series=3, rows=128, columns=128,
        transfer_syntax=TRANSFER_SYNTAXES[transfer_syntax],
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    with pynetdicom_storescp(output_dir=out) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, sources)
    received = files_by_uid(out)
    assert len(received) == len(sources), peer.output()
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)


async def test_explicit_file_converted_for_implicit_only_pynetdicom(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=2, rows=32, columns=32)
    out = tmp_path / "out"
    out.mkdir()
    with pynetdicom_storescp(output_dir=out, args=("--implicit",)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, sources)
    received = files_by_uid(out)
    for source in sources:
        stored = received[sop_instance_uid(source)]
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
        assert_same_elements(source, stored)


async def test_pynetdicom_one_association_at_a_time(tmp_path: Path) -> None:
    """Two associations in a row (not concurrently): each one's instances arrive."""
    first = write_study(tmp_path / "a", images_per_series=2, rows=16, columns=16)
    second = write_study(tmp_path / "b", images_per_series=2, rows=16, columns=16)
    out = tmp_path / "out"
    out.mkdir()
    with pynetdicom_storescp(output_dir=out) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, first)
            await send(peer.port, second)
    received = files_by_uid(out)
    assert set(received) == {sop_instance_uid(p) for p in first + second}


# --- asynchronous operations window ---------------------------------------------------------


async def store_concurrently(port: int, paths: list[Path], called_ae: str) -> int:
    """Start every store at once on one association proposing a window of 8."""
    (contexts,) = contexts_for_files(paths)
    async with connect(
        "127.0.0.1", port, called_ae=called_ae, contexts=contexts, max_outstanding=8
    ) as assoc:
        statuses: list[bool] = []

        async def one(path: Path) -> None:
            statuses.append((await assoc.store(path)).is_success)

        async with anyio.create_task_group() as task_group:
            for path in paths:
                task_group.start_soon(one, path)
        assert statuses == [True] * len(paths)
        return assoc.max_outstanding


@pytest.mark.dcmtk
async def test_window_not_granted_by_dcmtk_stores_one_at_a_time(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=6, rows=32, columns=32)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B",)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            window = await store_concurrently(peer.port, sources, "STORESCP")
    assert window == 1
    assert set(files_by_uid(out)) == {sop_instance_uid(p) for p in sources}, peer.output()


async def test_window_not_granted_by_pynetdicom_stores_one_at_a_time(tmp_path: Path) -> None:
    sources = write_study(tmp_path / "src", images_per_series=6, rows=32, columns=32)
    out = tmp_path / "out"
    out.mkdir()
    with pynetdicom_storescp(output_dir=out) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            window = await store_concurrently(peer.port, sources, "STORESCP")
    assert window == 1
    assert set(files_by_uid(out)) == {sop_instance_uid(p) for p in sources}, peer.output()


async def test_window_granted_by_our_server_pipelines(tmp_path: Path) -> None:
    """With a window of 4 granted, several stores really are outstanding at once."""
    sources = write_study(tmp_path / "src", images_per_series=6, rows=32, columns=32)
    collector = Collector(tmp_path / "out")
    in_flight = 0
    two_at_once = anyio.Event()

    async def on_store(instance: ReceivedInstance) -> None:
        nonlocal in_flight
        in_flight += 1
        if in_flight >= 2:
            two_at_once.set()
        # The first store waits until a second one is being handled: only possible when
        # the client did not wait for the first response (bounded by fail_after below).
        await two_at_once.wait()
        await collector(instance)
        in_flight -= 1

    server = Server("AIODICOM", "127.0.0.1", 0, on_store=on_store, max_operations=4)
    with anyio.fail_after(TEST_TIMEOUT):
        async with serving(server) as port:
            window = await store_concurrently(port, sources, "AIODICOM")
    assert window == 4
    assert set(collector.paths) == {sop_instance_uid(p) for p in sources}
    for source in sources:
        assert dataset_bytes(collector.paths[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_peer_abort_surfaces_as_our_exception(tmp_path: Path) -> None:
    """Not wrapped in an exception group: ``except AssociationAborted`` works."""
    sources = write_study(tmp_path / "src", images_per_series=1, rows=16, columns=16)
    with storescp(args=("--abort-after",)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            with pytest.raises(AssociationAborted):
                await send(peer.port, sources)


@pytest.mark.dcmtk
async def test_large_file_streamed_from_disk_to_dcmtk(tmp_path: Path) -> None:
    """Above the client's 32 MiB threshold the data set is sent in pieces read from disk."""
    from aiodicom.synthetic import write_large_multiframe

    source = write_large_multiframe(tmp_path / "big.dcm", size_bytes=34 * 1024 * 1024)
    assert source.stat().st_size > 32 * 1024 * 1024
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B",)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, [source])
    (stored,) = files_by_uid(out).values()
    assert dataset_bytes(stored) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_fragments_respect_the_peers_maximum_pdu(tmp_path: Path) -> None:
    """storescp announces 4096 bytes: DCMTK aborts on any larger PDU, so success proves it."""
    sources = write_study(tmp_path / "src", images_per_series=2, rows=256, columns=256)
    out = tmp_path / "out"
    out.mkdir()
    with storescp(output_dir=out, args=("+B", "-pdu", "4096")) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            await send(peer.port, sources)
    received = files_by_uid(out)
    assert set(received) == {sop_instance_uid(p) for p in sources}, peer.output()
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)


@pytest.mark.dcmtk
async def test_store_part10_bytes_to_dcmtk(tmp_path: Path) -> None:
    sources = write_study(
        tmp_path / "src",
        images_per_series=2,
        rows=64,
        columns=64,
        transfer_syntax=IMPLICIT_VR_LITTLE_ENDIAN,
    )
    out = tmp_path / "out"
    out.mkdir()
    (contexts,) = contexts_for_files(sources)
    with storescp(output_dir=out, args=("+B",)) as peer:
        with anyio.fail_after(TEST_TIMEOUT):
            async with connect(
                "127.0.0.1", peer.port, called_ae="STORESCP", contexts=contexts
            ) as assoc:
                for source in sources:
                    assert (await assoc.store(source.read_bytes())).is_success
    received = files_by_uid(out)
    for source in sources:
        assert dataset_bytes(received[sop_instance_uid(source)]) == dataset_bytes(source)
