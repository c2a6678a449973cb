"""The worklist explainer: a modality's real MWL query (pynetdicom as the SCU, on the real
listener) is kept, and an order is checked against it, one reason at a time: station AE
title, date and time zone, modality, character set, the AE's "may query the worklist" and
"own station only" settings, and the step's status."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

from pacs.models import ApplicationEntity
from tests.users import user_with
from worklist import explain, services
from worklist.models import Procedure, ScheduledProcedureStep, Station, WorklistQuery

pytestmark = pytest.mark.interop

TODAY = timezone.localdate()


@pytest.fixture
def site(dimse_listener):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    ApplicationEntity.objects.create(ae_title="CT2", host="127.0.0.1", port=105,
                                     may_query_worklist=True)
    ct1 = Station.objects.create(ae_title="CT1", name="ct-1", modality="CT")
    Station.objects.create(ae_title="CT2", name="ct-2", modality="CT")
    procedure = Procedure.objects.create(code_value="CTH", code_meaning="CT head",
                                         modality="CT")
    order = services.create_order(
        patient=services.PatientData("P1", "DOE^JANE"), procedure=procedure,
        step=services.station_step(ct1, dt.datetime.combine(TODAY, dt.time(23, 0))),
        actor="test")
    return dimse_listener, order


def _query(listener, calling: str, **sps: str) -> tuple[list[Dataset], list[int]]:
    """A modality's worklist query: its station AE title, today, CT, unless ``sps`` says
    otherwise; (answers, final statuses)."""
    item = Dataset()
    item.ScheduledStationAETitle = sps.get("station", calling)
    item.ScheduledProcedureStepStartDate = sps.get("date", TODAY.strftime("%Y%m%d"))
    item.Modality = sps.get("modality", "CT")
    item.ScheduledProcedureStepID = ""
    query = Dataset()
    query.PatientName = ""
    query.AccessionNumber = ""
    query.ScheduledProcedureStepSequence = [item]
    ae = AE(ae_title=calling)
    ae.add_requested_context(MWL)
    host, port = listener.address
    assoc = ae.associate(host, port, ae_title="PORTAL")
    assert assoc.is_established
    answers, statuses = [], []
    try:
        for status, identifier in assoc.send_c_find(query, MWL):
            if status.Status in (0xFF00, 0xFF01):
                answers.append(identifier)
            else:
                statuses.append(status.Status)
    finally:
        assoc.release()
    return answers, statuses


def _steps(order):
    return list(ScheduledProcedureStep.objects.filter(requested_procedure__order=order))


def _check(answer: explain.StepAnswer, what: str) -> explain.Check:
    return next(c for c in answer.checks if c.what == what)


def test_the_last_real_query_is_kept_and_the_order_is_seen(site, client, settings):
    listener, order = site
    answers, _ = _query(listener, "CT1")
    assert [a.AccessionNumber for a in answers] == [order.accession_number]
    kept = WorklistQuery.objects.get()
    assert (kept.ae_title, kept.host) == ("CT1", "127.0.0.1")
    result = explain.explain(_steps(order), "CT1")
    assert result.query == kept and result.steps[0].seen
    for key in ("ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "Modality"):
        assert _check(result.steps[0], key).outcome == explain.MATCH
    assert _check(result.steps[0], "Step status").outcome == explain.MATCH
    # the pages: the order's check and the kept queries with their keys
    client.force_login(user_with("sched", "scheduler"))
    page = client.get(reverse("order-explain", args=[order.pk]), {"ae": "CT1"}).content.decode()
    assert '<span class="ok verdict">seen</span>' in page
    page = client.get(reverse("worklist-queries"), {"ae": "CT1"}).content.decode()
    assert "&gt; ScheduledStationAETitle</dt><dd>CT1" in page
    assert "PatientName</dt><dd>(return key)" in page
    # only the last few per AE title are kept
    settings.MWL_QUERIES_KEPT = 3
    for _ in range(4):
        _query(listener, "CT1")
    _query(listener, "CT2")
    assert WorklistQuery.objects.filter(ae_title="CT1").count() == 3
    assert WorklistQuery.objects.filter(ae_title="CT2").count() == 1


def test_station_ae_title(site):
    listener, order = site
    _query(listener, "CT2")  # asks for its own station's items: the order is on CT1
    answer = explain.explain(_steps(order), "CT2").steps[0]
    assert not answer.seen
    check = _check(answer, "ScheduledStationAETitle")
    assert check.outcome == explain.NO_MATCH
    assert "asks 'CT2'; the step has 'CT1'" in check.detail


def test_date_range_and_time_zone(site, settings):
    listener, order = site
    tomorrow = (TODAY + dt.timedelta(days=1)).strftime("%Y%m%d")
    _query(listener, "CT1", date=f"{tomorrow}-")
    answer = explain.explain(_steps(order), "CT1").steps[0]
    check = _check(answer, "ScheduledProcedureStepStartDate")
    assert not answer.seen and check.outcome == explain.NO_MATCH
    assert f"asks '{tomorrow}-'" in check.detail and TODAY.strftime("%Y%m%d") in check.detail
    assert f"time zone ({settings.TIME_ZONE}" in check.detail
    _query(listener, "CT1", date=f"{TODAY:%Y%m%d}-{tomorrow}")  # a range holding today
    assert explain.explain(_steps(order), "CT1").steps[0].seen


def test_modality(site):
    listener, order = site
    _query(listener, "CT1", modality="MR")
    answer = explain.explain(_steps(order), "CT1").steps[0]
    check = _check(answer, "Modality")
    assert not answer.seen and check.outcome == explain.NO_MATCH
    assert "asks 'MR'; the step has 'CT'" in check.detail


def test_character_set(site):
    listener, order = site
    _query(listener, "CT1")
    assert _check(explain.explain(_steps(order), "CT1").steps[0],
                  "Character set").outcome == explain.MATCH
    patient = order.patient
    patient.patient_name = "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΑΝΝΗΣ"
    patient.save()
    ApplicationEntity.objects.filter(ae_title="CT1").update(worklist_charset="ISO_IR 100")
    answer = explain.explain(_steps(order), "CT1").steps[0]
    check = _check(answer, "Character set")
    assert answer.seen and check.outcome == explain.WARNING  # seen, but garbled there
    assert "ISO_IR 100" in check.detail and "UTF-8" in check.detail


def test_may_query_the_worklist(site):
    listener, order = site
    _query(listener, "CT1")
    ApplicationEntity.objects.filter(ae_title="CT1").update(may_query_worklist=False)
    result = explain.explain(_steps(order), "CT1")
    refused = next(c for c in result.permissions if c.what == "May query the worklist")
    assert refused.outcome == explain.NO_MATCH and not result.steps[0].seen
    unknown = explain.explain(_steps(order), "CT9")
    assert unknown.permissions[0].outcome == explain.NO_MATCH
    assert "not in the AE table" in unknown.permissions[0].detail
    assert unknown.query is None and _check(unknown.steps[0], "Last query").outcome == "info"


def test_own_station_only(site):
    listener, order = site
    ApplicationEntity.objects.filter(ae_title="CT2").update(worklist_own_station_only=True)
    _query(listener, "CT2", station="*")  # asks for every station; the AE sees its own only
    answer = explain.explain(_steps(order), "CT2").steps[0]
    check = _check(answer, "Only items scheduled on this AE title")
    assert not answer.seen and check.outcome == explain.NO_MATCH
    assert "scheduled on CT1" in check.detail
    _query(listener, "CT1", station="*")
    assert explain.explain(_steps(order), "CT1").steps[0].seen


def test_order_status(site):
    listener, order = site
    _query(listener, "CT1")
    services.cancel_order(order, actor="test", note="duplicate")
    answer = explain.explain(_steps(order), "CT1").steps[0]
    check = _check(answer, "Step status")
    assert not answer.seen and check.outcome == explain.NO_MATCH
    assert "CANCELED" in check.detail
