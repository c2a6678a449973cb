"""Headless Chromium against the real `serve` process: log in, manage AEs, browse images."""

from __future__ import annotations

import subprocess

import pytest

from tests.portal_process import start_portal
from tests.samples import sample
from tests.screens import shot

pytestmark = [pytest.mark.browser, pytest.mark.interop]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    p = start_portal(tmp_path_factory.mktemp("browser") / "var",
                     DJANGO_SUPERUSER_USERNAME="chief", DJANGO_SUPERUSER_PASSWORD="Xr4y-s3cret!")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, portal):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(f"{portal.url}/")
    pg.fill("input[name=username]", "chief")
    pg.fill("input[name=password]", "Xr4y-s3cret!")
    pg.click("button[type=submit]")
    pg.wait_for_selector("h1:has-text('Dashboard')")
    yield pg
    context.close()


def test_wrong_password_is_told(browser, portal):
    pg = browser.new_page()
    pg.goto(f"{portal.url}/login/")
    pg.fill("input[name=username]", "chief")
    pg.fill("input[name=password]", "wrong")
    pg.click("button[type=submit]")
    assert "didn't match" in pg.inner_text("main")
    pg.close()


def _add_ae(page, aet: str, port: int, *permissions: str) -> None:
    """Fill in AE titles → Add an AE title; ``permissions``: checkbox names to tick."""
    page.click("nav >> text=AE titles")
    page.click("text=Add an AE title")
    page.fill("input[name=ae_title]", aet)
    page.fill("input[name=host]", "127.0.0.1")
    page.fill("input[name=port]", str(port))
    for name in permissions:
        page.check(f"input[name={name}]")
    page.click("button:has-text('Save')")
    assert f"Saved {aet}." in page.inner_text(".messages")


