"""Shared by the ``test_export_*`` files: small synthetic data and what a peer stored.

Peers are real processes (DCMTK ``storescp``, Orthanc) started by PID through
``tests/peers.py`` and ``tests/qr/orthanc.py``.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pydicom
from pydicom.dataset import Dataset

from aiodicom.dimse.server import Server
from aiodicom.dimse.status import Status
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.synthetic import make_dataset
from peers import LOCALHOST, dataset_bytes


def small_datasets(count: int, *, patient_id: str = "EXPORT01", **options: object) -> list[Dataset]:
    """``count`` 16x16 CT slices of one series, each with file meta."""
    first = make_dataset(patient_id=patient_id, rows=16, columns=16, slices=count, **options)  # type: ignore[arg-type]
    rest = [
        make_dataset(patient_id=patient_id, rows=16, columns=16, slices=count, index=n,
                     study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                     **options)  # type: ignore[arg-type]
        for n in range(1, count)
    ]
    return [first, *rest]


def snapshot(datasets: list[Dataset]) -> list[bytes]:
    """Every attribute of every data set, file meta and private state included."""
    return [pickle.dumps(ds) for ds in datasets]


def stored_by_uid(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every DICOM file a peer wrote under ``folder``."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.endswith((".json", ".log")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            found[str(ds.SOPInstanceUID)] = path
    return found


def same_data(path: Path, dataset: Dataset) -> bool:
    """True when the file holds ``dataset``'s elements (compared decoded, pixels included)."""
    stored = pydicom.dcmread(path)
    return stored == dataset and dataset_bytes(path) != b""


class Destination:
    """An aiodicom :class:`~aiodicom.Server` on 127.0.0.1 that answers what a test says.

    ``answer(uid, times_seen)`` gives the status for each C-STORE (None: success);
    ``received`` counts every request by SOP Instance UID, ``stored`` the ones answered
    success or warning.
    """

    def __init__(self, answer: Callable[[str, int], int | None] | None = None) -> None:
        self.answer = answer or (lambda _uid, _seen: None)
        self.received: Counter[str] = Counter()
        self.stored: Counter[str] = Counter()
        self.port = 0
        #: Called instead of :meth:`on_store` when set (a test that holds an answer back).
        self.hook: Callable[[ReceivedInstance], Awaitable[int | None]] | None = None

    async def handle(self, instance: ReceivedInstance) -> int | None:
        return await (self.hook or self.on_store)(instance)

    async def on_store(self, instance: ReceivedInstance) -> int | None:
        uid = instance.sop_instance_uid
        self.received[uid] += 1
        status = self.answer(uid, self.received[uid])
        if status is None or Status(status).is_warning:
            self.stored[uid] += 1
        return status


@asynccontextmanager
async def destination(answer: Callable[[str, int], int | None] | None = None,
                      *, ae_title: str = "DEST", port: int = 0) -> AsyncIterator[Destination]:
    """A running :class:`Destination` (stopped when the block ends)."""
    dest = Destination(answer)
    server = Server(ae_title, LOCALHOST, port, on_store=dest.handle, require_called_ae=True)
    async with anyio.create_task_group() as group:
        dest.port = await group.start(server.serve)
        try:
            yield dest
        finally:
            server.shutdown(grace=0.5)
