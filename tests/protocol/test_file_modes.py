"""Patient data on disk is the service account's only: the real `serve` process makes its data
dir 0700 (also one an older install left 0755), its database, WAL and key 0600, and every file
it receives 0600 in 0700 folders; `check_storage` reports anything others may read and
`--fix-modes` repairs it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.portal_process import ROOT, portal_env, start_portal
from tests.samples import sample
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def check_storage(data_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "check_storage",
                           "--no-progress", "--min-age", "0", *args], cwd=ROOT,
                          env=portal_env(data_dir), capture_output=True, text=True, timeout=120)


def test_data_files_are_private_and_checked(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)  # as an older install left it
    portal = start_portal(data_dir, PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1")
    try:
        sent = subprocess.run(["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "PORTAL",
                               "127.0.0.1", str(portal.dimse_port), str(sample("CT_small.dcm"))],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: list((data_dir / "dicom").rglob("*.dcm")), 10, what="the file")
        assert mode(data_dir) == 0o700
        for name in ("portal.sqlite3", "portal.sqlite3-wal", "secret_key"):
            assert mode(data_dir / name) == 0o600, name
        (stored,) = (data_dir / "dicom").rglob("*.dcm")
        assert mode(stored) == 0o600
        folder = stored.parent
        while folder != data_dir:
            assert mode(folder) == 0o700, folder
            folder = folder.parent
    finally:
        portal.stop()
    assert check_storage(data_dir).returncode == 0
    os.chmod(stored, 0o644)
    os.chmod(stored.parent, 0o755)
    os.chmod(data_dir / "portal.sqlite3", 0o644)
    found = check_storage(data_dir)
    assert found.returncode != 0 and "3 readable by others" in found.stdout, found.stdout
    assert str(stored) in found.stdout and "portal.sqlite3" in found.stdout
    fixed = check_storage(data_dir, "--fix-modes")
    assert "made 3 file(s) or folder(s) private" in fixed.stdout and fixed.returncode == 0
    assert (mode(stored), mode(stored.parent), mode(data_dir / "portal.sqlite3")) == (
        0o600, 0o700, 0o600)
