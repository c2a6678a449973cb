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
from tests.waiting import wait_for_port, wait_until

pytestmark = [pytest.mark.scale, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_env() -> dict[str, str]:
    """More environment for the worker (a test parametrizes it)."""
    return {}


@pytest.fixture
def worker(tmp_path, settings, worker_env):
    """A real Celery worker on the test database, with the DIMSE listener inside it."""
    port, hl7_port = free_port(), free_port()
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "PORTAL_DIMSE_PORT": str(port),
           "PORTAL_DIMSE_HOST": "127.0.0.1", "PORTAL_STORAGE_DIR": str(tmp_path / "dicom"),
           "PORTAL_HL7_PORT": str(hl7_port), "PORTAL_HL7_HOST": "127.0.0.1",
           "PORTAL_DATA_DIR": str(tmp_path / "var"), "PORTAL_STORAGE_FSYNC": "0",
           "PORTAL_CONFIG_CACHE_SECONDS": "0", **worker_env}
    settings.STORAGE_DIR = tmp_path / "dicom"
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "-B", "--listeners", "dimse,hl7",
         "--concurrency", "2", "--loglevel", "INFO", "-n", f"scale-{port}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: "ready." in (tmp_path / "worker.log").read_text(), 60, 0.3,
                   "the worker", alive=proc)
    except AssertionError as exc:
        proc.kill()
        raise RuntimeError((tmp_path / "worker.log").read_text()) from exc
    settings.TEST_HL7_PORT = hl7_port
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def test_settings_are_scale_mode(settings):
    assert settings.SCALE_MODE and not settings.CELERY_TASK_ALWAYS_EAGER
    assert connection.vendor == "postgresql"


def test_worker_bootstep_receives_images_into_postgresql(worker):
    ApplicationEntity.objects.create(ae_title="STORESCU", host="127.0.0.1", port=104)
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


def test_storage_commitment_report_comes_from_the_worker(worker):
    """A modality stores into the worker's SCP, asks it for commitment, and gets the report
    from a Celery task (pacs.send_commitment_reports) on an association the worker opens."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StorageCommitmentPushModel

    from tests.peers import start_commitment_listener

    port = free_port()
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=port)
    stored = subprocess.run(["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "PORTAL",
                             "127.0.0.1", str(worker), str(sample("CT_small.dcm"))],
                            capture_output=True, text=True, timeout=60)
    assert stored.returncode == 0, stored.stderr
    ct = dcmread(sample("CT_small.dcm"))
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ct.SOPClassUID, ct.SOPInstanceUID
    info = Dataset()
    info.TransactionUID, info.ReferencedSOPSequence = "1.2.3.4.200", [item]
    server, received = start_commitment_listener(port)
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", worker, ae_title="PORTAL")
        assert assoc.is_established
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel,
                                        "1.2.840.10008.1.20.1.1")
        assoc.release()
        assert status.Status == 0x0000
        calling, event_type, report = received.get(timeout=30)
    finally:
        server.shutdown()
    assert (calling, event_type, report.TransactionUID) == ("PORTAL", 1, "1.2.3.4.200")
    assert report.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID


def test_forwarding_rule_sends_from_a_worker_task(worker, tmp_path):
    """Instances stored into the worker's SCP that match a rule reach the destination through
    a Celery task (pacs.send_forward_queue)."""
    from pacs.models import ForwardingRule, ForwardItem
    from tests.peers import Storescp

    ApplicationEntity.objects.create(ae_title="STORESCU", host="127.0.0.1", port=104)
    dest = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=free_port())
    ForwardingRule.objects.create(name="CT", destination=dest, modalities="CT")
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        stored = subprocess.run(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "PORTAL",
                                 "127.0.0.1", str(worker), str(sample("CT_small.dcm")),
                                 str(sample("MR_small.dcm"))],
                                capture_output=True, text=True, timeout=60)
        assert stored.returncode == 0, stored.stderr
        received = scp.received(1, timeout=30)
    finally:
        scp.stop()
    assert [d.Modality for d in received] == ["CT"]
    assert list(ForwardItem.objects.values_list("status", flat=True)) == ["sent"]


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


def test_send_job_runs_on_the_worker_and_cmove_from_its_scp(worker, tmp_path):
    """A job created here is executed by the Celery worker (Redis queue); then a C-MOVE to
    the worker's SCP sends the same study to a third-party storescp."""
    from pacs.models import Job
    from pacs.services import jobs

    dest_port, out = free_port(), tmp_path / "dest"
    out.mkdir()
    storescp = subprocess.Popen(["/usr/bin/storescp", "-aet", "DEST", "-od", str(out),
                                 str(dest_port)])
    try:
        ApplicationEntity.objects.create(ae_title="MOVESCU", host="127.0.0.1", port=104,
                                         may_store=True, may_retrieve=True)
        dest = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1",
                                                port=dest_port, is_move_destination=True)
        sent = subprocess.run(["/usr/bin/storescu", "-aet", "MOVESCU", "-aec", "PORTAL",
                               "127.0.0.1", str(worker), str(sample("CT_small.dcm"))],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        study = Study.objects.get()
        job = jobs.create_job(kind=Job.Kind.SEND, remote=dest, level="STUDY",
                              keys={"StudyInstanceUID": study.study_instance_uid},
                              actor="scale-test")
        wait_until(lambda: job.refresh_from_db() or job.is_final, 60, 0.2, "the send job")
        assert (job.state, job.completed) == ("done", 1), job.error
        (received,) = out.iterdir()
        received.unlink()
        moved = subprocess.run(
            ["/usr/bin/movescu", "-S", "-aet", "MOVESCU", "-aec", "PORTAL", "-aem", "DEST",
             "-k", "QueryRetrieveLevel=STUDY", "-k",
             f"StudyInstanceUID={study.study_instance_uid}", "127.0.0.1", str(worker)],
            capture_output=True, text=True, timeout=60)
        assert moved.returncode == 0 and "E:" not in moved.stderr, moved.stderr
        assert [p.name for p in out.iterdir()] == [received.name]
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)


