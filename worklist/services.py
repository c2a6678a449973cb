"""Orders and their steps: the only code that changes the work-item store.

Every face (scheduler pages, worklist import, HL7, MPPS, later UPS) calls these functions, so a
status change made anywhere is recorded once, with its history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from core import audit, statements
from core.errors import ServiceError
from pacs import identity
from pacs.dicomfile import is_multi_value, text
from pacs.models import Patient, PatientChange, Study
from pacs.services import modify, patients
from worklist.models import (
    Order,
    PatientMerge,
    Procedure,
    RequestedProcedure,
    ScheduledProcedureStep,
    Station,
    StepEvent,
)
from worklist.signals import step_assigned, step_created, step_status_changed

Status = ScheduledProcedureStep.Status


class WorklistError(ServiceError):
    """A change the work-item rules do not allow (e.g. a final step changed again)."""

    http_status = 409


@dataclass(frozen=True)
class PatientData:
    patient_id: str
    patient_name: str = ""
    issuer_of_patient_id: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""


def find_or_create_patient(data: PatientData, *, actor: str = "", source: str = "") -> Patient:
    """The one patient registry (pacs.Patient): known demographics are updated if given, and
    each change is in the audit trail and the patient's history with who (``actor``) and
    what (``source``) made it; the stored headers of the patient's images follow (a job)."""
    if not data.patient_id:
        raise WorklistError("a patient ID is required")
    fields = {**identity.name_columns(data.patient_name),
              "patient_birth_date": data.birth_date, "patient_sex": data.sex}
    patient, created = patients.find_or_create(
        identity.key(data.patient_id, data.issuer_of_patient_id), fields)
    if created:
        patients.record_change(patient, action="registered", source=source, actor=actor,
                               detail=f"from {source}" if source else "")
        return patient
    changed = {k: v for k, v in fields.items() if v and getattr(patient, k) != v}
    if changed:
        _update_patient(patient, changed, actor=actor, source=source)
    return patient


def _update_patient(patient: Patient, changed: dict[str, str], *, actor: str,
                    source: str) -> None:
    names = sorted(k for k in changed if k not in ("patient_name_norm", "patient_name_words"))
    before = {k: getattr(patient, k) for k in names}
    statements.update(patient, **changed)
    audit.record(category="patient", action="patient updated", actor=actor,
                 source=source[:128], detail=f"patient {_label(patient)}: "
                 + ", ".join(n.removeprefix("patient_") for n in names) + " changed")
    patients.record_change(patient, action="demographics changed", source=source, actor=actor,
                           detail="; ".join(f"{n.removeprefix('patient_').replace('_', ' ')}: "
                                            f"{before[n]!r} -> {changed[n]!r}" for n in names))
    modify.rewrite_patient_headers(patient, actor=actor, why="a demographics change")


def edit_patient(patient: Patient, *, name: str, birth_date: str, sex: str, actor: str
                 ) -> bool:
    """The patient page's edit: the demographics as given (empty clears), audited, in the
    history, and the stored headers rewritten by a job; whether anything changed."""
    fields = {**identity.name_columns(name.strip()),
              "patient_birth_date": birth_date, "patient_sex": sex}
    changed = {k: v for k, v in fields.items() if getattr(patient, k) != v}
    if not changed:
        return False
    with transaction.atomic():
        _update_patient(patient, changed, actor=actor, source="page")
    return True


def _label(patient: Patient) -> str:
    return identity.PatientKey.of(patient).label()


def next_accession_number(day: dt.date | None = None) -> str:
    """PORTAL_ACCESSION_PREFIX + YYMMDD + a 4-digit counter per day (16 characters at most,
    the SH limit): e.g. A2611220001. Uniqueness is enforced by the database."""
    day = day or timezone.localdate()
    stem = f"{settings.ACCESSION_PREFIX}{day:%y%m%d}"
    last = (Order.objects.filter(accession_number__startswith=stem)
            .order_by("-accession_number").values_list("accession_number", flat=True).first())
    counter = int(last[len(stem):]) + 1 if last and last[len(stem):].isdigit() else 1
    return f"{stem}{counter:04d}"