def test_admin_adds_aes_echoes_and_modality_stores(page, portal, tmp_path):
    # Add the portal itself (to echo it) and a modality.
    for aet, port in (("PORTAL", portal.dimse_port), ("STORESCU", 104)):
        _add_ae(page, aet, port, "may_store")
    # A form error is shown on the form.
    page.click("text=Add an AE title")
    page.fill("input[name=ae_title]", "STORESCU")
    page.fill("input[name=host]", "x")
    page.fill("input[name=port]", "70000")
    page.click("button:has-text('Save')")
    errors = page.inner_text("form.form")
    assert "already exists" in errors and "65535" in errors
    # C-ECHO button.
    page.click("text=AE titles")
    page.click("#ae-table tr:has-text('PORTAL') button[name=echo]")
    assert "C-ECHO PORTAL: C-ECHO succeeded" in page.inner_text(".messages")
    page.screenshot(path=str(tmp_path / "aes.png"))
    # The modality (now known) stores two studies with DCMTK; AE table is re-read within 2 s.
    page.wait_for_timeout(2500)
    proc = subprocess.run(
        ["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "PORTAL", "127.0.0.1",
         str(portal.dimse_port), str(sample("CT_small.dcm")), str(sample("MR_small.dcm"))],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and "E:" not in proc.stderr, proc.stderr
    # Search, drill down, see the preview image rendered.
    page.click("header >> text=Studies")
    page.fill("input[name=patient_name]", "compressedsamples^c*")
    page.click("button:has-text('Search')")
    rows = page.locator("table.studies tbody tr")
    assert rows.count() == 1 and "CompressedSamples^CT1" in rows.inner_text()
    rows.locator("a").first.click()
    page.locator("#series-table a").first.click()
    img = page.locator(".instance img").first
    img.wait_for()
    page.wait_for_function("() => document.querySelector('.instance img').complete")
    assert page.evaluate("() => document.querySelector('.instance img').naturalWidth") == 128
    page.screenshot(path=str(tmp_path / "series.png"))
    # Dashboard shows the totals.
    page.click("header >> text=Dashboard")
    assert page.inner_text("#count-studies") == "2"
    # ... the listeners with their ports, the disk, what arrived lately and the queues
    listeners = page.inner_text("#listeners")
    assert "DICOM" in listeners and "HL7 MLLP" in listeners and "listening" in listeners
    assert str(portal.dimse_port) in listeners and str(portal.hl7_port) in listeners
    assert "free of" in page.inner_text("#disk")
    assert "2 studies" in page.inner_text("#disk")  # received in the last 24 hours
    queues = page.inner_text("#queues")
    assert "Forwarding" in queues and "HL7 status messages" in queues
    shot(page, "dashboard", tmp_path)
    # Delete the CT study: the browser asks first; dismissed, nothing happens.
    page.click("header >> text=Studies")
    page.locator("table.studies tbody tr:has-text('CT1') a").first.click()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete-study button")
    assert page.locator("#series-table").is_visible()
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    page.click("#delete-study button")
    assert "1 series and 1 instance," in messages[0]
    assert "Deleted the study: 1 series, 1 instance." in page.inner_text(".messages")
    page.click("header >> text=Dashboard")
    assert page.inner_text("#count-studies") == "1"
    # Delete the MR study's one instance from its series page: the study goes with it.
    page.click("header >> text=Studies")
    page.locator("table.studies tbody tr a").first.click()
    page.locator("#series-table a").first.click()
    messages.clear()
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    page.click(".delete-instance button")
    assert "Delete instance #" in messages[0]
    assert "the study is gone too" in page.inner_text(".messages")
    page.click("header >> text=Dashboard")
    assert page.inner_text("#count-studies") == "0"


def test_scheduler_flow_order_board_worklist_and_mpps(page, portal):
    """Stations and catalog in the pages, an order in the form, the modality finds it (MWL)
    and reports progress (MPPS), and the day board shows the new status."""
    import datetime as dt

    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
    from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

    # A station's AE title must be one the AE table knows: its worklist queries come by it.
    page.click("nav >> text=Stations")
    page.fill("input[name=ae_title]", "CTROOM1")
    page.fill("input[name=name]", "ct-1")
    page.select_option("select[name=modality]", "CT")  # the defined terms, not free text
    page.click("button:has-text('Save')")
    assert "No AE title CTROOM1 on the AE titles page" in page.inner_text("main")
    _add_ae(page, "CTROOM1", 104, "may_query_worklist", "may_send_mpps")
    page.click("nav >> text=Stations")
    page.fill("input[name=ae_title]", "CTROOM1")
    page.fill("input[name=name]", "ct-1")
    page.select_option("select[name=modality]", label="CT - Computed Tomography")
    page.click("button:has-text('Save')")
    page.click("nav >> text=Catalog")
    page.fill("input[name=code_value]", "CTHEAD")
    page.fill("input[name=code_meaning]", "CT head")
    page.select_option("select[name=modality]", "CT")
    page.click("button:has-text('Save')")

    today = dt.date.today()
    page.click("nav >> text=Worklist")
    page.click("text=New order")
    page.click("button:has-text('Schedule')")  # empty form: the browser flags the fields
    assert page.locator("input[name=patient_id]:invalid").count() == 1
    assert "/worklist/orders/new/" in page.url
    page.fill("input[name=patient_id]", "BRW1")
    page.fill("input[name=family_name]", "Brown")
    page.fill("input[name=given_name]", "Ann")
    page.select_option("select[name=procedure]", label="CT head [CTHEAD] (CT)")
    page.select_option("select[name=station]", label="CTROOM1 (CT)")
    page.fill("input[name=referring_family]", "House")
    page.fill("input[name=referring_given]", "Greg")
    # a date that has passed asks for a confirmation first
    page.fill("input[name=date]", (today - dt.timedelta(days=1)).isoformat())
    page.fill("input[name=time]", "10:15")
    page.click("button:has-text('Schedule')")
    assert "have passed" in page.inner_text("#order-form")
    page.fill("input[name=date]", today.isoformat())
    page.check("input[name=confirm_past]")  # 10:15 today may have passed too
    shot(page, "order-form", None)
    page.click("button:has-text('Schedule')")
    assert "scheduled" in page.inner_text(".messages")
    accession = page.inner_text("h1").split()[-1]
    assert "HOUSE^GREG" in page.inner_text("#order-facts")
    # rescheduling starts from the step's own values
    form = page.locator("form.reschedule").first
    assert form.locator("input[name=date]").input_value() == today.isoformat()
    assert form.locator("input[name=time]").input_value() == "10:15"
    assert form.locator("select[name=station] option:checked").inner_text() == "CTROOM1 (CT)"

    page.click("nav >> text=Worklist")
    row = page.locator("section[data-station=CTROOM1] .slot", has_text="BROWN^ANN")
    assert accession in row.inner_text() and "Scheduled" in row.inner_text()

    ae = AE(ae_title="CTROOM1")
    ae.add_requested_context(MWL)
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", portal.dimse_port, ae_title="PORTAL")
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = ""
        query.AccessionNumber = ""
        query.StudyInstanceUID = ""
        item = Dataset()
        item.ScheduledStationAETitle = "CTROOM1"
        item.ScheduledProcedureStepStartDate = today.strftime("%Y%m%d")
        item.ScheduledProcedureStepID = ""
        query.ScheduledProcedureStepSequence = [item]
        answers = [a for s, a in assoc.send_c_find(query, MWL) if s.Status == 0xFF00]
        assert [str(a.PatientName) for a in answers] == ["BROWN^ANN"]
        found = answers[0]
        mpps = Dataset()
        ref = Dataset()
        ref.StudyInstanceUID = found.StudyInstanceUID
        ref.AccessionNumber = found.AccessionNumber
        sps = found.ScheduledProcedureStepSequence[0]
        ref.ScheduledProcedureStepID = sps.ScheduledProcedureStepID
        mpps.ScheduledStepAttributesSequence = [ref]
        mpps.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _ = assoc.send_n_create(mpps, MPPS, generate_uid())
        assert status.Status == 0x0000
    finally:
        assoc.release()
    page.reload()
    row = page.locator("section[data-station=CTROOM1] .slot", has_text="BROWN^ANN")
    assert "in progress" in row.inner_text()

    # Why does the modality no longer see it? Its last query, key by key, and the status.
    row.locator("a", has_text=accession).click()
    page.click("#explain-link")
    assert page.input_value("#explain-ae") == "CTROOM1"  # the step's station
    step = page.locator("section.step-answer").first
    assert step.locator(".verdict").inner_text() == "not seen"
    reasons = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text()
               for r in step.locator("tbody tr").all()}
    assert reasons["ScheduledStationAETitle"] == "match"
    assert reasons["ScheduledProcedureStepStartDate"] == "match"
    assert reasons["Step status"] == "no match"  # in progress: no longer work to do
    shot(page, "worklist-explainer", None)
    page.click("text=all its kept queries")
    assert "CTROOM1" in page.inner_text("#queries-table")


