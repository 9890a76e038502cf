"""The archive in-process: index kept in step with the files, stored = indexed, hostile identifiers.

A :class:`~aiodicom.Server` runs the archive's services in the test's event loop; DCMTK
(storescu, findscu) talks to it as a subprocess awaited without blocking the loop.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import anyio
import pytest

from aiodicom import Archive, Server
from aiodicom.codec.identifier import encode_identifier
from aiodicom.codec.uids import EXPLICIT_VR_LITTLE_ENDIAN, STUDY_ROOT_FIND
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.client import connect
from aiodicom.dimse.services.models import QueryLevel
from aiodicom.errors import AssociationError
from aiodicom.synthetic import write_study
from peers import LOCALHOST, run_dcmtk_async

from ..interop.helpers import serving
from .scp_helpers import final_status, find_matches

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _study_uids(archive: Archive) -> set[str]:
    return {row["StudyInstanceUID"] async for _, row in archive.index.search(QueryLevel.STUDY)}


async def test_index_follows_the_folder_across_restarts(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    first = write_study(root / "a", patient_id="A", images_per_series=3, rows=8, columns=8)
    async with Archive(root) as archive:
        assert archive.index.count() == 3
        before = await _study_uids(archive)
    # While it is down: one file removed, a study added, one file rewritten elsewhere.
    first[0].unlink()
    write_study(root / "b", patient_id="B", images_per_series=2, rows=8, columns=8)
    async with Archive(root) as archive:
        assert archive.index.count() == 4
        after = await _study_uids(archive)
        assert before < after and len(after) == 2
    shutil.rmtree(root / "a")
    async with Archive(root) as archive:
        assert archive.index.count() == 2
        assert await _study_uids(archive) == after - before  # the emptied study is gone


async def test_a_reconcile_rescans_only_what_changed(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    paths = write_study(root, patient_id="C", images_per_series=4, rows=8, columns=8)
    archive = Archive(root)
    first = await archive.open()
    archive.close()
    assert (first.indexed, first.unchanged) == (4, 0)
    os.utime(paths[1], ns=(1, 1))  # touched: scanned again
    (root / "notes.txt").write_text("not DICOM")
    second = await archive.open()
    archive.close()
    assert (second.indexed, second.unchanged, second.skipped, second.removed) == (1, 3, 1, 0)


async def test_an_instance_stored_is_found_at_once(tmp_path: Path) -> None:
    incoming = write_study(tmp_path / "in", patient_id="NEW", images_per_series=2, rows=8, columns=8)
    async with Archive(tmp_path / "archive") as archive:
        server = Server("QRSCP", port=0, on_store=archive.store, services=archive.services(ae_title="QRSCP"),
                        spool_dir=tmp_path / "archive" / ".incoming")  # fmt: skip
        with anyio.fail_after(30):
            async with serving(server) as port:
                for _ in range(2):  # sent again: replaced, still one row each
                    stored = await run_dcmtk_async(["storescu", LOCALHOST, str(port), *map(str, incoming)])
                    assert stored.returncode == 0, stored.stderr
                assert archive.index.count() == 2
                out = tmp_path / "found"
                out.mkdir()
                found = await run_dcmtk_async(["findscu", "-d", "-S", "-X", "-od", str(out), "-aec", "QRSCP",
                                               "-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientID=NEW",
                                               "-k", "SOPInstanceUID", LOCALHOST, str(port)])  # fmt: skip
                assert final_status(found.stdout + found.stderr) == 0
                assert len(find_matches(out)) == 2
        stored_files = sorted(p for p in (tmp_path / "archive").rglob("*.dcm"))
        assert len(stored_files) == 2  # in <Study>/<Series>/<SOP>.dcm, as receive writes them


def _find_rq(mid: int) -> C.CFindRQ:
    return C.CFindRQ(mid, STUDY_ROOT_FIND)


@pytest.mark.parametrize(("size", "outcome"), [(2 * 1024 * 1024, "refused"), (17 * 1024 * 1024, "aborted")])
async def test_huge_identifiers_fail_clearly_and_the_server_serves_on(tmp_path: Path, size: int, outcome: str) -> None:
    write_study(tmp_path / "archive", patient_id="H", images_per_series=1, rows=8, columns=8)
    level = encode_identifier([(0x00080052, "CS", b"STUDY")], EXPLICIT_VR_LITTLE_ENDIAN)
    huge = level + struct.pack("<HH2s2xI", 0x0009, 0x1010, b"UN", size) + b"\0" * size
    contexts = [(STUDY_ROOT_FIND, [EXPLICIT_VR_LITTLE_ENDIAN])]
    async with Archive(tmp_path / "archive") as archive:
        server = Server("QRSCP", port=0, services=archive.services(ae_title="QRSCP"))
        with anyio.fail_after(30):
            async with serving(server) as port:
                async with connect(LOCALHOST, port, called_ae="QRSCP", contexts=contexts) as client:
                    context = client.association.context_for(STUDY_ROOT_FIND)
                    assert context is not None
                    if outcome == "refused":
                        final = await client.dimse.request_final(context.id, _find_rq, huge)
                        assert final.status == S.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
                        assert "identifier of" in (final.status.error_comment or "")
                    else:
                        with pytest.raises(AssociationError):
                            await client.dimse.request_final(context.id, _find_rq, huge)
                        client.abort()
                async with connect(LOCALHOST, port, called_ae="QRSCP", contexts=contexts) as client:
                    context = client.association.context_for(STUDY_ROOT_FIND)
                    assert context is not None
                    answers = [r async for r in client.dimse.request(context.id, _find_rq, level)]
                    assert [r.status for r in answers] == [S.PENDING, S.SUCCESS]