@dataclass(frozen=True)
class Identifiers:
    """Identifiers a sender assigned (HL7 IPC/OBR, worklist files); generated when empty."""

    requested_procedure_id: str = ""
    scheduled_procedure_step_id: str = ""
    study_instance_uid: str = ""
    workitem_uid: str = ""  # the step's UPS SOP Instance UID (UPS-RS create)


@dataclass(frozen=True)
class Code:
    value: str
    scheme: str = "LOCAL"
    meaning: str = ""


@dataclass(frozen=True)
class StepData:
    modality: str
    start: dt.datetime
    station_ae_title: str = ""
    station_name: str = ""
    location: str = ""
    performing_physician_name: str = ""
    description: str = ""
    duration_minutes: int | None = None  # None: the procedure's, else PORTAL_STEP_MINUTES


def create_order(*, patient: PatientData, procedure: Procedure | None, step: StepData,
                 actor: str, source: str = "portal", accession_number: str = "",
                 referring_physician_name: str = "", reason: str = "",
                 priority: str = Order.Priority.ROUTINE, placer_order_number: str = "",
                 filler_order_number: str = "", description: str = "",
                 identifiers: Identifiers = Identifiers(), code: Code | None = None,
                 **more_order_fields: str) -> Order:
    """An order with one requested procedure and one scheduled step, SCHEDULED. A given
    accession number that exists is an error; a generated one that another writer took
    meanwhile is replaced by the next (the order row goes in with ON CONFLICT DO NOTHING, so
    no savepoint is needed)."""
    with transaction.atomic(savepoint=False):  # inside a caller's transaction: part of it
        for _attempt in range(5):
            order = _create_order(
                patient=patient, procedure=procedure, step=step, actor=actor,
                source=source, accession_number=accession_number or next_accession_number(),
                referring_physician_name=referring_physician_name, reason=reason,
                priority=priority, placer_order_number=placer_order_number,
                filler_order_number=filler_order_number, description=description,
                identifiers=identifiers, code=code, **more_order_fields)
            if order is not None:
                return order
            if accession_number:
                raise WorklistError(f"accession number {accession_number!r} already exists")
    raise WorklistError("no free accession number after 5 attempts")


def _create_order(*, patient: PatientData, procedure: Procedure | None, step: StepData,
                  actor: str, source: str, accession_number: str,
                  identifiers: Identifiers = Identifiers(), code: Code | None = None,
                  **order_fields) -> Order | None:
    """None when the accession number exists (nothing written but the patient)."""
    if code is None and procedure is not None:
        code = Code(procedure.code_value, procedure.coding_scheme_designator,
                    procedure.code_meaning)
    description = order_fields.pop("description", "") or (code.meaning if code else "")
    order = statements.insert(Order(patient=find_or_create_patient(patient, actor=actor,
                                                             source=f"{source} order"),
                              accession_number=accession_number, source=source,
                              created_by=actor, **order_fields), if_new=True)
    if order is None:  # the accession number (the order's one unique key) exists
        return None
    rp = statements.insert(RequestedProcedure(
        order=order, requested_procedure_id=identifiers.requested_procedure_id[:16]
        or f"RP{order.pk}", description=description[:64],
        procedure=procedure, study_instance_uid=identifiers.study_instance_uid[:64]
        or generate_uid(),
        code_value=code.value[:16] if code else "",
        coding_scheme_designator=code.scheme[:16] if code else "",
        code_meaning=code.meaning[:64] if code else ""))
    sps = statements.insert(ScheduledProcedureStep(
        requested_procedure=rp, scheduled_procedure_step_id=(
            identifiers.scheduled_procedure_step_id[:16] or f"SPS{order.pk}"),
        ups_instance_uid=identifiers.workitem_uid or generate_uid(),  # (no save() here)
        **_step_fields(step, code, procedure)))
    _event(sps, Status.SCHEDULED, "", source=source, actor=actor, note="created")
    step_created.send(sender=ScheduledProcedureStep, step=sps)
    audit.record(category="worklist", action="order created", actor=actor,
                 detail=f"accession {order.accession_number}, source {source}")
    return order


