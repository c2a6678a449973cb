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
