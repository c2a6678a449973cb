"""Create Workitem, Update Workitem and Request Cancellation (PS3.4 CC.2.5, CC.2.6, CC.2.2)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from pydicom.uid import generate_uid

from pacs.dicomfile import UID_RE
from worklist import services, ups_events
from worklist.models import ScheduledProcedureStep, Station
from worklist.ups import tags
from worklist.ups.states import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    INVALID_VALUE,
    MISSING_ATTRIBUTE,
    PRIORITIES,
    SCHEDULED,
    Status,
    UpsError,
    get_workitem,
    ups_state,
)

UPDATABLE = tags.by_key(
    "ProcedureStepLabel", "ScheduledProcedureStepStartDateTime", "ScheduledProcedureStepPriority",
    "ProcedureStepProgressInformationSequence", "UnifiedProcedureStepPerformedProcedureSequence")


@dataclass(frozen=True)
class Update:
    step: ScheduledProcedureStep
    ignored: list[str]  # attributes of the request that this SCP does not keep


def update(uid: str, dataset: dict[str, Any], transaction_uid: str, *, actor: str) -> Update:
    """Update Workitem (PS3.4 CC.2.6 / N-SET): label, start, priority, progress. Once the
    workitem is IN PROGRESS only the Transaction UID that claimed it may update it."""
    if tags.PROCEDURE_STEP_STATE in dataset:
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
        if tags.first(dataset, tags.PROCEDURE_STEP_LABEL):
            step.description = tags.first(dataset, tags.PROCEDURE_STEP_LABEL)[:64]
            fields.append("description")
        if tags.first(dataset, tags.SCHEDULED_PROCEDURE_STEP_START_DATE_TIME):
            start = _datetime(tags.first(dataset, tags.SCHEDULED_PROCEDURE_STEP_START_DATE_TIME))
            step.start_date, step.start_time = f"{start:%Y%m%d}", f"{start:%H%M%S}"
            fields += ["start_date", "start_time"]
        progress = tags.item(dataset, tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE)
        if progress:
            percent = tags.first(progress, tags.PROCEDURE_STEP_PROGRESS)
            if percent:
                try:
                    step.progress_percent = max(0, min(100, round(float(percent))))
                except ValueError as exc:
                    raise UpsError(INVALID_VALUE, "ProcedureStepProgress is not a number",
                                   http_status=400) from exc
                fields.append("progress_percent")
            if tags.first(progress, tags.PROCEDURE_STEP_PROGRESS_DESCRIPTION):
                step.progress_description = tags.first(
                    progress, tags.PROCEDURE_STEP_PROGRESS_DESCRIPTION)[:64]
                fields.append("progress_description")
        performed = tags.item(dataset, tags.UNIFIED_PROCEDURE_STEP_PERFORMED_PROCEDURE_SEQUENCE)
        if performed:
            step.ups_performed = {**step.ups_performed, **performed}
            fields.append("ups_performed")
        if fields:
            step.save(update_fields=[*fields, "updated_at"])
        priority = tags.first(dataset, tags.SCHEDULED_PROCEDURE_STEP_PRIORITY)
        if priority:
            if priority not in PRIORITIES:
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
            ups_events.progress_report(step)
    ignored = [t for t in dataset if t not in UPDATABLE and t != tags.TRANSACTION_UID]
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
        ups_events.cancel_requested(step, reason)
        return step


# --- create ---------------------------------------------------------------------------------

REQUIRED_ON_CREATE = {
    tags.PROCEDURE_STEP_STATE: "ProcedureStepState (must be SCHEDULED)",
    **tags.by_key("ScheduledProcedureStepPriority", "ProcedureStepLabel",
                  "ScheduledProcedureStepStartDateTime", "InputReadinessState", "PatientID"),
}


def create(dataset: dict[str, Any], *, uid: str, actor: str) -> ScheduledProcedureStep:
    """Create Workitem (PS3.4 CC.2.5): a new order with one step, from a DICOM JSON dataset.
    Missing or invalid required attributes are refused naming the attribute."""
    missing = [name for tag, name in REQUIRED_ON_CREATE.items() if not tags.first(dataset, tag)]
    if missing:
        raise UpsError(MISSING_ATTRIBUTE, f"missing required attribute(s): {', '.join(missing)}",
                       http_status=400)
    if tags.first(dataset, tags.PROCEDURE_STEP_STATE) != SCHEDULED:
        raise UpsError(0xC303, "ProcedureStepState must be SCHEDULED on creation",
                       http_status=400)
    if tags.TRANSACTION_UID in dataset:
        raise UpsError(INVALID_VALUE, "TransactionUID must not be sent on creation",
                       http_status=400)
    uid = uid or tags.first(dataset, tags.SOP_INSTANCE_UID) or generate_uid()
    if not UID_RE.match(uid) or len(uid) > 64:
        raise UpsError(INVALID_VALUE, f"{uid!r} is not a valid UID", http_status=400)
    if ScheduledProcedureStep.objects.filter(ups_instance_uid=uid).exists():
        raise UpsError(0x0111, f"workitem {uid} already exists")
    start = _datetime(tags.first(dataset, tags.SCHEDULED_PROCEDURE_STEP_START_DATE_TIME))
    priority = tags.first(dataset, tags.SCHEDULED_PROCEDURE_STEP_PRIORITY)
    if priority not in PRIORITIES:
        raise UpsError(INVALID_VALUE,
                       "ScheduledProcedureStepPriority must be STAT, HIGH, MEDIUM or LOW",
                       http_status=400)
    request = tags.item(dataset, tags.REFERENCED_REQUEST_SEQUENCE)
    station = tags.first(tags.item(dataset, tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE),
                         tags.CODE_VALUE)
    known = Station.objects.filter(ae_title=station).first() if station else None
    modality = known.modality if known else (tags.first(dataset, tags.WORKLIST_LABEL) or "OT")[:16]
    code = tags.item(dataset, tags.SCHEDULED_WORKITEM_CODE_SEQUENCE)
    order = services.create_order(
        patient=services.PatientData(tags.first(dataset, tags.PATIENT_ID),
                                     tags.person(dataset, tags.PATIENT_NAME),
                                     tags.first(dataset, tags.ISSUER_OF_PATIENT_ID),
                                     tags.first(dataset, tags.PATIENT_BIRTH_DATE),
                                     tags.first(dataset, tags.PATIENT_SEX)),
        procedure=None, actor=actor, source="ups", priority=priority,
        step=services.StepData(modality=modality, start=start, station_ae_title=station,
                               station_name=known.name if known else "",
                               description=tags.first(dataset, tags.PROCEDURE_STEP_LABEL)),
        accession_number=tags.first(request, tags.ACCESSION_NUMBER),
        referring_physician_name=tags.person(dataset, tags.REFERRING_PHYSICIAN_NAME),
        placer_order_number=tags.first(request, tags.PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST),
        filler_order_number=tags.first(request, tags.FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST),
        description=tags.first(request, tags.REQUESTED_PROCEDURE_DESCRIPTION),
        identifiers=services.Identifiers(
            requested_procedure_id=tags.first(request, tags.REQUESTED_PROCEDURE_ID),
            study_instance_uid=tags.first(request, tags.STUDY_INSTANCE_UID), workitem_uid=uid),
        code=services.Code(tags.first(code, tags.CODE_VALUE),
                           tags.first(code, tags.CODING_SCHEME_DESIGNATOR) or "LOCAL",
                           tags.first(code, tags.CODE_MEANING))
        if tags.first(code, tags.CODE_VALUE) else None,
    )
    return order.procedures.get().steps.get()


def _datetime(value: str) -> dt.datetime:
    digits = value.split("+")[0].split("-")[0].split(".")[0]
    try:
        return dt.datetime.strptime(digits.ljust(14, "0")[:14], "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise UpsError(INVALID_VALUE,
                       f"ScheduledProcedureStepStartDateTime {value!r} is not a DT",
                       http_status=400) from exc
