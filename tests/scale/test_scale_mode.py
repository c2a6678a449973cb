"""Scale mode for real: PostgreSQL, Redis, and a Celery worker process that also runs the DIMSE
SCP as a bootstep (`celery worker --listeners dimse`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from pacs.models import ApplicationEntity, Instance, Study
from pacs.tasks import echo_ae
from tests.portal_process import ROOT
from tests.samples import free_port, sample

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path, settings):
    """A real Celery worker on the test database, with the DIMSE listener inside it."""
    port = free_port()
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "PORTAL_DIMSE_PORT": str(port),
           "PORTAL_DIMSE_HOST": "127.0.0.1", "PORTAL_STORAGE_DIR": str(tmp_path / "dicom"),
           "PORTAL_DATA_DIR": str(tmp_path / "var"), "PORTAL_STORAGE_FSYNC": "0"}
    settings.STORAGE_DIR = tmp_path / "dicom"
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--listeners", "dimse",
         "--concurrency", "2", "--loglevel", "INFO", "-n", f"scale-{port}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while "ready." not in (tmp_path / "worker.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((tmp_path / "worker.log").read_text())
        time.sleep(0.3)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def test_settings_are_scale_mode(settings):
    assert settings.SCALE_MODE and not settings.CELERY_TASK_ALWAYS_EAGER
    assert connection.vendor == "postgresql"


def test_worker_bootstep_receives_images_into_postgresql(worker):
    ApplicationEntity.objects.create(ae_title="STORESCU", host="127.0.0.1", port=104)
    time.sleep(2.5)  # the SCP re-reads the AE table within 2 s
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "emri_small.dcm"]

    def send(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "PORTAL",
                               "127.0.0.1", str(worker), str(sample(name))],
                              capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(4) as pool:  # concurrent associations
        results = list(pool.map(send, names))
    for r in results:
        assert r.returncode == 0 and "E:" not in r.stderr, r.stderr
    assert Instance.objects.count() == 4
    assert Study.objects.count() == 4
    refused = subprocess.run(["/usr/bin/echoscu", "-aet", "NOBODY", "-aec", "PORTAL",
                              "127.0.0.1", str(worker)], capture_output=True, text=True)
    assert "Association Rejected" in refused.stderr


def test_echo_runs_as_a_celery_task_on_the_worker(worker):
    ApplicationEntity.objects.create(ae_title="PORTAL", host="127.0.0.1", port=worker)
    target = ApplicationEntity.objects.get(ae_title="PORTAL")
    result = echo_ae.delay(target.pk, actor="scale-test")
    assert result.get(timeout=60)["ok"] is True
    target.refresh_from_db()
    assert target.last_echo_ok is True


def test_cfind_against_postgresql(worker, tmp_path):
    ApplicationEntity.objects.create(ae_title="FINDSCU", host="127.0.0.1", port=104,
                                     may_store=True, may_query=True)
    time.sleep(2.5)
    for name in ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm"):
        sent = subprocess.run(["/usr/bin/storescu", "-aet", "FINDSCU", "-aec", "PORTAL",
                               "127.0.0.1", str(worker), str(sample(name))],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
    out = tmp_path / "rsp"
    out.mkdir()
    proc = subprocess.run(
        ["/usr/bin/findscu", "-S", "-aet", "FINDSCU", "-aec", "PORTAL", "-X", "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", "ModalitiesInStudy=MR",
         "-k", "PatientName=compressed*", "-k", "StudyInstanceUID", "127.0.0.1", str(worker)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and "E:" not in proc.stderr, proc.stderr
    from pydicom import dcmread

    found = [dcmread(p) for p in out.glob("rsp*.dcm")]
    assert [str(d.PatientName) for d in found] == ["CompressedSamples^MR1"]
