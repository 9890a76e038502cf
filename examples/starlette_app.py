"""A Starlette web app that runs an aiodicom receiver in its lifespan and reports its status.

The DICOM server starts before the app takes its first HTTP request and stops (finishing the
associations in progress) when the app shuts down; ``GET /status`` answers what it is doing::

    python examples/starlette_app.py        # HTTP on 127.0.0.1:8000, DICOM on 127.0.0.1:11112
    aiodicom store 127.0.0.1 11112 study/ --aec STARLETTE
    curl http://127.0.0.1:8000/status

``HTTP_PORT``, ``DICOM_PORT``, ``DICOM_AET`` and ``ARCHIVE_DIR`` (default ``archive``) change
the defaults. With FastAPI, ``FastAPI(lifespan=receiver.lifespan)`` takes the same lifespan.
Needs ``starlette`` and ``uvicorn`` (``pip install starlette uvicorn``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import aiodicom


class Receiver:
    """The DICOM side of the app: a Server that files instances under ``archive``, and counts."""

    def __init__(self, ae_title: str, port: int, archive: Path) -> None:
        self.archive = archive
        self.instances_received = 0
        self.bytes_received = 0
        self.associations_released = 0
        self.associations_aborted = 0
        self.server = aiodicom.Server(
            ae_title, "127.0.0.1", port,
            on_store=self.on_store, on_released=self.on_released, on_aborted=self.on_aborted,
        )  # fmt: skip

    async def on_store(self, instance: aiodicom.ReceivedInstance) -> int | None:
        instance.save_under(self.archive, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")
        self.instances_received += 1
        self.bytes_received += instance.size
        return None

    async def on_released(self, association: aiodicom.AssociationInfo) -> None:
        self.associations_released += 1

    async def on_aborted(self, association: aiodicom.AssociationInfo) -> None:
        self.associations_aborted += 1

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Serve DICOM for as long as the app runs."""
        async with anyio.create_task_group() as task_group:
            await task_group.start(self.server.serve)  # returns once the port is bound
            try:
                yield
            finally:
                self.server.shutdown(grace=10)  # stop accepting, let associations finish

    async def status(self, request: Request) -> JSONResponse:
        return JSONResponse({
            "ae_title": self.server.ae_title,
            "dicom_port": self.server.port,
            "active_associations": self.server.active_associations,
            "associations_released": self.associations_released,
            "associations_aborted": self.associations_aborted,
            "instances_received": self.instances_received,
            "bytes_received": self.bytes_received,
        })  # fmt: skip


def create_app(receiver: Receiver) -> Starlette:
    return Starlette(routes=[Route("/status", receiver.status)], lifespan=receiver.lifespan)


receiver = Receiver(
    os.environ.get("DICOM_AET", "STARLETTE"),
    int(os.environ.get("DICOM_PORT", "11112")),
    Path(os.environ.get("ARCHIVE_DIR", "archive")),
)
app = create_app(receiver)  # ``uvicorn examples.starlette_app:app`` works too


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("HTTP_PORT", "8000")))
