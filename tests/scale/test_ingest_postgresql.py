"""Concurrent re-sends of one instance on PostgreSQL, where stores do not queue for one
writer as on SQLite: the instance row is locked while a store decides, so the second one sees
what the first did and no file is left without a row."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from pacs.models import Instance
from pacs.services.ingest import Outcome, store_instance
from pacs.storage import LocalStorage
from tests import stored
from tests.samples import sample
from tests.service.test_ingest import (  # noqa: F401  (collected here too: the 3rd store
    test_a_studys_received_time_follows_its_instances_to_the_second,  # is one statement)
)

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]


def _resend_twice_at_once(data: bytes, monkeypatch) -> list[Outcome]:
    publish = LocalStorage.commit

    def slow_commit(self, pending, key):  # both stores decide before either commits
        publish(self, pending, key)
        time.sleep(0.3)

    monkeypatch.setattr(LocalStorage, "commit", slow_commit)
    outcomes: list[Outcome] = []

    def resend() -> None:
        try:
            outcomes.append(store_instance(data=data, received_from="test").outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=resend) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_two_resends_of_an_instance_whose_file_is_missing_leave_one_file(storage_dir,
                                                                         monkeypatch):
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="test")
    instance = Instance.objects.get()
    (storage_dir / instance.file_key).unlink()
    outcomes = _resend_twice_at_once(data, monkeypatch)
    assert outcomes == sorted([Outcome.REPLACED, Outcome.DUPLICATE])
    files = [p for p in storage_dir.rglob("*.dcm") if ".incoming" not in p.parts]
    assert files == [storage_dir / Instance.objects.get().file_key]


def test_two_replacing_resends_leave_the_newest_file_only(storage_dir, settings, monkeypatch):
    settings.DUPLICATE_POLICY = "replace"
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="test")
    assert _resend_twice_at_once(data, monkeypatch) == [Outcome.REPLACED] * 2
    files = [p for p in storage_dir.rglob("*.dcm") if ".incoming" not in p.parts]
    assert files == [storage_dir / Instance.objects.get().file_key]


def test_deleting_a_study_while_it_is_being_stored_leaves_it_consistent(storage_dir):
    """Two associations store a study while an admin deletes it, twice. Every store
    succeeds (one that met the deletion retries on what is left); afterwards each row has its
    file, each file its row, and the study's computed keys count what is there."""
    from pydicom import dcmread

    from pacs.models import Series, Study
    from pacs.services import deletion
    from tests.samples import encoded

    base = dcmread(sample("CT_small.dcm"))
    study_uid = base.StudyInstanceUID + ".31"
    errors: list[BaseException] = []

    def send(series: int) -> None:
        try:
            for n in range(40):
                ds = dcmread(sample("CT_small.dcm"))
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = f"{study_uid}.{series}"
                ds.SOPInstanceUID = f"{study_uid}.{series}.{n + 1}"
                assert store_instance(data=encoded(ds), received_from="test").outcome == \
                    Outcome.STORED
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    senders = [threading.Thread(target=send, args=(s,)) for s in (1, 2)]
    for thread in senders:
        thread.start()
    deleted = 0
    for _ in range(2):
        while Instance.objects.count() < 10 and any(t.is_alive() for t in senders):
            time.sleep(0.01)
        try:
            deleted += deletion.delete("study", study_uid, actor="boss").instances
        except deletion.NotFound:
            pass
    for thread in senders:
        thread.join()
    assert errors == []
    assert deleted > 0 and Instance.objects.count() + deleted == 80
    rows = set(Instance.objects.values_list("file_key", flat=True))
    files = {str(p.relative_to(storage_dir)) for p in storage_dir.rglob("*.dcm")
             if ".incoming" not in p.parts}
    assert files == rows
    for study in Study.objects.all():
        series = Series.objects.filter(study=study)
        assert study.number_of_series == series.count()
        assert study.number_of_instances == Instance.objects.filter(series__study=study).count()
        for s in series:
            assert s.number_of_instances == s.instances.count()