def _step_fields(step: StepData, code: Code | None, procedure: Procedure | None = None
                 ) -> dict:
    name = step.performing_physician_name
    return {
        "duration_minutes": step.duration_minutes or (
            procedure.duration_minutes if procedure else settings.STEP_MINUTES),
        "modality": step.modality, "scheduled_station_ae_title": step.station_ae_title,
        "scheduled_station_name": step.station_name,
        "scheduled_procedure_step_location": step.location,
        "start_date": f"{step.start:%Y%m%d}", "start_time": f"{step.start:%H%M%S}",
        "performing_physician_name": name, "performing_physician_name_norm": name.upper(),
        "description": (step.description or (code.meaning if code else ""))[:64],
        "protocol_code_value": code.value[:16] if code else "",
        "protocol_coding_scheme": code.scheme[:16] if code else "",
        "protocol_code_meaning": code.meaning[:64] if code else "",
    }


def station_step(station: Station, start: dt.datetime, **extra: str) -> StepData:
    return StepData(modality=station.modality, start=start, station_ae_title=station.ae_title,
                    station_name=station.name, location=station.location, **extra)


# Allowed transitions; final states never change again.
TRANSITIONS = {
    Status.SCHEDULED: {Status.ARRIVED, Status.IN_PROGRESS, Status.CANCELED,
                       Status.DISCONTINUED},
    Status.ARRIVED: {Status.SCHEDULED, Status.IN_PROGRESS, Status.CANCELED,
                     Status.DISCONTINUED},
    Status.IN_PROGRESS: {Status.COMPLETED, Status.DISCONTINUED},
}


def set_step_status(step: ScheduledProcedureStep, status: str, *, source: str, actor: str,
                    note: str = "") -> ScheduledProcedureStep:
    with transaction.atomic():
        step = ScheduledProcedureStep.objects.select_for_update().get(pk=step.pk)
        if step.status == status:
            return step
        if status not in TRANSITIONS.get(step.status, set()):
            raise WorklistError(f"step {step.scheduled_procedure_step_id} is {step.status}; "
                                f"it cannot become {status}")
        previous = step.status
        step.status = status
        step.save(update_fields=["status", "updated_at"])
        _event(step, status, previous, source=source, actor=actor, note=note)
        # in the change's transaction: the listeners' outbox rows (HL7 status messages, UPS
        # event reports) commit with it or not at all; their couriers are woken on commit
        step_status_changed.send(sender=ScheduledProcedureStep, step=step, previous=previous,
                                 source=source, note=note)
    return step


def reschedule(step: ScheduledProcedureStep, *, start: dt.datetime, station: Station | None,
               actor: str, duration_minutes: int | None = None) -> ScheduledProcedureStep:
    if step.is_final or step.status == Status.IN_PROGRESS:
        raise WorklistError(f"step {step.scheduled_procedure_step_id} is {step.status}")
    step.start_date, step.start_time = f"{start:%Y%m%d}", f"{start:%H%M%S}"
    if duration_minutes:
        step.duration_minutes = duration_minutes
    moved = station is not None and station.ae_title != step.scheduled_station_ae_title
    if station is not None:
        step.scheduled_station_ae_title, step.scheduled_station_name = (station.ae_title,
                                                                       station.name)
        step.modality, step.scheduled_procedure_step_location = station.modality, station.location
    with transaction.atomic():
        step.save()
        _event(step, step.status, step.status, source="portal", actor=actor,
               note=f"rescheduled to {start:%Y-%m-%d %H:%M}"
                    + (f" on {station.ae_title}" if station else ""))
        if moved:  # the outbox rows with the change, as for a status change
            step_assigned.send(sender=ScheduledProcedureStep, step=step)
    return step


# Steps that no longer take their station's time
FREE = (Status.CANCELED, Status.DISCONTINUED)


def booking_conflicts(station_ae_title: str, start: dt.datetime, minutes: int, *,
                      exclude: ScheduledProcedureStep | None = None
                      ) -> list[ScheduledProcedureStep]:
    """The steps of the station whose time overlaps [start, start + minutes): a double
    booking the scheduler is told of before saving (HL7 orders are taken as the RIS sends
    them). Canceled and discontinued steps leave their time free."""
    if not station_ae_title:
        return []
    end = start + dt.timedelta(minutes=minutes)
    found = []
    same_day = (ScheduledProcedureStep.objects.filter(
        scheduled_station_ae_title=station_ae_title, start_date=f"{start:%Y%m%d}")
        .exclude(status__in=FREE).select_related("requested_procedure__order"))
    for step in same_day:
        if exclude is not None and step.pk == exclude.pk:
            continue
        begins = step.starts_at()
        if begins is not None and begins < end and start < begins + dt.timedelta(
                minutes=step.duration_minutes):
            found.append(step)
    return found