def test_worklist_and_mpps_through_the_worker_on_postgresql(worker):
    """An order created here (PostgreSQL) is found by MWL C-FIND at the worker's listener and
    moved to IN PROGRESS by its MPPS service."""
    import datetime as dt

    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

    from worklist import services
    from worklist.models import ScheduledProcedureStep

    ApplicationEntity.objects.create(ae_title="CT9", host="127.0.0.1", port=104,
                                     may_query_worklist=True, may_send_mpps=True)
    services.create_order(patient=services.PatientData("PG1", "SCALE^TEST"), procedure=None,
                          step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 1, 8),
                                                 station_ae_title="CT9"), actor="scale")
    ae = AE(ae_title="CT9")
    ae.add_requested_context(MWL)
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", worker, ae_title="PORTAL")
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = ""
        query.AccessionNumber = ""
        item = Dataset()
        item.ScheduledStationAETitle = "CT9"
        item.ScheduledProcedureStepID = ""
        query.ScheduledProcedureStepSequence = [item]
        answers = [a for s, a in assoc.send_c_find(query, MWL) if s.Status == 0xFF00]
        assert [str(a.PatientName) for a in answers] == ["SCALE^TEST"]
        performed = Dataset()
        ref = Dataset()
        ref.AccessionNumber = answers[0].AccessionNumber
        sps = answers[0].ScheduledProcedureStepSequence[0]
        ref.ScheduledProcedureStepID = sps.ScheduledProcedureStepID
        performed.ScheduledStepAttributesSequence = [ref]
        performed.PerformedProcedureStepStatus = "IN PROGRESS"
        assert assoc.send_n_create(performed, MPPS, generate_uid())[0].Status == 0
    finally:
        assoc.release()
    assert ScheduledProcedureStep.objects.get().status == "IN PROGRESS"


