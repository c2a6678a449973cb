"""Workitems found through the shared query engine (PS3.4 CC.2.8 matching keys)."""

from __future__ import annotations

from django.db.models import Case, Q, QuerySet, Value, When
from django.db.models.functions import Concat
from pydicom.dataset import Dataset

from pacs.dicomfile import is_multi_value
from pacs.matching import date_range_q, datetime_range_q
from pacs.query import Attribute, InvalidQuery, Level, search_level
from worklist.models import ScheduledProcedureStep
from worklist.ups.states import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    PRIORITIES,
    SCHEDULED,
    UPS_STATE,
    Status,
)

_RP = "requested_procedure__"
_ORDER = "requested_procedure__order__"
_PATIENT = "requested_procedure__order__patient__"

# The workitem as a level of the shared query engine (PS3.4 CC.2.6 matching keys).
UPS_LEVEL = Level("UPS", ScheduledProcedureStep, {a.keyword: a for a in (
    Attribute("SOPInstanceUID", "ups_instance_uid", "uid"),
    Attribute("PatientName", f"{_PATIENT}patient_name", "pn", f"{_PATIENT}patient_name_norm"),
    Attribute("PatientID", f"{_PATIENT}patient_id"),
    Attribute("IssuerOfPatientID", f"{_PATIENT}issuer_of_patient_id"),
    Attribute("PatientBirthDate", f"{_PATIENT}patient_birth_date", "date"),
    Attribute("PatientSex", f"{_PATIENT}patient_sex"),
    Attribute("ProcedureStepLabel", "description"),
    Attribute("WorklistLabel", "modality"),
    # matched in search(), returned from _annotate()
    Attribute("ProcedureStepState", "ups_state"),
    Attribute("ScheduledProcedureStepStartDateTime", "ups_start"),
    Attribute("ScheduledProcedureStepPriority", "ups_priority"),
    Attribute("ScheduledStationNameCodeSequence", "", "seq", items=(
        Attribute("CodeValue", "scheduled_station_ae_title", "multi"),)),
    Attribute("ScheduledWorkitemCodeSequence", "", "seq", items=(
        Attribute("CodeValue", "protocol_code_value"),
        Attribute("CodingSchemeDesignator", "protocol_coding_scheme"),
        Attribute("CodeMeaning", "protocol_code_meaning"))),
    Attribute("ReferencedRequestSequence", "", "seq", items=(
        Attribute("AccessionNumber", f"{_ORDER}accession_number"),
        Attribute("StudyInstanceUID", f"{_RP}study_instance_uid", "uid"),
        Attribute("RequestedProcedureID", f"{_RP}requested_procedure_id"),
        Attribute("PlacerOrderNumberImagingServiceRequest", f"{_ORDER}placer_order_number"),
        Attribute("FillerOrderNumberImagingServiceRequest", f"{_ORDER}filler_order_number"))),
)}, "SOPInstanceUID", annotate=lambda qs: _annotate(qs))

def _annotate(qs: QuerySet) -> QuerySet:
    """Return keys computed from the step's columns (C-FIND answers are encoded from rows)."""
    return qs.annotate(
        ups_state=Case(*(When(status=status, then=Value(state))
                         for status, state in UPS_STATE.items()), default=Value("")),
        ups_start=Concat("start_date", "start_time"),
        ups_priority=Case(*(When(**{f"{_ORDER}priority": p}, then=Value(p))
                            for p in PRIORITIES), default=Value("MEDIUM")))


_STEP_STATUSES = {SCHEDULED: (Status.SCHEDULED, Status.ARRIVED),
                  IN_PROGRESS: (Status.IN_PROGRESS,), COMPLETED: (Status.COMPLETED,),
                  CANCELED: (Status.CANCELED, Status.DISCONTINUED)}


def search(identifier: Dataset, *, fuzzy: bool = False) -> QuerySet:
    """Workitems matching a UPS-RS/C-FIND identifier. The engine matches the mapped columns;
    Procedure Step State and the start date-time (DT, on the step's date and time columns)
    are translated here."""
    translated = {"ProcedureStepState": "", "ScheduledProcedureStepStartDateTime": "",
                  "ScheduledProcedureStepPriority": ""}
    engine_keys = Dataset()
    for element in identifier:
        if element.keyword in translated:
            value = element.value
            translated[element.keyword] = "\\".join(str(v) for v in value) \
                if is_multi_value(value) else str(value or "")
        else:
            engine_keys.add(element)
    state, start = translated["ProcedureStepState"], translated[
        "ScheduledProcedureStepStartDateTime"]
    qs = search_level(UPS_LEVEL, engine_keys, fuzzy=fuzzy)
    if state.strip():
        statuses = [s for part in state.split("\\") for s in _STEP_STATUSES.get(part.strip(), ())]
        qs = qs.filter(status__in=statuses)
    if start.strip():
        try:
            qs = qs.filter(_start_q(start.strip()))
        except ValueError as exc:
            raise InvalidQuery(f"ScheduledProcedureStepStartDateTime: {exc}") from exc
    priority = translated["ScheduledProcedureStepPriority"].strip()
    if priority:
        # orders from the portal and HL7 are ROUTINE: that is MEDIUM in UPS terms
        qs = qs.filter(**{f"{_ORDER}priority__in": [priority] + (
            ["ROUTINE"] if priority == "MEDIUM" else [])})
    return qs.select_related("requested_procedure__order__patient").order_by("pk")


def _start_q(value: str) -> Q:
    """DT range matching on the step's DA and TM columns: 'YYYYMMDD[HHMMSS]' or a range."""
    low, sep, high = value.partition("-") if "-" in value else (value, "", value)
    dates = f"{low[:8]}-{high[:8]}" if sep or low[:8] != high[:8] else low[:8]
    times = f"{low[8:14]}-{high[8:14]}" if sep else low[8:14]
    if not times.strip("-"):
        return date_range_q("start_date", dates)
    return datetime_range_q("start_date", "start_time", dates, times)
