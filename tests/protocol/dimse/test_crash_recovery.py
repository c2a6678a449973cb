"""SIGKILL the whole portal while storescu sends, three times over, then check_storage.

Whatever a kill leaves, it is never an instance without its file or a file of the wrong size:
at most orphans (files published just before a COMMIT that never came), which
``check_storage --reindex-orphans`` indexes, after which the archive is clean and every file
that arrived is indexed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.portal_process import ROOT, portal_env, process_tree, start_portal
from tests.samples import sample
from tests.waiting import wait_until

pytestmark = pytest.mark.interop

ROUNDS = 3
PER_ROUND = 240
# DCMTK leaves Nagle's algorithm on without this: ~40 ms per instance (bench/ingest.py)
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _make(out: Path, count: int) -> list[Path]:
    ds = dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    out.mkdir(parents=True)
    files = []
    for n in range(count):
        if n % 40 == 0:
            ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        path = out / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _stored(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "dicom").rglob("*.dcm") if ".incoming" not in p.parts]


def _manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT,
                          env=portal_env(data_dir),
                          capture_output=True, text=True, timeout=120)


def _count_rows(data_dir: Path) -> int:
    out = _manage(data_dir, "shell", "-c",
                  "from pacs.models import Instance; print(Instance.objects.count())")
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_a_killed_portal_leaves_at_most_orphans_and_check_storage_mends_them(tmp_path):
    data_dir = tmp_path / "var"
    rng = random.Random(20261205)
    sent: list[Path] = []
    for round_ in range(ROUNDS):
        files = _make(tmp_path / f"round{round_}", PER_ROUND)
        sent += files
        portal = start_portal(data_dir, PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1")
        senders: list[subprocess.Popen] = []
        try:
            senders += [subprocess.Popen(
                ["/usr/bin/storescu", "-aet", "CRASHTEST", "-aec", "PORTAL", "127.0.0.1",
                 str(portal.dimse_port), *map(str, files[i::4])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
                for i in range(4)]
            # mid-stream: once a random part of this round's files is in place
            goal = len(_stored(data_dir)) + rng.randint(20, PER_ROUND // 2)
            wait_until(lambda goal=goal: len(_stored(data_dir)) >= goal, timeout=60, interval=0.005,
                       what="files to arrive")
            for pid in process_tree(portal.proc.pid):
                os.kill(pid, signal.SIGKILL)
            portal.proc.wait(timeout=10)
        finally:
            for proc in senders:
                proc.wait(timeout=60)
            if portal.proc.poll() is None:
                portal.stop()
        # A killed SCP leaves nothing half-done that the check would call missing or short.
        report = _manage(data_dir, "check_storage", "--no-progress", "--min-age", "0")
        assert "0 missing, 0 of the wrong size" in report.stdout, report.stdout + report.stderr
    stored = _stored(data_dir)
    assert len(stored) < len(sent)  # the kills did cut the streams short
    repaired = _manage(data_dir, "check_storage", "--no-progress", "--min-age", "0",
                       "--reindex-orphans")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # Every file that reached its place is indexed, each once.
    assert _count_rows(data_dir) == len(stored)
    # And the modality sending everything again completes the archive.
    portal = start_portal(data_dir, PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1")
    try:
        done = subprocess.run(["/usr/bin/storescu", "-aet", "CRASHTEST", "-aec", "PORTAL",
                               "127.0.0.1", str(portal.dimse_port), *map(str, sent)],
                              capture_output=True, timeout=120, env=DCMTK_ENV)
        assert done.returncode == 0, done.stderr
    finally:
        portal.stop()
    assert _count_rows(data_dir) == len(sent)
    final = _manage(data_dir, "check_storage", "--no-progress", "--min-age", "0")
    assert final.returncode == 0, final.stdout + final.stderr