def test_hl7_order_through_the_workers_listener_into_postgresql(worker, settings,
                                                                hl7_senders):
    """An ORM^O01 over MLLP to the worker's HL7 listener: AA, and the order is in PostgreSQL."""
    from hl7.client import MLLPClient

    from worklist.models import Order

    obr = ["OBR", "1", "PL1", "", "CTCHEST^CT chest^L"] + [""] * 20
    obr[18], obr[24] = "SCALEACC1", "CT"
    message = "\r".join([
        "MSH|^~\\&|RIS|H|PORTAL|H|20261122120000||ORM^O01|SC1|P|2.3.1",
        "PID|||SCALE7^^^H||SCALE^SEVEN", "ORC|NW|PL1", "|".join(obr)]) + "\r"
    with MLLPClient("127.0.0.1", settings.TEST_HL7_PORT) as client:
        ack = client.send_message(message)
    assert b"MSA|AA|SC1" in ack
    assert Order.objects.get(accession_number="SCALEACC1").patient.patient_id == "SCALE7"


def test_dicomweb_on_postgresql(web, dicomweb, settings):
    """STOW-RS, QIDO-RS and WADO-RS metadata/bulk data with the index on PostgreSQL (jsonb)."""
    from pydicom import dcmread

    settings.DICOMWEB_BASE_URL = f"{web}/dicomweb"
    datasets = [dcmread(sample(n)) for n in ("CT_small.dcm", "emri_small.dcm")]
    assert len(dicomweb.store_instances(datasets).ReferencedSOPSequence) == 2
    ct = datasets[0]
    found = dicomweb.search_for_studies(search_filters={"PatientName": "compressed*"},
                                        fields=["all"])
    assert ct.StudyInstanceUID in {s["0020000D"]["Value"][0] for s in found}
    meta = dicomweb.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID,
                                               ct.SOPInstanceUID)
    assert meta["7FE00010"]["BulkDataURI"].startswith(f"{web}/dicomweb/studies/")
    assert dicomweb.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"]) == [ct.PixelData]


def _subscriber_and_workitem(port: int, patient_id: str) -> str:
    """AINODE (a UPS subscriber that may claim) at ``port``, and a new workitem's UID."""
    import datetime as dt

    from worklist import services

    ApplicationEntity.objects.create(ae_title="AINODE", host="127.0.0.1", port=port,
                                     may_query_worklist=True, may_send_mpps=True)
    order = services.create_order(
        patient=services.PatientData(patient_id, "EVENT^TEST"), procedure=None,
        step=services.StepData(modality="MR", start=dt.datetime(2026, 12, 1, 9)), actor="scale")
    return order.procedures.get().steps.get().ups_instance_uid


def _subscribed(port: int, uid: str):
    """An association of AINODE with the worker's SCP, subscribed to the workitem ``uid``."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import UnifiedProcedureStepPull as PULL
    from pynetdicom.sop_class import UnifiedProcedureStepWatch as WATCH

    ae = AE(ae_title="AINODE")
    ae.add_requested_context(WATCH)
    ae.add_requested_context(PULL)
    assoc = ae.associate("127.0.0.1", port, ae_title="PORTAL")
    assert assoc.is_established
    subscribe = Dataset()
    subscribe.DeletionLock = "FALSE"
    assert assoc.send_n_action(subscribe, 3, WATCH, uid)[0].Status == 0x0000
    return assoc


def _claim_and_report_progress(assoc, uid: str, percents) -> None:
    """Over ``assoc``: claim the workitem (IN PROGRESS), report each progress; release."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom.sop_class import UnifiedProcedureStepPull as PULL

    try:
        claim = Dataset()
        claim.ProcedureStepState = "IN PROGRESS"
        claim.TransactionUID = mine = generate_uid()
        assert assoc.send_n_action(claim, 1, PULL, uid)[0].Status == 0x0000
        for percent in percents:
            update = Dataset()
            update.TransactionUID = mine
            item = Dataset()
            item.ProcedureStepProgress = str(percent)
            update.ProcedureStepProgressInformationSequence = [item]
            assert assoc.send_n_set(update, PULL, uid)[0].Status == 0x0000
    finally:
        assoc.release()