def update_order(order: Order, *, changes: dict, actor: str) -> Order:
    """Change an order's own fields (not its steps); recorded in the audit trail."""
    order = Order.objects.get(pk=order.pk)  # compare with what is stored, not a bound form's copy
    changed = [k for k, v in changes.items() if getattr(order, k) != v]
    for key in changed:
        setattr(order, key, changes[key])
    if changed:
        order.save()
        audit.record(category="worklist", action="order edited", actor=actor,
                     detail=f"accession {order.accession_number}: {', '.join(changed)}")
    return order


# the steps an order's cancellation cancels: those not started
CANCELLABLE = (Status.SCHEDULED, Status.ARRIVED)


def cancel_order(order: Order, *, actor: str, source: str = "portal", note: str = "") -> int:
    """Cancel every step of the order that has not started; returns how many. ``note``: the
    reason, kept in each step's history and sent in the HL7 status message."""
    count = 0
    for step in ScheduledProcedureStep.objects.filter(requested_procedure__order=order):
        if step.status in CANCELLABLE:
            set_step_status(step, Status.CANCELED, source=source, actor=actor, note=note)
            count += 1
    audit.record(category="worklist", action="order canceled", actor=actor,
                 detail=f"accession {order.accession_number}: {count} step(s)"
                 + (f"; reason: {note}" if note else ""))
    return count


def link_study(order: Order, study_uid: str, *, actor: str) -> None:
    """Images that matched no order (their Study Instance UID and accession number are none
    of the order's) become the order's: its requested procedure takes their Study Instance
    UID, which links them on the order page, in UPS and in the status messages. Only an order
    with no images yet: one whose study arrived is linked already."""
    from pacs.models import Study

    with transaction.atomic():
        rp = order.procedures.select_for_update().order_by("pk").first()
        if rp is None:
            raise WorklistError(f"order {order.accession_number} has no requested procedure")
        if Study.objects.filter(study_instance_uid=rp.study_instance_uid).exists():
            raise WorklistError(f"order {order.accession_number} has its images already")
        study = Study.objects.filter(study_instance_uid=study_uid).select_related(
            "patient").first()
        if study is None:
            raise WorklistError(f"study {study_uid} is not in the archive")
        if study.patient_id != order.patient_id:
            raise WorklistError("the study and the order are of different patients: merge "
                                "the patients first")
        old = rp.study_instance_uid
        rp.study_instance_uid = study_uid
        rp.save(update_fields=["study_instance_uid"])
        audit.record(category="worklist", action="study linked", actor=actor,
                     detail=f"study {study_uid} -> order {order.accession_number} "
                            f"(requested procedure {rp.requested_procedure_id}, was {old})")


def record_event(step: ScheduledProcedureStep, *, source: str, actor: str, note: str) -> None:
    """A step's history entry for a change that is not a status change (UPS update, a
    cancellation request)."""
    _event(step, step.status, step.status, source=source, actor=actor, note=note)


def _event(step: ScheduledProcedureStep, status: str, previous: str, *, source: str,
           actor: str, note: str = "") -> None:
    statements.insert_row(StepEvent, step_id=step.pk, status=status, previous_status=previous,
                    source=source, actor=actor[:150], note=note[:255])


