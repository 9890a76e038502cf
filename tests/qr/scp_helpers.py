"""Helpers for the qrscp tests: a small synthetic archive, ``aiodicom qrscp`` as a process, DCMTK output.

The archive is written once per test module: two small patients (a CT study of two series,
an MR study) and a third "many instances" study of tiny images for cancel and limit tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from aiodicom.synthetic import write_study
from peers import LOCALHOST, Peer, aiodicom_command, free_port, run_peer

#: Instances of the "many" study (patient P3): enough that a cancel lands mid-retrieve.
MANY = 60


@dataclass
class Archive:
    """What the test archive holds, for assertions."""

    root: Path
    #: Study Instance UID by patient ID.
    studies: dict[str, str] = field(default_factory=dict)
    #: SOP Instance UIDs by patient ID.
    instances: dict[str, list[str]] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)


def write_archive(root: Path) -> Archive:
    """P1: CT, 2 series x 3; P2: MR, 1 x 2; P3: CT, 1 x MANY (8x8 pixels)."""
    archive = Archive(root)
    for patient, modality, series, images, size in (
        ("P1", "CT", 2, 3, 16), ("P2", "MR", 1, 2, 16), ("P3", "CT", 1, MANY, 8),
    ):  # fmt: skip
        paths = write_study(root / patient, patient_id=patient, series=series, images_per_series=images,
                            rows=size, columns=size, modality=modality)  # fmt: skip
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
        archive.studies[patient] = str(headers[0].StudyInstanceUID)
        archive.instances[patient] = [str(h.SOPInstanceUID) for h in headers]
        archive.series[patient] = list(dict.fromkeys(str(h.SeriesInstanceUID) for h in headers))
    return archive


@contextmanager
def qrscp(
    storage: Path, destinations: Mapping[str, int], *, aet: str = "QRSCP", args: Sequence[str] = (),
    port: int | None = None,
) -> Iterator[Peer]:
    """``aiodicom qrscp`` as a process, with move destinations ``{AE: port}`` on 127.0.0.1."""
    port = port or free_port()
    command = aiodicom_command(
        "qrscp", "--port", str(port), "--aet", aet, "--storage", str(storage), "--host", LOCALHOST,
        "--dimse-timeout", "10", "--acse-timeout", "10",
        *[f"--destination={ae}@{LOCALHOST}:{where}" for ae, where in destinations.items()], *args,
    )  # fmt: skip
    with run_peer(command, port) as peer:
        yield peer


_STATUS = re.compile(r"DIMSE Status\s*: 0x([0-9a-f]{4})", re.IGNORECASE)
_COUNT = re.compile(r"(Remaining|Completed|Failed|Warning) Suboperations\s*: (\d+|none)")


def final_status(output: str) -> int:
    """The status of the last DIMSE response a DCMTK tool printed with ``-d``."""
    found = _STATUS.findall(output)
    assert found, output[-3000:]
    return int(found[-1], 16)


def final_counts(output: str) -> dict[str, int | None]:
    """The sub-operation counts of the last response (``-d`` output of movescu/getscu)."""
    counts: dict[str, int | None] = {}
    for name, value in _COUNT.findall(output):
        counts[name.lower()] = None if value == "none" else int(value)
    return counts


def find_matches(directory: Path) -> list[pydicom.Dataset]:
    """The responses ``findscu -X -od directory`` extracted, in order."""
    return [pydicom.dcmread(path) for path in sorted(directory.glob("rsp*.dcm"))]


__all__ = ["MANY", "Archive", "final_counts", "final_status", "find_matches", "free_port", "qrscp", "write_archive"]
