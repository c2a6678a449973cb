"""The Modality Worklist as a level of the shared query engine (PS3.4 K.6-1).

Each row is one scheduled procedure step; the patient, order and requested procedure keys
come from its parents, the Scheduled Procedure Step Sequence item from the step itself.
"""

from __future__ import annotations

from django.db.models import QuerySet
from pydicom.dataset import Dataset

from pacs.matching import one_of_q
from pacs.query import Attribute, Level, answer_charset, charset_of, search_level
from worklist.models import ScheduledProcedureStep

_RP = "requested_procedure__"
_ORDER = "requested_procedure__order__"
_PATIENT = "requested_procedure__order__patient__"


def _code_item(prefix: str, scheme: str = "coding_scheme_designator") -> tuple[Attribute, ...]:
    return (Attribute("CodeValue", f"{prefix}code_value"),
            Attribute("CodingSchemeDesignator", f"{prefix}{scheme}"),
            Attribute("CodeMeaning", f"{prefix}code_meaning"))


SPS_ITEM = (
    Attribute("Modality", "modality"),
    Attribute("ScheduledStationAETitle", "scheduled_station_ae_title", "multi"),
    Attribute("ScheduledStationName", "scheduled_station_name"),
    Attribute("ScheduledProcedureStepLocation", "scheduled_procedure_step_location"),
    Attribute("ScheduledProcedureStepStartDate", "start_date", "date"),
    Attribute("ScheduledProcedureStepStartTime", "start_time", "time"),
    Attribute("ScheduledPerformingPhysicianName", "performing_physician_name", "pn",
              "performing_physician_name_norm"),
    Attribute("ScheduledProcedureStepDescription", "description"),
    Attribute("ScheduledProcedureStepID", "scheduled_procedure_step_id"),
    Attribute("ScheduledProcedureStepStatus", "status"),
    Attribute("PreMedication", "pre_medication"),
    Attribute("RequestedContrastAgent", "requested_contrast_agent"),
    Attribute("CommentsOnTheScheduledProcedureStep", "comments"),
    Attribute("ScheduledProtocolCodeSequence", "", "seq", items=(
        Attribute("CodeValue", "protocol_code_value"),
        Attribute("CodingSchemeDesignator", "protocol_coding_scheme"),
        Attribute("CodeMeaning", "protocol_code_meaning"),
    )),
)

WORKLIST = Level("WORKLIST", ScheduledProcedureStep, {a.keyword: a for a in (
    Attribute("PatientName", f"{_PATIENT}patient_name", "pn", f"{_PATIENT}patient_name_norm"),
    Attribute("PatientID", f"{_PATIENT}patient_id"),
    Attribute("IssuerOfPatientID", f"{_PATIENT}issuer_of_patient_id"),
    Attribute("PatientBirthDate", f"{_PATIENT}patient_birth_date", "date"),
    Attribute("PatientSex", f"{_PATIENT}patient_sex"),
    Attribute("AccessionNumber", f"{_ORDER}accession_number"),
    Attribute("ReferringPhysicianName", f"{_ORDER}referring_physician_name", "pn"),
    Attribute("RequestingPhysician", f"{_ORDER}requesting_physician", "pn"),
    Attribute("ReasonForTheRequestedProcedure", f"{_ORDER}reason"),
    Attribute("MedicalAlerts", f"{_ORDER}medical_alerts"),
    Attribute("Allergies", f"{_ORDER}contrast_allergies"),
    Attribute("PlacerOrderNumberImagingServiceRequest", f"{_ORDER}placer_order_number"),
    Attribute("FillerOrderNumberImagingServiceRequest", f"{_ORDER}filler_order_number"),
    Attribute("RequestedProcedureID", f"{_RP}requested_procedure_id"),
    Attribute("RequestedProcedureDescription", f"{_RP}description"),
    # the order's priority as it is now (an edit reaches the worklist), not a copy
    Attribute("RequestedProcedurePriority", f"{_ORDER}priority"),
    Attribute("StudyInstanceUID", f"{_RP}study_instance_uid", "uid"),
    Attribute("RequestedProcedureCodeSequence", "", "seq", items=_code_item(_RP)),
    Attribute("ScheduledProcedureStepSequence", "", "seq", items=SPS_ITEM),
)}, "ScheduledProcedureStepID")

# Without a status key in the query, a modality sees what is still to be done (as dcm4chee).
OPEN_STATUSES = (ScheduledProcedureStep.Status.SCHEDULED, ScheduledProcedureStep.Status.ARRIVED)


def worklist_search(identifier: Dataset, *, station_ae_title: str | None = None,
                    fuzzy: bool = False) -> QuerySet:
    """Steps matching a Modality Worklist identifier; ``station_ae_title`` restricts an AE to
    its own station's items (per-AE option in the AE table)."""
    qs = search_level(WORKLIST, identifier, fuzzy=fuzzy)
    if not _asks_status(identifier):
        qs = qs.filter(status__in=OPEN_STATUSES)
    if station_ae_title:
        qs = qs.filter(one_of_q("scheduled_station_ae_title", station_ae_title,
                                wildcards=False))
    return qs


def _asks_status(identifier: Dataset) -> bool:
    items = identifier.get("ScheduledProcedureStepSequence") or []
    return bool(len(items) and str(items[0].get("ScheduledProcedureStepStatus", "") or ""))



def worklist_charset(identifier: Dataset, ae_charset: str = "") -> str:
    """The character set of worklist and UPS answers to an AE: its own setting in the AE
    table, else the request's when it is one we write (pacs.query.answer_charset)."""
    return ae_charset or answer_charset(charset_of(identifier))
