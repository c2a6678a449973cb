"""PORTAL_STORAGE_FSYNC: what is on disk before a store is answered."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydicom import dcmread

from pacs.models import Instance
from pacs.services.ingest import store_instance
from pacs.storage import LocalStorage
from tests.portal_process import ROOT
from tests.samples import encoded, sample

pytestmark = pytest.mark.django_db


def _setting(value: str, data_dir) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PORTAL_STORAGE_FSYNC=value, PORTAL_DATA_DIR=str(data_dir))
    code = ("from django.conf import settings; from django.db import connection;"
            "c = connection.cursor(); c.execute('PRAGMA synchronous');"
            "print(settings.STORAGE_FSYNC, settings.STORAGE_FSYNC_FULL, c.fetchone()[0])")
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-v", "0", "-c",
                           code], env=env, capture_output=True, text=True, cwd=ROOT)


def test_the_setting_chooses_file_syncs_and_sqlite_commits(tmp_path):
    def answer(value: str) -> list[str]:
        return _setting(value, tmp_path).stdout.split()

    # PRAGMA synchronous: 1 = NORMAL, 2 = FULL
    assert answer("on") == answer("1") == answer("") == ["True", "False", "1"]
    assert answer("off") == answer("0") == ["False", "False", "1"]
    assert answer("full") == ["True", "True", "2"]
    wrong = _setting("always", tmp_path)
    assert wrong.returncode != 0 and "must be on, off or full" in wrong.stderr


def test_full_also_syncs_the_folders_that_name_the_file(storage_dir, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    storage = LocalStorage(storage_dir, fsync=True, sync_folders=True)
    store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="t", storage=storage)
    series = (storage_dir / Instance.objects.get().file_key).parent
    # the first file of a series: its folder, and the new folders' names up to the root
    assert synced == [str(series), str(series.parent), str(storage_dir)]
    synced.clear()
    ds = dcmread(sample("CT_small.dcm"))
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
    store_instance(data=encoded(ds), received_from="t", storage=storage)
    assert synced == [str(series)]  # the next file of the series: its folder only
    synced.clear()
    ds.SOPInstanceUID = ds.SOPInstanceUID + "3"  # "on", the default: no folder syncs
    store_instance(data=encoded(ds), received_from="t", storage=LocalStorage(storage_dir))
    assert synced == []
