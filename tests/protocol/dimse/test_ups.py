"""UPS over DIMSE with pynetdicom as the SCU against the real listener: Push (N-CREATE,
N-ACTION request cancel, N-GET), Pull (C-FIND, N-GET, N-SET, N-ACTION change state) and
Query (C-FIND), on the same workitems as UPS-RS and MWL."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    UnifiedProcedureStepPull as PULL,
)
from pynetdicom.sop_class import (
    UnifiedProcedureStepPush as PUSH,
)
from pynetdicom.sop_class import (
    UnifiedProcedureStepQuery as QUERY,
)
from pynetdicom.sop_class import (
    UnifiedProcedureStepWatch as WATCH,
)

from pacs.models import ApplicationEntity
from tests.waiting import wait_until
from worklist import services
from worklist.models import ScheduledProcedureStep, Station


@pytest.fixture
def ups_ae(transactional_db):
    return ApplicationEntity.objects.create(ae_title="AINODE", host="127.0.0.1", port=104,
                                            may_query_worklist=True, may_send_mpps=True)


@pytest.fixture
def assoc(dimse_listener, ups_ae):
    ae = AE(ae_title="AINODE")
    for sop_class in (PUSH, PULL, QUERY, WATCH):
        ae.add_requested_context(sop_class)
    association = ae.associate("127.0.0.1", dimse_listener.address[1], ae_title="PORTAL")
    assert association.is_established
    yield association
    association.release()


@pytest.fixture
def step(transactional_db):
    order = services.create_order(
        patient=services.PatientData("DUPS1", "DOE^JANE"), procedure=None,
        step=services.StepData(modality="MR", start=dt.datetime(2026, 11, 23, 14, 0),
                               station_ae_title="MR1", description="MR knee"),
        actor="scheduler")
    return order.procedures.get().steps.get()


def workitem() -> Dataset:
    ds = Dataset()
    ds.ProcedureStepState = "SCHEDULED"
    ds.ScheduledProcedureStepPriority = "MEDIUM"
    ds.ProcedureStepLabel = "Bone age AI"
    ds.ScheduledProcedureStepStartDateTime = "20261123150000"
    ds.InputReadinessState = "READY"
    ds.PatientName = "ROE^JOHN"
    ds.PatientID = "DUPS2"
    return ds


def progress_update(transaction: str, percent: str, description: str = "") -> Dataset:
    """An N-SET of the performer's progress."""
    ds = Dataset()
    ds.TransactionUID = transaction
    item = Dataset()
    item.ProcedureStepProgress = percent
    if description:
        item.ProcedureStepProgressDescription = description
    ds.ProcedureStepProgressInformationSequence = [item]
    return ds


def change(state: str, transaction: str) -> Dataset:
    ds = Dataset()
    ds.ProcedureStepState = state
    ds.TransactionUID = transaction
    return ds


def test_push_creates_and_get_reads_it_back(assoc):
    uid = generate_uid()
    status, _ = assoc.send_n_create(workitem(), PUSH, uid)
    assert status.Status == 0x0000
    step = ScheduledProcedureStep.objects.get(ups_instance_uid=uid)
    assert step.requested_procedure.order.patient.patient_id == "DUPS2"
    status, attrs = assoc.send_n_get([0x00741000, 0x00100010, 0x00741204], PULL, uid)
    assert status.Status == 0x0000
    assert attrs.ProcedureStepState == "SCHEDULED"
    assert attrs.PatientName == "ROE^JOHN" and attrs.ProcedureStepLabel == "Bone age AI"
    assert "PatientID" not in attrs  # only what was asked for
    status, _ = assoc.send_n_create(workitem(), PUSH, uid)
    assert status.Status == 0x0111  # duplicate
    missing = workitem()
    del missing.ProcedureStepLabel
    status, _ = assoc.send_n_create(missing, PUSH, generate_uid())
    assert status.Status == 0x0120 and "ProcedureStepLabel" in status.ErrorComment


