"""Outbound status messages to a real MLLP server (python-hl7's asyncio HL7 server), driven by
MPPS from a modality; a receiver that is down gets the message once it is back."""

from __future__ import annotations

import datetime as dt
import threading
import time

import hl7
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

from core import retry
from hl7gw.models import Outbound, Receiver
from pacs.models import ApplicationEntity
from tests.peers import Hl7Server
from tests.samples import free_port
from tests.waiting import wait_until
from worklist import services
from worklist.models import ScheduledProcedureStep

pytestmark = pytest.mark.interop


@pytest.fixture
def step(dimse_listener):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_send_mpps=True)
    order = services.create_order(
        patient=services.PatientData("OUT1", "MÜLLER^JÖRG"), procedure=None,
        step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 1, 9),
                               station_ae_title="CT1"),
        actor="test", accession_number="ACC-OUT-1", placer_order_number="PL-1")
    return ScheduledProcedureStep.objects.get(requested_procedure__order=order)


def _mpps(listener, step, status: str, uid: str) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(MPPS)
    assoc = ae.associate(*listener.address, ae_title="PORTAL")
    try:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        if status == "IN PROGRESS":
            item = Dataset()
            item.AccessionNumber = "ACC-OUT-1"
            item.ScheduledProcedureStepID = step.scheduled_procedure_step_id
            ds.ScheduledStepAttributesSequence = [item]
            result = assoc.send_n_create(ds, MPPS, uid)
        else:
            result = assoc.send_n_set(ds, MPPS, uid)
        assert result[0].Status == 0
    finally:
        assoc.release()


def test_mpps_progress_reaches_the_ris_as_orm_sc(dimse_listener, step):
    server = Hl7Server(free_port()).start()
    try:
        Receiver.objects.create(name="RIS", host="127.0.0.1", port=server.port,
                                receiving_application="RIS")
        uid = generate_uid()
        _mpps(dimse_listener, step, "IN PROGRESS", uid)
        _mpps(dimse_listener, step, "COMPLETED", uid)
        wait_until(lambda: len(server.received) == 2)
    finally:
        server.stop()
    statuses = [str(m.segment("ORC")[5]) for m in server.received]
    assert statuses == ["IP", "CM"]
    first = server.received[0]
    assert str(first.segment("MSH")[9]) == "ORM^O01"
    assert str(first.segment("ORC")[1]) == "SC" and str(first.segment("ORC")[2]) == "PL-1"
    assert str(first.segment("OBR")[18]) == "ACC-OUT-1"
    assert str(first.segment("PID")[5]) == "MÜLLER^JÖRG"
    wait_until(lambda: Outbound.objects.filter(status="sent").count() == 2)


def test_a_down_receiver_loses_nothing(dimse_listener, step, monkeypatch):
    monkeypatch.setattr(retry, "RETRY_DELAYS", (0.3,))
    port = free_port()
    Receiver.objects.create(name="RIS", host="127.0.0.1", port=port, on_started=True)
    services.set_step_status(step, "IN PROGRESS", source="portal", actor="test")
    wait_until(lambda: Outbound.objects.get().attempts >= 2)
    outbound = Outbound.objects.get()
    assert outbound.status == "pending" and "refused" in outbound.last_error.lower()
    server = Hl7Server(port).start()
    try:
        wait_until(lambda: Outbound.objects.get().status == "sent")
        assert len(server.received) == 1
    finally:
        server.stop()
    assert "MSA|AA" in Outbound.objects.get().ack
    assert isinstance(server.received[0], hl7.Message)


