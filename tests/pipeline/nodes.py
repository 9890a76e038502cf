"""Pipelines used by the tests, at module level so ``aiodicom serve`` and worker processes import them.

The ``aiodicom serve`` tests configure :class:`JournalNode` through environment
variables (the subprocess has no other channel): ``PIPE_TEST_DIR`` is where it writes
``calls.log`` (one line per process start and finish) and its exports; a file named
``hold`` in it makes ``process`` wait until the file is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import numpy as np

import aiodicom
from aiodicom.grinders.numpy import numpy_grinder
from aiodicom.pipeline import InputContainer


class CT(aiodicom.Input):
    required_tags = ["SOPInstanceUID", "PixelData"]
    required_values = {"Modality": "CT"}
    grinder = numpy_grinder  # heavy: ground in a worker process

    def validate(self) -> bool:
        return len(self) >= 3


class PT(aiodicom.Input):
    required_tags = [0x00080018]
    required_values = {"Modality": "PT"}

    async def validate(self) -> bool:
        await anyio.sleep(0)
        return len(self) >= 2


def total(volume: object) -> float:
    """CPU work for :func:`aiodicom.offload` (runs in a worker process)."""
    return float(np.asarray(volume.array).sum())  # type: ignore[attr-defined]


class JournalNode(aiodicom.Pipeline):
    """CT + PT per patient; exports the CT to ``$PIPE_TEST_DIR/out/<patient hash>``."""

    inputs = {"ct": CT, "pt": PT}
    port = 0

    async def process(self, container: InputContainer) -> aiodicom.Exporter:
        base = Path(os.environ["PIPE_TEST_DIR"])
        line = f"{container.batch_id} {container.patient_id} ct={len(container.datasets['ct'])} pt={len(container.datasets['pt'])}"  # type: ignore[arg-type]
        _append(base / "calls.log", f"start {line}")
        while (base / "hold").exists():
            await anyio.sleep(0.02)
        _append(base / "calls.log", f"finish {line}")
        return aiodicom.FileExport(base / "out" / container.batch_id, container.datasets["ct"])  # type: ignore[arg-type]


def _append(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def total_and_pid(volume: object) -> tuple[float, int]:
    """CPU work for :func:`aiodicom.offload`, and the process it ran in."""
    return total(volume), os.getpid()


class DicomJournalNode(JournalNode):
    """Like :class:`JournalNode`, but C-STOREs the CT to ``127.0.0.1:$PIPE_EXPORT_PORT``."""

    async def process(self, container: InputContainer) -> aiodicom.Exporter:
        await super().process(container)
        port = int(os.environ["PIPE_EXPORT_PORT"])
        return aiodicom.DicomExport(("127.0.0.1", port, "STORESCP"), container.datasets["ct"])  # type: ignore[arg-type]
