"""core.statements against the real database (SQLite here; PostgreSQL in the scale slice, which
imports these tests): what it writes and reads must equal what the ORM writes and reads."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import group_commit, statements
from hl7gw.models import Message, Sender
from pacs.models import Patient
from worklist.models import Station, UpsSubscription

pytestmark = pytest.mark.django_db(transaction=True)


def test_insert_reads_back_through_the_orm_equal():
    sender = statements.insert(Sender(sending_application="RIS", sending_facility="H",
                                default_charset="8859/1"))
    message = statements.insert(Message(raw=b"MSH|\xe9", text="MSH|é", sender=sender,
                                  control_id="1", status=Message.Status.PROCESSED))
    subscription = statements.insert(UpsSubscription(ae_title="WATCHER", filter={"00080060": "CT"},
                                               suspended=True))
    stored = Message.objects.get(pk=message.pk)
    assert bytes(stored.raw) == b"MSH|\xe9" and stored.text == "MSH|é"
    assert stored.sender_id == sender.pk and stored.status == "processed"
    assert abs(stored.received_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert stored.received_at == message.received_at  # auto_now_add set on the instance
    again = UpsSubscription.objects.get(pk=subscription.pk)
    assert again.filter == {"00080060": "CT"} and again.suspended is True
    assert again.step_id is None and again.delivery == "websocket"  # model defaults


def test_select_builds_the_same_instances_as_the_orm():
    created = UpsSubscription.objects.create(ae_title="B", filter={"a": [1, "x"]})
    UpsSubscription.objects.create(ae_title="A", suspended=True)
    found = statements.select(UpsSubscription, step=None, order_by="ae_title")
    assert [s.ae_title for s in found] == ["A", "B"]
    orm = UpsSubscription.objects.get(pk=created.pk)
    mine = found[1]
    fields = [f.attname for f in UpsSubscription._meta.concrete_fields]
    assert {f: getattr(mine, f) for f in fields} == {f: getattr(orm, f) for f in fields}
    assert mine.suspended is False and found[0].suspended is True  # booleans, not 0/1
    assert not mine._state.adding
    assert statements.select(UpsSubscription, ae_title="A", suspended=False) == []
    assert statements.first(UpsSubscription, order_by="-ae_title").ae_title == "B"
    assert statements.first(Station, ae_title="NONE") is None


def test_update_changes_the_row_and_the_instance():
    patient = statements.insert(Patient(patient_id="P1", patient_name="DOE^J",
                                  patient_name_norm="DOE^J"))
    assert statements.update(patient, patient_name="ROE^J", patient_sex="F") == 1
    stored = Patient.objects.get(pk=patient.pk)
    assert (stored.patient_name, stored.patient_sex) == ("ROE^J", "F")
    assert patient.patient_name == "ROE^J"
    sender = Sender.objects.create(sending_application="RIS")
    message = Message.objects.create(raw=b"x")
    statements.update(message, sender=sender)  # a foreign key by name takes an instance
    assert Message.objects.get(pk=message.pk).sender_id == sender.pk


def test_errors_are_djangos_and_atomic_blocks_hold():
    Patient.objects.create(patient_id="P1")
    with pytest.raises(IntegrityError):  # the unique constraint, as django.db's error
        with transaction.atomic():
            statements.insert(Patient(patient_id="P1"))
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            statements.insert(Patient(patient_id="P2"))
            raise RuntimeError("roll back")
    assert list(Patient.objects.values_list("patient_id", flat=True)) == ["P1"]


def test_execute_takes_djangos_placeholders_and_raises_djangos_errors():
    table = Patient._meta.db_table
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    statements.execute(f"INSERT INTO {table} (patient_id, issuer_of_patient_id, patient_name, "
                 "patient_name_norm, patient_birth_date, patient_sex, created_at) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s)", ["P1", "", "DOE^J", "DOE^J", "", "", now])
    row = statements.execute(f"SELECT patient_name FROM {table} WHERE patient_id = %s",
                       ["P1"]).fetchone()
    assert row == ("DOE^J",) and Patient.objects.get().patient_name == "DOE^J"
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            statements.execute(f"UPDATE {table} SET patient_id = %s", [None])
    assert Patient.objects.get().patient_id == "P1"


def test_execute_all_runs_a_batch_in_order_and_an_error_undoes_it():
    """One round trip on PostgreSQL (a pipeline), one statement after the other elsewhere:
    the same answers in the batch's order, and an error of any statement raised as
    django.db's, its transaction rolled back with the statements before it."""
    table = Patient._meta.db_table
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    insert = (f"INSERT INTO {table} (patient_id, issuer_of_patient_id, patient_name, "
              "patient_name_norm, patient_birth_date, patient_sex, created_at) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s)")
    with transaction.atomic():
        statements.execute_all([(insert, [f"P{n}", "", f"N{n}", f"N{n}", "", "", now])
                                for n in (1, 2)])
        found = statements.execute_all([
            (f"SELECT patient_name FROM {table} WHERE patient_id = %s", ["P2"]),
            (f"SELECT patient_name FROM {table} WHERE patient_id = %s", ["NONE"]),
            (f"SELECT count(*) FROM {table}", []),
            (f"UPDATE {table} SET patient_sex = %s WHERE patient_id = %s", ["F", "P1"]),
        ])
    assert [c.fetchone() for c in found[:3]] == [("N2",), None, (2,)]
    assert found[3].rowcount == 1
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            statements.execute_all([
                (f"UPDATE {table} SET patient_name = %s WHERE patient_id = %s", ["X", "P1"]),
                (insert, ["P1", "", "DUP", "DUP", "", "", now]),  # unique (id, issuer)
                (f"UPDATE {table} SET patient_name = %s WHERE patient_id = %s", ["Y", "P2"]),
            ])
    assert dict(Patient.objects.values_list("patient_id", "patient_name")) == {
        "P1": "N1", "P2": "N2"}
    assert Patient.objects.get(patient_id="P1").patient_sex == "F"
    statements.execute_all([(f"UPDATE {table} SET patient_name = %s WHERE patient_id = %s",
                             ["Z", "P2"])])  # the connection is usable after the error
    assert Patient.objects.get(patient_id="P2").patient_name == "Z"


