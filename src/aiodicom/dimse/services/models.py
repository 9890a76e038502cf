"""Query/Retrieve information models (PS3.4 C.6): which SOP classes, levels and keys each has.

Pure data shared by both sides: the SCU picks the SOP class of a C-FIND/C-MOVE/C-GET
from a model name and checks the level it asks for; the SCP knows which levels it must
answer and which attribute identifies an entity at each level. No I/O here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from aiodicom._record import FrozenRecord
from aiodicom.codec import uids
from aiodicom.errors import AiodicomError


class QueryLevel(StrEnum):
    """The value of Query/Retrieve Level (0008,0052)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class UnknownModelError(AiodicomError, ValueError):
    """A model name, SOP class or level that no Query/Retrieve information model has."""


#: The attribute whose value identifies one entity at each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS: Final[dict[QueryLevel, str]] = {
    QueryLevel.PATIENT: "PatientID",
    QueryLevel.STUDY: "StudyInstanceUID",
    QueryLevel.SERIES: "SeriesInstanceUID",
    QueryLevel.IMAGE: "SOPInstanceUID",
}


#: Keys of the Patient and Study Root models (PS3.4 C.6.1.1.2-5, C.6.2.1.2-4) and the
#: identifier's own attributes: keyword -> (tag, VR). What a client sends and an index
#: keeps, readable without a DICOM dictionary (no pydicom import for a query).
QUERY_KEYS: Final[dict[str, tuple[int, str]]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "ContentDate": (0x00080023, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "ContentTime": (0x00080033, "TM"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "AccessionNumber": (0x00080050, "SH"),
    "QueryRetrieveLevel": (0x00080052, "CS"),
    "RetrieveAETitle": (0x00080054, "AE"),
    "InstanceAvailability": (0x00080056, "CS"),
    "Modality": (0x00080060, "CS"),
    "ModalitiesInStudy": (0x00080061, "CS"),
    "SOPClassesInStudy": (0x00080062, "UI"),
    "ReferringPhysicianName": (0x00080090, "PN"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "OtherPatientIDs": (0x00101000, "LO"),
    "BodyPartExamined": (0x00180015, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "StudyID": (0x00200010, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "NumberOfPatientRelatedStudies": (0x00201200, "IS"),
    "NumberOfPatientRelatedSeries": (0x00201202, "IS"),
    "NumberOfPatientRelatedInstances": (0x00201204, "IS"),
    "NumberOfStudyRelatedSeries": (0x00201206, "IS"),
    "NumberOfStudyRelatedInstances": (0x00201208, "IS"),
    "NumberOfSeriesRelatedInstances": (0x00201209, "IS"),
}

#: Tag -> keyword, for the keys of :data:`QUERY_KEYS`.
QUERY_KEYWORDS: Final[dict[int, str]] = {tag: keyword for keyword, (tag, _vr) in QUERY_KEYS.items()}

#: Failed SOP Instance UID List (0008,0058), in a C-MOVE/C-GET response's identifier.
FAILED_SOP_INSTANCE_UID_LIST: Final = 0x00080058


class InformationModel(FrozenRecord):
    """One Query/Retrieve information model: its name, SOP classes and levels (top first)."""

    name: str
    find: str
    move: str
    get: str
    levels: tuple[QueryLevel, ...]

    @property
    def sop_classes(self) -> tuple[str, str, str]:
        """The FIND, MOVE and GET SOP class UIDs, in that order."""
        return (self.find, self.move, self.get)

    def level(self, value: str | QueryLevel) -> QueryLevel:
        """``value`` as a level of this model, or :class:`UnknownModelError` if it has none such."""
        try:
            level = QueryLevel(
                str(value.value if isinstance(value, QueryLevel) else value).strip().upper()
            )
        except ValueError:
            raise UnknownModelError(f"unknown query level {value!r}") from None
        if level not in self.levels:
            allowed = ", ".join(item.value for item in self.levels)
            raise UnknownModelError(
                f"the {self.name} root model has no {level.value} level (it has {allowed})"
            )
        return level

    def unique_key(self, level: str | QueryLevel) -> str:
        """The keyword of the unique key at ``level`` (e.g. ``StudyInstanceUID`` at STUDY)."""
        return UNIQUE_KEYS[self.level(level)]

    def keys_above(self, level: str | QueryLevel) -> tuple[str, ...]:
        """Unique keys of the levels above ``level``: what a relational/hierarchical query may carry."""
        index = self.levels.index(self.level(level))
        return tuple(UNIQUE_KEYS[item] for item in self.levels[:index])


PATIENT_ROOT: Final = InformationModel(
    name="patient",
    find=uids.PATIENT_ROOT_FIND,
    move=uids.PATIENT_ROOT_MOVE,
    get=uids.PATIENT_ROOT_GET,
    levels=(QueryLevel.PATIENT, QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE),
)

STUDY_ROOT: Final = InformationModel(
    name="study",
    find=uids.STUDY_ROOT_FIND,
    move=uids.STUDY_ROOT_MOVE,
    get=uids.STUDY_ROOT_GET,
    levels=(QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE),
)

#: Every model aiodicom speaks, by name.
MODELS: Final[dict[str, InformationModel]] = {
    model.name: model for model in (PATIENT_ROOT, STUDY_ROOT)
}

#: SOP class UID -> (model, operation), operation one of "find", "move", "get".
_BY_SOP_CLASS: Final[dict[str, tuple[InformationModel, str]]] = {
    uid: (model, operation)
    for model in MODELS.values()
    for operation, uid in zip(("find", "move", "get"), model.sop_classes, strict=True)
}


def model_by_name(name: str | InformationModel) -> InformationModel:
    """The model called ``name`` ("patient" or "study", case-insensitive; "patient root" too)."""
    if isinstance(name, InformationModel):
        return name
    key = name.strip().lower().removesuffix("root").strip()
    model = MODELS.get(key)
    if model is None:
        raise UnknownModelError(f"unknown information model {name!r} (known: {', '.join(MODELS)})")
    return model


def model_by_sop_class(uid: str) -> InformationModel:
    """The model a FIND/MOVE/GET SOP class belongs to."""
    return operation_by_sop_class(uid)[0]


def operation_by_sop_class(uid: str) -> tuple[InformationModel, str]:
    """(model, "find" | "move" | "get") for a Query/Retrieve SOP class UID."""
    found = _BY_SOP_CLASS.get(uid)
    if found is None:
        raise UnknownModelError(f"{uid} is not a Patient or Study Root Query/Retrieve SOP class")
    return found


__all__ = [
    "MODELS",
    "PATIENT_ROOT",
    "FAILED_SOP_INSTANCE_UID_LIST",
    "QUERY_KEYS",
    "QUERY_KEYWORDS",
    "STUDY_ROOT",
    "UNIQUE_KEYS",
    "InformationModel",
    "QueryLevel",
    "UnknownModelError",
    "model_by_name",
    "model_by_sop_class",
    "operation_by_sop_class",
]
