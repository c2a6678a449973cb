"""Scheduled procedure steps as UPS workitems (PS3.4 annex CC; IHE EBIW's MWL-to-UPS mapping).

There is no second store: a workitem is a ScheduledProcedureStep seen through the UPS state
model, and every state change goes through ``services.set_step_status`` like MPPS and the
portal, so MWL, MPPS, HL7 and the pages see it at once.

UPS states and step statuses:

| UPS            | step                             |
| -------------- | -------------------------------- |
| SCHEDULED      | SCHEDULED, ARRIVED               |
| IN PROGRESS    | IN PROGRESS                      |
| COMPLETED      | COMPLETED                        |
| CANCELED       | CANCELED, DISCONTINUED           |
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Case, Q, QuerySet, Value, When
from django.db.models.functions import Concat
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from core.errors import ServiceError
from pacs.dicomfile import UID_RE, is_multi_value
from pacs.matching import date_range_q, datetime_range_q
from pacs.query import Attribute, InvalidQuery, Level, search_level
from worklist import services
from worklist.models import ScheduledProcedureStep, Station

Status = ScheduledProcedureStep.Status
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"  # UPS Push SOP Class: the SOP class of a workitem

_PRIORITIES = ("STAT", "HIGH", "MEDIUM", "LOW")
MISSING_ATTRIBUTE, INVALID_VALUE = 0x0120, 0x0106  # PS3.7 C.4.2 (N-CREATE/N-SET failures)
SCHEDULED, IN_PROGRESS = "SCHEDULED", "IN PROGRESS"
COMPLETED, CANCELED = "COMPLETED", "CANCELED"
_UPS_STATE = {Status.SCHEDULED: SCHEDULED, Status.ARRIVED: SCHEDULED,
              Status.IN_PROGRESS: IN_PROGRESS, Status.COMPLETED: COMPLETED,
              Status.CANCELED: CANCELED, Status.DISCONTINUED: CANCELED}


class UpsError(ServiceError):
    """A refused UPS operation, with its PS3.4 CC status (0xC3xx) and the HTTP status of
    PS3.18 11 (409 for a conflict with the workitem's state)."""

    def __init__(self, status: int, message: str, http_status: int = 409) -> None:
        super().__init__(message)
        self.dimse_status = status
        self.http_status = http_status


@dataclass(frozen=True)
class StateChange:
    step: ScheduledProcedureStep
    warning: int | None = None  # 0xB304/0xB306: already in the requested final state
    warning_text: str = ""


def ups_state(step: ScheduledProcedureStep) -> str:
    return _UPS_STATE[Status(step.status)]


def get_workitem(uid: str, *, lock: bool = False) -> ScheduledProcedureStep:
    qs = ScheduledProcedureStep.objects.filter(ups_instance_uid=uid)
    if lock:
        qs = qs.select_for_update()
    step = qs.first() if lock else qs.select_related(
        "requested_procedure__order__patient").first()
    if step is None:
        raise UpsError(0xC307, f"workitem {uid} does not exist", http_status=404)
    return step


def change_state(uid: str, requested: str, transaction_uid: str, *, actor: str,
                 source: str = "ups") -> StateChange:
    """Change Workitem State (PS3.4 CC.2.1.3, Table CC.2.1-2 and CC.2.4-2 statuses). The
    step is locked for the check and the change, so two performers cannot both claim it."""
    if not transaction_uid:
        raise UpsError(0xC301, "a Transaction UID (0008,1195) is required", http_status=400)
    if requested == SCHEDULED:
        raise UpsError(0xC303, "a workitem becomes SCHEDULED only when it is created",
                       http_status=400)
    if requested not in (IN_PROGRESS, COMPLETED, CANCELED):
        raise UpsError(0xC303, f"{requested!r} is not a UPS state", http_status=400)
    with transaction.atomic():
        step = get_workitem(uid, lock=True)
        current = ups_state(step)
        if requested == current and current in (COMPLETED, CANCELED):
            code = 0xB306 if current == COMPLETED else 0xB304
            return StateChange(step, code, f"the workitem is already {current}")
        if current in (COMPLETED, CANCELED):
            raise UpsError(0xC300 if current == CANCELED else 0xC311,
                           f"the workitem is already {current} and may no longer be updated")
        if requested == IN_PROGRESS:
            if current == IN_PROGRESS:
                raise UpsError(0xC302, "the workitem is already IN PROGRESS (claimed)")
            step.transaction_uid = transaction_uid
            step.save(update_fields=["transaction_uid"])
            return StateChange(services.set_step_status(
                step, Status.IN_PROGRESS, source=source, actor=actor, note="claimed over UPS"))
        if current != IN_PROGRESS:
            raise UpsError(0xC310, f"the workitem is {current}, not yet IN PROGRESS")
        if transaction_uid != step.transaction_uid:
            raise UpsError(0xC301,
                           "the Transaction UID is not the one that claimed the workitem")
        missing = [name for tag, name in PERFORMED_REQUIRED.items()
                   if not _first(step.ups_performed, tag)]
        if requested == COMPLETED and missing:
            raise UpsError(0xC304, "the final state requirements are not met: update the "
                           "workitem's UnifiedProcedureStepPerformedProcedureSequence with "
                           + " and ".join(missing) + " first")
        target = Status.COMPLETED if requested == COMPLETED else Status.DISCONTINUED
        return StateChange(services.set_step_status(
            step, target, source=source, actor=actor, note=f"{requested.lower()} over UPS"))


def _pn(value: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


def _v(vr: str, value: object) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


def _code(value: str, scheme: str, meaning: str) -> dict[str, Any]:
    if not value:
        return {"vr": "SQ", "Value": []}
    return {"vr": "SQ", "Value": [{"00080100": _v("SH", value), "00080102": _v("SH", scheme),
                                   "00080104": _v("LO", meaning)}]}


def workitem_json(step: ScheduledProcedureStep) -> dict[str, Any]:
    """The workitem as DICOM JSON (PS3.4 Table CC.2.5-3; MWL attributes mapped as IHE EBIW
    does). The Transaction UID is never returned."""
    rp = step.requested_procedure
    order = rp.order
    patient = order.patient
    start = f"{step.start_date}{step.start_time.replace(':', '')}"
    stations = [s for s in step.scheduled_station_ae_title.split("\\") if s]
    priority = {"STAT": "STAT", "HIGH": "HIGH", "LOW": "LOW"}.get(order.priority, "MEDIUM")
    request = {
        "0020000D": _v("UI", rp.study_instance_uid),
        "00080050": _v("SH", order.accession_number),
        "00401001": _v("SH", rp.requested_procedure_id),
        "00321060": _v("LO", rp.description),
        "00402016": _v("LO", order.placer_order_number),
        "00402017": _v("LO", order.filler_order_number),
        "00321064": _code(rp.code_value, rp.coding_scheme_designator, rp.code_meaning),
    }
    data = {
        "00080016": _v("UI", UPS_PUSH),
        "00080018": _v("UI", step.ups_instance_uid),
        "00080005": _v("CS", "ISO_IR 192"),
        "00100010": _pn(patient.patient_name),
        "00100020": _v("LO", patient.patient_id),
        "00100021": _v("LO", patient.issuer_of_patient_id),
        "00100030": _v("DA", patient.patient_birth_date),
        "00100040": _v("CS", patient.patient_sex),
        "00080090": _pn(order.referring_physician_name),
        "00404005": _v("DT", start),
        "00741200": _v("CS", priority),
        "00741204": _v("LO", step.description),  # Procedure Step Label
        "00741202": _v("LO", step.modality),  # Worklist Label
        "00404041": _v("CS", "READY"),  # Input Readiness State
        "00741000": _v("CS", ups_state(step)),
        "00404018": _code(step.protocol_code_value, step.protocol_coding_scheme,
                          step.protocol_code_meaning),  # Scheduled Workitem Code Sequence
        "00404025": {"vr": "SQ", "Value": [{"00080100": _v("SH", s),
                                            "00080102": _v("SH", "DCM_AET"),
                                            "00080104": _v("LO", s)} for s in stations]},
        "0040A370": {"vr": "SQ", "Value": [request]},  # Referenced Request Sequence
        "00400009": _v("SH", step.scheduled_procedure_step_id),
    }
    data.update(progress_information(step))
    if step.ups_performed:
        data["00741216"] = {"vr": "SQ", "Value": [step.ups_performed]}
    return dict(sorted(data.items()))


def progress_information(step: ScheduledProcedureStep) -> dict[str, Any]:
    """The Procedure Step Progress Information Sequence (0074,1002) as DICOM JSON, or {}."""
    progress = {}
    if step.progress_percent is not None:
        progress["00741004"] = _v("DS", step.progress_percent)
    if step.progress_description:
        progress["00741006"] = _v("ST", step.progress_description)
    if step.cancel_requested_at:
        progress["00404052"] = _v("DT", f"{step.cancel_requested_at:%Y%m%d%H%M%S}")
        progress["00741238"] = _v("LT", step.cancel_reason)
    if not progress:
        return {}
    return {"00741002": {"vr": "SQ", "Value": [dict(sorted(progress.items()))]}}


# --- update and cancellation request ---------------------------------------------------------

UPDATABLE = {"00741204": "ProcedureStepLabel", "00404005": "ScheduledProcedureStepStartDateTime",
             "00741200": "ScheduledProcedureStepPriority",
             "00741002": "ProcedureStepProgressInformationSequence",
             "00741216": "UnifiedProcedureStepPerformedProcedureSequence"}
# Final state requirement for COMPLETED (PS3.4 Table CC.2.5-3): the performed procedure sequence
# with when the work started and ended
PERFORMED_REQUIRED = {"00404050": "PerformedProcedureStepStartDateTime",
                      "00404051": "PerformedProcedureStepEndDateTime"}


@dataclass(frozen=True)
class Update:
    step: ScheduledProcedureStep
    ignored: list[str]  # attributes of the request that this SCP does not keep


def update(uid: str, dataset: dict[str, Any], transaction_uid: str, *, actor: str) -> Update:
    """Update Workitem (PS3.4 CC.2.6 / N-SET): label, start, priority, progress. Once the
    workitem is IN PROGRESS only the Transaction UID that claimed it may update it."""
    if "00741000" in dataset:
        raise UpsError(0xC303, "the state changes only through Change Workitem State",
                       http_status=400)
    with transaction.atomic():
        step = get_workitem(uid, lock=True)
        current = ups_state(step)
        if current in (COMPLETED, CANCELED):
            raise UpsError(0xC300, f"the workitem is {current} and may no longer be updated")
        if current == IN_PROGRESS and transaction_uid != step.transaction_uid:
            raise UpsError(0xC301, "the Transaction UID of the performer is required to update "
                           "a workitem IN PROGRESS", http_status=400 if not transaction_uid
                           else 409)
        fields: list[str] = []
        if _first(dataset, "00741204"):
            step.description = _first(dataset, "00741204")[:64]
            fields.append("description")
        if _first(dataset, "00404005"):
            start = _datetime(_first(dataset, "00404005"))
            step.start_date, step.start_time = f"{start:%Y%m%d}", f"{start:%H%M%S}"
            fields += ["start_date", "start_time"]
        progress = _item(dataset, "00741002")
        if progress:
            percent = _first(progress, "00741004")
            if percent:
                try:
                    step.progress_percent = max(0, min(100, round(float(percent))))
                except ValueError as exc:
                    raise UpsError(INVALID_VALUE, "ProcedureStepProgress is not a number",
                                   http_status=400) from exc
                fields.append("progress_percent")
            if _first(progress, "00741006"):
                step.progress_description = _first(progress, "00741006")[:64]
                fields.append("progress_description")
        performed = _item(dataset, "00741216")
        if performed:
            step.ups_performed = {**step.ups_performed, **performed}
            fields.append("ups_performed")
        if fields:
            step.save(update_fields=[*fields, "updated_at"])
        priority = _first(dataset, "00741200")
        if priority:
            if priority not in _PRIORITIES:
                raise UpsError(INVALID_VALUE, "ScheduledProcedureStepPriority must be STAT, "
                               "HIGH, MEDIUM or LOW", http_status=400)
            order = step.requested_procedure.order
            order.priority = priority
            order.save(update_fields=["priority", "updated_at"])
        if fields or priority:
            services.record_event(step, source="ups", actor=actor,
                                  note="updated: " + ", ".join(
                                      UPDATABLE[t] for t in UPDATABLE if t in dataset))
        if {"progress_percent", "progress_description"} & set(fields):
            from worklist import ups_events  # it builds on this module

            ups_events.progress_report(step)
    ignored = [t for t in dataset if t not in UPDATABLE and t != "00081195"]
    return Update(step, ignored)


def request_cancel(uid: str, *, reason: str, actor: str) -> ScheduledProcedureStep:
    """Request Cancellation (PS3.4 CC.2.2): a SCHEDULED workitem is canceled at once; one IN
    PROGRESS keeps running, the request is recorded for its performer to act on."""
    with transaction.atomic():
        step = get_workitem(uid, lock=True)
        current = ups_state(step)
        if current == COMPLETED:
            raise UpsError(0xC311, "the workitem is already COMPLETED")
        if current == CANCELED:
            raise UpsError(0xB304, "the workitem is already CANCELED")
        step.cancel_requested_at = timezone.now()
        step.cancel_reason = reason[:64]
        step.save(update_fields=["cancel_requested_at", "cancel_reason", "updated_at"])
        if current == SCHEDULED:
            return services.set_step_status(step, Status.CANCELED, source="ups", actor=actor,
                                            note=f"cancellation requested: {reason}"[:255])
        services.record_event(step, source="ups", actor=actor,
                              note=f"cancellation requested: {reason}"[:255])
        from worklist import ups_events  # it builds on this module

        ups_events.cancel_requested(step, reason)
        return step


# --- search ---------------------------------------------------------------------------------

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
                         for status, state in _UPS_STATE.items()), default=Value("")),
        ups_start=Concat("start_date", "start_time"),
        ups_priority=Case(*(When(**{f"{_ORDER}priority": p}, then=Value(p))
                            for p in _PRIORITIES), default=Value("MEDIUM")))


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


