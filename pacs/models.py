"""The archive: one patient registry, Study/Series/Instance with the attributes queries use as
indexed columns, each instance's header kept as DICOM JSON (no bulk data), and remote AEs."""

from __future__ import annotations

from django.db import models


class Patient(models.Model):
    patient_id = models.CharField(max_length=64, db_index=True)  # (0010,0020) LO
    issuer_of_patient_id = models.CharField(max_length=64, blank=True, default="")  # (0010,0021)
    patient_name = models.CharField(max_length=324, blank=True)  # (0010,0010) PN
    # Upper-cased name for case-insensitive matching: SQLite's LIKE folds ASCII only.
    patient_name_norm = models.CharField(max_length=324, blank=True, db_index=True)
    # Its words without accents, ' MULLER HANS ': the pages' search by any name component
    patient_name_words = models.CharField(max_length=400, blank=True, default="", db_default="")
    patient_birth_date = models.CharField(max_length=8, blank=True)  # (0010,0030) DA
    patient_sex = models.CharField(max_length=16, blank=True)  # (0010,0040) CS
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["patient_id", "issuer_of_patient_id"], name="uniq_patient_identity"
            )
        ]

    def __str__(self) -> str:
        return f"{self.patient_name} [{self.patient_id}]"


class PatientChange(models.Model):
    """One line of a patient's history: what changed in the registry, made by whom, from
    where (HL7, the scheduler, a page, a merge). A merge moves the prior patient's lines to
    the surviving patient, so the history of both stays readable in one place."""

    class Source(models.TextChoices):
        HL7 = "hl7", "HL7"
        SCHEDULER = "scheduler", "Scheduler"
        PAGE = "page", "Patient page"
        MERGE = "merge", "Merge"
        IMPORT = "import", "Import"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="changes")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class Study(models.Model):
    study_instance_uid = models.CharField(max_length=64, unique=True)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    study_date = models.CharField(max_length=8, blank=True, db_index=True)  # DA, YYYYMMDD
    study_time = models.CharField(max_length=16, blank=True)  # TM
    accession_number = models.CharField(max_length=64, blank=True, db_index=True)
    study_id = models.CharField(max_length=64, blank=True)
    study_description = models.CharField(max_length=256, blank=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    # Maintained on ingest so study lists never count rows (PS3.4 C.3.4 computed keys).
    modalities_in_study = models.CharField(max_length=128, blank=True)  # backslash-joined
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["study_date", "study_time"], name="study_datetime")]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.study_instance_uid

    @property
    def modalities(self) -> list[str]:
        return [m for m in self.modalities_in_study.split("\\") if m]


class Series(models.Model):
    series_instance_uid = models.CharField(max_length=64, unique=True)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    modality = models.CharField(max_length=64, blank=True, db_index=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=256, blank=True)
    body_part_examined = models.CharField(max_length=64, blank=True)
    series_date = models.CharField(max_length=8, blank=True)
    series_time = models.CharField(max_length=16, blank=True)
    station_name = models.CharField(max_length=64, blank=True)
    # From the first item of RequestAttributesSequence (0040,0275): links the series to the
    # worklist's requested procedure / scheduled step it was acquired for (MPPS, PS3.4 F.7).
    requested_procedure_id = models.CharField(max_length=64, blank=True, db_index=True)
    scheduled_procedure_step_id = models.CharField(max_length=64, blank=True)
    number_of_instances = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return self.series_instance_uid


class Instance(models.Model):
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64, db_index=True)
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    instance_number = models.IntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(null=True, blank=True)
    has_pixel_data = models.BooleanField(default=False)
    # Storage key (relative path) and size of the Part 10 file exactly as received.
    file_key = models.CharField(max_length=255)
    file_size = models.BigIntegerField()
    # DICOM JSON (PS3.18 F.2) of the header without bulk data: metadata never re-reads files.
    metadata = models.JSONField()
    # Origin: "dimse:<calling AET>@<host>", "import:<user>", later "stow:<user>".
    received_from = models.CharField(max_length=128, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance_number", "id"]

    def __str__(self) -> str:
        return self.sop_instance_uid


class Discrepancy(models.Model):
    """Data that disagree, kept for someone to reconcile (IHE Patient Information
    Reconciliation): what arrived, what the archive or the registry holds, and from where. The
    archive never settles them by overwriting: the first received study attributes and the
    registry's demographics stay, a conflicting instance is refused or kept apart."""

    class Kind(models.TextChoices):
        DEMOGRAPHICS = "demographics", "images name the patient differently"
        STUDY = "study", "images describe the study differently"
        DUPLICATE = "duplicate", "an instance re-sent with another patient, study or series"
        PATIENT = "patient", "images of another patient for a stored study (refused)"

    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="discrepancies")
    study_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    patient_id = models.CharField(max_length=200, blank=True)  # as the registry has it
    detail = models.TextField()
    received_from = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.detail}"


