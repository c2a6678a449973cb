"""One entry point for audit rows, used by every app's services."""

from __future__ import annotations

from core import statements
from core.models import AuditEvent


def record(
    *,
    category: str,
    action: str,
    outcome: str = "success",
    actor: str = "",
    source: str = "",
    detail: str = "",
) -> int:
    """The new row's id."""
    return statements.insert_row(AuditEvent, category=category, action=action, outcome=outcome,
                           actor=actor[:128], source=source[:128], detail=detail)
