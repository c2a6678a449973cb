"""The UPS state model over the step statuses (PS3.4 CC.1.1), and Change Workitem State."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from core.errors import ServiceError
from worklist import services
from worklist.models import ScheduledProcedureStep
from worklist.ups import tags

Status = ScheduledProcedureStep.Status
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"  # UPS Push SOP Class: the SOP class of a workitem

PRIORITIES = ("STAT", "HIGH", "MEDIUM", "LOW")
MISSING_ATTRIBUTE, INVALID_VALUE = 0x0120, 0x0106  # PS3.7 C.4.2 (N-CREATE/N-SET failures)
SCHEDULED, IN_PROGRESS = "SCHEDULED", "IN PROGRESS"
COMPLETED, CANCELED = "COMPLETED", "CANCELED"
UPS_STATE = {Status.SCHEDULED: SCHEDULED, Status.ARRIVED: SCHEDULED,
              Status.IN_PROGRESS: IN_PROGRESS, Status.COMPLETED: COMPLETED,
              Status.CANCELED: CANCELED, Status.DISCONTINUED: CANCELED}


class UpsError(ServiceError):
    """A refused UPS operation, with its PS3.4 CC status (0xC3xx) and the HTTP status of
    PS3.18 11 (409 for a conflict with the workitem's state)."""

    def __init__(self, status: int, message: str, http_status: int = 409) -> None:
        super().__init__(message)
        self.dimse_status = status
        self.http_status = http_status


# Final state requirement for COMPLETED (PS3.4 Table CC.2.5-3): the performed procedure sequence
# with when the work started and ended
PERFORMED_REQUIRED = tags.by_key("PerformedProcedureStepStartDateTime",
                                 "PerformedProcedureStepEndDateTime")


@dataclass(frozen=True)
class StateChange:
    step: ScheduledProcedureStep
    warning: int | None = None  # 0xB304/0xB306: already in the requested final state
    warning_text: str = ""


def ups_state(step: ScheduledProcedureStep) -> str:
    return UPS_STATE[Status(step.status)]


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
                   if not tags.first(step.ups_performed, tag)]
        if requested == COMPLETED and missing:
            raise UpsError(0xC304, "the final state requirements are not met: update the "
                           "workitem's UnifiedProcedureStepPerformedProcedureSequence with "
                           + " and ".join(missing) + " first")
        target = Status.COMPLETED if requested == COMPLETED else Status.DISCONTINUED
        return StateChange(services.set_step_status(
            step, target, source=source, actor=actor, note=f"{requested.lower()} over UPS"))
