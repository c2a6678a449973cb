"""Migrations that move data keep every row: the audit trail moving from the project package's
table to core's (portal.0004) keeps its ids, times and texts."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("portal", "0003_audit_categories"), ("core", None)]


def _migrate(targets, state_at):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(state_at).apps


def test_the_audit_trail_moves_to_core_with_every_row():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old_apps = _migrate(BEFORE, BEFORE[0])
    Old = old_apps.get_model("portal", "AuditEvent")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    Old.objects.create(id=41, category="auth", action="login", actor="ana", source="10.0.0.1",
                       detail="ok")
    Old.objects.create(id=42, category="patient", action="patient updated", outcome="success",
                       actor="HL7", detail="patient 1^^^H: name changed")
    Old.objects.filter(id=41).update(created_at=when)
    new_apps = _migrate(latest, latest)
    New = new_apps.get_model("core", "AuditEvent")
    rows = list(New.objects.order_by("id").values_list("id", "category", "action", "actor",
                                                        "detail"))
    assert rows == [(41, "auth", "login", "ana", "ok"),
                    (42, "patient", "patient updated", "HL7", "patient 1^^^H: name changed")]
    assert New.objects.get(id=41).created_at == when
    assert New.objects.create(category="admin", action="next").id > 42  # the sequence follows
    with connection.cursor() as cursor:
        assert "portal_auditevent" not in connection.introspection.table_names(cursor)