def test_pull_finds_claims_updates_and_completes(assoc, step):
    query = Dataset()
    query.ProcedureStepState = "SCHEDULED"
    query.PatientID = ""
    query.SOPInstanceUID = ""
    query.ScheduledProcedureStepStartDateTime = ""
    found = [ds for status, ds in assoc.send_c_find(query, PULL) if status.Status == 0xFF00]
    assert [(f.PatientID, f.SOPInstanceUID, f.ProcedureStepState) for f in found] == [
        ("DUPS1", step.ups_instance_uid, "SCHEDULED")]
    assert found[0].ScheduledProcedureStepStartDateTime.startswith("20261123140000")
    mine = generate_uid()
    status, _ = assoc.send_n_action(change("IN PROGRESS", mine), 1, PULL, step.ups_instance_uid)
    assert status.Status == 0x0000
    status, _ = assoc.send_n_action(change("IN PROGRESS", generate_uid()), 1, PULL,
                                    step.ups_instance_uid)
    assert status.Status == 0xC302
    progress = progress_update(mine, "75")
    performed = Dataset()
    performed.PerformedProcedureStepStartDateTime = "20261123140500"
    performed.PerformedProcedureStepEndDateTime = "20261123142000"
    progress.UnifiedProcedureStepPerformedProcedureSequence = [performed]
    status, _ = assoc.send_n_set(progress, PULL, step.ups_instance_uid)
    assert status.Status == 0x0000
    progress.TransactionUID = generate_uid()
    status, _ = assoc.send_n_set(progress, PULL, step.ups_instance_uid)
    assert status.Status == 0xC301
    status, _ = assoc.send_n_action(change("COMPLETED", mine), 1, PULL, step.ups_instance_uid)
    assert status.Status == 0x0000
    status, _ = assoc.send_n_action(change("COMPLETED", mine), 1, PULL, step.ups_instance_uid)
    assert status.Status == 0xB306
    step.refresh_from_db()
    assert step.status == "COMPLETED" and step.progress_percent == 75


def test_query_class_searches_and_push_requests_cancellation(assoc, step):
    query = Dataset()
    query.PatientName = "doe*"
    query.ProcedureStepState = ""
    found = [ds for status, ds in assoc.send_c_find(query, QUERY) if status.Status == 0xFF00]
    assert [f.ProcedureStepState for f in found] == ["SCHEDULED"]
    reason = Dataset()
    reason.ReasonForCancellation = "duplicate order"
    status, _ = assoc.send_n_action(reason, 2, PUSH, step.ups_instance_uid)
    assert status.Status == 0x0000
    step.refresh_from_db()
    assert step.status == "CANCELED"
    status, _ = assoc.send_n_action(reason, 3, PUSH, step.ups_instance_uid)
    assert status.Status == 0x0123  # subscriptions are not offered (yet)
    status, _ = assoc.send_n_get([0x00741000], PULL, "1.2.3.4")
    assert status.Status == 0xC307


def test_changing_needs_the_permission(assoc, step, ups_ae, dimse_listener):
    ups_ae.may_send_mpps = False
    ups_ae.save()
    dimse_listener.policy.invalidate()  # the AE table is cached for a few seconds
    status, _ = assoc.send_n_action(change("IN PROGRESS", generate_uid()), 1, PULL,
                                    step.ups_instance_uid)
    assert status.Status == 0x0124
    status, attrs = assoc.send_n_get([0x00741000], PULL, step.ups_instance_uid)
    assert status.Status == 0x0000 and attrs.ProcedureStepState == "SCHEDULED"


@pytest.fixture
def event_receiver(ups_ae):
    """A UPS Event SCP at the address the AE table gives for AINODE."""
    from tests.peers import start_event_scp
    from tests.samples import free_port

    server, received = start_event_scp(free_port())
    ups_ae.port = server.server_address[1]
    ups_ae.save()
    yield received
    server.shutdown()


def test_watch_subscribe_and_n_event_reports_from_every_face(assoc, step, event_receiver,
                                                            dimse_listener):
    subscribe = Dataset()
    subscribe.DeletionLock = "FALSE"
    status, _ = assoc.send_n_action(subscribe, 3, WATCH, step.ups_instance_uid)
    assert status.Status == 0x0000
    uid, kind, info = event_receiver.get(timeout=15)  # the initial state report
    assert (uid, kind, info.ProcedureStepState) == (step.ups_instance_uid, 1, "SCHEDULED")
    # moved to another station in the portal: UPS Assigned with the new station
    other = Station.objects.create(ae_title="MR2", name="mr-room-2", modality="MR")
    services.reschedule(step, start=dt.datetime(2026, 11, 23, 15, 0), station=other,
                        actor="sched")
    uid, kind, info = event_receiver.get(timeout=15)
    assert (kind, info.ScheduledStationNameCodeSequence[0].CodeValue) == (5, "MR2")
    # a change from the portal (not UPS) reports too
    services.set_step_status(step, "ARRIVED", source="portal", actor="sched")
    services.set_step_status(ScheduledProcedureStep.objects.get(pk=step.pk), "IN PROGRESS",
                             source="mpps", actor="MR1")
    uid, kind, info = event_receiver.get(timeout=15)
    assert info.ProcedureStepState == "SCHEDULED"  # ARRIVED is still SCHEDULED in UPS terms
    uid, kind, info = event_receiver.get(timeout=15)
    assert info.ProcedureStepState == "IN PROGRESS"
    reason = Dataset()
    reason.ReasonForCancellation = "contrast allergy"
    status, _ = assoc.send_n_action(reason, 2, PUSH, step.ups_instance_uid)
    assert status.Status == 0x0000
    uid, kind, info = event_receiver.get(timeout=15)
    assert (kind, info.ReasonForCancellation) == (2, "contrast allergy")
    # no Action Information: None (pynetdicom flags an empty Dataset() as present, sends none)
    status, _ = assoc.send_n_action(None, 4, WATCH, step.ups_instance_uid)
    assert status.Status == 0x0000
    status, _ = assoc.send_n_action(change("IN PROGRESS", generate_uid()), 1, WATCH,
                                    step.ups_instance_uid)
    assert status.Status == 0x0123  # change state is not a Watch action


