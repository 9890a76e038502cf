"""Orthanc as a test peer: its own configuration, DICOM and HTTP on free ports, data via REST.

:func:`orthanc` starts ``/usr/sbin/Orthanc`` (never the system service: nothing here reads or
writes /etc/orthanc or /var/lib/orthanc) with a JSON configuration written into a folder of
the test's, its storage and index in that folder, DICOM on 127.0.0.1 and the REST API on
127.0.0.1 without authentication. It is stopped by PID like every peer (``peers.run_peer``).

:class:`Orthanc` wraps the few REST calls tests need: upload instances (``POST /instances``),
list and delete what it holds, and ask it to query or retrieve from a modality (the SCU side
of Orthanc, for tests of our SCP). Only the standard library: no HTTP client dependency.

Import as ``from qr.orthanc import orthanc`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peers import LOCALHOST, Peer, dcmtk_required, free_port, run_peer, wait_for_port

ORTHANC_BINARY = "/usr/sbin/Orthanc"


def orthanc_binary() -> str | None:
    """The Orthanc executable, or None when it is not installed."""
    return shutil.which("Orthanc") or (ORTHANC_BINARY if Path(ORTHANC_BINARY).exists() else None)


def require_orthanc() -> str:
    """Skip the test without Orthanc (fail instead where DCMTK is required, as under ``./dev``)."""
    binary = orthanc_binary()
    if binary is None:
        message = "Orthanc is not installed (apt-get install -y -qq orthanc)"
        if dcmtk_required():
            pytest.fail(message)
        pytest.skip(message)
    return binary


class OrthancError(RuntimeError):
    """A REST call to the test Orthanc failed."""


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM AE and port, and its REST API."""

    peer: Peer
    aet: str
    port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    def rest(self, method: str, path: str, body: bytes | Mapping[str, Any] | list[Any] | None = None,
             *, timeout: float = 30.0) -> Any:
        """One REST call; the decoded JSON answer (None when empty)."""
        data: bytes | None
        headers = {}
        if body is None or isinstance(body, bytes):
            data = body
            headers["Content-Type"] = "application/dicom"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise OrthancError(f"{method} {path}: HTTP {exc.code}: {detail}\n{self.peer.output()[-2000:]}") from None
        return json.loads(raw) if raw.strip() else None

    def upload(self, files: Iterable[str | Path]) -> list[str]:
        """``POST /instances`` each file; Orthanc's instance IDs."""
        return [self.rest("POST", "/instances", Path(f).read_bytes())["ID"] for f in files]

    def instances(self) -> list[str]:
        return list(self.rest("GET", "/instances"))

    def clear(self) -> None:
        """Delete every patient (and so everything) Orthanc holds."""
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")


def _config(folder: Path, aet: str, port: int, http_port: int,
            modalities: Mapping[str, tuple[str, str, int]], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "Name": "aiodicom-test", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "Plugins": [],
        "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "SslEnabled": False,
        "DicomServerEnabled": True, "DicomAet": aet, "DicomPort": port,
        "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
        "StorageCompression": False, "SaveJobs": False, "ConcurrentJobs": 2,
        "DicomScuTimeout": 10, "DicomAssociationCloseDelay": 0,
        "LimitFindResults": 0, "LimitFindInstances": 0,
        **extra,
    }  # fmt: skip


@contextmanager
def orthanc(
    folder: str | Path,
    *,
    aet: str = "ORTHANC",
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Orthanc]:
    """Run Orthanc with its own configuration in ``folder``, ready for DICOM and REST.

    ``modalities`` maps a name to ``(AE title, host, port)``: the C-MOVE destinations
    Orthanc knows (and the peers its REST API may query). ``extra`` overrides settings.
    """
    binary = require_orthanc()
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    config = root / "orthanc.json"
    config.write_text(json.dumps(_config(root, aet, port, http_port, modalities or {}, extra or {})))
    with run_peer([binary, f"--logfile={root / 'orthanc.log'}", str(config)], port, ready_timeout=30) as peer:
        wait_for_port(http_port, timeout=30, process=peer.process)
        server = Orthanc(peer, aet, port, http_port)
        _wait_rest(server)
        yield server


def _wait_rest(server: Orthanc, timeout: float = 30.0) -> None:
    """The HTTP port opens before the REST API answers: wait for ``/system``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.rest("GET", "/system", timeout=2)
            return
        except (OrthancError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


__all__ = ["Orthanc", "OrthancError", "orthanc", "orthanc_binary", "require_orthanc"]
