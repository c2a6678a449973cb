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