def _series_images(count: int, study: str = "1.2.826.0.1.3680043.8.498.77", **attributes):
    """``count`` encoded images of one series of CT_small, with ``attributes`` set."""
    from pydicom import dcmread

    from tests.samples import encoded

    images = []
    for n in range(count):
        ds = dcmread(sample("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, f"{study}.1"
        ds.SOPInstanceUID = f"{study}.1.{n + 1}"
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        images.append(encoded(ds))
    return images


@pytest.fixture
def one_statement(monkeypatch):
    """What each store's one-statement path answered (True: it stored the instance)."""
    from pacs.services import ingest

    answers: list[bool] = []
    real = ingest._store_into_known_series

    def spy(*args):
        answers.append(real(*args))
        return answers[-1]

    ingest._known_series.clear()
    monkeypatch.setattr(ingest, "_store_into_known_series", spy)
    return answers


def test_a_series_is_stored_one_statement_per_instance_after_its_first_two(storage_dir,
                                                                             one_statement):
    from pacs.models import Series, Study

    for data in _series_images(6):
        assert store_instance(data=data, received_from="test").outcome == Outcome.STORED
    # the first creates the series, the second finds it and is checked against it
    assert one_statement == [False, False, True, True, True, True]
    series = Series.objects.get()
    assert series.number_of_instances == 6 and Study.objects.get().number_of_instances == 6
    assert set(stored.keys()) == set(Instance.objects.values_list("file_key", flat=True))
    assert not list((storage_dir / ".incoming").glob("*"))
    sixth = Instance.objects.get(sop_instance_uid=f"{series.series_instance_uid}.6")
    assert sixth.file_size == len(_series_images(6)[5]) and sixth.has_pixel_data
    assert sixth.metadata["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert sixth.received_at is not None and sixth.series_id == series.pk


def test_a_resent_instance_of_a_known_series_never_replaces_the_stored_file(storage_dir,
                                                                             one_statement):
    images = _series_images(3)
    for data in images:
        store_instance(data=data, received_from="test")
    key = Instance.objects.get(sop_instance_uid__endswith=".1.3").file_key
    before = stored.read(key)
    changed = _series_images(3, ImageComments="sent again, changed")[2]
    assert changed != before
    assert store_instance(data=changed, received_from="test").outcome == Outcome.DUPLICATE
    assert one_statement[-1] is False
    assert stored.read(key) == before
    assert Instance.objects.count() == 3 and set(stored.keys()) == set(
        Instance.objects.values_list("file_key", flat=True))
    assert not list((storage_dir / ".incoming").glob("*"))


def test_a_study_changed_since_the_series_was_seen_takes_the_general_path(storage_dir,
                                                                          one_statement):
    """The remembered row is a hint: the database decides. A study whose stored attributes
    changed meanwhile gets the general path's discrepancy record; one moved to another
    patient refuses the image."""
    from core.errors import IdentityConflict
    from pacs.models import Discrepancy, Patient, Study

    images = _series_images(5, StudyDescription="CT HEAD")
    for data in images[:3]:
        store_instance(data=data, received_from="test")
    assert one_statement == [False, False, True]
    Study.objects.update(study_description="CT BRAIN")
    assert store_instance(data=images[3], received_from="test").outcome == Outcome.STORED
    assert one_statement[-1] is False
    found = Discrepancy.objects.get(kind=Discrepancy.Kind.STUDY)
    assert "StudyDescription" in found.detail
    assert Study.objects.get().number_of_instances == 4

    other = Patient.objects.create(patient_id="OTHER-1", patient_name="OTHER^ONE")
    Study.objects.update(patient=other)
    with pytest.raises(IdentityConflict):
        store_instance(data=images[4], received_from="test")
    assert one_statement[-1] is False
    assert Instance.objects.count() == 4
    assert set(stored.keys()) == set(Instance.objects.values_list("file_key", flat=True))


def test_a_series_deleted_since_it_was_seen_is_made_again(storage_dir, one_statement):
    from pacs.models import Series, Study
    from pacs.services import deletion

    images = _series_images(5)
    for data in images[:3]:
        store_instance(data=data, received_from="test")
    deletion.delete("study", Study.objects.get().study_instance_uid, actor="boss")
    for data in images[3:]:
        assert store_instance(data=data, received_from="test").outcome == Outcome.STORED
    assert one_statement[3] is False
    assert Series.objects.get().number_of_instances == 2
    assert Study.objects.get().number_of_instances == 2
    assert set(stored.keys()) == set(Instance.objects.values_list("file_key", flat=True))


def test_an_instance_a_forwarding_rule_takes_is_queued_with_it(storage_dir, one_statement):
    from pacs.models import ApplicationEntity, ForwardingRule, ForwardItem
    from pacs.services import forwarding

    destination = ApplicationEntity.objects.create(ae_title="ARCHIVE2", host="127.0.0.1",
                                                   port=11112)
    images = _series_images(4)
    for data in images[:3]:
        store_instance(data=data, received_from="dimse:CT1@127.0.0.1")
    ForwardingRule.objects.create(name="all", destination=destination, enabled=True)
    forwarding.rules.forget()
    try:
        store_instance(data=images[3], received_from="dimse:CT1@127.0.0.1")
    finally:
        ForwardingRule.objects.all().delete()
        forwarding.rules.forget()
    assert one_statement == [False, False, True, False]
    assert list(ForwardItem.objects.values_list("sop_instance_uid", flat=True)) == [
        Instance.objects.get(sop_instance_uid__endswith=".1.4").sop_instance_uid]


def _answer_lost(monkeypatch, target, name: str, when=lambda *args: True):
    """Make ``target.name`` do its work (a COMMIT included), then lose the connection before
    its answer: as when the server commits and the network drops the reply."""
    from django.db import OperationalError

    real = getattr(target, name)

    def lost(*args, **kwargs):
        result = real(*args, **kwargs)
        if not when(*args):
            return result
        connection.connection.close()  # the driver's socket: Django still thinks it is open
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(target, name, lost)


@pytest.mark.parametrize("path", ["general", "one statement"])
def test_a_commit_whose_answer_is_lost_keeps_the_file(storage_dir, one_statement, monkeypatch,
                                                      path):
    """If the connection drops while the server commits a store, the portal cannot know
    whether the row went in: the store fails (the modality sends again), and the file stays,
    so that no row is ever left without its file; the re-send finds both."""
    from django.db import OperationalError

    from core import group_commit, statements
    from pacs.services import ingest

    images = _series_images(3)
    if path == "general":
        _answer_lost(monkeypatch, group_commit, "write_together")
        last = images[0]
    else:
        for data in images[:2]:
            store_instance(data=data, received_from="test")
        _answer_lost(monkeypatch, statements, "execute",
                     when=lambda sql, params: sql == ingest._SQL["insert_known"])
        last = images[2]
    with pytest.raises(OperationalError):
        store_instance(data=last, received_from="test")
    monkeypatch.undo()
    connection.close()  # Django's turn to see the connection gone; the next query reconnects
    kept = Instance.objects.get(sop_instance_uid__endswith=".1.1" if path == "general"
                                else ".1.3")
    assert stored.read(kept.file_key) == last
    assert set(stored.keys()) == set(Instance.objects.values_list("file_key", flat=True))
    assert store_instance(data=last, received_from="test").outcome == Outcome.DUPLICATE
    assert not list((storage_dir / ".incoming").glob("*"))


@pytest.fixture
def commits():
    """The ``synchronous_commit`` in force when each transaction that inserts an instance or a
    storage commitment request commits, in order: a deferred constraint trigger runs at
    COMMIT, where PostgreSQL reads the setting that decides whether COMMIT waits for the
    flush."""
    from pacs.models import CommitmentRequest

    tables = [Instance._meta.db_table, CommitmentRequest._meta.db_table]
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE test_commits (id serial, tbl text, setting text);"
            "CREATE FUNCTION test_note_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO test_commits (tbl, setting) "
            "VALUES (TG_TABLE_NAME, current_setting('synchronous_commit')); RETURN NULL; END $$;"
            + "".join(f"CREATE CONSTRAINT TRIGGER test_note_commit AFTER INSERT ON {table} "
                      "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                      "EXECUTE FUNCTION test_note_commit();" for table in tables))

    def seen() -> list[tuple[str, str]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tbl, setting FROM test_commits ORDER BY id")
            return [("instance" if tbl == tables[0] else "commitment", setting)
                    for tbl, setting in cursor.fetchall()]

    yield seen
    connection.close()  # a test may leave the connection in a failed state
    with connection.cursor() as cursor:
        cursor.execute("".join(f"DROP TRIGGER test_note_commit ON {table};" for table in tables)
                       + "DROP FUNCTION test_note_commit(); DROP TABLE test_commits;")


def _commitment_request(monkeypatch, uids: list[str]) -> None:
    from pacs.services import commitment
    from tests.protocol.dimse.test_commitment import _info, _ref

    monkeypatch.setattr(commitment.courier, "wake", lambda *args, **kwargs: None)
    commitment.request("MODALITY", _info("1.2.826.0.1.3680043.8.498.99",
                                         *(_ref("1.2.840.10008.5.1.4.1.1.2", uid)
                                           for uid in uids)))


def test_with_fsync_on_a_store_commits_without_waiting_for_the_flush(storage_dir, commits,
                                                                     one_statement,
                                                                     monkeypatch):
    """PORTAL_STORAGE_FSYNC=on (the default) promises of the index what SQLite's
    synchronous=NORMAL does: each store's own transaction, on both paths, commits with
    synchronous_commit off; nothing else does: a storage commitment request after the stores
    commits durably (and so flushes them), and the connection keeps the server's setting."""
    images = _series_images(4)
    for data in images:
        store_instance(data=data, received_from="test")
    assert one_statement == [False, False, True, True]
    _commitment_request(monkeypatch, list(Instance.objects.values_list("sop_instance_uid",
                                                                       flat=True)))
    assert commits() == [("instance", "off")] * 4 + [("commitment", "on")]
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_with_fsync_full_every_store_commits_durably(storage_dir, commits, one_statement,
                                                     settings):
    settings.STORAGE_SYNC = "full"
    for data in _series_images(4):
        store_instance(data=data, received_from="test")
    assert one_statement == [False, False, True, True]
    assert commits() == [("instance", "on")] * 4


def test_a_store_inside_a_callers_transaction_leaves_its_commit_alone(storage_dir, commits):
    from django.db import transaction

    with transaction.atomic():
        for data in _series_images(3):
            store_instance(data=data, received_from="test")
    assert commits() == [("instance", "on")] * 3
