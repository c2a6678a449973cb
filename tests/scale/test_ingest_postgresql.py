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
from tests.samples import sample

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
