"""One entry point for audit rows, used by every app's services."""

from __future__ import annotations

from portal import lean
from portal.models import AuditEvent


def record(
    *,
    category: str,
    action: str,
    outcome: str = "success",
    actor: str = "",
    source: str = "",
    detail: str = "",
) -> AuditEvent:
    return lean.insert(AuditEvent(
        category=category,
        action=action,
        outcome=outcome,
        actor=actor[:128],
        source=source[:128],
        detail=detail,
    ))
