"""Several hosts, no shared disk: a web node and two worker nodes as separate processes, each
with its own data folder and its own loopback address (127.0.0.11, .12, .13), sharing only
PostgreSQL, Redis and the object store (PORTAL_TEST_S3_ENDPOINT: scripts/objectstore.sh).

A modality stores through worker A; the study is retrieved by WADO-RS from the web node and by
C-MOVE through worker B. An HL7 order arrives at worker B and is seen in the worklist through
worker A. Worker A killed mid-store loses nothing it acknowledged, and the modality's retry
through worker B completes the study."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection
from pydicom import dcmread

from pacs.models import ApplicationEntity, Instance
from tests import stored
from tests.portal_process import ROOT, portal_env
from tests.samples import encoded, free_port, sample
from tests.waiting import wait_for_port, wait_until

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not stored.object_store(),
                                 reason="needs PORTAL_TEST_S3_ENDPOINT (scripts/objectstore.sh)")]

WEB, WORKER_A, WORKER_B = "127.0.0.11", "127.0.0.12", "127.0.0.13"


@dataclass
class Node:
    name: str
    host: str
    proc: subprocess.Popen
    log: Path
    data_dir: Path
    port: int  # HTTP for the web node, DICOM for a worker
    hl7_port: int = 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the node's whole process group: a power cut, as far as it knows."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def site(tmp_path, settings, storage_dir):
    """The three nodes on this test's database and bucket (the ``storage_dir`` fixture made
    the bucket's settings)."""
    db = connection.settings_dict
    shared = {
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/"
                        f"{db['NAME']}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "PORTAL_STORAGE_URL": settings.STORAGE_URL,
        "PORTAL_S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL,
        "PORTAL_S3_ACCESS_KEY_ID": settings.S3_ACCESS_KEY_ID,
        "PORTAL_S3_SECRET_ACCESS_KEY": settings.S3_SECRET_ACCESS_KEY,
        "PORTAL_STORAGE_FSYNC": "0",
    }
    nodes: list[Node] = []

    def start(name: str, host: str, command: list[str], port: int, hl7_port: int = 0,
              **env: str) -> Node:
        folder = tmp_path / name
        folder.mkdir()
        environment = {**portal_env(folder / "var"), **shared, "PORTAL_NODE_NAME": name,
                       "PORTAL_STORAGE_DIR": str(folder / "dicom"), **env}
        log = folder / "node.log"
        proc = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, host, proc, log, folder, port, hl7_port)
        nodes.append(node)
        return node

    def worker(name: str, host: str) -> Node:
        port, hl7_port = free_port(), free_port()
        node = start(name, host, [
            sys.executable, "-m", "celery", "-A", "portal", "worker", "--listeners", "dimse,hl7",
            "--concurrency", "2", "--loglevel", "INFO", "-n", f"{name}-{port}@%h"],
            port, hl7_port, PORTAL_DIMSE_HOST=host, PORTAL_DIMSE_PORT=str(port),
            PORTAL_HL7_HOST=host, PORTAL_HL7_PORT=str(hl7_port))
        return node

    web_port = free_port()
    web = start("web", WEB, [sys.executable, "manage.py", "serve", "--no-migrate", "--no-dimse",
                             "--no-hl7"], web_port, PORTAL_HTTP_HOST=WEB,
                PORTAL_HTTP_PORT=str(web_port), PORTAL_WS_PORT=str(free_port()),
                DJANGO_ALLOWED_HOSTS=WEB)
    a, b = worker("worker-a", WORKER_A), worker("worker-b", WORKER_B)
    try:
        for node in (a, b):
            wait_until(lambda n=node: "ready." in n.output(), 90, 0.3, f"{node.name}",
                       alive=node.proc)
            wait_for_port(node.port, 30, host=node.host, alive=node.proc)
        wait_for_port(web.port, 60, host=WEB, alive=web.proc)
    except AssertionError as exc:
        for node in nodes:
            node.stop()
        raise RuntimeError("\n".join(f"--- {n.name}\n{n.output()[-3000:]}" for n in nodes)) \
            from exc
    yield {"web": web, "a": a, "b": b}
    for node in nodes:
        node.stop()


def _ct_series(tmp_path: Path, count: int) -> list[Path]:
    """``count`` CT images of one new study, as files a modality sends."""
    base = dcmread(sample("CT_small.dcm"))
    study, series = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    folder = tmp_path / "modality"
    folder.mkdir(exist_ok=True)
    files = []
    for n in range(1, count + 1):
        base.StudyInstanceUID, base.SeriesInstanceUID = study, series
        base.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
        base.InstanceNumber = n
        path = folder / f"ct{n:03}.dcm"
        path.write_bytes(encoded(base))
        files.append(path)
    return files


