"""The work-item store: orders, requested procedures and scheduled procedure steps.

One store for every face: the scheduler pages, HL7 orders, Modality Worklist C-FIND, MPPS and
(later) UPS read and change these rows, never a copy. A scheduled procedure step is what a
modality sees as one worklist item and what UPS calls a workitem. Field names follow the DICOM
keywords of PS3.4 table K.6-1 (ScheduledStationAETitle -> scheduled_station_ae_title).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from pydicom.uid import generate_uid

from pacs.models import Patient


class Station(models.Model):
    """A modality's scheduled station: where steps are performed."""

    ae_title = models.CharField("AE title", max_length=16, unique=True)
    name = models.CharField("station name", max_length=16, blank=True)
    modality = models.CharField(max_length=16)
    location = models.CharField(max_length=16, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["modality", "ae_title"]

    def __str__(self) -> str:
        return f"{self.ae_title} ({self.modality})"


class Procedure(models.Model):
    """The procedure catalog: requested procedure codes schedulers pick from."""

    code_value = models.CharField(max_length=16)
    coding_scheme_designator = models.CharField(max_length=16, default="LOCAL")
    code_meaning = models.CharField(max_length=64)
    modality = models.CharField(max_length=16)
    duration_minutes = models.PositiveIntegerField(default=20)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["modality", "code_meaning"]
        constraints = [models.UniqueConstraint(fields=["code_value", "coding_scheme_designator"],
                                               name="uniq_procedure_code")]

    def __str__(self) -> str:
        return f"{self.code_meaning} [{self.code_value}] ({self.modality})"


class Order(models.Model):
    class Priority(models.TextChoices):
        ROUTINE = "ROUTINE"
        HIGH = "HIGH"
        STAT = "STAT"
        LOW = "LOW"
        MEDIUM = "MEDIUM"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="orders")
    accession_number = models.CharField(max_length=16, unique=True)
    placer_order_number = models.CharField(max_length=64, blank=True, db_index=True)
    filler_order_number = models.CharField(max_length=64, blank=True, db_index=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    requesting_physician = models.CharField(max_length=324, blank=True)
    reason = models.CharField("reason for the requested procedure", max_length=64, blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices,
                                default=Priority.ROUTINE)
    medical_alerts = models.CharField(max_length=64, blank=True)
    contrast_allergies = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=16, default="portal")  # portal, hl7, import, ups
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"order {self.accession_number}"


class RequestedProcedure(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="procedures")
    requested_procedure_id = models.CharField(max_length=16)
    description = models.CharField(max_length=64, blank=True)
    procedure = models.ForeignKey(Procedure, null=True, blank=True, on_delete=models.PROTECT)
    # Copied from the catalog entry at ordering time (codes may change later)
    code_value = models.CharField(max_length=16, blank=True)
    coding_scheme_designator = models.CharField(max_length=16, blank=True)
    code_meaning = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64, db_index=True)

    def __str__(self) -> str:
        return f"{self.requested_procedure_id} {self.description}"


class ScheduledProcedureStep(models.Model):
    """One worklist item (PS3.4 K.6: Scheduled Procedure Step Sequence item)."""

    class Status(models.TextChoices):
        SCHEDULED = "SCHEDULED"
        ARRIVED = "ARRIVED"
        IN_PROGRESS = "IN PROGRESS", "in progress"
        COMPLETED = "COMPLETED"
        DISCONTINUED = "DISCONTINUED"
        CANCELED = "CANCELED"

    FINAL = (Status.COMPLETED, Status.DISCONTINUED, Status.CANCELED)

    requested_procedure = models.ForeignKey(RequestedProcedure, on_delete=models.CASCADE,
                                            related_name="steps")
    scheduled_procedure_step_id = models.CharField(max_length=16)
    modality = models.CharField(max_length=16, db_index=True)
    # AE titles of the stations, backslash-joined when several (AE, VM 1-n)
    scheduled_station_ae_title = models.CharField(max_length=64, blank=True, db_index=True)
    scheduled_station_name = models.CharField(max_length=16, blank=True)
    scheduled_procedure_step_location = models.CharField(max_length=16, blank=True)
    start_date = models.CharField(max_length=8, db_index=True)  # DA
    start_time = models.CharField(max_length=16, blank=True)  # TM
    # How long the station is taken (the day planner, overlap checks): the procedure's
    # duration from the catalog when it was scheduled, else PORTAL_STEP_MINUTES
    duration_minutes = models.PositiveSmallIntegerField(default=20, db_default=20)
    performing_physician_name = models.CharField(max_length=324, blank=True)
    performing_physician_name_norm = models.CharField(max_length=324, blank=True)
    description = models.CharField(max_length=64, blank=True)
    pre_medication = models.CharField(max_length=64, blank=True)
    requested_contrast_agent = models.CharField(max_length=64, blank=True)
    comments = models.TextField(blank=True)
    # First protocol code (ScheduledProtocolCodeSequence), copied from the catalog
    protocol_code_value = models.CharField(max_length=16, blank=True)
    protocol_coding_scheme = models.CharField(max_length=16, blank=True)
    protocol_code_meaning = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED,
                              db_index=True)
    # The step as a UPS workitem (PS3.4 CC): its SOP Instance UID, given on creation, and the
    # Transaction UID of the performer that claimed it (never shown to others).
    ups_instance_uid = models.CharField("workitem UID", max_length=64, unique=True, null=True,
                                        editable=False)
    transaction_uid = models.CharField(max_length=64, blank=True, editable=False)
    # Reported by the performer (UPS Procedure Step Progress Information Sequence)
    progress_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    progress_description = models.CharField(max_length=64, blank=True)
    # A cancellation asked for while the step is IN PROGRESS (the performer decides)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=64, blank=True)
    # UPS Performed Procedure Sequence (0074,1216) item as DICOM JSON, set by the performer
    ups_performed = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start_date", "start_time", "id"]
        indexes = [models.Index(fields=["start_date", "scheduled_station_ae_title"],
                                name="sps_date_station")]

    def __str__(self) -> str:
        return f"step {self.scheduled_procedure_step_id} ({self.status})"

    def starts_at(self):
        """Start date and time as a naive datetime (the steps' local time), or None when
        the values are not a date and a time."""
        import datetime as dt

        try:
            return dt.datetime.strptime(self.start_date + (self.start_time or "")[:4].ljust(
                4, "0"), "%Y%m%d%H%M")
        except ValueError:
            return None

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    def save(self, *args, **kwargs) -> None:
        if not self.ups_instance_uid:
            self.ups_instance_uid = generate_uid()
        super().save(*args, **kwargs)