def test_admin_adds_a_forwarding_rule(page, portal, tmp_path):
    _add_ae(page, "READING1", 11113)
    page.click("header >> text=Forwarding")
    assert "No rules yet." in page.inner_text("#rules-table")
    page.fill("input[name=name]", "CT to reading")
    page.select_option("select[name=destination]", label="READING1@127.0.0.1:11113")
    page.fill("input[name=source_ae_titles]", "ct1, ct2")
    page.fill("input[name=modalities]", "ct")
    page.click("form.form button:has-text('Save')")
    assert "Saved CT to reading." in page.inner_text(".messages")
    row = page.locator("#rules-table tbody tr").first
    assert row.inner_text().split("\t")[:4] == ["CT to reading", "READING1", "CT1 CT2", "CT"]
    shot(page, "forwarding", tmp_path)
    page.click("#queue-items-link")
    assert page.inner_text("h1") == "Forwarding queue"
    assert "Nothing in the queue." in page.inner_text("#queue-items")


def test_hl7_message_page_names_each_field_beside_the_ack(page, portal):
    """A message from a real MLLP client (python-hl7), from a sender the portal does not know:
    refused (AR) with the reason, logged as it came, and shown field by field."""
    from hl7.client import MLLPClient

    message = ("MSH|^~\\&|UNKNOWNRIS|FAC|PORTAL|RAD|20261207120000||ORM^O01|BRW77|P|2.5\r"
               "PID|||P77^^^FAC||M\\S\\LLER^ANNA||19800203|F\r")
    with MLLPClient("127.0.0.1", portal.hl7_port) as client:
        ack = client.send_message(message).decode()
    assert "MSA|AR|BRW77" in ack
    page.click("header >> text=HL7")
    page.locator("#hl7-table tr", has_text="BRW77").locator("a").first.click()
    fields = page.locator("#hl7-fields")
    name = fields.locator("tr", has=page.locator("code", has_text="PID-5")).first
    assert "Patient Name" in name.inner_text() and "XPN" in name.inner_text()
    assert "Family Name" in name.inner_text() and "M^LLER" in name.inner_text()  # \S\ decoded
    assert "Patient's Name (0010,0010)" in name.inner_text()
    ack_fields = page.locator("#hl7-ack-fields")
    code = ack_fields.locator("tr", has=page.locator("code", has_text="MSA-1")).first
    assert "Acknowledgment Code" in code.inner_text() and "AR" in code.inner_text()
    shot(page, "hl7-message", None)
    # traffic per sender: the unknown sender's refused message counts as an error
    page.click("header >> text=HL7")
    page.click("#traffic-link")
    unknown = page.locator("#sender-traffic tr", has_text="(not registered)")
    assert "1 of 1 (100.0 %)" in unknown.inner_text()
    shot(page, "hl7-traffic", None)
    # a receiver whose port nobody listens on: the connection test says so
    portal.shell("from hl7gw.models import Receiver\nfrom tests.samples import free_port\n"
                 "Receiver.objects.get_or_create(name='TESTRIS', defaults={"
                 "'host': '127.0.0.1', 'port': free_port(), 'active': False})")
    page.reload()
    page.locator("#receiver-traffic tr", has_text="TESTRIS").locator("button").click()
    assert "TESTRIS" in page.inner_text(".messages")
    assert "refused the connection" in page.inner_text(".messages")


