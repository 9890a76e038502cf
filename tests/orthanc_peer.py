"""Orthanc as a test peer: a PACS started by PID with its own configuration, checked over REST.

Nothing here touches the system service (/etc/orthanc, /var/lib/orthanc): the
configuration, storage and index live in the folder the test gives. DICOM and HTTP listen
on 127.0.0.1 ports from :func:`peers.free_port`; the REST API (no authentication, local
only) says what Orthanc stored. Started and stopped through :func:`peers.run_peer`, so
only the process started here is ever signalled.

Import as ``from orthanc_peer import orthanc`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peers import LOCALHOST, Peer, PeerError, dcmtk_required, free_port, run_peer

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)


def require_orthanc() -> str:
    """Orthanc's path; skip the test without it (fail under AIODICOM_REQUIRE_DCMTK=1, as ./dev installs it)."""
    if ORTHANC is None:
        why = "Orthanc is not installed (apt-get install orthanc, or ./dev test)"
        if dcmtk_required():
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return ORTHANC


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM port and AE title, and its REST API."""

    peer: Peer
    aet: str
    http_port: int

    @property
    def port(self) -> int:
        return self.peer.port

    def get(self, path: str) -> Any:
        """GET a REST resource (JSON)."""
        with urllib.request.urlopen(f"http://{LOCALHOST}:{self.http_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{LOCALHOST}:{self.http_port}{path}", timeout=10) as response:
            data: bytes = response.read()
            return data

    def instances(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc's instance id, for everything stored."""
        found = {}
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            found[tags["SOPInstanceUID"]] = orthanc_id
        return found

    def transfer_syntax(self, orthanc_id: str) -> str:
        return self.get_bytes(f"/instances/{orthanc_id}/metadata/TransferSyntax").decode()

    def file(self, orthanc_id: str) -> bytes:
        """The Part 10 file as Orthanc stored it."""
        return self.get_bytes(f"/instances/{orthanc_id}/file")


def _wait_http(orthanc: Orthanc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            orthanc.get("/system")
            return
        except OSError:
            if time.monotonic() > deadline or orthanc.peer.returncode is not None:
                raise PeerError(f"Orthanc's REST API did not answer\n{orthanc.peer.output()}") from None
            time.sleep(0.05)


@contextmanager
def orthanc(folder: Path, *, aet: str = "ORTHANC") -> Iterator[Orthanc]:
    """Orthanc storing under ``folder``, checking the called AE title; stopped on exit."""
    program = require_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "aiodicom-test", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "Plugins": [],
        "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": aet,
        "DicomPort": dicom_port, "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True, "DicomCheckModalityHost": False, "StorageCompression": False,
        "SaveJobs": False, "ConcurrentJobs": 1, "HttpThreadsCount": 2,
    }))  # fmt: skip
    command = [program, f"--logfile={folder / 'orthanc.log'}", str(config)]
    with run_peer(command, dicom_port, grace=1.0) as peer:  # a throwaway store: no need to wait
        running = Orthanc(peer, aet, http_port)
        _wait_http(running)
        yield running
