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

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from pacs.errors import PacsError
from worklist import services
from worklist.models import ScheduledProcedureStep

Status = ScheduledProcedureStep.Status
UPS_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"  # UPS Push SOP Class

SCHEDULED, IN_PROGRESS = "SCHEDULED", "IN PROGRESS"
COMPLETED, CANCELED = "COMPLETED", "CANCELED"
_UPS_STATE = {Status.SCHEDULED: SCHEDULED, Status.ARRIVED: SCHEDULED,
              Status.IN_PROGRESS: IN_PROGRESS, Status.COMPLETED: COMPLETED,
              Status.CANCELED: CANCELED, Status.DISCONTINUED: CANCELED}


class UpsError(PacsError):
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
        "00080016": _v("UI", UPS_SOP_CLASS),
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
    return dict(sorted(data.items()))