def import_worklist_item(ds: Dataset, *, actor: str = "import") -> Order:
    """An order from a worklist item dataset (e.g. DCMTK's wlistdb *.wl files)."""
    sps = (ds.get("ScheduledProcedureStepSequence") or [Dataset()])[0]
    aets = sps.get("ScheduledStationAETitle", "")
    start = dt.datetime.strptime((text(sps, "ScheduledProcedureStepStartDate", 8) or "19700101")
                                 + (text(sps, "ScheduledProcedureStepStartTime", 16)[:6]
                                    .ljust(6, "0")), "%Y%m%d%H%M%S")
    with transaction.atomic():
        order = _create_order(
            patient=PatientData(text(ds, "PatientID", 64), text(ds, "PatientName", 324),
                                text(ds, "IssuerOfPatientID", 64),
                                text(ds, "PatientBirthDate", 8), text(ds, "PatientSex", 16)),
            procedure=None,
            step=StepData(modality=text(sps, "Modality", 16), start=start,
                          station_ae_title="\\".join(aets) if is_multi_value(aets)
                          else str(aets or ""),
                          station_name=text(sps, "ScheduledStationName", 16),
                          location=text(sps, "ScheduledProcedureStepLocation", 16),
                          performing_physician_name=text(sps, "ScheduledPerformingPhysicianName",
                                                         324),
                          description=text(sps, "ScheduledProcedureStepDescription", 64)),
            actor=actor, source="import",
            accession_number=text(ds, "AccessionNumber", 16) or next_accession_number(),
            referring_physician_name=text(ds, "ReferringPhysicianName", 324),
            requesting_physician=text(ds, "RequestingPhysician", 324),
            reason=text(ds, "ReasonForTheRequestedProcedure", 64),
            priority=text(ds, "RequestedProcedurePriority", 8) or Order.Priority.ROUTINE,
            medical_alerts=text(ds, "MedicalAlerts", 64),
            contrast_allergies=text(ds, "Allergies", 64),
            description=text(ds, "RequestedProcedureDescription", 64),
            identifiers=Identifiers(text(ds, "RequestedProcedureID", 16),
                                    text(sps, "ScheduledProcedureStepID", 16),
                                    text(ds, "StudyInstanceUID", 64)))
        if order is None:
            raise WorklistError(f"accession number {text(ds, 'AccessionNumber', 16)!r} "
                                "already exists")
        rp = order.procedures.get()
        step = rp.steps.get()
        step.start_time = text(sps, "ScheduledProcedureStepStartTime", 16)
        step.pre_medication = text(sps, "PreMedication", 64)
        step.requested_contrast_agent = text(sps, "RequestedContrastAgent", 64)
        step.comments = text(sps, "CommentsOnTheScheduledProcedureStep", 10240)
        step.save()
    return order


def merge_patients(*, prior_id: str, survivor: PatientData, actor: str, source: str,
                   prior_issuer: str = "") -> Patient:
    """ADT^A40 (and the patient page's merge): the prior patient's orders and studies follow
    the surviving patient, and the prior record goes away, kept in a PatientMerge so that the
    merge can be undone. A prior ID we never saw is a no-op (nothing to move)."""
    with transaction.atomic():
        target = find_or_create_patient(survivor, actor=actor, source=source)
        prior = Patient.objects.filter(
            patient_id=prior_id, issuer_of_patient_id=identity.issuer_or_local(prior_issuer)
        ).first()
        if prior is None or prior.pk == target.pk:
            return target
        merge_into(prior, target, actor=actor, source=source)
    return target


def merge_into(prior: Patient, target: Patient, *, actor: str, source: str) -> PatientMerge:
    """Move ``prior``'s orders, studies and history to ``target`` and remove ``prior``."""
    if prior.pk == target.pk:
        raise WorklistError("a patient is not merged into itself")
    with transaction.atomic():
        order_ids = list(Order.objects.filter(patient=prior).values_list("pk", flat=True))
        study_ids = list(Study.objects.filter(patient=prior).values_list("pk", flat=True))
        change_ids = list(PatientChange.objects.filter(patient=prior).values_list(
            "pk", flat=True))
        merge = PatientMerge.objects.create(
            survivor=target, prior_patient_id=prior.patient_id,
            prior_issuer=prior.issuer_of_patient_id, actor=actor[:150], source=source[:128],
            prior_demographics={"patient_name": prior.patient_name,
                                "patient_birth_date": prior.patient_birth_date,
                                "patient_sex": prior.patient_sex,
                                "created_at": prior.created_at.isoformat()},
            study_ids=study_ids, order_ids=order_ids, change_ids=change_ids)
        Order.objects.filter(pk__in=order_ids).update(patient=target)
        Study.objects.filter(pk__in=study_ids).update(patient=target)
        PatientChange.objects.filter(pk__in=change_ids).update(patient=target)
        # merges into the prior patient stay undoable: they now name the survivor
        PatientMerge.objects.filter(survivor=prior).update(survivor=target)
        prior.delete()
        audit.record(category="patient", action="patients merged", actor=actor,
                     source=source[:128],
                     detail=f"patient {_label(prior)} merged into {_label(target)}: "
                            f"{len(order_ids)} order(s), {len(study_ids)} study(ies) moved")
        patients.record_change(
            target, action="merged", source=PatientChange.Source.MERGE, actor=actor,
            detail=f"patient {_label(prior)} ({prior.patient_name}) merged in from {source}: "
                   f"{len(order_ids)} order(s), {len(study_ids)} study(ies)")
        modify.rewrite_patient_headers(target, actor=actor, why="a merge")
    return merge


