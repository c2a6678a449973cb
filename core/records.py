"""Saving and deleting the rows of the admin tables (AE titles, forwarding rules, stations,
catalog, HL7 senders and receivers): each change in one transaction with its row in the audit
trail, naming the fields it changed, since these tables decide who may send what."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Model
from django.forms import ModelForm

from core import audit


def save(form: ModelForm, *, actor: str, source: str = "") -> Model:
    """Save a valid ``form`` of an admin table; the saved row."""
    added = form.instance._state.adding
    changed = form.changed_data
    with transaction.atomic():
        obj = form.save()
        audit.record(category="admin",
                     action=f"{obj._meta.verbose_name} {'added' if added else 'changed'}",
                     actor=actor, source=source,
                     detail=f"{obj}: {', '.join(changed) or 'nothing changed'}")
    return obj


def delete(obj: Model, *, actor: str, source: str = "") -> None:
    """Delete a row of an admin table (ProtectedError when other rows still need it)."""
    with transaction.atomic():
        obj.delete()
        audit.record(category="admin", action=f"{obj._meta.verbose_name} deleted",
                     actor=actor, source=source, detail=str(obj))
