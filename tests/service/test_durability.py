"""PORTAL_STORAGE_FSYNC: what is on disk before a store is answered."""

from __future__ import annotations

import os
import shutil
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


def _resident_pages(path) -> int:
    """Pages of ``path`` in the page cache (util-linux ``fincore``)."""
    out = subprocess.run(["fincore", "--noheadings", "--raw", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


@pytest.mark.skipif(not shutil.which("fincore"), reason="util-linux fincore not installed")
def test_a_synced_file_leaves_the_page_cache_unless_told_to_keep_it(storage_dir):
    if subprocess.run(["stat", "-f", "-c", "%T", str(storage_dir)], capture_output=True,
                      text=True).stdout.strip() == "tmpfs":
        pytest.skip("tmpfs keeps every file in memory")
    ds = dcmread(sample("CT_small.dcm"))

    def stored(storage: LocalStorage, n: int):
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID.rsplit('.', 1)[0]}.{n}"
        result = store_instance(data=encoded(ds), received_from="t", storage=storage)
        return storage_dir / Instance.objects.get(sop_instance_uid=result.sop_instance_uid
                                                  ).file_key

    assert _resident_pages(stored(LocalStorage(storage_dir), 1)) == 0  # the default drops it
    kept = stored(LocalStorage(storage_dir, drop_cache=False), 2)
    assert _resident_pages(kept) > 0
    unsynced = stored(LocalStorage(storage_dir, fsync=False), 3)  # dirty pages stay
    assert _resident_pages(unsynced) > 0


def test_drop_cache_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    code = "from django.conf import settings; print(settings.STORAGE_DROP_CACHE)"

    def answer(value: str | None) -> str:
        run_env = {**env, "PORTAL_DATA_DIR": str(tmp_path)}
        if value is not None:
            run_env["PORTAL_STORAGE_DROP_CACHE"] = value
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-v", "0",
                               "-c", code], env=run_env, capture_output=True, text=True,
                              cwd=ROOT).stdout.strip()

    assert answer(None) == answer("on") == "True"
    assert answer("off") == answer("0") == "False"