def unmerge(merge: PatientMerge, *, actor: str, source: str = "page") -> Patient:
    """Undo a merge: the prior patient comes back with its identity and demographics as they
    were, and the studies, orders and history lines that moved (those still with the
    survivor) go back to it; the stored headers of both follow."""
    with transaction.atomic():
        merge = PatientMerge.objects.select_for_update().get(pk=merge.pk)
        if merge.undone_at is not None:
            raise WorklistError("this merge is undone already")
        if Patient.objects.filter(patient_id=merge.prior_patient_id,
                                  issuer_of_patient_id=merge.prior_issuer).exists():
            raise WorklistError(f"patient ID {merge.prior_patient_id!r} is in use again: "
                                "the merge cannot be undone")
        kept = merge.prior_demographics
        prior = Patient.objects.create(
            patient_id=merge.prior_patient_id, issuer_of_patient_id=merge.prior_issuer,
            **identity.name_columns(kept.get("patient_name", "")),
            patient_birth_date=kept.get("patient_birth_date", ""),
            patient_sex=kept.get("patient_sex", ""))
        survivor = merge.survivor
        orders = Order.objects.filter(pk__in=merge.order_ids, patient=survivor).update(
            patient=prior)
        studies = Study.objects.filter(pk__in=merge.study_ids, patient=survivor).update(
            patient=prior)
        PatientChange.objects.filter(pk__in=merge.change_ids, patient=survivor).update(
            patient=prior)
        merge.undone_at = timezone.now()
        merge.undone_by = actor[:150]
        merge.save(update_fields=["undone_at", "undone_by"])
        detail = (f"patient {_label(prior)} split from {_label(survivor)} again: "
                  f"{orders} order(s), {studies} study(ies) moved back")
        audit.record(category="patient", action="patients unmerged", actor=actor,
                     source=source[:128], detail=detail)
        for patient in (survivor, prior):
            patients.record_change(patient, action="unmerged",
                                   source=PatientChange.Source.MERGE, actor=actor,
                                   detail=detail)
            modify.rewrite_patient_headers(patient, actor=actor, why="an unmerge")
    return prior


def change_patient_id(*, old_id: str, new_id: str, actor: str, source: str,
                      issuer: str = "") -> Patient:
    """ADT^A47: the patient keeps its orders and studies under a new identifier."""
    issuer = identity.issuer_or_local(issuer)
    with transaction.atomic():
        patient = Patient.objects.filter(patient_id=old_id, issuer_of_patient_id=issuer).first()
        if patient is None:
            raise WorklistError(f"no patient with ID {old_id!r}")
        if Patient.objects.filter(patient_id=new_id, issuer_of_patient_id=issuer).exists():
            raise WorklistError(f"patient ID {new_id!r} is already used: merge instead")
        old_label = _label(patient)
        patient.patient_id = new_id
        patient.save(update_fields=["patient_id"])
        audit.record(category="patient", action="patient ID changed", actor=actor,
                     source=source[:128], detail=f"patient {old_label} is now {_label(patient)}")
        patients.record_change(patient, action="patient ID changed", source=source,
                               actor=actor, detail=f"{old_label} -> {_label(patient)}")
        modify.rewrite_patient_headers(patient, actor=actor, why="an ID change")
    return patient
