"""What disagrees, for someone to reconcile (the Reconciliation page): one open Discrepancy
per disagreement and study, whatever number of instances repeat it, with an audit row."""

from __future__ import annotations

from django.utils import timezone

from core import audit
from pacs.models import Discrepancy, Study


def record(*, kind: str, study_uid: str, detail: str, sop_uid: str = "", patient: str = "",
           origin: str = "", study_id: int | None = None) -> bool:
    """Keep a disagreement unless the same one is open already; whether it is new."""
    if Discrepancy.objects.filter(kind=kind, study_instance_uid=study_uid, detail=detail,
                                  resolved_at__isnull=True).exists():
        return False
    if study_id is None:
        study_id = Study.objects.filter(study_instance_uid=study_uid).values_list(
            "pk", flat=True).first()
    Discrepancy.objects.create(kind=kind, study_id=study_id, study_instance_uid=study_uid,
                               sop_instance_uid=sop_uid, patient_id=patient[:200],
                               detail=detail, received_from=origin[:128])
    audit.record(category="patient" if kind == Discrepancy.Kind.DEMOGRAPHICS else "store",
                 action=f"discrepancy: {kind}", outcome="refused"
                 if kind == Discrepancy.Kind.PATIENT else "success", actor=origin,
                 detail=detail)
    return True


def resolve(discrepancy: Discrepancy, *, actor: str, note: str = "") -> None:
    discrepancy.resolved_at = timezone.now()
    discrepancy.resolved_by = actor[:150]
    discrepancy.note = note[:255]
    discrepancy.save(update_fields=["resolved_at", "resolved_by", "note"])
    audit.record(category="admin", action="discrepancy resolved", actor=actor,
                 detail=f"{discrepancy}: {note}"[:2000])
