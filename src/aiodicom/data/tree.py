"""Patient / study / series trees, built from instances or discovered in a folder.

Pipelines and the CLI receive loose instances (a folder of files, a list of
data sets) but reason about series. A :class:`DicomTree` groups instances by
PatientID, StudyInstanceUID and SeriesInstanceUID, keeping each instance as
given (a :class:`~aiodicom.data.LazyDataset` when discovered from disk, so a
large folder costs only its headers).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiodicom.data.lazy import Instance, LazyDataset, header_of
from aiodicom.errors import DicomFileError, MissingTagError

__all__ = ["DicomTree", "PatientNode", "SeriesNode", "StudyNode", "discover"]


def _text(header: Any, keyword: str) -> str:
    value = header.get(keyword)
    return "" if value is None else str(value)


def _required_uid(header: Any, keyword: str, instance: Instance) -> str:
    value = _text(header, keyword)
    if not value:
        where = instance.path if isinstance(instance, LazyDataset) else "an instance"
        raise MissingTagError(f"{keyword} is missing in {where}: cannot place it in a tree")
    return value


@dataclass
class SeriesNode:
    """One series: its instances in arrival order (sort with the series grinder)."""

    uid: str
    modality: str = ""
    description: str = ""
    number: str = ""
    instances: list[Instance] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)


@dataclass
class StudyNode:
    """One study and its series, keyed by SeriesInstanceUID."""

    uid: str
    description: str = ""
    date: str = ""
    series: dict[str, SeriesNode] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(s) for s in self.series.values())


@dataclass
class PatientNode:
    """One patient (by PatientID, empty when absent) and their studies."""

    patient_id: str
    name: str = ""
    studies: dict[str, StudyNode] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(s) for s in self.studies.values())


@dataclass
class DicomTree:
    """Instances grouped patient -> study -> series.

    ``skipped`` lists files :func:`discover` found but could not read as DICOM.
    """

    patients: dict[str, PatientNode] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)

    @classmethod
    def from_instances(cls, instances: Iterable[Instance]) -> DicomTree:
        """Group instances (data sets, lazy data sets or paths) into a tree."""
        tree = cls()
        for instance in instances:
            tree.add(instance)
        return tree

    def add(self, instance: Instance) -> SeriesNode:
        """Place one instance; raises :class:`MissingTagError` without study/series UIDs."""
        if isinstance(instance, str | os.PathLike) and not isinstance(instance, LazyDataset):
            instance = LazyDataset(instance)
        header = header_of(instance)
        study_uid = _required_uid(header, "StudyInstanceUID", instance)
        series_uid = _required_uid(header, "SeriesInstanceUID", instance)
        patient_id = _text(header, "PatientID")
        patient = self.patients.get(patient_id)
        if patient is None:
            patient = self.patients[patient_id] = PatientNode(
                patient_id, name=_text(header, "PatientName")
            )
        study = patient.studies.get(study_uid)
        if study is None:
            study = patient.studies[study_uid] = StudyNode(
                study_uid,
                description=_text(header, "StudyDescription"),
                date=_text(header, "StudyDate"),
            )
        series = study.series.get(series_uid)
        if series is None:
            series = study.series[series_uid] = SeriesNode(
                series_uid,
                modality=_text(header, "Modality"),
                description=_text(header, "SeriesDescription"),
                number=_text(header, "SeriesNumber"),
            )
        series.instances.append(instance)
        return series

    def studies(self) -> Iterator[StudyNode]:
        """Every study of every patient."""
        for patient in self.patients.values():
            yield from patient.studies.values()

    def series(self) -> Iterator[SeriesNode]:
        """Every series of every study."""
        for study in self.studies():
            yield from study.series.values()

    def find_series(self, uid: str) -> SeriesNode:
        """The series with this SeriesInstanceUID (``KeyError`` if absent)."""
        for series in self.series():
            if series.uid == uid:
                return series
        raise KeyError(uid)

    def __len__(self) -> int:
        """Number of instances in the tree."""
        return sum(len(p) for p in self.patients.values())


def discover(path: str | os.PathLike[str], *, recursive: bool = True) -> DicomTree:
    """Build a tree from every DICOM file under ``path`` (or from one file).

    Files are opened as :class:`LazyDataset` (headers only). Files that are
    not DICOM Part 10 (or lack study/series UIDs) are listed in
    ``tree.skipped`` instead of failing the whole folder. Hidden files and
    folders (name starting with ``.``) are ignored.
    """
    root = Path(path)
    if not root.exists():
        raise DicomFileError(f"{root}: no such file or folder")
    if root.is_file():
        files = [root]
    else:
        pattern = "**/*" if recursive else "*"
        files = sorted(
            p
            for p in root.glob(pattern)
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    tree = DicomTree()
    for file in files:
        try:
            tree.add(LazyDataset(file))
        except (DicomFileError, MissingTagError):
            tree.skipped.append(file)
    return tree
