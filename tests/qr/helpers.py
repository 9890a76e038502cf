"""Shared pieces of the Query/Retrieve SCU tests: a small study, our receivers, a serving block."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from aiodicom.dimse import status as S
from aiodicom.dimse.store import ReceivedInstance
from aiodicom.synthetic import write_study
from aiodicom.transport.association import Timeouts
from interop.helpers import serving as serving  # one way to run a Server for a block
from peers import aiodicom_command, peer_env

#: Short waits: a peer that does not answer fails the test in seconds, not minutes.
TIMEOUTS = Timeouts(connect=5.0, acse=5.0, dimse=15.0, network_idle=30.0)


@dataclass(frozen=True)
class Study:
    """One synthetic study on disk and what a query should find in it."""

    files: tuple[Path, ...]
    patient_id: str
    study_uid: str
    series_uids: tuple[str, ...]
    sop_uids: tuple[str, ...]


def make_studies(folder: Path) -> list[Study]:
    """Two patients: one study of 2 series x 3 images, one of 1 series x 2 images (16x16 CT)."""
    studies = []
    for patient, series, images in (("QRPAT1", 2, 3), ("QRPAT2", 1, 2)):
        files = write_study(folder / patient, patient_id=patient, series=series, images_per_series=images,
                            rows=16, columns=16)  # fmt: skip
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        studies.append(Study(
            tuple(files), patient, str(headers[0].StudyInstanceUID),
            tuple(dict.fromkeys(str(h.SeriesInstanceUID) for h in headers)),
            tuple(str(h.SOPInstanceUID) for h in headers),
        ))  # fmt: skip
    return studies


@dataclass
class Receiver:
    """A store handler that keeps what arrives (and refuses the UIDs in ``refuse``)."""

    folder: Path
    refuse: Collection[str] = ()
    received: list[str] = field(default_factory=list)
    originators: list[tuple[str | None, int | None]] = field(default_factory=list)

    async def __call__(self, instance: ReceivedInstance) -> int:
        if instance.sop_instance_uid in self.refuse:
            return S.Status(S.OUT_OF_RESOURCES, error_comment="refused by the test")
        instance.save(self.folder / f"{instance.sop_instance_uid}.dcm")
        self.received.append(instance.sop_instance_uid)
        self.originators.append((instance.move_originator_ae, instance.move_originator_message_id))
        return S.SUCCESS


def saved_uids(folder: Path) -> set[str]:
    return {path.stem for path in folder.rglob("*.dcm")}




async def run_aiodicom(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``aiodicom ARGS`` as a process, awaited: the test's own servers keep serving meanwhile."""
    command = aiodicom_command(*args)
    process = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=peer_env()
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())