def _all_received_once(server, received, count: int) -> list:
    """The ``count`` events the event SCP receives, and nothing more within 2 s; then it
    stops."""
    try:
        events = [received.get(timeout=30) for _ in range(count)]
        time.sleep(2)  # anything sent twice would arrive by now
        assert received.empty()
    finally:
        server.shutdown()
    return events


def test_ups_events_reach_a_dimse_subscriber_that_comes_up_later(worker):
    """The worker's task retries an N-EVENT-REPORT with backoff until the subscriber answers."""
    from tests.peers import start_event_scp
    from worklist.models import UpsEvent

    port = free_port()  # nothing listens there yet
    uid = _subscriber_and_workitem(port, "PG2")
    assoc = _subscribed(worker, uid)
    assoc.release()
    wait_until(UpsEvent.objects.filter(attempts__gte=1).exists, 30, what="a first attempt")
    server, received = start_event_scp(port)
    try:
        event_uid, kind, info = received.get(timeout=30)
        assert (event_uid, kind, info.ProcedureStepState) == (uid, 1, "SCHEDULED")
    finally:
        server.shutdown()


def test_ups_events_go_out_once_each_and_in_order_from_two_worker_processes(worker):
    """Each change enqueues a task; the worker's two processes must not both send the same
    pending events."""

    from tests.peers import start_event_scp

    server, received = start_event_scp(free_port(), delay=0.1)  # a slow subscriber
    uid = _subscriber_and_workitem(server.server_address[1], "PG3")
    _claim_and_report_progress(_subscribed(worker, uid), uid, range(10, 100, 10))
    events = _all_received_once(server, received, 11)
    kinds = [kind for _, kind, _ in events]
    assert kinds == [1, 1] + [3] * 9
    progress = [int(info.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress)
                for _, kind, info in events if kind == 3]
    assert progress == list(range(10, 100, 10))


def _attempts_allowed(elapsed: float) -> int:
    """How many delivery attempts the backoff schedule (core.retry) makes in ``elapsed``
    seconds: the first at once, then one after each delay."""
    from core.retry import retry_delay

    attempts, at = 1, 0.0
    while (delay := retry_delay(attempts)) is not None and at + delay <= elapsed:
        attempts, at = attempts + 1, at + delay
    return attempts


def test_ups_events_for_a_subscriber_that_is_down_are_tried_on_one_schedule(worker):
    """Every change wakes the subscriber's delivery, but one task retries it: the oldest
    event's attempts follow the backoff (1, 2, 5 s) instead of growing with each change. Once
    the subscriber is up, the events arrive once each and in order."""

    from tests.peers import start_event_scp
    from worklist.models import UpsEvent

    port = free_port()  # nothing listens there yet
    uid = _subscriber_and_workitem(port, "PG4")
    assoc = _subscribed(worker, uid)
    started = time.monotonic()
    _claim_and_report_progress(assoc, uid, (20, 40, 60, 80, 90))
    time.sleep(max(0.0, started + 4.5 - time.monotonic()))  # attempts at ~0, 1 and 3 s
    oldest = UpsEvent.objects.filter(ae_title="AINODE").order_by("pk").first()
    assert UpsEvent.objects.filter(ae_title="AINODE").count() == 7
    # However slow the machine, the backoff allows no more attempts than its schedule has
    # points by now, and seven changes on their own schedules would have made seven or more.
    assert 1 <= oldest.attempts <= _attempts_allowed(time.monotonic() - started), \
        oldest.attempts
    events = _all_received_once(*start_event_scp(port), 7)
    assert [kind for _, kind, _ in events] == [1, 1, 3, 3, 3, 3, 3]
    assert [info.ProcedureStepState for _, kind, info in events if kind == 1] == [
        "SCHEDULED", "IN PROGRESS"]


