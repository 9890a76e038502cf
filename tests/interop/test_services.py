"""A service registered on a `Server` serves a real peer: DCMTK findscu gets pending responses.

Query/retrieve is not built yet; this test service answers C-FIND with three matches, which
is enough to show over a socket what the registry promises: the server accepts the SOP class
because a service registered it, routes the request to its handler, and every pending
response reaches the peer before the final one.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from aiodicom.codec.uids import IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.dimse import command as C
from aiodicom.dimse import status as S
from aiodicom.dimse.association import Request
from aiodicom.dimse.server import Server
from aiodicom.dimse.services import Service
from aiodicom.ul.negotiation import AcceptorPolicy
from peers import require_dcmtk, run_dcmtk_async

pytestmark = [pytest.mark.anyio, pytest.mark.dcmtk]

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def encoded(dataset: Dataset, transfer_syntax: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    write_dataset(buffer, dataset)
    return buffer.getvalue()


class Studies(Service):
    """C-FIND: ``count`` studies, one pending response each ``pause`` seconds apart, then success."""

    sop_classes = (STUDY_ROOT_FIND,)

    def __init__(self, count: int, pause: float = 0.0) -> None:
        self.handlers = {C.CFindRQ: self.find}
        self.count, self.pause = count, pause
        self.queries = self.sent = 0

    async def find(self, request: Request) -> None:
        rq = request.command
        assert isinstance(rq, C.CFindRQ)
        self.queries += 1
        for n in range(self.count):
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.StudyInstanceUID = f"1.2.3.999.{n}"
            data = encoded(match, request.context.transfer_syntax)
            await request.respond(C.CFindRSP(rq.message_id, S.PENDING, STUDY_ROOT_FIND), data)
            self.sent += 1
            await anyio.sleep(self.pause)
        await request.respond(C.CFindRSP(rq.message_id, S.SUCCESS, STUDY_ROOT_FIND))


async def findscu(server: Server, *options: str) -> str:
    """Serve while DCMTK findscu sends one study query; its output (it must succeed)."""
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            port = await tg.start(server.serve)
            result = await run_dcmtk_async(
                ["findscu", "-v", "-S", "-aec", "FINDSCP", *options, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID", "127.0.0.1", str(port)],
                timeout=30,
            )  # fmt: skip
            server.shutdown(0)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("with_policy", [False, True], ids=["keywords", "policy"])
async def test_findscu_gets_every_pending_response_from_a_registered_service(
    tmp_path: Path, with_policy: bool
) -> None:
    require_dcmtk("findscu")
    service = Studies(3)
    # The accepted SOP classes derive from the services: nothing names the FIND class here.
    policy = AcceptorPolicy(ae_title="FINDSCP", supported={}) if with_policy else None
    output = await findscu(
        Server("FINDSCP", port=0, services=[service], policy=policy, spool_dir=tmp_path / "spool")
    )
    assert service.queries == 1
    for n in range(3):
        assert f"1.2.3.999.{n}" in output, output
    assert output.count("(Pending)") == 3, output
    assert "(Success)" in output, output


async def test_findscu_cancel_stops_the_operation_while_its_handler_runs(tmp_path: Path) -> None:
    """The server reads findscu's C-CANCEL while the handler runs and answers Cancel (0xFE00)."""
    require_dcmtk("findscu")
    service = Studies(50, pause=0.1)  # would answer for 5 s
    output = await findscu(Server("FINDSCP", port=0, services=[service], spool_dir=tmp_path / "spool"), "--cancel", "2")
    assert "Received Final Find Response (Cancel" in output, output  # status 0xFE00
    assert service.sent < 10, output  # stopped long before its 50 responses