def test_watcher_gets_a_progress_report_when_the_performer_updates_progress(
        assoc, step, event_receiver):
    import queue

    subscribe = Dataset()
    subscribe.DeletionLock = "FALSE"
    status, _ = assoc.send_n_action(subscribe, 3, WATCH, step.ups_instance_uid)
    assert status.Status == 0x0000
    assert event_receiver.get(timeout=15)[1] == 1  # the initial state report
    mine = generate_uid()
    status, _ = assoc.send_n_action(change("IN PROGRESS", mine), 1, PULL, step.ups_instance_uid)
    assert status.Status == 0x0000
    _, kind, info = event_receiver.get(timeout=15)
    assert (kind, info.ProcedureStepState) == (1, "IN PROGRESS")
    status, _ = assoc.send_n_set(progress_update(mine, "40", "segmenting"), PULL,
                                 step.ups_instance_uid)
    assert status.Status == 0x0000
    uid, kind, info = event_receiver.get(timeout=15)
    progress = info.ProcedureStepProgressInformationSequence[0]
    assert (uid, kind, progress.ProcedureStepProgress, progress.ProcedureStepProgressDescription
            ) == (step.ups_instance_uid, 3, 40, "segmenting")
    # a label change is no progress: no event for it
    label = Dataset()
    label.TransactionUID = mine
    label.ProcedureStepLabel = "Knee AI"
    status, _ = assoc.send_n_set(label, PULL, step.ups_instance_uid)
    assert status.Status == 0x0000
    with pytest.raises(queue.Empty):
        event_receiver.get(timeout=2)


def test_events_for_a_subscriber_that_is_down_are_sent_once_it_is_up(assoc, step, ups_ae,
                                                                     monkeypatch):

    from core import retry
    from tests.peers import start_event_scp
    from tests.samples import free_port
    from worklist.models import UpsEvent

    monkeypatch.setattr(retry, "RETRY_DELAYS", (0.3,))
    ups_ae.port = free_port()  # nothing listens there yet
    ups_ae.save()
    subscribe = Dataset()
    subscribe.DeletionLock = "FALSE"
    status, _ = assoc.send_n_action(subscribe, 3, WATCH, step.ups_instance_uid)
    assert status.Status == 0x0000
    # tried again without a new event
    event = wait_until(lambda: (e := UpsEvent.objects.get()).attempts >= 2 and e, 15, 0.05,
                       "a second attempt")
    assert event.delivered_at is None and "no association" in event.last_error
    server, received = start_event_scp(ups_ae.port)
    try:
        uid, kind, info = received.get(timeout=15)
        assert (uid, kind, info.ProcedureStepState) == (step.ups_instance_uid, 1, "SCHEDULED")
    finally:
        server.shutdown()
    wait_until(lambda: UpsEvent.objects.get().delivered_at, 5, 0.05, "the delivery")


def test_retry_now_on_the_subscriptions_page_sends_what_was_given_up(assoc, step, ups_ae,
                                                                      monkeypatch, admin_client):
    """After its last attempt an event waits for the subscriber's next one; an admin's Retry
    now sends it at once."""
    import threading

    from django.urls import reverse

    from core import retry
    from tests.peers import start_event_scp
    from tests.samples import free_port
    from worklist.models import UpsEvent

    monkeypatch.setattr(retry, "RETRY_DELAYS", (0.1,))
    monkeypatch.setattr(retry, "MAX_ATTEMPTS", 2)
    ups_ae.port = free_port()  # nothing listens there yet
    ups_ae.save()
    subscribe = Dataset()
    subscribe.DeletionLock = "FALSE"
    assert assoc.send_n_action(subscribe, 3, WATCH, step.ups_instance_uid)[0].Status == 0x0000
    wait_until(lambda: UpsEvent.objects.get().attempts >= 2 and not any(
        t.name == "ups-events-AINODE" for t in threading.enumerate()),  # given up
        timeout=15, interval=0.05, what="the sender to give up")
    page = admin_client.get(reverse("ups-subscriptions")).content.decode()
    waiting = page[page.index('id="ups-waiting"'):]
    assert "<td>AINODE</td><td>1</td><td>2</td>" in waiting and "Retry now" in waiting
    server, received = start_event_scp(ups_ae.port)
    try:
        response = admin_client.post(reverse("ups-subscriber-retry", args=["AINODE"]))
        assert response.status_code == 302
        uid, kind, info = received.get(timeout=10)
        assert (uid, kind, info.ProcedureStepState) == (step.ups_instance_uid, 1, "SCHEDULED")
    finally:
        server.shutdown()
