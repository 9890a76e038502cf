"""A pipeline inside a Starlette web app: the lifespan serves it, ``GET /status`` reports it.

The pipeline files every patient's CT series into ``OUTPUT_DIR`` once its association is
released (a stand-in for real processing); the web app answers ``/status`` with
:meth:`aiodicom.Pipeline.status` as JSON: patients waiting, batches processing and
exporting, counts, the last errors and the outbox::

    python examples/starlette_pipeline.py   # HTTP on 127.0.0.1:8000, DICOM on 127.0.0.1:11112
    aiodicom store 127.0.0.1 11112 study/ --aec WEBNODE
    curl http://127.0.0.1:8000/status

``HTTP_PORT``, ``DICOM_PORT``, ``DATA_DIR`` (default: memory only) and ``OUTPUT_DIR``
(default ``web-output``) change the defaults. With FastAPI, ``FastAPI(lifespan=lifespan)``
takes the same lifespan. Needs ``starlette`` and ``uvicorn``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import aiodicom


class CT(aiodicom.Input):
    required_tags = ["SOPInstanceUID"]
    required_values = {"Modality": "CT"}


class WebNode(aiodicom.Pipeline):
    """Files each patient's CT under ``output_directory/<PatientID>/<SeriesUID>/``."""

    ae_title = "WEBNODE"
    inputs = {"ct": CT}
    output_directory: str = "web-output"

    async def process(self, container: aiodicom.InputContainer) -> aiodicom.FileExport:
        layout = "{PatientID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
        return aiodicom.FileExport(self.output_directory, container.paths["ct"], layout=layout)


pipeline = WebNode(
    port=int(os.environ.get("DICOM_PORT", "11112")),
    data_directory=os.environ.get("DATA_DIR") or None,
    output_directory=os.environ.get("OUTPUT_DIR", "web-output"),
)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Serve DICOM for as long as the app runs; on shutdown, drain (or persist) what is in flight."""
    async with anyio.create_task_group() as task_group:
        await task_group.start(pipeline.serve)  # returns once the port is bound
        try:
            yield
        finally:
            pipeline.shutdown(grace=10)


async def status(request: Request) -> JSONResponse:
    return JSONResponse(pipeline.status().as_dict())


app = Starlette(routes=[Route("/status", status)], lifespan=lifespan)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("HTTP_PORT", "8000")))