def test_checkpointer_keeps_a_deferring_writers_wal_small(settings):
    """A thread that leaves checkpoints to the checkpointer: with pauses the background thread
    keeps the WAL far below the writer's own threshold; under continuous writes (where a
    PASSIVE checkpoint never catches up) the writer's threshold still bounds it."""
    import os
    import time

    from django.db import connection

    from core import checkpoints
    from core.models import AuditEvent

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    wal = f"{connection.settings_dict['NAME']}-wal"
    bound = checkpoints.WRITER_PAGES * 4096
    checkpoints.start()
    try:
        checkpoints.defer()
        connection.close()  # a reconnect defers too (close_old_connections in a listener)
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint")
            assert cursor.fetchone()[0] == checkpoints.WRITER_PAGES
        largest = 0
        for i in range(1500):
            statements.insert_row(AuditEvent, category="test", action="row", detail="x" * 500)
            if i % 50 == 0:
                time.sleep(checkpoints.INTERVAL * 2)  # let the checkpointer run
                largest = max(largest, os.path.getsize(wal))
        assert largest < bound / 2, largest  # the background thread did the work
        for _ in range(4000):  # continuous: ~60 MB of WAL frames without any checkpoint
            statements.insert_row(AuditEvent, category="test", action="row", detail="x" * 500)
        # Without the writer's threshold this reaches ~60 MB. With it, the checkpointer's own
        # pass can still hold the WAL when the writer would restart it (1.51 x the threshold
        # once, on a loaded machine).
        assert os.path.getsize(wal) < bound * 2
        assert AuditEvent.objects.filter(category="test").count() == 5500
    finally:
        checkpoints._deferring.on = False
        checkpoints.stop()
    assert checkpoints._running is None


