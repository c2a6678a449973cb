from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """Who did what, from where. Messages never carry PHI beyond identifiers admins need."""

    class Category(models.TextChoices):
        ASSOCIATION = "association", "DICOM association"
        STORE = "store", "Store"
        ADMIN = "admin", "Administration"
        IMPORT = "import", "Import/export"
        AUTH = "auth", "Authentication"
        ACCESS = "access", "Patient data read"  # who read what: pages, DICOMweb, C-FIND/MOVE/GET
        PATIENT = "patient", "Patient record change"  # renames, merges, ID changes (HL7, pages)
        WORKLIST = "worklist", "Worklist"
        HL7 = "hl7", "HL7"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    category = models.CharField(max_length=32, choices=Category.choices, db_index=True)
    action = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, default="success")  # success / refused / failure
    actor = models.CharField(max_length=128, blank=True, db_index=True)  # user or calling AE
    source = models.CharField(max_length=128, blank=True)  # peer host or client address
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.category}/{self.action} {self.outcome}"


class ListenerStatus(models.Model):
    """A listener that is up, as its process last said (core.health): which one, on which
    node and port, since when, with its process's counters. A row not refreshed for a while
    is a listener that stopped, or died with its process."""

    name = models.CharField(max_length=32)  # dimse, dimse-tls, hl7, hl7-tls, websocket
    node = models.CharField(max_length=128)  # the host name of the process
    pid = models.PositiveIntegerField()
    host = models.CharField(max_length=64)
    port = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)
    counters = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "pid", "name", "port"],
                                               name="one_status_per_listener")]
        ordering = ["node", "name", "port"]

    def __str__(self) -> str:
        return f"{self.name} {self.node}:{self.port} (pid {self.pid})"