def test_hl7_status_messages_reach_a_receiver_that_was_down_in_order_once_each(worker):
    """Two steps start while the RIS is down; they complete once the IP messages are deep in
    their backoff, and the RIS comes up. It gets IP, IP, CM, CM as they were made, once each,
    not the CM messages first on schedules of their own."""
    import datetime as dt

    from hl7gw.models import Outbound, Receiver
    from tests.peers import Hl7Server
    from worklist import services
    from worklist.models import ScheduledProcedureStep

    port = free_port()
    Receiver.objects.create(name="RIS", host="127.0.0.1", port=port)
    for n in (1, 2):
        services.create_order(
            patient=services.PatientData(f"PG-HL7-{n}", "STATUS^TEST"), procedure=None,
            step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 1, 9 + n)),
            actor="scale")
    steps = list(ScheduledProcedureStep.objects.order_by("pk"))
    for step in steps:
        services.set_step_status(step, "IN PROGRESS", source="portal", actor="scale")
    # the next try in 2 s
    wait_until(Outbound.objects.filter(attempts__gte=2).exists, 30, what="a second attempt")
    for step in steps:
        services.set_step_status(step, "COMPLETED", source="portal", actor="scale")
    server = Hl7Server(port).start()
    try:
        wait_until(lambda: len(server.received) >= 4, 30,
                   what=lambda: f"4 messages, {len(server.received)} so far")
        time.sleep(2)  # anything sent twice would arrive by now
        received = [(str(m.segment("MSH")[10]), str(m.segment("ORC")[5]))
                    for m in server.received]
    finally:
        server.stop()
    made = list(Outbound.objects.order_by("pk").values_list("control_id", "order_status"))
    assert [status for _, status in made] == ["IP", "IP", "CM", "CM"]
    assert received == made


@pytest.mark.parametrize("worker_env", [{"PORTAL_DELIVERY_SWEEP_SECONDS": "1"}])
def test_a_status_message_whose_task_was_lost_is_still_sent(worker, monkeypatch):
    """The message is queued but its task never reaches the broker (as when Redis loses it):
    the delivery sweep (Celery beat) finds the pending message with no task and sends it;
    without the sweep it would wait for the receiver's next message, however long that took."""
    import datetime as dt

    from hl7gw.models import Outbound, Receiver
    from hl7gw.outbound import service as outbound
    from tests.peers import Hl7Server
    from worklist import services
    from worklist.models import ScheduledProcedureStep

    port = free_port()
    server = Hl7Server(port).start()
    try:
        Receiver.objects.create(name="RIS", host="127.0.0.1", port=port)
        monkeypatch.setattr(outbound.courier, "wake", lambda *a, **k: None)  # the lost task
        services.create_order(
            patient=services.PatientData("PG-LOST-1", "LOST^TASK"), procedure=None,
            step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 1, 9)),
            actor="scale")
        step = ScheduledProcedureStep.objects.get()
        services.set_step_status(step, "IN PROGRESS", source="portal", actor="scale")
        (pending,) = Outbound.objects.all()
        assert pending.status == Outbound.Status.PENDING and pending.attempts == 0
        wait_until(lambda: server.received, timeout=20, what="the pending message")
        assert [str(m.segment("MSH")[10]) for m in server.received] == [pending.control_id]
    finally:
        server.stop()
    pending.refresh_from_db()
    assert pending.status == Outbound.Status.SENT


