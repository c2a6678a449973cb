"""Scheduler pages through Django's test client; the browser test drives the same pages."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from pacs.models import ApplicationEntity, Patient
from tests.users import user_with
from worklist import services
from worklist.models import Order, Procedure, ScheduledProcedureStep, Station

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog():
    Station.objects.create(ae_title="CT1", name="ct-room-1", modality="CT", location="R1")
    Station.objects.create(ae_title="MR1", name="mr-room-1", modality="MR")
    return Procedure.objects.create(code_value="CTCHEST", code_meaning="CT chest",
                                    modality="CT")


@pytest.fixture
def scheduler(client):
    client.force_login(user_with("sched", "scheduler"))
    return client


def _post(client, procedure, station, **extra):
    data = {"patient_id": "P100", "family_name": "Doe", "given_name": "Jane",
            "birth_date": "1980-02-03", "sex": "F", "procedure": procedure.pk,
            "station": Station.objects.get(ae_title=station).pk, "date": "2026-11-23",
            "time": "09:30", "referring_family": "House", "referring_given": "G",
            "reason": "cough", "priority": "ROUTINE", "confirm_past": "on", **extra}
    return client.post(reverse("order-new"), data)


def test_scheduler_creates_an_order_and_sees_it_on_the_board(scheduler, catalog):
    response = _post(scheduler, catalog, "CT1")
    order = Order.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "order-detail", args=[order.pk])
    step = ScheduledProcedureStep.objects.get()
    assert (step.modality, step.scheduled_station_ae_title, step.start_date,
            step.start_time) == ("CT", "CT1", "20261123", "093000")
    assert order.patient.patient_name == "DOE^JANE" and order.accession_number.startswith("A")
    assert step.protocol_code_value == "CTCHEST"
    assert order.referring_physician_name == "HOUSE^G"
    board = scheduler.get(reverse("worklist-board"), {"date": "2026-11-23"}).content.decode()
    assert "DOE^JANE" in board and order.accession_number in board and "09:30" in board
    detail = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert "SCHEDULED" in detail and "created" in detail


def test_form_errors_are_shown_on_the_form(scheduler, catalog):
    page = _post(scheduler, catalog, "MR1", patient_id="", family_name="A^B").content.decode()
    assert "This field is required" in page
    assert "MR1 is a MR station; this procedure needs CT." in page
    assert "Names cannot contain" in page
    assert Order.objects.count() == 0


def test_reschedule_cancel_and_history(scheduler, catalog):
    _post(scheduler, catalog, "CT1")
    order, step = Order.objects.get(), ScheduledProcedureStep.objects.get()
    scheduler.post(reverse("step-reschedule", args=[step.pk]),
                   {"date": "2026-11-24", "time": "14:00", "station": "", "confirm_past": "on"})
    step.refresh_from_db()
    assert (step.start_date, step.start_time) == ("20261124", "140000")
    # back to the page it came from, if it is ours: never to another site
    away = scheduler.post(reverse("step-status", args=[step.pk]),
                          {"status": "ARRIVED", "next": "https://evil.example/x"})
    assert away["Location"] == reverse("worklist-board")
    back = scheduler.post(reverse("step-status", args=[step.pk]),
                          {"status": "ARRIVED", "next": "/worklist/?date=2026-11-23"})
    assert back["Location"] == "/worklist/?date=2026-11-23"
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert 'id="cancel-order"' in page and 'name="reason" required' in page
    refused = scheduler.post(reverse("order-cancel", args=[order.pk]), {"reason": "  "},
                             follow=True)
    assert "Say why the order is cancelled" in refused.content.decode()
    step.refresh_from_db()
    assert step.status == "ARRIVED"  # no reason, nothing cancelled
    scheduler.post(reverse("order-cancel", args=[order.pk]),
                   {"reason": "patient declined the contrast"})
    step.refresh_from_db()
    assert step.status == "CANCELED"
    history = [(e.status, e.source) for e in step.events.all()]
    assert history == [("SCHEDULED", "portal"), ("SCHEDULED", "portal"),
                       ("ARRIVED", "portal"), ("CANCELED", "portal")]
    assert step.events.last().note == "patient declined the contrast"
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert "patient declined the contrast" in page  # in the history
    assert 'id="cancel-order"' not in page  # a cancelled order offers no Cancel
    # A canceled step cannot be rescheduled; the error is shown, nothing changes.
    response = scheduler.post(reverse("step-reschedule", args=[step.pk]),
                              {"date": "2026-11-25", "time": "08:00"}, follow=True)
    assert "CANCELED" in response.content.decode()


def test_viewers_cannot_schedule(client, catalog):
    client.force_login(user_with("viewer", "viewer"))
    assert client.get(reverse("worklist-board")).status_code == 200
    assert client.get(reverse("order-new")).status_code == 403
    assert _post(client, catalog, "CT1").status_code == 403 and Order.objects.count() == 0


def test_accession_numbers_count_per_day(catalog):
    day = dt.date(2026, 11, 23)
    assert services.next_accession_number(day) == "A2611230001"
    services.create_order(patient=services.PatientData("X"), procedure=catalog,
                          step=services.station_step(Station.objects.get(ae_title="CT1"),
                                                     dt.datetime(2026, 11, 23, 8)),
                          actor="t", accession_number="A2611230007")
    assert services.next_accession_number(day) == "A2611230008"


def test_admin_pages_for_stations_and_catalog(admin_client):
    page = admin_client.post(reverse("stations"), {"ae_title": "US1", "name": "us",
                                                    "modality": "US", "active": "on"})
    assert "No AE title US1 on the AE titles page" in page.content.decode()
    assert not Station.objects.exists()  # its worklist queries would find nothing
    ApplicationEntity.objects.create(ae_title="US1", host="127.0.0.1", port=104)
    page = admin_client.post(reverse("stations"), {"ae_title": "US1", "name": "us",
                                                    "modality": "ULTRA", "active": "on"})
    assert "Select a valid choice" in page.content.decode()  # the defined terms only
    response = admin_client.post(reverse("stations"), {"ae_title": "US1", "name": "us",
                                                        "modality": "US", "active": "on"})
    assert response.status_code == 302 and Station.objects.filter(ae_title="US1").exists()
    page = admin_client.post(reverse("stations"), {"ae_title": "BAD\\AET", "modality": "US"})
    assert "without a backslash" in page.content.decode()
    admin_client.post(reverse("catalog"), {"code_value": "US1", "coding_scheme_designator":
                                           "LOCAL", "code_meaning": "US abdomen",
                                           "modality": "US", "duration_minutes": 15,
                                           "active": "on"})
    assert Procedure.objects.filter(code_meaning="US abdomen").exists()


def test_edit_order_and_link_to_arrived_images(scheduler, catalog, storage_dir):
    from pydicom import dcmread

    from pacs.services.ingest import store_instance
    from tests.samples import encoded, sample

    _post(scheduler, catalog, "CT1")
    order = Order.objects.get()
    scheduler.post(reverse("order-edit", args=[order.pk]),
                   {"referring_family": "Wilson", "referring_given": "J", "reason": "follow-up",
                    "priority": "HIGH", "medical_alerts": "", "contrast_allergies": "iodine"})
    order.refresh_from_db()
    assert (order.priority, order.reason, order.contrast_allergies) == ("HIGH", "follow-up",
                                                                         "iodine")
    assert order.referring_physician_name == "WILSON^J"
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert "none received yet" in page
    ds = dcmread(sample("CT_small.dcm"))  # the modality used the worklist's Study UID
    ds.StudyInstanceUID = order.procedures.get().study_instance_uid
    store_instance(data=encoded(ds), received_from="test")
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert "in the archive: 1 series, 1 instances" in page


def test_hl7_log_search_detail_and_replay(admin_client, catalog, hl7_senders):
    from hl7gw.inbound.service import receive
    from hl7gw.models import Message

    def obr(accession: str, modality: str = "") -> bytes:
        fields = ["OBR", "1", "X1", "", "CTCHEST^CT chest"] + [""] * 14
        fields[18] = accession  # OBR-18: accession (IHE RAD-4)
        fields += ["", "", "", "", "", modality]  # OBR-24: modality
        return "|".join(fields).encode() + b"\r"

    new = (b"MSH|^~\\&|RIS|H|PORTAL|H|||ORM^O01|C1|P|2.3.1\rPID|||P9^^^H||ROE^ANN\r"
           b"ORC|NW|X1\r" + obr("ACC9", "CT"))
    ack = receive(new, peer="127.0.0.1:2575")
    assert b"MSA|AA|C1" in ack
    receive(b"MSH|^~\\&|RIS|H|PORTAL|H|||ORM^O01|C2|P|2.3.1\rPID|||P9\rORC|CA|X2|||\r"
            + obr("ACC404"), peer="127.0.0.1:2575")
    page = admin_client.get(reverse("hl7-messages"), {"q": "C2"}).content.decode()
    table = page[page.index('id="hl7-table"'):]  # not the page's random CSRF token
    assert "<td>C2</td>" in table and "<td>C1</td>" not in table
    failed = Message.objects.get(control_id="C2")
    detail = admin_client.get(reverse("hl7-message", args=[failed.pk])).content.decode()
    assert "MSA|AE|C2" in detail and "no order" in detail
    ok = Message.objects.get(control_id="C1")
    assert "ACC9" in admin_client.get(reverse("hl7-message", args=[ok.pk])).content.decode()
    # Replaying the cancel after the order exists under that accession works
    Order.objects.filter(accession_number="ACC9").update(accession_number="ACC404")
    response = admin_client.post(reverse("hl7-replay", args=[failed.pk]))
    again = Message.objects.get(replay_of=failed)
    assert response["Location"] == reverse("hl7-message", args=[again.pk])
    assert again.status == "processed"
    assert ScheduledProcedureStep.objects.get().status == "CANCELED"
    assert admin_client.get(reverse("hl7-senders")).status_code == 200


def test_hl7_receivers_and_outbound_queue_pages(admin_client, catalog, monkeypatch,
                                                django_capture_on_commit_callbacks):
    from hl7gw.models import Outbound, Receiver
    from hl7gw.outbound import service as outbound_service

    monkeypatch.setattr(outbound_service, "enqueue", lambda *a, **k: None)  # no sending here

    response = admin_client.post(reverse("hl7-receivers"), {
        "name": "RIS", "host": "127.0.0.1", "port": 1, "kind": "ORM", "version": "2.5.1",
        "charset": "UNICODE UTF-8", "on_started": "on", "active": "on"})
    assert response.status_code == 302
    receiver = Receiver.objects.get()
    _post(admin_client, catalog, "CT1")
    step = ScheduledProcedureStep.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        services.set_step_status(step, "IN PROGRESS", source="portal", actor="t")
    outbound = Outbound.objects.get()
    assert (outbound.receiver, outbound.order_status) == (receiver, "IP")
    assert "ORC|SC|" in outbound.text and "|IP" in outbound.text
    page = admin_client.get(reverse("hl7-outbound")).content.decode()
    assert outbound.control_id in page and "Retry now" in page


def test_find_a_registry_patient_and_prefill_the_order(scheduler, catalog):
    from pacs.models import Patient

    patient = Patient.objects.create(patient_id="P77", patient_name="SMITH^ANNA",
                                     patient_name_norm="SMITH^ANNA", patient_birth_date="19800203",
                                     patient_sex="F")
    page = scheduler.get(reverse("order-new"), {"find": "smi"}).content.decode()
    assert "SMITH^ANNA [P77]" in page and f"?patient={patient.pk}" in page
    page = scheduler.get(reverse("order-new"), {"find": "nobody"}).content.decode()
    assert "No patient found" in page
    page = scheduler.get(reverse("order-new"), {"patient": patient.pk}).content.decode()
    assert 'value="P77"' in page and 'value="SMITH"' in page and 'value="1980-02-03"' in page


def test_workitem_pages_show_state_performer_and_progress(scheduler, catalog):
    from pydicom.uid import generate_uid

    from worklist.ups import changes, states

    _post(scheduler, catalog, "CT1")
    services.create_order(patient=services.PatientData("P200", "ROE^RICHARD"), procedure=None,
                          step=services.StepData(modality="MR", start=dt.datetime(2026, 11, 23,
                                                                                  10, 0)),
                          actor="sched")
    first, second = ScheduledProcedureStep.objects.order_by("pk")
    mine = generate_uid()
    states.change_state(first.ups_instance_uid, "IN PROGRESS", mine, actor="AINODE")
    changes.update(first.ups_instance_uid, {"00741002": {"vr": "SQ", "Value": [
        {"00741004": {"vr": "DS", "Value": [60]}}]}}, mine, actor="AINODE")
    theirs = generate_uid()
    states.change_state(second.ups_instance_uid, "IN PROGRESS", theirs, actor="X")
    changes.update(second.ups_instance_uid, {"00741216": {"vr": "SQ", "Value": [{
        "00404050": {"vr": "DT", "Value": ["20261123100000"]},
        "00404051": {"vr": "DT", "Value": ["20261123101500"]}}]}}, theirs, actor="X")
    states.change_state(second.ups_instance_uid, "COMPLETED", theirs, actor="X")

    page = scheduler.get(reverse("workitem-list")).content.decode()
    assert "IN PROGRESS" in page and "AINODE" in page and 'value="60"' in page
    assert "DOE^JANE [P100]" in page
    assert "ROE^RICHARD" not in page  # completed: not in the default (open) view
    done = scheduler.get(reverse("workitem-list") + "?state=COMPLETED").content.decode()
    assert "ROE^RICHARD" in done and "DOE^JANE" not in done
    assert "ROE^RICHARD" not in scheduler.get(reverse("workitem-list") + "?state=SCHEDULED"
                                      "&state=IN+PROGRESS&patient=do").content.decode()
    detail = scheduler.get(reverse("workitem-detail", args=[first.ups_instance_uid]))
    text = detail.content.decode()
    assert first.ups_instance_uid in text and "AINODE" in text and "60%" in text
    assert "claimed over UPS" in text
    assert mine not in text  # the Transaction UID stays secret
    order = scheduler.get(reverse("order-detail", args=[first.requested_procedure.order.pk]))
    assert reverse("workitem-detail", args=[first.ups_instance_uid]).encode() in order.content


def test_subscriptions_page_for_admins(admin_client, scheduler, catalog):
    from worklist import ups_events

    _post(scheduler, catalog, "CT1")
    step = ScheduledProcedureStep.objects.get()
    ups_events.subscribe(step.ups_instance_uid, "WATCHER", actor="boss")
    ups_events.subscribe(ups_events.GLOBAL_FILTERED, "AI NODE",
                         filter_keys={"PatientID": "P100"}, delivery="dimse")
    assert scheduler.get(reverse("ups-subscriptions")).status_code in (302, 403)
    page = admin_client.get(reverse("ups-subscriptions")).content.decode()
    assert "WATCHER" in page and "AI NODE" in page and "PatientID=P100" in page
    assert "UPS State Report" in page and "pending" in page


@pytest.mark.django_db(transaction=True)
def test_accession_numbers_given_twice_and_generated_ones_taken_meanwhile(catalog, monkeypatch):
    from core.models import AuditEvent
    from worklist.models import StepEvent

    station = Station.objects.get(ae_title="CT1")
    step = services.station_step(station, dt.datetime(2026, 12, 1, 9, 0))
    patient = services.PatientData("PX", "DOE^X")
    services.create_order(patient=patient, procedure=None, step=step, actor="t",
                          accession_number="ACC1")
    with pytest.raises(services.WorklistError, match="'ACC1' already exists"):
        services.create_order(patient=services.PatientData("PY", "ROE^Y"), procedure=None,
                              step=step, actor="t", accession_number="ACC1")
    assert not Patient.objects.filter(patient_id="PY").exists()  # nothing of it is kept
    # another writer took the generated number in between: the next one is used
    numbers = iter(["ACC1", "ACC2"])
    monkeypatch.setattr(services, "next_accession_number", lambda: next(numbers))
    order = services.create_order(patient=patient, procedure=None, step=step, actor="t")
    assert order.accession_number == "ACC2"
    assert Order.objects.count() == 2 and ScheduledProcedureStep.objects.count() == 2
    assert StepEvent.objects.count() == 2
    assert AuditEvent.objects.filter(action="order created").count() == 2


def test_a_past_date_needs_a_confirmation_and_reschedule_shows_the_steps_values(
        scheduler, catalog):
    """Scheduling into the past is refused unless confirmed (a typo most often, and a
    modality asking for today's worklist never sees it); the reschedule form of each step
    starts from that step's station, date and time."""
    yesterday = dt.date.today() - dt.timedelta(days=1)
    page = _post(scheduler, catalog, "CT1", date=yesterday.isoformat(),
                 confirm_past="").content.decode()
    assert "have passed" in page and "Schedule in the past" in page
    assert not Order.objects.exists()
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    _post(scheduler, catalog, "CT1", date=tomorrow.isoformat(), confirm_past="")
    order, step = Order.objects.get(), ScheduledProcedureStep.objects.get()
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert f'value="{tomorrow.isoformat()}"' in page and 'value="09:30"' in page
    ct1 = Station.objects.get(ae_title="CT1").pk
    assert f'<option value="{ct1}" selected>' in page
    refused = scheduler.post(reverse("step-reschedule", args=[step.pk]),
                             {"date": yesterday.isoformat(), "time": "08:00"}, follow=True)
    assert "Not rescheduled: This date and time have passed" in refused.content.decode()
    step.refresh_from_db()
    assert step.start_date == tomorrow.strftime("%Y%m%d")


def test_edit_keeps_a_referring_name_s_other_components(scheduler, catalog):
    """An HL7 order may bring a middle name, prefix or degree: saving the form with the
    same family and given name leaves the name as it came."""
    _post(scheduler, catalog, "CT1")
    order = Order.objects.get()
    Order.objects.filter(pk=order.pk).update(referring_physician_name="HOUSE^GREGORY^M^^MD")
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert 'name="referring_family" value="HOUSE"' in page
    assert 'name="referring_given" value="GREGORY"' in page
    edit = {"referring_family": "House", "referring_given": "Gregory", "reason": "x",
            "priority": "ROUTINE", "medical_alerts": "", "contrast_allergies": ""}
    scheduler.post(reverse("order-edit", args=[order.pk]), edit)
    order.refresh_from_db()
    assert order.referring_physician_name == "HOUSE^GREGORY^M^^MD" and order.reason == "x"
    scheduler.post(reverse("order-edit", args=[order.pk]), {**edit, "referring_given": "G"})
    order.refresh_from_db()
    assert order.referring_physician_name == "HOUSE^G"
    # a name in several writings (PS3.5 6.2.1.1) shows and keeps its alphabetic group
    Order.objects.filter(pk=order.pk).update(referring_physician_name="YAMADA^TARO=山田^太郎")
    page = scheduler.get(reverse("order-detail", args=[order.pk])).content.decode()
    assert 'name="referring_given" value="TARO"' in page
    scheduler.post(reverse("order-edit", args=[order.pk]), {
        **edit, "referring_family": "Yamada", "referring_given": "Taro", "reason": "y"})
    order.refresh_from_db()
    assert order.referring_physician_name == "YAMADA^TARO=山田^太郎" and order.reason == "y"


def test_a_double_booking_is_told_before_saving(scheduler, catalog):
    catalog.duration_minutes = 30
    catalog.save()
    _post(scheduler, catalog, "CT1")  # 09:30-10:00
    assert ScheduledProcedureStep.objects.get().duration_minutes == 30  # the procedure's
    page = _post(scheduler, catalog, "CT1", patient_id="P200", time="09:45").content.decode()
    first = Order.objects.get().accession_number
    assert f"CT1 is booked then ({first} at 09:30 for 30 min)" in page
    assert Order.objects.count() == 1  # nothing saved
    _post(scheduler, catalog, "CT1", patient_id="P200", time="10:00")  # right after: fine
    _post(scheduler, catalog, "CT1", patient_id="P300", time="09:45", confirm_overlap="on")
    assert Order.objects.count() == 3
    # rescheduling onto a booked time is told too, unless confirmed
    third = ScheduledProcedureStep.objects.get(
        requested_procedure__order__patient__patient_id="P300")
    answer = scheduler.post(reverse("step-reschedule", args=[third.pk]), {
        "date": "2026-11-23", "time": "10:10", "station": "", "confirm_past": "on"}, follow=True)
    assert "is booked then" in answer.content.decode()
    scheduler.post(reverse("step-reschedule", args=[third.pk]), {
        "date": "2026-11-23", "time": "11:00", "duration": "45", "station": "",
        "confirm_past": "on"})
    third.refresh_from_db()
    assert (third.start_time, third.duration_minutes) == ("110000", 45)


def test_the_planner_day_and_week(scheduler, catalog):
    _post(scheduler, catalog, "CT1")
    _post(scheduler, catalog, "CT1", patient_id="P200", time="09:40", confirm_overlap="on",
          priority="STAT")
    page = scheduler.get(reverse("worklist-board"), {"date": "2026-11-23"})
    steps = dict(page.context["stations"])["CT1"]
    assert [s.minute for s in steps] == [570, 580] and all(s.overlaps for s in steps)
    html = page.content.decode()
    assert 'class="slot status-scheduled overlap"' in html and ">STAT</span>" in html
    assert f'data-top="{570 - 7 * 60}" data-height="20"' in html  # 09:30 on a 07:00 grid
    fragment = scheduler.get(reverse("worklist-board"), {"date": "2026-11-23",
                                                         "fragment": "1"}).content.decode()
    assert "<html" not in fragment and "P200" in fragment  # the grid alone, to swap in
    week = scheduler.get(reverse("worklist-board"), {"date": "2026-11-25", "view": "week",
                                                     "station": "CT1"})
    assert week.context["days"][0] == dt.date(2026, 11, 23)  # the Monday
    rows = dict(week.context["week_rows"])
    assert [len(day) for day in rows["CT1"]] == [2, 0, 0, 0, 0, 0, 0]
    assert "MR1" not in rows  # the station filter
