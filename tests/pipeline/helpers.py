"""Synthetic patients, a pynetdicom sender and a bounded wait, for the pipeline tests.

pynetdicom is synchronous; each session runs in a worker thread (``anyio.to_thread``)
while the pipeline under test keeps the event loop (threads are fine in tests only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pydicom
from pydicom.dataset import Dataset

from aiodicom.codec.uids import new_uid
from aiodicom.synthetic import make_dataset

#: Upper bound for one wait in these tests; they normally take well under a second.
TEST_TIMEOUT = 30.0

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def series(patient_id: str | None, modality: str, count: int, *, study_uid: str | None = None) -> list[Dataset]:
    """``count`` small slices of one series; PT is a CT slice relabelled as PET Image Storage.

    ``patient_id=None`` removes PatientID altogether (an identifier-less instance).
    """
    study_uid = study_uid or new_uid()
    series_uid = new_uid()
    made = []
    for i in range(count):
        ds = make_dataset(patient_id=patient_id or "X", modality="MR" if modality == "MR" else "CT", rows=8,
                          columns=8, index=i, slices=count, study_uid=study_uid, series_uid=series_uid)  # fmt: skip
        if modality == "PT":
            ds.Modality = "PT"
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
        if patient_id is None:
            del ds.PatientID
        made.append(ds)
    return made


def write(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Sent:
    """What a pynetdicom sender saw: (status, error comment) per data set, and how it ended."""

    statuses: list[tuple[int, str | None]] = field(default_factory=list)
    ended: str = ""


def _pause_reactor(assoc: Any) -> None:
    """Hold pynetdicom's reactor thread before a request, so it cannot take our response.

    pynetdicom pauses its reactor for each request by clearing an event and waiting until a
    flag says "paused"; the reactor sets that flag just *before* it waits, so a reactor that
    has already passed the wait can still take the response off the queue ("Received
    unexpected C-STORE service message", then a DIMSE timeout). Seen under load in CI. We
    clear the event ourselves and wait until the flag has stayed set for several GIL switch
    intervals: then the reactor is really blocked, and ``send_c_store`` finds it so.
    """
    assoc._reactor_checkpoint.clear()
    settle = 4 * sys.getswitchinterval()
    deadline = time.monotonic() + 10
    since = time.monotonic()
    while time.monotonic() < deadline:
        if not assoc._is_paused:
            since = time.monotonic()
        elif time.monotonic() - since >= settle:
            return
        time.sleep(0.0005)


def send(
    port: int,
    datasets: Sequence[Dataset],
    *,
    end: str = "release",
    called_ae: str = "AIODICOM",
    calling_ae: str = "PYNETDICOM",
    after_each: Callable[[int, int], None] | None = None,
    before_end: Callable[[], None] | None = None,
) -> Sent:
    """One association: C-STORE each data set, then release or abort (runs in a thread).

    ``after_each(index, status)`` runs after every response (e.g. to kill the server);
    ``before_end()`` runs before the release/abort (e.g. to wait for an event).
    """
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class in (CT_IMAGE_STORAGE, PET_IMAGE_STORAGE, MR_IMAGE_STORAGE):
        ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
    sent = Sent()
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        sent.ended = "rejected"
        return sent
    try:
        for index, ds in enumerate(datasets):
            _pause_reactor(assoc)
            reply = assoc.send_c_store(ds)
            code = int(reply.Status) if "Status" in reply else -1
            sent.statuses.append((code, str(reply.ErrorComment) if "ErrorComment" in reply else None))
            if after_each is not None:
                after_each(index, code)
            if code == -1:
                sent.ended = "broken"
                return sent
        if before_end is not None:
            before_end()
    finally:
        if assoc.is_established:
            if end == "abort":
                assoc.abort()
            else:
                assoc.release()
    sent.ended = sent.ended or end
    return sent


async def send_async(port: int, datasets: Sequence[Dataset], **options: object) -> Sent:
    return await anyio.to_thread.run_sync(lambda: send(port, datasets, **options))  # type: ignore[arg-type]


async def wait_until(condition: Callable[[], bool], timeout: float = TEST_TIMEOUT, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (never a fixed sleep)."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")