def _storescu(node: Node, files: list[Path], **popen) -> subprocess.Popen:
    return subprocess.Popen(["/usr/bin/storescu", "-v", "-aet", "MODALITY", "-aec", "PORTAL",
                             node.host, str(node.port), *map(str, files)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _acknowledged(output: str) -> list[str]:
    """The files storescu sent and got a success status for (its -v log)."""
    done, current = [], None
    for line in output.splitlines():
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
            current = None
    return done


def test_store_on_one_worker_retrieve_through_the_web_node_and_the_other_worker(
        site, tmp_path, token):
    from dicomweb_client.api import DICOMwebClient

    from tests.peers import Storescp

    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_retrieve=True)
    dest = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=free_port(),
                                            is_move_destination=True)
    files = _ct_series(tmp_path, 5)
    sent = _storescu(site["a"], files)
    out, _ = sent.communicate(timeout=120)
    assert sent.returncode == 0 and len(_acknowledged(out)) == 5, out
    study = dcmread(files[0]).StudyInstanceUID
    # the files are in the bucket, none on worker A's disk
    assert len(stored.keys()) == 5
    assert not list((site["a"].data_dir / "dicom").rglob("*.dcm"))

    client = DICOMwebClient(f"http://{WEB}:{site['web'].port}/dicomweb",
                            headers={"Authorization": f"Token {token}"})
    retrieved = client.retrieve_study(study)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in retrieved}
    for path in files:
        original = dcmread(path)
        assert by_uid[original.SOPInstanceUID].PixelData == original.PixelData

    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        moved = subprocess.run(["/usr/bin/movescu", "-S", "-aet", "MODALITY", "-aec", "PORTAL",
                                "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
                                "-k", f"StudyInstanceUID={study}", WORKER_B,
                                str(site["b"].port)], capture_output=True, text=True,
                               timeout=120)
        assert moved.returncode == 0 and "E:" not in moved.stderr, moved.stderr
        received = scp.received(5, timeout=60)
    finally:
        scp.stop()
    assert {str(ds.SOPInstanceUID) for ds in received} == set(by_uid)


def test_an_order_at_one_worker_is_in_the_worklist_of_the_other(site, hl7_senders):
    from hl7.client import MLLPClient
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

    ApplicationEntity.objects.create(ae_title="CT7", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    obr = ["OBR", "1", "MH1", "", "CTHEAD^CT head^L"] + [""] * 20
    obr[18], obr[24] = "HOSTACC1", "CT"
    message = "\r".join([
        "MSH|^~\\&|RIS|H|PORTAL|H|20261207090000||ORM^O01|MH1|P|2.3.1",
        "PID|||HOST7^^^H||MULTI^HOST", "ORC|NW|MH1", "|".join(obr)]) + "\r"
    with MLLPClient(WORKER_B, site["b"].hl7_port) as client:
        ack = client.send_message(message)
    assert b"MSA|AA|MH1" in ack, ack
    ae = AE(ae_title="CT7")
    ae.add_requested_context(MWL)
    assoc = ae.associate(WORKER_A, site["a"].port, ae_title="PORTAL")
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = ""
        query.AccessionNumber = "HOSTACC1"
        item = Dataset()
        item.Modality = "CT"
        item.ScheduledProcedureStepStartDate = ""
        query.ScheduledProcedureStepSequence = [item]
        answers = [a for s, a in assoc.send_c_find(query, MWL) if s.Status == 0xFF00]
    finally:
        assoc.release()
    assert [str(a.PatientName) for a in answers] == ["MULTI^HOST"]


def test_a_worker_killed_mid_store_loses_nothing_it_acknowledged(site, tmp_path):
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104)
    files = _ct_series(tmp_path, 150)
    sending = _storescu(site["a"], files)
    lines: list[str] = []
    wait_until(lambda: (lines.append(sending.stdout.readline()) or
                        sum("Received Store Response (Success)" in x for x in lines) >= 10),
               60, 0, "ten acknowledged images")
    site["a"].kill()  # mid-association: storescu is still sending
    rest, _ = sending.communicate(timeout=60)
    acknowledged = _acknowledged("".join(lines) + rest)
    assert 10 <= len(acknowledged) < 150
    # everything acknowledged is indexed and its object is whole in the bucket: the data set
    # as sent (storescu leaves out the sample's Data Set Trailing Padding, PS3.10 7.2)
    rows = dict(Instance.objects.values_list("sop_instance_uid", "file_key"))
    for path in acknowledged:
        sent = dcmread(path)
        del sent[0xFFFCFFFC]
        assert stored.dataset(rows[sent.SOPInstanceUID]) == sent
    # the modality sends the study again, through the other worker
    retry = _storescu(site["b"], files)
    out, _ = retry.communicate(timeout=180)
    assert retry.returncode == 0 and len(_acknowledged(out)) == 150, out
    study = dcmread(files[0]).StudyInstanceUID
    assert Instance.objects.filter(series__study__study_instance_uid=study).count() == 150
    assert django_settings.STORAGE_URL.startswith("s3://")
    web = site["web"]
    ready = requests.get(f"http://{WEB}:{web.port}/health/ready", timeout=10).json()
    assert ready["checks"]["storage"] == "ok", ready
