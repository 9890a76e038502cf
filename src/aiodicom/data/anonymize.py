"""De-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

Research exports must not carry who the patient is, but they must still fit
together: the same study de-identified file by file (or in several runs) has to
come out as one study. :class:`IdentityMapping` gives that consistency: new UIDs
are an HMAC of the old ones under the mapping's secret, and patients get stable
pseudonyms. Save the mapping (it re-identifies, so keep it as safe as the
originals) to continue a study later with the same answers.

Rules applied, beyond the attribute table:

* every private attribute, curve (50xx) and overlay data/comment is removed;
* every UID outside the DICOM root (1.2.840.10008) is replaced, in sequences too,
  which keeps references between instances intact (U in the table, and the U* of
  reference sequences); well-known class and transfer syntax UIDs are kept;
* images flagged BurnedInAnnotation YES are refused: text in the pixels is not
  something this profile can remove.

Options: ``retain_uids`` (Retain UIDs Option) and ``retain_dates`` (Retain
Longitudinal Temporal Information with Full Dates Option).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Final

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from aiodicom.codec.vr import NUMERIC_VR_NAMES, TEMPORAL_VR_NAMES
from aiodicom.errors import DeidentificationError

__all__ = ["BASIC_PROFILE", "IdentityMapping", "deidentify"]

_DICOM_ROOT = "1.2.840.10008."

# Actions of PS3.15 table E.1-1 (basic profile column), resolved for attributes
# where the table offers a choice: "Z" where a type 2 attribute must stay present,
# "D" where a type 1 attribute must keep a value, "X" otherwise. UIDs ("U") are
# handled by VR for all attributes (see module docstring).
_X = (
    "AcquisitionComments AcquisitionContextSequence AcquisitionDeviceProcessingDescription "
    "AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory "
    "AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription "
    "AdmittingTime Allergies Arbitrary AuthorObserverSequence BranchOfService CassetteID "
    "CommentsOnThePerformedProcedureStep ConfidentialityConstraintOnPatientDataDescription "
    "ContentCreatorIdentificationCodeSequence ContentSequence ContributionDescription "
    "CountryOfResidence CurrentPatientLocation CurveDate CurveTime "
    "CustodialOrganizationSequence DataSetTrailingPadding DerivationDescription DetectorID "
    "DeviceSerialNumber DigitalSignaturesSequence DischargeDiagnosisDescription "
    "DistributionAddress DistributionName EndAcquisitionDateTime EthnicGroup FrameComments "
    "GantryID GeneratorID GraphicAnnotationSequence HumanPerformerName "
    "HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments "
    "ImagePresentationComments ImagingServiceRequestComments Impressions "
    "InstanceCreationDate InstanceCreationTime InstitutionAddress InstitutionCodeSequence "
    "InstitutionName InstitutionalDepartmentName InsurancePlanIdentification "
    "IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence "
    "InterpretationAuthor InterpretationDiagnosisDescription InterpretationIDIssuer "
    "InterpretationRecorder InterpretationText InterpretationTranscriber IssuerOfAdmissionID "
    "IssuerOfPatientID IssuerOfServiceEpisodeID LastMenstrualDate MAC MedicalAlerts "
    "MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDescription "
    "ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy "
    "NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence "
    "OperatorsName OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation "
    "OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames "
    "ParticipantSequence PatientAddress PatientAge PatientBirthDateInAlternativeCalendar "
    "PatientBirthName PatientBirthTime PatientComments PatientDeathDateInAlternativeCalendar "
    "PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName "
    "PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence "
    "PatientReligiousPreference PatientSexNeutered PatientSize PatientState "
    "PatientTelephoneNumbers PatientTransportArrangements PatientWeight PerformedLocation "
    "PerformedProcedureStepDescription PerformedProcedureStepEndDate "
    "PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate "
    "PerformedProcedureStepStartTime PerformingPhysicianIdentificationSequence "
    "PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence "
    "PersonTelephoneNumbers PhysicianApprovingInterpretation "
    "PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence "
    "PhysiciansReadingStudyIdentificationSequence PlateID PreMedication PregnancyStatus "
    "ProtocolName ReasonForStudy ReasonForTheImagingServiceRequest "
    "ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence "
    "ReferencedPatientSequence ReferencedPerformedProcedureStepSequence "
    "ReferencedSOPInstanceMACSequence ReferencedStudySequence ReferringPhysicianAddress "
    "ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers "
    "RegionOfResidence RequestAttributesSequence RequestedContrastAgent "
    "RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID "
    "RequestedProcedureLocation RequestingPhysician RequestingService ResponsibleOrganization "
    "ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsIDIssuer "
    "ReviewerName ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence "
    "ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName "
    "ScheduledProcedureStepDescription ScheduledProcedureStepEndDate "
    "ScheduledProcedureStepEndTime ScheduledProcedureStepLocation "
    "ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime SeriesDescription "
    "ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SpecialNeeds StationName "
    "StudyComments StudyDescription StudyIDIssuer TextComments TextString "
    "TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle "
    "VerifyingOrganization VisitComments"
)
_Z = (
    "AccessionNumber AcquisitionDate AcquisitionDateTime AcquisitionTime ContentCreatorName "
    "ContentDate ContentTime FillerOrderNumberImagingServiceRequest PatientBirthDate "
    "PatientID PatientName PatientSex PlacerOrderNumberImagingServiceRequest "
    "ReferringPhysicianName StudyDate StudyID StudyTime "
    "VerifyingObserverIdentificationCodeSequence"
)
_D = "PersonName SeriesDate SeriesTime VerifyingObserverName VerifyingObserverSequence"

#: Keyword -> action ("X" remove, "Z" empty or pseudonym, "D" dummy value).
BASIC_PROFILE: Final[dict[str, str]] = {
    **{keyword: "X" for keyword in _X.split()},
    **{keyword: "Z" for keyword in _Z.split()},
    **{keyword: "D" for keyword in _D.split()},
}

_TEMPORAL_VRS = TEMPORAL_VR_NAMES
_DUMMY: Final[dict[str, Any]] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "PN": "ANONYMOUS",
    "SQ": [],
}


class IdentityMapping:
    """Consistent replacements for identifying values.

    UIDs map through an HMAC of the original under ``secret``, so the same
    original UID always gives the same new one (same mapping, any order, any
    number of runs) and no table is needed to stay consistent; patients get
    sequential pseudonyms ``<prefix>000001``... which are remembered.
    """

    def __init__(self, secret: bytes | None = None, prefix: str = "ANON") -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.prefix = prefix
        self.patients: dict[str, str] = {}
        self.uids: dict[str, str] = {}

    def uid(self, original: str) -> str:
        """The replacement of ``original`` (a 2.25 UID, at most 64 characters)."""
        original = original.strip("\0 ")
        new = self.uids.get(original)
        if new is None:
            digest = hmac.new(self.secret, original.encode("ascii", "replace"), hashlib.sha256)
            # 2.25. + a 128-bit integer: at most 44 characters, leading digit non-zero.
            new = "2.25." + str(int.from_bytes(digest.digest()[:16], "big") or 1)
            self.uids[original] = new
        return new

    def patient(self, original: str) -> str:
        """The pseudonym of the patient whose ID (or, lacking one, name) is ``original``."""
        alias = self.patients.get(original)
        if alias is None:
            alias = f"{self.prefix}{len(self.patients) + 1:06d}"
            self.patients[original] = alias
        return alias

    def to_json(self) -> str:
        """The mapping as JSON (it re-identifies: store it like the originals)."""
        return json.dumps(
            {
                "secret": self.secret.hex(),
                "prefix": self.prefix,
                "patients": self.patients,
                "uids": self.uids,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> IdentityMapping:
        try:
            data = json.loads(text)
            mapping = cls(bytes.fromhex(data["secret"]), str(data["prefix"]))
            mapping.patients = {str(k): str(v) for k, v in data["patients"].items()}
            mapping.uids = {str(k): str(v) for k, v in data["uids"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DeidentificationError(f"not an identity mapping: {exc}") from exc
        return mapping

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the mapping readable by its owner only."""
        target = Path(path)
        temporary = target.with_suffix(target.suffix + ".part")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(self.to_json())
        os.replace(temporary, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IdentityMapping:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _is_removed_group(tag: int) -> bool:
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x50FF and group % 2 == 0:
        return True  # curves
    return 0x6000 <= group <= 0x60FF and group % 2 == 0 and element in (0x3000, 0x4000)


class _Deidentifier:
    def __init__(self, mapping: IdentityMapping, retain_uids: bool, retain_dates: bool) -> None:
        self.mapping = mapping
        self.retain_uids = retain_uids
        self.retain_dates = retain_dates

    def map_uid(self, value: Any) -> Any:
        if self.retain_uids or value in (None, ""):
            return value
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [self.map_uid(v) for v in value]
        text = str(value)
        return text if text.startswith(_DICOM_ROOT) else self.mapping.uid(text)

    def clean(self, dataset: Dataset, alias: str) -> None:
        for tag in list(dataset.keys()):
            element = dataset[tag]
            if tag.is_private or _is_removed_group(int(tag)):
                del dataset[tag]
                continue
            keyword = keyword_for_tag(tag)
            action = BASIC_PROFILE.get(keyword)
            if self.retain_dates and element.VR in _TEMPORAL_VRS:
                action = None
            if keyword in ("PatientID", "PatientName"):
                element.value = alias
            elif action == "X":
                del dataset[tag]
            elif action == "Z":
                element.value = empty_value_for_VR(element.VR)
            elif action == "D":
                self._dummy(dataset, element)
            elif element.VR == "UI":
                element.value = self.map_uid(element.value)
            elif element.VR == "SQ":
                for item in element.value:
                    self.clean(item, alias)

    def _dummy(self, dataset: Dataset, element: DataElement) -> None:
        if element.VR == "SQ":
            element.value = Sequence([])
        elif element.VR in _DUMMY:
            element.value = _DUMMY[element.VR]
        elif element.VR in NUMERIC_VR_NAMES:
            element.value = 0
        else:
            element.value = "ANONYMIZED"


def _method(retain_uids: bool, retain_dates: bool) -> tuple[str, list[tuple[str, str]]]:
    """DeidentificationMethod text (LO, 64 characters) and its codes (PS3.16 CID 7050)."""
    text = "aiodicom PS3.15 basic profile"
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if retain_uids:
        text += ", retain UIDs"
        codes.append(("113110", "Retain UIDs Option"))
    if retain_dates:
        text += ", retain full dates"
        codes.append(("113106", "Retain Longitudinal Temporal Information Full Dates Option"))
    return text, codes


def deidentify(
    dataset: Dataset,
    mapping: IdentityMapping | None = None,
    *,
    retain_uids: bool = False,
    retain_dates: bool = False,
    in_place: bool = False,
) -> Dataset:
    """A de-identified copy of ``dataset`` (the original itself if ``in_place``).

    Pass the same ``mapping`` for every instance of a study (or a whole export) so
    that UIDs and patient pseudonyms agree between them.
    """
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        raise DeidentificationError(
            "BurnedInAnnotation is YES: identifying text may be in the pixels or document"
        )
    mapping = mapping if mapping is not None else IdentityMapping()
    result = dataset if in_place else copy.deepcopy(dataset)
    original = str(result.get("PatientID", "") or result.get("PatientName", "") or "")
    alias = mapping.patient(original)
    worker = _Deidentifier(mapping, retain_uids, retain_dates)
    worker.clean(result, alias)
    meta = getattr(result, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = UID(worker.map_uid(meta.MediaStorageSOPInstanceUID))
    text, codes = _method(retain_uids, retain_dates)
    result.PatientIdentityRemoved = "YES"
    result.DeidentificationMethod = text
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    result.DeidentificationMethodCodeSequence = items
    result.LongitudinalTemporalInformationModified = "UNMODIFIED" if retain_dates else "REMOVED"
    return result