def test_a_receiver_that_was_down_gets_its_messages_in_order(dimse_listener, step,
                                                              monkeypatch):
    """The IP message is deep in its backoff when CM is queued: CM must wait for it, not go
    first on a schedule of its own."""
    monkeypatch.setattr(retry, "RETRY_DELAYS", (0.3, 0.3, 2.0))
    port = free_port()
    receiver = Receiver.objects.create(name="RIS", host="127.0.0.1", port=port)
    services.set_step_status(step, "IN PROGRESS", source="portal", actor="test")
    wait_until(lambda: Outbound.objects.get().attempts >= 3)  # now waiting 2 s
    services.set_step_status(step, "COMPLETED", source="portal", actor="test")
    senders = [t.name for t in threading.enumerate() if t.name.startswith("hl7-out-")]
    assert senders == [f"hl7-out-{receiver.pk}"]  # one per receiver, not one per message
    server = Hl7Server(port).start()
    try:
        wait_until(lambda: len(server.received) == 2)
        time.sleep(0.5)  # a message sent twice would arrive by now
        assert [str(m.segment("ORC")[5]) for m in server.received] == ["IP", "CM"]
    finally:
        server.stop()
    assert list(Outbound.objects.order_by("pk").values_list("order_status", "status")) == [
        ("IP", "sent"), ("CM", "sent")]


def test_a_cancellation_reaches_the_ris_with_its_reason(dimse_listener, step):
    """HL7 v2.5 4.5.1.16: ORC-16 Order Control Code Reason carries why the order was
    cancelled, as the scheduler typed it, with ORC-5 CA."""
    server = Hl7Server(free_port()).start()
    try:
        Receiver.objects.create(name="RIS", host="127.0.0.1", port=server.port,
                                receiving_application="RIS")
        order = step.requested_procedure.order
        services.cancel_order(order, actor="scheduler", note="duplicate order")
        wait_until(lambda: len(server.received) == 1)
    finally:
        server.stop()
    (message,) = server.received
    orc = message.segment("ORC")
    assert str(orc[5]) == "CA"
    assert str(orc[16]) == "^duplicate order"


def test_each_attempt_is_kept_and_a_message_can_be_canceled(dimse_listener, step,
                                                            monkeypatch, admin_client):
    """The outbound page shows the exact message and every attempt: the errors while the
    receiver was down, then its ACK; a message cancelled by an admin is never sent, the
    ones after it are, and the cancel is audited."""
    from django.urls import reverse

    from core.models import AuditEvent

    monkeypatch.setattr(retry, "RETRY_DELAYS", (0.3,))
    port = free_port()
    Receiver.objects.create(name="RIS", host="127.0.0.1", port=port, on_started=True)
    services.set_step_status(step, "IN PROGRESS", source="portal", actor="test")
    wait_until(lambda: Outbound.objects.get().attempts >= 2)
    server = Hl7Server(port).start()
    try:
        wait_until(lambda: Outbound.objects.get().status == "sent")
    finally:
        server.stop()
    outbound = Outbound.objects.get()
    tries = list(outbound.tries.all())
    assert len(tries) == outbound.attempts >= 3
    assert all(t.error and not t.ack for t in tries[:-1])
    assert tries[-1].code == "AA" and "MSA|AA" in tries[-1].ack and not tries[-1].error
    page = admin_client.get(reverse("hl7-outbound-detail", args=[outbound.pk])).content.decode()
    assert outbound.text.split("\r")[0].replace("&", "&amp;") in page
    assert page.count("no answer:") == len(tries) - 1 and "ACK AA" in page
    assert 'class="danger">Cancel</button>' not in page  # sent: nothing to cancel

    # The receiver is down again: the completion waits; an admin cancels it.
    services.set_step_status(step, "COMPLETED", source="portal", actor="test")
    wait_until(lambda: Outbound.objects.filter(order_status="CM", attempts__gte=1).exists())
    waiting = Outbound.objects.get(order_status="CM")
    admin_client.post(reverse("hl7-outbound-cancel", args=[waiting.pk]))
    waiting.refresh_from_db()
    assert waiting.status == "canceled"
    assert AuditEvent.objects.filter(action="outbound message canceled",
                                     detail__contains=waiting.control_id).exists()
    server = Hl7Server(port).start()
    try:
        time.sleep(1.5)  # past the backoff: a message still queued would arrive by now
        assert server.received == []
    finally:
        server.stop()
    waiting.refresh_from_db()
    assert waiting.status == "canceled"
