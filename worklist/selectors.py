from __future__ import annotations

import datetime as dt
from collections import OrderedDict

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from pydicom.dataset import Dataset

from pacs.matching import prefix_q
from pacs.models import Patient, Study
from worklist.models import Order, ScheduledProcedureStep, Station, StepEvent
from worklist.ups import lookup

# steps with no station AE title: no modality asking by its own AE title sees them
UNROUTABLE = "Unroutable: no station"


def day_board(day: dt.date, *, modality: str = "", station: str = "",
              days: int = 1) -> list[tuple[str, list]]:
    """The steps of ``days`` days from ``day`` grouped by station (stations without steps
    included), in time order; each step with ``minute`` (its start, minutes from midnight),
    ``end`` and ``overlaps`` (the accession numbers of the steps of its station whose time it
    shares, canceled and discontinued ones aside)."""
    dates = [f"{day + dt.timedelta(days=n):%Y%m%d}" for n in range(days)]
    steps = (ScheduledProcedureStep.objects.filter(start_date__in=dates)
             .select_related("requested_procedure__order__patient")
             .order_by("scheduled_station_ae_title", "start_date", "start_time", "id"))
    stations = Station.objects.filter(active=True)
    if modality:
        steps = steps.filter(modality=modality)
        stations = stations.filter(modality=modality)
    if station:
        steps = steps.filter(scheduled_station_ae_title=station)
        stations = stations.filter(ae_title=station)
    board: OrderedDict[str, list] = OrderedDict((s.ae_title, []) for s in stations)
    for step in steps:
        board.setdefault(step.scheduled_station_ae_title or UNROUTABLE, []).append(step)
    for name, listed in board.items():
        _times(listed, overlaps=name != UNROUTABLE)
    return list(board.items())


def _times(steps: list, *, overlaps: bool) -> None:
    """Each step's minute, end and the steps it overlaps on its station and day (a sweep
    over the steps in start order: at most a few per station and day)."""
    free = ("CANCELED", "DISCONTINUED")
    for step in steps:
        time = (step.start_time or "").ljust(4, "0")
        step.minute = int(time[:2]) * 60 + int(time[2:4]) if time[:4].isdigit() else 0
        step.end = step.minute + step.duration_minutes
        step.overlaps = []
    if not overlaps:
        return
    busy = [s for s in steps if s.status not in free]
    for i, step in enumerate(busy):
        for later in busy[i + 1:]:
            if later.start_date != step.start_date or later.minute >= step.end:
                break  # in start order: nothing after it starts before this one ends
            step.overlaps.append(later.requested_procedure.order.accession_number)
            later.overlaps.append(step.requested_procedure.order.accession_number)


def unlinked_mpps(limit: int = 100) -> list:
    """MPPS that matched no scheduled step, newest first, each with the steps that share its
    accession number or scheduled step ID (candidates to link it to)."""
    from worklist.models import PerformedProcedureStep

    found = list(PerformedProcedureStep.objects.filter(steps__isnull=True)
                 .order_by("-created_at")[:limit])
    for mpps in found:
        keys = _mpps_keys(mpps.attributes)
        q = Q()
        if keys["accession"]:
            q |= Q(requested_procedure__order__accession_number__in=keys["accession"])
        if keys["sps"]:
            q |= Q(scheduled_procedure_step_id__in=keys["sps"])
        mpps.candidates = (list(ScheduledProcedureStep.objects.filter(q).select_related(
            "requested_procedure__order__patient")[:10]) if q else [])
        mpps.keys = keys
    return found


def _mpps_keys(attributes: dict) -> dict[str, list[str]]:
    """Accession numbers and scheduled step IDs an MPPS names (Scheduled Step Attributes
    Sequence, from its DICOM JSON)."""
    keys: dict[str, list[str]] = {"accession": [], "sps": [], "study": []}
    for item in (attributes.get("00400270") or {}).get("Value") or []:
        for key, tag in (("accession", "00080050"), ("sps", "00400009"), ("study", "0020000D")):
            values = (item.get(tag) or {}).get("Value") or []
            keys[key] += [str(v) for v in values if v]
    return keys


