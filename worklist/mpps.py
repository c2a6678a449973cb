"""Modality Performed Procedure Step (PS3.4 F.7): what the modality reports it did.

N-CREATE links the performed step to the scheduled steps it names and moves them to IN
PROGRESS; N-SET to COMPLETED or DISCONTINUED finishes them. The DICOM JSON of everything the
modality sent is kept on the row.
"""

from __future__ import annotations

from django.db import transaction
from pydicom.dataset import Dataset

from core.errors import ServiceError
from pacs.dicomfile import text
from worklist import services
from worklist.models import PerformedProcedureStep, ScheduledProcedureStep

Status = PerformedProcedureStep.Status


class DuplicateInstance(ServiceError):
    dimse_status = 0x0111  # Duplicate SOP Instance (PS3.7 C.4.2)


class NoSuchInstance(ServiceError):
    dimse_status = 0x0112  # No Such SOP Instance


class InvalidAttributeValue(ServiceError):
    dimse_status = 0x0106


class MissingAttribute(ServiceError):
    dimse_status = 0x0120


class NoLongerUpdatable(ServiceError):
    """PS3.4 F.7.2.2.4.2: once COMPLETED or DISCONTINUED an MPPS may not be changed."""

    dimse_status = 0x0110


STEP_STATUS = {Status.IN_PROGRESS: ScheduledProcedureStep.Status.IN_PROGRESS,
               Status.COMPLETED: ScheduledProcedureStep.Status.COMPLETED,
               Status.DISCONTINUED: ScheduledProcedureStep.Status.DISCONTINUED}


def create_performed_step(*, sop_instance_uid: str, ds: Dataset, calling_aet: str
                          ) -> PerformedProcedureStep:
    status = text(ds, "PerformedProcedureStepStatus", 16)
    if not status:
        raise MissingAttribute("PerformedProcedureStepStatus is required")
    if status != Status.IN_PROGRESS:
        raise InvalidAttributeValue("an MPPS is created IN PROGRESS (PS3.4 F.7.2.1)")
    with transaction.atomic():
        if PerformedProcedureStep.objects.filter(sop_instance_uid=sop_instance_uid).exists():
            raise DuplicateInstance(f"MPPS {sop_instance_uid} already exists")
        mpps = PerformedProcedureStep.objects.create(
            sop_instance_uid=sop_instance_uid, status=status, created_by_ae=calling_aet,
            performed_station_ae_title=text(ds, "PerformedStationAETitle", 16) or calling_aet,
            study_instance_uid=_study_uid(ds), attributes=ds.to_json_dict(),
            performed_series=_performed_series(ds))
        steps = _scheduled_steps(ds)
        mpps.steps.set(steps)
        for step in steps:
            if step.status in (ScheduledProcedureStep.Status.SCHEDULED,
                               ScheduledProcedureStep.Status.ARRIVED):
                services.set_step_status(step, STEP_STATUS[Status.IN_PROGRESS], source="mpps",
                                         actor=calling_aet, note=f"MPPS {sop_instance_uid}")
    return mpps


def update_performed_step(*, sop_instance_uid: str, ds: Dataset, calling_aet: str
                          ) -> PerformedProcedureStep:
    with transaction.atomic():
        mpps = (PerformedProcedureStep.objects.select_for_update()
                .filter(sop_instance_uid=sop_instance_uid).first())
        if mpps is None:
            raise NoSuchInstance(f"no MPPS {sop_instance_uid}")
        if mpps.status != Status.IN_PROGRESS:
            raise NoLongerUpdatable(f"MPPS {sop_instance_uid} is {mpps.status}: "
                                    "it may no longer be updated")
        status = text(ds, "PerformedProcedureStepStatus", 16) or mpps.status
        if status not in STEP_STATUS:
            raise InvalidAttributeValue(f"PerformedProcedureStepStatus {status!r}")
        mpps.attributes = {**mpps.attributes, **ds.to_json_dict()}
        mpps.status = status
        if "PerformedSeriesSequence" in ds:
            mpps.performed_series = _performed_series(ds)
        mpps.study_instance_uid = mpps.study_instance_uid or _study_uid(ds)
        mpps.save()
        if status != Status.IN_PROGRESS:
            for step in mpps.steps.all():
                if step.status == ScheduledProcedureStep.Status.IN_PROGRESS:
                    services.set_step_status(step, STEP_STATUS[status], source="mpps",
                                             actor=calling_aet, note=f"MPPS {sop_instance_uid}")
    return mpps


def link(mpps: PerformedProcedureStep, step: ScheduledProcedureStep, *, actor: str
         ) -> PerformedProcedureStep:
    """Link an MPPS that matched no step (IHE 'unscheduled' or a mismatching Study Instance
    UID) to the step it performed, by hand: the step then follows it, as if it had matched."""
    from core import audit

    with transaction.atomic():
        mpps = PerformedProcedureStep.objects.select_for_update().get(pk=mpps.pk)
        mpps.steps.add(step)
        note = f"MPPS {mpps.sop_instance_uid}, linked by {actor}"
        if step.status in (ScheduledProcedureStep.Status.SCHEDULED,
                           ScheduledProcedureStep.Status.ARRIVED):
            step = services.set_step_status(step, STEP_STATUS[Status.IN_PROGRESS],
                                             source="mpps", actor=actor, note=note)
        if mpps.status != Status.IN_PROGRESS and \
                step.status == ScheduledProcedureStep.Status.IN_PROGRESS:
            services.set_step_status(step, STEP_STATUS[mpps.status], source="mpps",
                                     actor=actor, note=note)
        audit.record(category="worklist", action="MPPS linked", actor=actor,
                     detail=f"MPPS {mpps.sop_instance_uid} -> step "
                            f"{step.scheduled_procedure_step_id} "
                            f"(accession {step.requested_procedure.order.accession_number})")
    return mpps


def _scheduled_steps(ds: Dataset) -> list[ScheduledProcedureStep]:
    """The steps named in the Scheduled Step Attributes Sequence (PS3.4 F.7.2.1, table F.7.2-1);
    an unscheduled acquisition names none and links to nothing."""
    found: dict[int, ScheduledProcedureStep] = {}
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        sps_id = text(item, "ScheduledProcedureStepID", 16)
        if not sps_id:
            continue
        qs = ScheduledProcedureStep.objects.filter(scheduled_procedure_step_id=sps_id)
        for keyword, field in _STEP_KEYS:
            value = text(item, keyword, 64)
            if value:
                qs = qs.filter(**{field: value})
        for step in qs:
            found[step.pk] = step
    return list(found.values())


_STEP_KEYS = (("AccessionNumber", "requested_procedure__order__accession_number"),
              ("RequestedProcedureID", "requested_procedure__requested_procedure_id"),
              ("StudyInstanceUID", "requested_procedure__study_instance_uid"))


def _study_uid(ds: Dataset) -> str:
    for item in ds.get("ScheduledStepAttributesSequence") or []:
        uid = text(item, "StudyInstanceUID", 64)
        if uid:
            return uid
    return ""


def _performed_series(ds: Dataset) -> list[dict]:
    series = []
    for item in ds.get("PerformedSeriesSequence") or []:
        series.append({
            "SeriesInstanceUID": text(item, "SeriesInstanceUID", 64),
            "SOPInstanceUIDs": [text(ref, "ReferencedSOPInstanceUID", 64)
                                for ref in item.get("ReferencedImageSequence") or []],
        })
    return series