class StepEvent(models.Model):
    """Status history of a step: who or what changed it, from which face."""

    step = models.ForeignKey(ScheduledProcedureStep, on_delete=models.CASCADE,
                             related_name="events")
    status = models.CharField(max_length=16)
    previous_status = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=16)  # portal, mpps, hl7, ups, import
    actor = models.CharField(max_length=150, blank=True)
    note = models.CharField(max_length=255, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]


class PerformedProcedureStep(models.Model):
    """An MPPS instance (PS3.4 F.7) as the modality created and updated it."""

    class Status(models.TextChoices):
        IN_PROGRESS = "IN PROGRESS", "in progress"
        COMPLETED = "COMPLETED"
        DISCONTINUED = "DISCONTINUED"

    sop_instance_uid = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    steps = models.ManyToManyField(ScheduledProcedureStep, related_name="performed",
                                   blank=True)
    performed_station_ae_title = models.CharField(max_length=16, blank=True)
    study_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    # DICOM JSON of the attributes as last set (N-CREATE, then each N-SET merged in)
    attributes = models.JSONField(default=dict)
    # Performed series: [{"SeriesInstanceUID": ..., "SOPInstanceUIDs": [...]}]
    performed_series = models.JSONField(default=list)
    created_by_ae = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"MPPS {self.sop_instance_uid} ({self.status})"


class UpsSubscription(models.Model):
    """A subscriber (an AE title) to one workitem's events, or to all workitems (global,
    optionally filtered by matching keys), PS3.4 CC.2.3."""

    ae_title = models.CharField("AE title", max_length=16, db_index=True)
    step = models.ForeignKey(ScheduledProcedureStep, null=True, blank=True,
                             on_delete=models.CASCADE, related_name="subscriptions")
    # global subscriptions only: the matching keys of a filtered one ({} = every workitem)
    filter = models.JSONField(default=dict, blank=True)
    deletion_lock = models.BooleanField(default=False)
    suspended = models.BooleanField(default=False)  # global: no longer follows new workitems
    # how events reach the subscriber: its WebSocket event channel (UPS-RS subscribers) or
    # N-EVENT-REPORT to its address in the AE table (UPS Watch over DIMSE)
    delivery = models.CharField(max_length=16, default="websocket",
                                choices=[("websocket", "WebSocket"), ("dimse", "DIMSE")])
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ae_title", "id"]
        constraints = [models.UniqueConstraint(fields=["ae_title", "step"],
                                               name="uniq_ups_subscription")]

    def __str__(self) -> str:
        return f"{self.ae_title} -> {self.step.ups_instance_uid if self.step else 'global'}"


class UpsEvent(models.Model):
    """An event for one subscriber (the outbox the event channels read): a UPS State Report,
    a Cancel Requested or an Assignment change, as the DICOM JSON of its N-EVENT-REPORT."""

    class Type(models.IntegerChoices):
        STATE_REPORT = 1, "UPS State Report"
        CANCEL_REQUESTED = 2, "UPS Cancel Requested"
        PROGRESS_REPORT = 3, "UPS Progress Report"
        SCP_STATUS_CHANGE = 4, "SCP Status Change"
        UPS_ASSIGNED = 5, "UPS Assigned"

    ae_title = models.CharField(max_length=16, db_index=True)
    workitem_uid = models.CharField(max_length=64)
    delivery = models.CharField(max_length=16, default="websocket")
    event_type = models.PositiveSmallIntegerField(choices=Type.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["id"]


class WorklistQuery(models.Model):
    """A modality's worklist query (MWL C-FIND) as it came, the last few per AE title: what
    "why doesn't my modality see this order?" is answered from (worklist.explain)."""

    ae_title = models.CharField(max_length=16, db_index=True)
    host = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    identifier = models.JSONField()  # the request's identifier as DICOM JSON (PS3.18 F.2)
    fuzzy = models.BooleanField(default=False)  # fuzzy name matching negotiated (PS3.4 K.5.1)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.ae_title} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class PatientMerge(models.Model):
    """A merge of two patients (ADT^A40 or the patient page), kept so that it can be undone:
    the prior patient's identity and demographics, and exactly which studies and orders moved
    to the survivor. Unmerging gives back those rows (those still with the survivor) to a
    patient recreated from the kept identity."""

    survivor = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="merges")
    prior_patient_id = models.CharField(max_length=64)
    prior_issuer = models.CharField(max_length=64, blank=True)
    # name, birth date, sex and creation time of the prior record, as they were
    prior_demographics = models.JSONField(default=dict)
    study_ids = models.JSONField(default=list)
    order_ids = models.JSONField(default=list)
    change_ids = models.JSONField(default=list)  # the prior patient's history lines moved
    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=128, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prior_patient_id} merged into patient {self.survivor_id}"
