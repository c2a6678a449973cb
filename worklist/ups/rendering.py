"""A workitem as DICOM JSON (PS3.4 Table CC.2.5-3)."""

from __future__ import annotations

from typing import Any

from worklist.models import ScheduledProcedureStep
from worklist.ups import tags
from worklist.ups.states import UPS_PUSH, ups_state


def _pn(value: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


def _v(vr: str, value: object) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


def _code(value: str, scheme: str, meaning: str) -> dict[str, Any]:
    if not value:
        return {"vr": "SQ", "Value": []}
    return {"vr": "SQ", "Value": [{tags.CODE_VALUE: _v("SH", value),
                                   tags.CODING_SCHEME_DESIGNATOR: _v("SH", scheme),
                                   tags.CODE_MEANING: _v("LO", meaning)}]}


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
        tags.STUDY_INSTANCE_UID: _v("UI", rp.study_instance_uid),
        tags.ACCESSION_NUMBER: _v("SH", order.accession_number),
        tags.REQUESTED_PROCEDURE_ID: _v("SH", rp.requested_procedure_id),
        tags.REQUESTED_PROCEDURE_DESCRIPTION: _v("LO", rp.description),
        tags.PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST: _v("LO", order.placer_order_number),
        tags.FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST: _v("LO", order.filler_order_number),
        tags.REQUESTED_PROCEDURE_CODE_SEQUENCE: _code(rp.code_value, rp.coding_scheme_designator,
                                                      rp.code_meaning),
    }
    data = {
        tags.SOP_CLASS_UID: _v("UI", UPS_PUSH),
        tags.SOP_INSTANCE_UID: _v("UI", step.ups_instance_uid),
        tags.SPECIFIC_CHARACTER_SET: _v("CS", "ISO_IR 192"),
        tags.PATIENT_NAME: _pn(patient.patient_name),
        tags.PATIENT_ID: _v("LO", patient.patient_id),
        tags.ISSUER_OF_PATIENT_ID: _v("LO", patient.issuer_of_patient_id),
        tags.PATIENT_BIRTH_DATE: _v("DA", patient.patient_birth_date),
        tags.PATIENT_SEX: _v("CS", patient.patient_sex),
        tags.REFERRING_PHYSICIAN_NAME: _pn(order.referring_physician_name),
        tags.SCHEDULED_PROCEDURE_STEP_START_DATE_TIME: _v("DT", start),
        tags.SCHEDULED_PROCEDURE_STEP_PRIORITY: _v("CS", priority),
        tags.PROCEDURE_STEP_LABEL: _v("LO", step.description),
        tags.WORKLIST_LABEL: _v("LO", step.modality),
        tags.INPUT_READINESS_STATE: _v("CS", "READY"),
        tags.PROCEDURE_STEP_STATE: _v("CS", ups_state(step)),
        tags.SCHEDULED_WORKITEM_CODE_SEQUENCE: _code(
            step.protocol_code_value, step.protocol_coding_scheme, step.protocol_code_meaning),
        tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE: {"vr": "SQ", "Value": [
            {tags.CODE_VALUE: _v("SH", s), tags.CODING_SCHEME_DESIGNATOR: _v("SH", "DCM_AET"),
             tags.CODE_MEANING: _v("LO", s)} for s in stations]},
        tags.REFERENCED_REQUEST_SEQUENCE: {"vr": "SQ", "Value": [request]},
        tags.SCHEDULED_PROCEDURE_STEP_ID: _v("SH", step.scheduled_procedure_step_id),
    }
    data.update(progress_information(step))
    if step.ups_performed:
        data[tags.UNIFIED_PROCEDURE_STEP_PERFORMED_PROCEDURE_SEQUENCE] = {
            "vr": "SQ", "Value": [step.ups_performed]}
    return dict(sorted(data.items()))


def progress_information(step: ScheduledProcedureStep) -> dict[str, Any]:
    """The Procedure Step Progress Information Sequence (0074,1002) as DICOM JSON, or {}."""
    progress = {}
    if step.progress_percent is not None:
        progress[tags.PROCEDURE_STEP_PROGRESS] = _v("DS", step.progress_percent)
    if step.progress_description:
        progress[tags.PROCEDURE_STEP_PROGRESS_DESCRIPTION] = _v("ST", step.progress_description)
    if step.cancel_requested_at:
        progress[tags.PROCEDURE_STEP_CANCELLATION_DATE_TIME] = _v(
            "DT", f"{step.cancel_requested_at:%Y%m%d%H%M%S}")
        progress[tags.REASON_FOR_CANCELLATION] = _v("LT", step.cancel_reason)
    if not progress:
        return {}
    return {tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE: {
        "vr": "SQ", "Value": [dict(sorted(progress.items()))]}}