PLAN = """
import datetime as dt
from django.utils import timezone
from worklist import services
from worklist.models import Procedure, Station
room = Station.objects.get_or_create(ae_title="PLANCT", defaults={"name": "plan",
                                                                  "modality": "CT"})[0]
proc = Procedure.objects.get_or_create(code_value="PLAN45", defaults={
    "code_meaning": "CT long", "modality": "CT", "duration_minutes": 45})[0]
today = timezone.localdate()
for pid, name, hour, minute, priority in (("PL1", "EARLY^ONE", 8, 0, "ROUTINE"),
                                          ("PL2", "LATE^TWO", 8, 30, "STAT")):
    services.create_order(patient=services.PatientData(pid, name), procedure=proc,
                          step=services.station_step(room, dt.datetime.combine(
                              today, dt.time(hour, minute))), actor="plan", priority=priority)
"""


def test_the_day_planner_updates_in_place(page, portal, tmp_path):
    portal.shell(PLAN)
    page.click("nav >> text=Worklist")
    lane = page.locator("section[data-station=PLANCT]")
    early = lane.locator(".slot", has_text="EARLY^ONE")
    late = lane.locator(".slot", has_text="LATE^TWO")
    # 45-minute blocks on the grid (1.2 px a minute), the second starting 30 minutes later
    box_early, box_late = early.bounding_box(), late.bounding_box()
    assert round(box_early["height"]) == 54 and round(box_late["y"] - box_early["y"]) == 36
    assert "overlaps" in early.inner_text() and "STAT" in late.inner_text()
    shot(page, "day-planner", tmp_path)
    # a filter being chosen and the scroll position survive the update
    page.select_option("select[name=modality]", "MR")
    page.evaluate("window.scrollTo(0, 200)")
    scrolled = page.evaluate("window.scrollY")
    portal.shell("from worklist import services\n"
                 "from worklist.models import ScheduledProcedureStep as S\n"
                 "services.set_step_status(S.objects.get(requested_procedure__order__patient__"
                 "patient_id='PL1'), 'ARRIVED', source='test', actor='desk')")
    page.evaluate("document.getElementById('planner').refreshNow()")
    page.wait_for_function("() => document.querySelector("
                           "'section[data-station=PLANCT] .slot.status-arrived') !== null")
    assert page.input_value("select[name=modality]") == "MR"
    assert page.evaluate("window.scrollY") == scrolled
    # the next day is empty for this station; the week shows both on today's column
    page.click("#next-day")
    assert page.locator("section[data-station=PLANCT] .slot").count() == 0
    page.select_option("select[name=view]", "week")
    page.click("#board-filter button:has-text('Show')")
    row = page.locator("#week-table tr[data-station=PLANCT]")
    assert "EARLY^ONE" in row.inner_text() and "LATE^TWO" in row.inner_text()