def studies_without_order(limit: int = 100) -> list[Study]:
    """Stored studies no order is linked to (neither a requested procedure's Study Instance
    UID nor a linked MPPS's is theirs: IHE 'unscheduled' images, or a modality that made its
    own Study Instance UID), newest first, each with candidate orders: the one with its
    accession number, else the patient's orders without images."""
    from worklist.models import PerformedProcedureStep, RequestedProcedure

    linked = RequestedProcedure.objects.values("study_instance_uid")
    performed = PerformedProcedureStep.objects.filter(steps__isnull=False).values(
        "study_instance_uid")
    studies = list(Study.objects.exclude(study_instance_uid__in=linked)
                   .exclude(study_instance_uid__in=performed)
                   .select_related("patient").order_by("-created_at")[:limit])
    for study in studies:
        by_accession = Order.objects.filter(accession_number=study.accession_number) \
            if study.accession_number else Order.objects.none()
        same_patient = Order.objects.filter(patient_id=study.patient_id).exclude(
            procedures__study_instance_uid__in=Study.objects.values("study_instance_uid"))
        study.candidates = list((by_accession | same_patient).distinct()
                                .order_by("-created_at")[:10])
    return studies


def stored_studies(order: Order) -> dict[str, Study]:
    """The archive's studies for the order's requested procedures and performed steps, by
    Study Instance UID: images that arrived link back to the order."""
    uids = set(order.procedures.values_list("study_instance_uid", flat=True))
    uids |= set(ScheduledProcedureStep.objects.filter(requested_procedure__order=order)
                .values_list("performed__study_instance_uid", flat=True))
    uids.discard(None)
    uids.discard("")
    return {s.study_instance_uid: s for s in Study.objects.filter(study_instance_uid__in=uids)}


def find_patients(text: str, limit: int = 20) -> list[Patient]:
    """Patients whose ID or name starts with ``text`` (case-insensitive, * and ? allowed)."""
    text = text.strip()
    if not text:
        return []
    query = prefix_q("patient_name_norm", text.upper()) | prefix_q("patient_id", text)
    return list(Patient.objects.filter(query).order_by("patient_name_norm")[:limit])


def patient_initial(patient_pk: str) -> dict:
    """Order form values for a chosen registry patient."""
    patient = Patient.objects.filter(pk=patient_pk).first() if patient_pk.isdigit() else None
    if patient is None:
        return {}
    family, _, rest = patient.patient_name.partition("^")
    birth = patient.patient_birth_date
    return {"patient_id": patient.patient_id, "family_name": family,
            "given_name": rest.split("^")[0],
            "birth_date": f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}" if len(birth) == 8 else None,
            "sex": patient.patient_sex if patient.patient_sex in ("F", "M", "O") else ""}


WORKITEM_STATES = ("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED")


def workitems(*, states: list[str], patient: str = "") -> QuerySet[ScheduledProcedureStep]:
    """Workitems for the portal's list, through the same UPS search as UPS-RS and C-FIND; each
    with the user or AE that claimed it (``performer``)."""
    identifier = Dataset()
    if states:
        identifier.ProcedureStepState = "\\".join(states)
    if patient:
        identifier.PatientName = patient if "*" in patient else f"{patient}*"
    claimed_by = StepEvent.objects.filter(step=OuterRef("pk"), status="IN PROGRESS"
                                          ).order_by("-at").values("actor")[:1]
    return lookup.search(identifier).annotate(performer=Subquery(claimed_by)).order_by(
        "start_date", "start_time", "pk")


def patient_search(text: str = "") -> QuerySet[Patient]:
    """The patient list: by ID or name prefix (as find_patients), each with its numbers of
    studies and orders and whether another patient looks like the same person."""

    patients = Patient.objects.all()
    text = text.strip()
    if text:
        patients = patients.filter(prefix_q("patient_name_norm", text.upper())
                                   | prefix_q("patient_id", text))
    twins = Patient.objects.filter(
        patient_name_norm=OuterRef("patient_name_norm"),
        patient_birth_date=OuterRef("patient_birth_date")).exclude(pk=OuterRef("pk"))
    return patients.annotate(
        study_count=Count("studies", distinct=True), order_count=Count("orders", distinct=True),
        probable_duplicate=Exists(twins.exclude(patient_name_norm="").exclude(
            patient_birth_date=""))).order_by("patient_name_norm", "patient_id", "pk")


def probable_duplicates(patient: Patient) -> list[Patient]:
    """Other patients with the same name and birth date (and another ID): probably the same
    person registered twice, a merge candidate. Both must be known to say so."""
    if not patient.patient_name_norm or not patient.patient_birth_date:
        return []
    return list(Patient.objects.filter(
        patient_name_norm=patient.patient_name_norm,
        patient_birth_date=patient.patient_birth_date).exclude(pk=patient.pk)[:20])
