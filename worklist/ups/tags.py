"""The keys of UPS attributes in DICOM JSON (PS3.18 F.2: the tag as eight hex digits), named
by their keyword, and how a value is read from a DICOM JSON data set."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import tag_for_keyword


def key(keyword: str) -> str:
    """The DICOM JSON key of the attribute ``keyword``."""
    return f"{tag_for_keyword(keyword):08X}"


def by_key(*keywords: str) -> dict[str, str]:
    """{DICOM JSON key: keyword} of ``keywords``, in their order."""
    return {key(keyword): keyword for keyword in keywords}


ACCESSION_NUMBER = key("AccessionNumber")
AFFECTED_SOP_INSTANCE_UID = key("AffectedSOPInstanceUID")
CODE_MEANING = key("CodeMeaning")
CODE_VALUE = key("CodeValue")
CODING_SCHEME_DESIGNATOR = key("CodingSchemeDesignator")
EVENT_TYPE_ID = key("EventTypeID")
FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST = key("FillerOrderNumberImagingServiceRequest")
INPUT_READINESS_STATE = key("InputReadinessState")
ISSUER_OF_PATIENT_ID = key("IssuerOfPatientID")
PATIENT_BIRTH_DATE = key("PatientBirthDate")
PATIENT_ID = key("PatientID")
PATIENT_NAME = key("PatientName")
PATIENT_SEX = key("PatientSex")
PERFORMED_PROCEDURE_STEP_END_DATE_TIME = key("PerformedProcedureStepEndDateTime")
PERFORMED_PROCEDURE_STEP_START_DATE_TIME = key("PerformedProcedureStepStartDateTime")
PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST = key("PlacerOrderNumberImagingServiceRequest")
PROCEDURE_STEP_CANCELLATION_DATE_TIME = key("ProcedureStepCancellationDateTime")
PROCEDURE_STEP_LABEL = key("ProcedureStepLabel")
PROCEDURE_STEP_PROGRESS = key("ProcedureStepProgress")
PROCEDURE_STEP_PROGRESS_DESCRIPTION = key("ProcedureStepProgressDescription")
PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE = key("ProcedureStepProgressInformationSequence")
PROCEDURE_STEP_STATE = key("ProcedureStepState")
REASON_FOR_CANCELLATION = key("ReasonForCancellation")
REFERENCED_REQUEST_SEQUENCE = key("ReferencedRequestSequence")
REFERRING_PHYSICIAN_NAME = key("ReferringPhysicianName")
REQUESTED_PROCEDURE_CODE_SEQUENCE = key("RequestedProcedureCodeSequence")
REQUESTED_PROCEDURE_DESCRIPTION = key("RequestedProcedureDescription")
REQUESTED_PROCEDURE_ID = key("RequestedProcedureID")
SCHEDULED_PROCEDURE_STEP_ID = key("ScheduledProcedureStepID")
SCHEDULED_PROCEDURE_STEP_PRIORITY = key("ScheduledProcedureStepPriority")
SCHEDULED_PROCEDURE_STEP_START_DATE_TIME = key("ScheduledProcedureStepStartDateTime")
SCHEDULED_STATION_NAME_CODE_SEQUENCE = key("ScheduledStationNameCodeSequence")
SCHEDULED_WORKITEM_CODE_SEQUENCE = key("ScheduledWorkitemCodeSequence")
SOP_CLASS_UID = key("SOPClassUID")
SOP_INSTANCE_UID = key("SOPInstanceUID")
SPECIFIC_CHARACTER_SET = key("SpecificCharacterSet")
STUDY_INSTANCE_UID = key("StudyInstanceUID")
TRANSACTION_UID = key("TransactionUID")
UNIFIED_PROCEDURE_STEP_PERFORMED_PROCEDURE_SEQUENCE = key(
    "UnifiedProcedureStepPerformedProcedureSequence")
WORKLIST_LABEL = key("WorklistLabel")


def first(dataset: dict[str, Any] | None, tag: str) -> str:
    try:
        value = (dataset or {})[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return ""
    return str(value).strip() if not isinstance(value, dict) else ""


def person(dataset: dict[str, Any], tag: str) -> str:
    try:
        return str(dataset[tag]["Value"][0].get("Alphabetic", ""))
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def item(dataset: dict[str, Any], tag: str) -> dict[str, Any]:
    try:
        item = dataset[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return {}
    return item if isinstance(item, dict) else {}