def test_write_together_groups_jobs_of_threads_each_all_or_nothing(monkeypatch):
    """Jobs of concurrent threads: each gets its own result or its own exception, a failing
    job is undone alone, and (on SQLite) jobs that wait together share a commit."""
    import threading
    import time

    from django.db import connection

    from core.models import AuditEvent

    results: dict[int, object] = {}

    def job(i: int):
        statements.insert(AuditEvent(category="group", action=str(i)))
        if i == 0:
            time.sleep(0.2)  # the others queue meanwhile
        if i == 3:
            raise ValueError("job 3 fails")
        return i * 10

    def worker(i: int) -> None:
        try:
            results[i] = group_commit.write_together(lambda: job(i))
        except ValueError as exc:
            results[i] = exc
        finally:
            connection.close()

    sizes: list[int] = []
    run_group = group_commit._run_group

    def recording(batch):
        sizes.append(len(batch))
        run_group(batch)

    monkeypatch.setattr(group_commit, "_run_group", recording)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    threads[0].start()
    time.sleep(0.05)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert {i: r for i, r in results.items() if i != 3} == {0: 0, 1: 10, 2: 20, 4: 40, 5: 50}
    assert isinstance(results[3], ValueError)
    actions = sorted(AuditEvent.objects.filter(category="group").values_list("action",
                                                                             flat=True))
    assert actions == ["0", "1", "2", "4", "5"]
    assert group_commit._leading is False and not group_commit._waiting
    if connection.vendor == "sqlite":
        assert sum(sizes) == 6
        assert max(sizes) > 1, sizes  # jobs that waited together shared a transaction


def test_write_together_commit_failure_reaches_every_job(monkeypatch):
    from django.db import OperationalError, connection, connections

    from core.models import AuditEvent

    if connection.vendor != "sqlite":
        pytest.skip("group commit is SQLite's")

    def failing_commit(*args, **kwargs):
        raise OperationalError("disk full")

    monkeypatch.setattr(type(connections["default"]), "commit", failing_commit)
    with pytest.raises(OperationalError):
        group_commit.write_together(lambda: statements.insert(AuditEvent(category="c", action="a")))
    monkeypatch.undo()
    connection.close()
    assert not AuditEvent.objects.filter(category="c").exists()


def test_insert_if_new_leaves_an_existing_row_alone():
    first = statements.insert(Patient(patient_id="P9", patient_name="A"), if_new=True)
    assert first is not None and first.pk
    assert statements.insert(Patient(patient_id="P9", patient_name="B"), if_new=True) is None
    assert list(Patient.objects.values_list("patient_name", flat=True)) == ["A"]
    with transaction.atomic():  # no error, so no savepoint needed inside a transaction
        assert statements.insert(Patient(patient_id="P9"), if_new=True) is None
        statements.insert(Patient(patient_id="P10"))
    assert Patient.objects.count() == 2


def test_insert_row_fills_defaults_and_auto_now_like_the_orm():
    from core.models import AuditEvent
    from worklist.models import UpsEvent

    pk = statements.insert_row(AuditEvent, category="admin", action="x", actor="me")
    row = AuditEvent.objects.get(pk=pk)
    assert (row.outcome, row.actor, row.source, row.detail) == ("success", "me", "", "")
    assert abs(row.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    event = UpsEvent.objects.get(pk=statements.insert_row(
        UpsEvent, ae_title="W", workitem_uid="1.2.3", event_type=5, payload={"a": [1]}))
    assert event.payload == {"a": [1]} and event.delivery == "websocket" and event.attempts == 0
    with pytest.raises(TypeError, match="no field"):
        statements.insert_row(AuditEvent, nonsense=1)
