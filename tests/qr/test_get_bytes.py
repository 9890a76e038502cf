"""C-GET: what a requestor keeps in memory is still the sent data set after later instances arrived.

The requestor role reads C-STORE requests through the same transport as a server: P-DATA
is decoded in the read buffer, and a sink copies what it keeps. DCMTK ``dcmqrscp`` sends
512 KiB CT images in PDUs of 128 KiB, which arrive whole and back to back; every instance
is read only after the whole retrieval, once later ones have reused that buffer.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from aiodicom import connect, query_retrieve_contexts
from aiodicom.codec.part10 import read_file_meta
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.synthetic import write_study
from peers import dcmqrscp, require_dcmtk
from qr.helpers import TIMEOUTS

pytestmark = [pytest.mark.anyio, pytest.mark.dcmtk("dcmqrscp", "dcmqridx")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dataset(path: Path) -> bytes:
    return path.read_bytes()[read_file_meta(path).dataset_offset :]


async def test_instances_kept_in_memory_are_byte_exact_after_the_retrieval(tmp_path: Path) -> None:
    require_dcmtk("dcmqrscp", "dcmqridx")
    files = write_study(
        tmp_path / "study", patient_id="GETBYTES", images_per_series=4, rows=512, columns=512
    )
    sent = {read_file_meta(f).sop_instance_uid: dataset(f) for f in files}
    kept: list[ReceivedInstance] = []
    with dcmqrscp(tmp_path / "db", files=files, max_pdu=131072) as peer:
        with anyio.fail_after(60):
            async with connect("127.0.0.1", peer.port, called_ae="QRSCP", contexts=query_retrieve_contexts(),
                               timeouts=TIMEOUTS, memory_threshold=1 << 30) as association:  # fmt: skip
                retrieval = association.get(
                    {"PatientID": "GETBYTES"}, level="PATIENT", model="PATIENT"
                )
                try:
                    async for instance in retrieval:
                        kept.append(instance)
                    # Read only now, inside the block (the instances are ours until it ends).
                    received = {i.sop_instance_uid: i.dataset_bytes() for i in kept}
                    in_memory = [i.spooled_path is None for i in kept]
                finally:
                    for instance in kept:
                        instance.close()
    assert retrieval.result is not None and retrieval.result.completed == len(files)
    assert all(in_memory), "the test means instances kept in memory"
    assert received.keys() == sent.keys()
    for uid, data in sent.items():
        assert received[uid] == data, f"instance {uid} changed after later ones arrived"
