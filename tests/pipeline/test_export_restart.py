"""kill -9 of a process in the middle of an export, then a restart: each instance stored once.

The destination is an aiodicom server in the test's own event loop; it holds the fourth
instance without answering until the exporting process is killed, so the kill always
lands with three instances acknowledged and one in flight.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from aiodicom.dimse.store import ReceivedInstance
from peers import peer_env

from .export_helpers import destination, stored_by_uid

pytestmark = pytest.mark.anyio
CHILD = Path(__file__).with_name("export_child.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_kill_9_during_an_export_then_restart_delivers_each_instance_once(tmp_path: Path) -> None:
    held = anyio.Event()

    async with destination() as dest:
        async def hold_the_fourth(instance: ReceivedInstance) -> int | None:
            if sum(dest.received.values()) == 3 and not held.is_set():
                held.set()
                await anyio.sleep_forever()  # no answer: the exporter waits, then is killed
            return await dest.on_store(instance)

        dest.hook = hold_the_fourth
        args = [str(tmp_path / "outbox"), str(dest.port), str(tmp_path / "files")]
        with anyio.fail_after(30):
            async with await anyio.open_process([sys.executable, str(CHILD), *args, "submit",
                                                 str(tmp_path / "uids.json")], env=peer_env()) as first:
                await held.wait()
                first.kill()  # SIGKILL, by PID: the process we started
                await first.wait()
            uids = json.loads((tmp_path / "uids.json").read_text())
            assert sum(dest.stored.values()) == 3
            resumed = await anyio.run_process([sys.executable, str(CHILD), *args, "resume"],
                                              env=peer_env(), check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    outcome = json.loads(resumed.stdout.decode().splitlines()[-1])
    assert outcome["delivered"], outcome
    assert dest.stored == {uid: 1 for uid in uids}  # nothing lost, nothing twice
    assert sorted(stored_by_uid(tmp_path / "files")) == sorted(uids)
    assert len(list((tmp_path / "files").iterdir())) == len(uids)
    assert not any((tmp_path / "outbox" / "pending").iterdir())