def test_two_web_processes_send_each_ups_event_once_to_a_subscribers_two_channels(tmp_path):
    """Scale mode runs several ASGI processes; a subscriber's two channels, one on each, take
    turns at its outbox through a Redis lock: each event once, in order."""
    import contextlib
    import datetime as dt
    import json

    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token
    from websockets.sync.client import connect

    from pacs.models import ApplicationEntity
    from worklist import services, ups_events
    from worklist.models import ScheduledProcedureStep

    user = User.objects.create_user("ws", password="x")
    key = Token.objects.create(user=user).key
    # the account bound to the subscriber AE is the one whose channels take its events
    ApplicationEntity.objects.create(ae_title="TWIN2", host="127.0.0.1", port=104, account=user)
    db = connection.settings_dict
    env = {**os.environ, "PORTAL_DATA_DIR": str(tmp_path / "var"),
           "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:"
                           f"{db['PORT']}/{db['NAME']}"}
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "uvicorn", "portal.asgi:application",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level",
                               "warning"], cwd=ROOT, env=env) for port in ports]
    try:
        ups_events.subscribe(ups_events.GLOBAL, "TWIN2")
        with contextlib.ExitStack() as stack:
            channels = []
            for port in ports:
                wait_for_port(port, 30)  # uvicorn has started
                channels.append(stack.enter_context(connect(
                    f"ws://127.0.0.1:{port}/dicomweb/subscribers/TWIN2",
                    additional_headers={"Authorization": f"Token {key}"})))
            for n in range(5):
                services.create_order(
                    patient=services.PatientData(f"PG-WS-{n}", "CHANNEL^TEST"), procedure=None,
                    step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 1, 9, n)),
                    actor="scale")
            for step in ScheduledProcedureStep.objects.order_by("pk"):
                services.set_step_status(step, "IN PROGRESS", source="portal", actor="scale")
            got: list[list[tuple[str, str]]] = [[], []]
            deadline, quiet_until = time.monotonic() + 30, time.monotonic() + 3
            while time.monotonic() < quiet_until:  # until nothing more came for 3 s
                assert time.monotonic() < deadline
                for n, ws in enumerate(channels):
                    try:
                        event = json.loads(ws.recv(timeout=0.05))
                    except TimeoutError:
                        continue
                    got[n].append((event["00001000"]["Value"][0],
                                   event["00741000"]["Value"][0]))
                    quiet_until = time.monotonic() + 3
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)
    uids = list(ScheduledProcedureStep.objects.order_by("pk")
                .values_list("ups_instance_uid", flat=True))
    expected = ([(uid, "SCHEDULED") for uid in uids] + [(uid, "IN PROGRESS") for uid in uids])
    assert sorted(got[0] + got[1], key=expected.index) == expected  # once each
    for events in got:
        assert events == sorted(events, key=expected.index)  # in order on each channel


def test_retry_now_sends_at_once_while_the_task_waits_out_its_backoff(worker):
    """The scheduled task waits 5 s after the third failed attempt; Retry now (the outbound
    page's button) must not wait for it."""
    import datetime as dt

    from hl7gw.models import Outbound, Receiver
    from hl7gw.outbound import service as outbound_service
    from tests.peers import Hl7Server
    from worklist import services
    from worklist.models import ScheduledProcedureStep

    port = free_port()
    Receiver.objects.create(name="RIS", host="127.0.0.1", port=port)
    services.create_order(
        patient=services.PatientData("PG-RETRY", "RETRY^NOW"), procedure=None,
        step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 1, 9)), actor="scale")
    step = ScheduledProcedureStep.objects.get()
    services.set_step_status(step, "IN PROGRESS", source="portal", actor="scale")
    # attempts at ~0, 1 and 3 s; the next at ~8 s
    wait_until(lambda: Outbound.objects.get().attempts >= 3, 30, 0.05, "a third attempt")
    server = Hl7Server(port).start()
    try:
        asked = time.monotonic()
        outbound_service.retry(Outbound.objects.get())
        while not server.received:
            assert time.monotonic() < asked + 2.5, "waited for the scheduled retry"
            time.sleep(0.05)
        while Outbound.objects.get().status != "sent":  # saved once the ACK is read
            assert time.monotonic() < asked + 10
            time.sleep(0.05)
    finally:
        server.stop()


def test_the_web_node_tells_whether_the_workers_listeners_are_up(worker, web):
    """The worker's listeners say they are up in the shared database (core.health); the web
    node's readiness endpoint checks them, the broker too, and says when one stops."""
    import socket

    import requests

    answer = requests.get(f"{web}/health/ready?listeners=dimse,hl7", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"]["broker"] == "ok"
    node = socket.gethostname()
    assert requests.get(f"{web}/health/ready?listeners=dimse&node={node}",
                        timeout=10).status_code == 200
    from core.models import ListenerStatus

    assert ListenerStatus.objects.get(name="dimse").port == worker