def test_edit_and_resend_then_find_it_in_the_audit(page, portal, tmp_path):
    """An ADT from a registered RIS without its patient ID is answered AE; the analyst edits
    a copy in the browser and processes it; the audit trail shows it, filtered, and as CSV."""
    from hl7.client import MLLPClient

    portal.shell("from hl7gw.models import Sender\n"
                 "Sender.objects.get_or_create(sending_application='EDITRIS', defaults={"
                 "'addresses': '127.0.0.1', 'may_update_patients': True})")
    message = ("MSH|^~\\&|EDITRIS|FAC|PORTAL|RAD|20261207120000||ADT^A08|ED1|P|2.5.1\r"
               "PID|||||EDITED^EVA||19700101|F\r")
    with MLLPClient("127.0.0.1", portal.hl7_port) as client:
        ack = client.send_message(message).decode()
    assert "MSA|AE|ED1" in ack
    page.click("header >> text=HL7")
    page.locator("#hl7-table tr", has_text="ED1").locator("a").first.click()
    page.click("#hl7-edit summary")
    text = page.input_value("#hl7-edit-text")
    page.fill("#hl7-edit-text", text.replace("PID|||||", "PID|||ED-77||"))
    page.click("#hl7-edit button")
    assert "processed as message" in page.inner_text(".messages")
    assert "Processed" in page.inner_text("main") or "processed" in page.inner_text("main")
    page.click("header >> text=Audit")
    page.select_option("select[name=category]", "hl7")
    page.fill("input[name=actor]", "chief")
    page.fill("input[name=text]", "edited")
    page.click("#audit-filter button")
    rows = page.locator("main table tbody tr")
    assert rows.count() == 1 and "message edited and resent" in rows.inner_text()
    shot(page, "audit", tmp_path)
    with page.expect_download() as got:
        page.click("#audit-filter a:has-text('Download CSV')")
    csv_text = open(got.value.path(), encoding="utf-8").read()
    assert csv_text.splitlines()[0].lower().startswith(("time", "when", "created"))
    lines = [line for line in csv_text.splitlines() if line]
    assert len(lines) == 2 and "message edited and resent" in lines[1]  # what the page shows


OUTBOUND = """
import datetime as dt
from django.utils import timezone
from hl7gw.models import Receiver
from tests.samples import free_port
from worklist import services
from worklist.models import Station
Receiver.objects.create(name="DOWNRIS", host="127.0.0.1", port=free_port())
room = Station.objects.get_or_create(ae_title="OUTCT", defaults={"name": "out",
                                                                 "modality": "CT"})[0]
order = services.create_order(
    patient=services.PatientData("OUT1", "OUTBOUND^OLGA"), procedure=None,
    step=services.station_step(room, dt.datetime.combine(timezone.localdate(), dt.time(12))),
    actor="test")
step = order.procedures.get().steps.get()
services.set_step_status(step, "IN PROGRESS", source="test", actor="modality")
print(step.pk)
"""


def test_an_outbound_message_attempts_and_cancel(page, portal, tmp_path):
    """A status message for a receiver that is down: its row opens to the message and each
    failed attempt, and an admin cancels it."""
    from tests.waiting import wait_until

    portal.shell(OUTBOUND)
    page.click("header >> text=HL7")
    page.click("a:has-text('Outbound')")
    row = page.locator("#outbound-table tr", has_text="DOWNRIS")
    row.locator("a").first.click()
    assert "OUTBOUND^OLGA" in page.inner_text("#outbound-text")
    # queued by another process (the shell): this one tries it now
    detail = page.url
    page.click("form button:has-text('Retry now')")
    page.wait_for_selector(".messages:has-text('queued again')")  # the retry's own page

    def an_attempt_shown() -> bool:
        page.goto(detail)  # after the navigation above, never racing it
        return "no answer" in page.inner_text("main")

    wait_until(an_attempt_shown, timeout=20, interval=0.5, what="a failed attempt listed")
    shot(page, "hl7-outbound", None)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form button:has-text('Cancel')")
    assert "Canceled" in page.inner_text("#outbound-status")
