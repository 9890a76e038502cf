"""Small helpers shared by the interoperability tests (no fixtures: plain functions).

A running :class:`aiodicom.dimse.server.Server` is started with :func:`serving`, which
yields the bound port and always shuts the server down (bounded) on the way out, so a
failing assertion never leaves a listener behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pydicom

from aiodicom.dimse.server import Server
from aiodicom.dimse.store import ReceivedInstance, safe_component
from peers import aiodicom_command, dcmdump, peer_env

#: Upper bound for one network test; tests finish in well under a second normally.
TEST_TIMEOUT = 30.0


class Collector:
    """A store handler that saves every instance as ``DIR/<SOPInstanceUID>.dcm``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: dict[str, Path] = {}
        self.transfer_syntaxes: dict[str, str] = {}

    async def __call__(self, instance: ReceivedInstance) -> int | None:
        uid = instance.sop_instance_uid
        path = instance.save(self.directory / (safe_component(uid, "unknown") + ".dcm"))
        self.paths[uid] = path
        self.transfer_syntaxes[uid] = instance.transfer_syntax
        return None


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[int]:
    """Run ``server`` in a task group for the block; yield its port; shut it down after."""
    async with anyio.create_task_group() as task_group:
        port: int = await task_group.start(server.serve)
        try:
            yield port
        finally:
            server.shutdown(grace=2.0)


def sop_instance_uid(path: Path) -> str:
    """The SOP Instance UID of a Part 10 file (headers only)."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def files_by_uid(directory: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every non-hidden file under ``directory``."""
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            found[sop_instance_uid(path)] = path
    return found


def assert_same_elements(sent: Path, stored: Path) -> None:
    """Same elements and pixel values, whatever transfer syntax each file uses."""
    a, b = pydicom.dcmread(sent), pydicom.dcmread(stored)
    pixel_data = pydicom.tag.Tag(0x7FE0, 0x0010)
    tags = {e.tag for e in a} - {pixel_data}
    assert tags == {e.tag for e in b} - {pixel_data}
    for tag in tags:
        assert a[tag].value == b[tag].value, a[tag]
    assert (a.pixel_array == b.pixel_array).all()


def assert_dcmdump_clean(path: Path) -> None:
    """DCMTK's ``dcmdump`` reads the file completely, with nothing on stderr.

    DCMTK logs its warnings (``W:``) and errors (``E:``) to stderr, so an empty stderr
    means the file is well formed as far as an independent parser can tell.
    """
    result = dcmdump(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert "(7fe0,0010)" in result.stdout  # it got as far as the pixel data


class Traced:
    """A finished command: its exit code, its output without the import report, and
    the modules it imported."""

    def __init__(self, *args: str) -> None:
        command = aiodicom_command(*args)
        command.insert(1, "-Ximporttime")
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=peer_env(),
            timeout=TEST_TIMEOUT,
        )  # fmt: skip
        self.code = result.returncode
        self.stdout = result.stdout
        report = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
        self.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
        self.modules = {line.rsplit("|", 1)[-1].strip() for line in report}

    def assert_blocking(self) -> None:
        assert "aiodicom.dimse.blocking" in self.modules, self.stderr
        assert not {"asyncio", "aiodicom.dimse.client"} & self.modules, sorted(self.modules)
        assert "Traceback" not in self.stderr, self.stderr