class ApplicationEntity(models.Model):
    """A remote DICOM node and what it may do with us."""

    class Kind(models.TextChoices):
        MODALITY = "modality", "Modality"
        PACS = "pacs", "PACS"
        WORKSTATION = "workstation", "Workstation"

    ae_title = models.CharField("AE title", max_length=16, unique=True)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    description = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MODALITY)
    may_store = models.BooleanField("may store (C-STORE to us)", default=True)
    may_query = models.BooleanField("may query (C-FIND)", default=False)
    may_retrieve = models.BooleanField("may retrieve (C-MOVE/C-GET)", default=False)
    is_move_destination = models.BooleanField("is a C-MOVE destination", default=False)
    may_query_worklist = models.BooleanField("may query the worklist", default=False)
    may_send_mpps = models.BooleanField("may send MPPS", default=False)
    worklist_own_station_only = models.BooleanField(
        "worklist: only items scheduled on this AE title", default=False)
    worklist_charset = models.CharField(
        "worklist answer character set", max_length=16, blank=True,
        choices=[("", "as the request asks (else UTF-8)"), ("ISO_IR 100", "ISO_IR 100 (Latin-1)"),
                 ("ISO_IR 192", "ISO_IR 192 (UTF-8)")])
    # Who may call as this AE title (PS3.15 does not authenticate AE titles: the address, and
    # with DICOM TLS a client certificate, are what a caller cannot simply claim)
    calling_addresses = models.CharField(
        "calls accepted from", max_length=255, blank=True,
        help_text="IP addresses, networks (10.1.2.0/24) or host names, separated by commas; "
                  "empty: its host")
    any_host = models.BooleanField("accept its calls from any address", default=False)
    use_tls = models.BooleanField("we call it over DICOM TLS", default=False)
    account = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="application_entities", verbose_name="portal account",
        help_text="the account whose API token reads this AE's UPS event channel")
    last_echo_at = models.DateTimeField(null=True, blank=True)
    last_echo_ok = models.BooleanField(null=True)
    last_echo_detail = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["ae_title"]
        verbose_name = "application entity"

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class Job(models.Model):
    """A long-running piece of work: a transfer with a remote AE, send (C-STORE SCU) or
    retrieve (C-MOVE with us as destination, or C-GET), or the archive's own work on its
    stored files (rewriting headers after a change, anonymising). Runs in-process (embedded)
    or on a Celery worker."""

    class Kind(models.TextChoices):
        SEND = "send", "send (C-STORE)"
        MOVE = "move", "retrieve (C-MOVE)"
        GET = "get", "retrieve (C-GET)"
        # the archive's own work on its stored files: no remote AE
        MODIFY = "modify", "rewrite stored headers"
        ANONYMIZE = "anonymize", "anonymise"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        PARTIAL = "partial", "done with failures"
        FAILED = "failed"
        CANCELED = "canceled"

    FINAL_STATES = (State.DONE, State.PARTIAL, State.FAILED, State.CANCELED)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED,
                             db_index=True)
    remote = models.ForeignKey(ApplicationEntity, on_delete=models.PROTECT,
                               related_name="jobs", null=True, blank=True)
    level = models.CharField(max_length=8)  # PATIENT, STUDY, SERIES
    # The unique keys of what moves: {"PatientID": ..., "StudyInstanceUID": ..., ...}
    keys = models.JSONField(default=dict)
    # MODIFY: the attributes set, by keyword; ANONYMIZE: the profile's options
    changes = models.JSONField(default=dict, blank=True)
    # what a local job made, e.g. the anonymised copy's Study Instance UID
    result = models.CharField(max_length=255, blank=True)
    description = models.CharField(max_length=255, blank=True)
    total = models.PositiveIntegerField(null=True, blank=True)  # unknown until counted
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    warning = models.PositiveIntegerField(default=0)
    failed_instances = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    @property
    def done_count(self) -> int:
        return self.completed + self.failed + self.warning

    @property
    def percent(self) -> int | None:
        if not self.total:
            return 100 if self.is_final else None
        return min(100, round(100 * self.done_count / self.total))


class CommitmentRequest(models.Model):
    """A Storage Commitment request (PS3.4 J, N-ACTION) and the delivery of its result (an
    N-EVENT-REPORT on an association we open to the requesting AE)."""

    ae_title = models.CharField(max_length=16, db_index=True)
    transaction_uid = models.CharField(max_length=64)
    # [[SOP Class UID, SOP Instance UID], ...] as requested
    references = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    # filled once the report is delivered: how many were committed and how many failed
    delivered_at = models.DateTimeField(null=True, blank=True, db_index=True)
    committed = models.PositiveIntegerField(null=True, blank=True)
    failed = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.ae_title} {self.transaction_uid}"


class ForwardingRule(models.Model):
    """Auto-routing: instances received that match the rule are sent on to ``destination``
    (C-STORE), queued in the same transaction that indexes them."""

    name = models.CharField(max_length=64)
    destination = models.ForeignKey(ApplicationEntity, on_delete=models.CASCADE,
                                    related_name="forwarding_rules")
    source_ae_titles = models.CharField(
        "from AE titles", max_length=255, blank=True,
        help_text="calling AE titles, separated by spaces or commas; empty: from anywhere "
                  "(DICOM, STOW-RS, import)")
    modalities = models.CharField(
        max_length=128, blank=True,
        help_text="modalities (e.g. CT MR), separated by spaces or commas; empty: all")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} → {self.destination.ae_title}"


class ForwardItem(models.Model):
    """One instance to send to one destination (the queue of a forwarding rule)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"  # by an admin: not sent (retry queues it again)

    destination = models.ForeignKey(ApplicationEntity, on_delete=models.CASCADE,
                                    related_name="forward_items")
    rule = models.ForeignKey(ForwardingRule, on_delete=models.SET_NULL, null=True, blank=True)
    sop_instance_uid = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["destination", "status"], name="forward_queue")]
