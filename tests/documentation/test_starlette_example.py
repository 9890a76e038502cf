"""``examples/starlette_app.py`` as users run it: uvicorn in a process, real DICOM peers.

The app starts ``aiodicom.Server`` in its lifespan; DCMTK's echoscu/storescu and our own
client talk to it while an HTTP client reads ``/status``, and SIGTERM shuts both down
cleanly (uvicorn runs the lifespan's exit, which drains the DICOM server).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

import aiodicom
from peers import Peer, free_port, run_dcmtk, run_peer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "starlette_app.py"

pytestmark = pytest.mark.dcmtk


@dataclass
class App:
    url: str
    dicom_port: int
    archive: Path
    peer: Peer


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """The example under uvicorn, stopped with SIGTERM afterwards; it must shut down cleanly.

    uvicorn re-raises the SIGTERM it handled once its shutdown is complete, so the exit
    status is -SIGTERM; the lifespan's exit is what must have run, without a traceback.
    """
    http_port, dicom_port = free_port(), free_port()
    archive = tmp_path / "archive"
    env = {"HTTP_PORT": str(http_port), "DICOM_PORT": str(dicom_port), "ARCHIVE_DIR": str(archive)}
    with run_peer([sys.executable, str(EXAMPLE)], http_port, env=env, grace=20) as peer:
        yield App(f"http://127.0.0.1:{http_port}/status", dicom_port, archive, peer)
    assert_clean_exit(peer.process.returncode, peer.output())


def assert_clean_exit(code: int | None, output: str) -> None:
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output, output
    assert "Traceback" not in output and "ERROR" not in output, output


def test_status_follows_dcmtk_and_our_client(app: App, synthetic_study: list[Path]) -> None:
    url, dicom_port, archive = app.url, app.dicom_port, app.archive
    status = httpx.get(url, timeout=10)
    assert status.headers["content-type"] == "application/json"
    assert status.json() == {
        "ae_title": "STARLETTE", "dicom_port": dicom_port, "active_associations": 0,
        "associations_released": 0, "associations_aborted": 0,
        "instances_received": 0, "bytes_received": 0,
    }  # fmt: skip

    run_dcmtk(["echoscu", "-aec", "STARLETTE", "127.0.0.1", str(dicom_port)], check=True)
    run_dcmtk(
        ["storescu", "-aec", "STARLETTE", "127.0.0.1", str(dicom_port), *map(str, synthetic_study)],
        check=True,
    )
    after_dcmtk = httpx.get(url, timeout=10).json()
    assert after_dcmtk["associations_released"] == 2
    assert after_dcmtk["instances_received"] == len(synthetic_study)
    assert after_dcmtk["bytes_received"] > 5 * 64 * 64 * 2
    assert len(list(archive.rglob("*.dcm"))) == len(synthetic_study)

    async def while_associated() -> dict[str, int]:
        async with httpx.AsyncClient(timeout=10) as http:
            async with aiodicom.connect("127.0.0.1", dicom_port, called_ae="STARLETTE") as assoc:
                (await assoc.echo()).raise_for_status()
                during: dict[str, int] = (await http.get(url)).json()
            during["after"] = (await http.get(url)).json()["active_associations"]
            return during

    during = anyio.run(while_associated)
    assert during["active_associations"] == 1
    assert during["after"] == 0


def test_shutdown_drains_an_open_association(app: App, synthetic_study: list[Path]) -> None:
    """SIGTERM while our client holds an association: it may still store, then the app exits 0."""
    assert httpx.get(app.url, timeout=10).json()["active_associations"] == 0

    async def store_across_shutdown() -> list[int]:
        codes = []
        async with aiodicom.connect("127.0.0.1", app.dicom_port, called_ae="STARLETTE") as assoc:
            codes.append(await assoc.store(synthetic_study[0]))
            app.peer.process.send_signal(signal.SIGTERM)
            await anyio.sleep(0.5)  # uvicorn is now in its lifespan shutdown, waiting for us
            assert app.peer.process.poll() is None
            for path in synthetic_study[1:]:
                codes.append(await assoc.store(path))
        return codes

    assert anyio.run(store_across_shutdown) == [0] * len(synthetic_study)
    app.peer.process.wait(timeout=20)
    assert_clean_exit(app.peer.process.returncode, app.peer.output())
    assert len(list(app.archive.rglob("*.dcm"))) == len(synthetic_study)