# --- create ---------------------------------------------------------------------------------

REQUIRED_ON_CREATE = {
    "00741000": "ProcedureStepState (must be SCHEDULED)",
    "00741200": "ScheduledProcedureStepPriority",
    "00741204": "ProcedureStepLabel",
    "00404005": "ScheduledProcedureStepStartDateTime",
    "00404041": "InputReadinessState",
    "00100020": "PatientID",
}


def create(dataset: dict[str, Any], *, uid: str, actor: str) -> ScheduledProcedureStep:
    """Create Workitem (PS3.4 CC.2.5): a new order with one step, from a DICOM JSON dataset.
    Missing or invalid required attributes are refused naming the attribute."""
    missing = [name for tag, name in REQUIRED_ON_CREATE.items() if not _first(dataset, tag)]
    if missing:
        raise UpsError(MISSING_ATTRIBUTE, f"missing required attribute(s): {', '.join(missing)}",
                       http_status=400)
    if _first(dataset, "00741000") != SCHEDULED:
        raise UpsError(0xC303, "ProcedureStepState must be SCHEDULED on creation",
                       http_status=400)
    if "00081195" in dataset:
        raise UpsError(INVALID_VALUE, "TransactionUID must not be sent on creation",
                       http_status=400)
    uid = uid or _first(dataset, "00080018") or generate_uid()
    if not UID_RE.match(uid) or len(uid) > 64:
        raise UpsError(INVALID_VALUE, f"{uid!r} is not a valid UID", http_status=400)
    if ScheduledProcedureStep.objects.filter(ups_instance_uid=uid).exists():
        raise UpsError(0x0111, f"workitem {uid} already exists")
    start = _datetime(_first(dataset, "00404005"))
    priority = _first(dataset, "00741200")
    if priority not in _PRIORITIES:
        raise UpsError(INVALID_VALUE,
                       "ScheduledProcedureStepPriority must be STAT, HIGH, MEDIUM or LOW",
                       http_status=400)
    request = _item(dataset, "0040A370")
    station = _first(_item(dataset, "00404025"), "00080100")
    known = Station.objects.filter(ae_title=station).first() if station else None
    modality = known.modality if known else (_first(dataset, "00741202") or "OT")[:16]
    code = _item(dataset, "00404018")
    order = services.create_order(
        patient=services.PatientData(_first(dataset, "00100020"), _person(dataset, "00100010"),
                                     _first(dataset, "00100021"), _first(dataset, "00100030"),
                                     _first(dataset, "00100040")),
        procedure=None, actor=actor, source="ups", priority=priority,
        step=services.StepData(modality=modality, start=start, station_ae_title=station,
                               station_name=known.name if known else "",
                               description=_first(dataset, "00741204")),
        accession_number=_first(request, "00080050"),
        referring_physician_name=_person(dataset, "00080090"),
        placer_order_number=_first(request, "00402016"),
        filler_order_number=_first(request, "00402017"),
        description=_first(request, "00321060"),
        identifiers=services.Identifiers(
            requested_procedure_id=_first(request, "00401001"),
            study_instance_uid=_first(request, "0020000D"), workitem_uid=uid),
        code=services.Code(_first(code, "00080100"), _first(code, "00080102") or "LOCAL",
                           _first(code, "00080104")) if _first(code, "00080100") else None,
    )
    return order.procedures.get().steps.get()


def _first(dataset: dict[str, Any] | None, tag: str) -> str:
    try:
        value = (dataset or {})[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return ""
    return str(value).strip() if not isinstance(value, dict) else ""


def _person(dataset: dict[str, Any], tag: str) -> str:
    try:
        return str(dataset[tag]["Value"][0].get("Alphabetic", ""))
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""


def _item(dataset: dict[str, Any], tag: str) -> dict[str, Any]:
    try:
        item = dataset[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return {}
    return item if isinstance(item, dict) else {}


def _datetime(value: str) -> dt.datetime:
    digits = value.split("+")[0].split("-")[0].split(".")[0]
    try:
        return dt.datetime.strptime(digits.ljust(14, "0")[:14], "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise UpsError(INVALID_VALUE,
                       f"ScheduledProcedureStepStartDateTime {value!r} is not a DT",
                       http_status=400) from exc
