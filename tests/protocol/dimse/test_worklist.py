"""Modality Worklist C-FIND with DCMTK `findscu -W` against the oracle data (DCMTK's sample
worklist items and queries, expected answers from orthanc-tests), and MPPS with pynetdicom."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

from pacs.models import ApplicationEntity
from tests.samples import shared_testdata
from worklist import services
from worklist.models import PerformedProcedureStep, ScheduledProcedureStep, Station

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def oracle() -> Path:
    return shared_testdata("worklists")

EXPECTED_COUNTS = [10, 10, 0, 10, 0, 6, 0, 0, 0, 0, 10, 10, 0]
IGNORED = {"(0008,0005)", "(0040,0004)", "(0040,0005)", "(0040,0020)"}


def dump2dcm(dump: Path, out: Path) -> Path:
    subprocess.run(["/usr/bin/dump2dcm", "--write-xfer-little", str(dump), str(out)],
                   check=True, capture_output=True)
    return out


def findscu_w(listener, query: Path, out: Path, calling: str = "MODALITY") -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*"):
        old.unlink()
    host, port = listener.address
    proc = subprocess.run(["/usr/bin/findscu", "-W", "-aet", calling, "-aec", "PORTAL", "-X",
                           "-od", str(out), host, str(port), str(query)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("E:")], proc.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _top_level(ds: Dataset) -> list[str]:
    lines = []
    for element in ds:
        tag = f"({element.tag.group:04x},{element.tag.element:04x})"
        if tag in IGNORED:
            continue
        value = "" if element.VR == "SQ" else str(element.value).strip()
        lines.append(f"{tag} {value}")
    return sorted(lines)


def _expected(answer: list[str]) -> list[str]:
    lines = []
    for line in answer:
        tag = line[:11]
        if tag in IGNORED or tag.startswith("(fffe"):
            continue
        value = line.partition("[")[2].rpartition("]")[0].strip() if "[" in line else ""
        lines.append(f"{tag} {value}")
    return sorted(lines)


@pytest.fixture
def worklist(dimse_listener, tmp_path, oracle):
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_query_worklist=True, may_send_mpps=True)
    items = [dump2dcm(d, tmp_path / f"{d.stem}.wl")
             for d in sorted((oracle / "Dcmtk" / "Database").glob("*.dump"))]
    call_command("import_worklist", *map(str, items), stdout=open("/dev/null", "w"))
    assert ScheduledProcedureStep.objects.count() == 10
    return dimse_listener


@pytest.mark.parametrize("n", range(13))
def test_oracle_queries(worklist, tmp_path, n, oracle):
    query = dump2dcm(oracle / "Dcmtk" / "Queries" / f"wlistqry{n}.dump", tmp_path / "q.dcm")
    answers = findscu_w(worklist, query, tmp_path / "rsp")
    assert len(answers) == EXPECTED_COUNTS[n]
    expected = json.loads((oracle / "Dcmtk" / "Expected" / f"all-{n}.json").read_text())
    assert sorted(map(_top_level, answers)) == sorted(map(_expected, expected))


def _order(station: str, when: dt.datetime, name: str = "DOE^JANE", patient_id: str = "P1"):
    return services.create_order(
        patient=services.PatientData(patient_id, name), procedure=None,
        step=services.StepData(modality="CT", start=when, station_ae_title=station,
                               station_name=station.lower()), actor="test")


def _query(station: str = "", date: str = "", charset: str | None = None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    item = Dataset()
    item.ScheduledStationAETitle = station
    item.ScheduledProcedureStepStartDate = date
    item.Modality = ""
    item.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def _mwl(listener, ds: Dataset, calling: str = "CT1", fuzzy: bool = False) -> list[Dataset]:
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
    from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

    ae = AE(ae_title=calling)
    ae.add_requested_context(MWL)
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = MWL
    item.service_class_application_information = bytes([1, 1, int(fuzzy), 0])
    assoc = ae.associate(*listener.address, ae_title="PORTAL", ext_neg=[item])
    assert assoc.is_established
    (reply,) = [i for i in assoc.acceptor.user_information
                if isinstance(i, SOPClassExtendedNegotiation)]
    assert reply.service_class_application_information[2] == int(fuzzy)
    try:
        responses = list(assoc.send_c_find(ds, MWL))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000, responses[-1][0]
    return [answer for status, answer in responses if status.Status == 0xFF00]


def test_station_and_date_and_own_station_option(dimse_listener):
    ae = ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                          may_query_worklist=True)
    today = dt.datetime(2026, 11, 23, 9, 0)
    _order("CT1", today)
    _order("CT2", today, patient_id="P2")
    _order("CT1", today + dt.timedelta(days=1), patient_id="P3")
    found = _mwl(dimse_listener, _query("CT1", "20261123"))
    assert [d.PatientID for d in found] == ["P1"]
    assert found[0].ScheduledProcedureStepSequence[0].Modality == "CT"
    assert len(_mwl(dimse_listener, _query(date="20261123"))) == 2
    ae.worklist_own_station_only = True
    ae.save()
    dimse_listener.policy.invalidate()
    assert sorted(d.PatientID for d in _mwl(dimse_listener, _query())) == ["P1", "P3"]


def test_fuzzy_person_name_matching_only_when_negotiated(dimse_listener):
    """PS3.4 K.5.1: each word starts a name component, any order, any case."""
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    _order("CT1", dt.datetime(2026, 11, 23, 9, 0), name="DOE^JOHN", patient_id="P7")
    _order("CT1", dt.datetime(2026, 11, 23, 10, 0), name="ROE^JANE", patient_id="P8")
    ds = _query("CT1")
    ds.PatientName = "jo doe"
    assert _mwl(dimse_listener, ds) == []
    assert [d.PatientID for d in _mwl(dimse_listener, ds, fuzzy=True)] == ["P7"]


def test_cancelled_steps_leave_the_worklist(dimse_listener):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    order = _order("CT1", dt.datetime(2026, 11, 23, 9, 0))
    services.cancel_order(order, actor="test")
    assert _mwl(dimse_listener, _query("CT1")) == []


@pytest.mark.parametrize("charset,expected", [("ISO_IR 100", "ISO_IR 100"),
                                               ("ISO_IR 192", "ISO_IR 192"),
                                               (None, "ISO_IR 192")])
def test_answer_character_set(dimse_listener, charset, expected):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    _order("CT1", dt.datetime(2026, 11, 23, 9, 0), name="MÜLLER^JÖRG")
    (answer,) = _mwl(dimse_listener, _query("CT1", charset=charset))
    assert answer.SpecificCharacterSet == expected
    assert str(answer.PatientName) == "MÜLLER^JÖRG"


def test_an_ascii_answer_to_a_request_without_charset_names_none(dimse_listener):
    """PS3.5 6.1.2.2: without Specific Character Set the default repertoire (ASCII) applies;
    an answer that needs no more does not name one (as the request did not)."""
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    _order("CT1", dt.datetime(2026, 11, 23, 9, 0), name="DOE^JOHN")
    (answer,) = _mwl(dimse_listener, _query("CT1"))
    assert "SpecificCharacterSet" not in answer and str(answer.PatientName) == "DOE^JOHN"


def test_ae_charset_setting_overrides_the_request(dimse_listener):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True, worklist_charset="ISO_IR 100")
    _order("CT1", dt.datetime(2026, 11, 23, 9, 0), name="MÜLLER^JÖRG")
    (answer,) = _mwl(dimse_listener, _query("CT1"))
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert str(answer.PatientName) == "MÜLLER^JÖRG"


def test_worklist_needs_permission(dimse_listener, known_aes):
    from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(MWL)
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL")
    try:
        (status, _), = list(assoc.send_c_find(_query(), MWL))
    finally:
        assoc.release()
    assert status.Status == 0x0124


# --- MPPS --------------------------------------------------------------------------------


def _mpps_assoc(listener, calling: str = "CT1"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(MPPS)
    assoc = ae.associate(*listener.address, ae_title="PORTAL")
    assert assoc.is_established
    return assoc


def _in_progress(step: ScheduledProcedureStep) -> Dataset:
    rp = step.requested_procedure
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = rp.study_instance_uid
    item.AccessionNumber = rp.order.accession_number
    item.RequestedProcedureID = rp.requested_procedure_id
    item.ScheduledProcedureStepID = step.scheduled_procedure_step_id
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientID = rp.order.patient.patient_id
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.Modality = "CT"
    return ds


@pytest.fixture
def scheduled(dimse_listener):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True, may_send_mpps=True)
    Station.objects.create(ae_title="CT1", name="ct1", modality="CT")
    order = _order("CT1", dt.datetime(2026, 11, 23, 9, 0))
    return ScheduledProcedureStep.objects.get(requested_procedure__order=order)


def test_mpps_in_progress_then_completed(dimse_listener, scheduled):
    uid = generate_uid()
    assoc = _mpps_assoc(dimse_listener)
    try:
        status, _ = assoc.send_n_create(_in_progress(scheduled), MPPS, uid)
        assert status.Status == 0x0000
        scheduled.refresh_from_db()
        assert scheduled.status == "IN PROGRESS"
        assert _mwl(dimse_listener, _query("CT1")) == []  # no longer to be done
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        series = Dataset()
        series.SeriesInstanceUID = "1.2.3.4"
        ref = Dataset()
        ref.ReferencedSOPInstanceUID = "1.2.3.4.5"
        series.ReferencedImageSequence = [ref]
        done.PerformedSeriesSequence = [series]
        status, _ = assoc.send_n_set(done, MPPS, uid)
        assert status.Status == 0x0000
        again = Dataset()
        again.PerformedProcedureStepStatus = "DISCONTINUED"
        status, _ = assoc.send_n_set(again, MPPS, uid)
        assert status.Status == 0x0110  # may no longer be updated
    finally:
        assoc.release()
    scheduled.refresh_from_db()
    assert scheduled.status == "COMPLETED"
    assert [e.source for e in scheduled.events.all()] == ["portal", "mpps", "mpps"]
    mpps = PerformedProcedureStep.objects.get(sop_instance_uid=uid)
    assert mpps.status == "COMPLETED" and list(mpps.steps.all()) == [scheduled]
    assert mpps.performed_series == [{"SeriesInstanceUID": "1.2.3.4",
                                      "SOPInstanceUIDs": ["1.2.3.4.5"]}]


def test_mpps_discontinued(dimse_listener, scheduled):
    uid = generate_uid()
    assoc = _mpps_assoc(dimse_listener)
    try:
        assert assoc.send_n_create(_in_progress(scheduled), MPPS, uid)[0].Status == 0
        stop = Dataset()
        stop.PerformedProcedureStepStatus = "DISCONTINUED"
        assert assoc.send_n_set(stop, MPPS, uid)[0].Status == 0
    finally:
        assoc.release()
    scheduled.refresh_from_db()
    assert scheduled.status == "DISCONTINUED"


def test_mpps_errors(dimse_listener, scheduled):
    uid = generate_uid()
    assoc = _mpps_assoc(dimse_listener)
    try:
        wrong = _in_progress(scheduled)
        wrong.PerformedProcedureStepStatus = "COMPLETED"
        assert assoc.send_n_create(wrong, MPPS, generate_uid())[0].Status == 0x0106
        assert assoc.send_n_create(_in_progress(scheduled), MPPS, uid)[0].Status == 0
        assert assoc.send_n_create(_in_progress(scheduled), MPPS, uid)[0].Status == 0x0111
        unknown = Dataset()
        unknown.PerformedProcedureStepStatus = "COMPLETED"
        assert assoc.send_n_set(unknown, MPPS, generate_uid())[0].Status == 0x0112
    finally:
        assoc.release()


def test_mpps_needs_permission(dimse_listener, scheduled, known_aes):
    assoc = _mpps_assoc(dimse_listener, calling="STORESCU")
    try:
        status, _ = assoc.send_n_create(_in_progress(scheduled), MPPS, generate_uid())
    finally:
        assoc.release()
    assert status.Status == 0x0124


def test_findscu_utf8_wildcard_on_a_multi_script_name(dimse_listener, tmp_path, oracle):
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    # The oracle item has no PatientID; we require one for every order (the one patient
    # registry is keyed on it), so the test adds it.
    dump = tmp_path / "item.dump"
    dump.write_text((oracle / "Encodings" / "database.dump").read_text(encoding="utf-8")
                    + "(0010,0020) LO [U1]\n", encoding="utf-8")
    item = dump2dcm(dump, tmp_path / "item.wl")
    call_command("import_worklist", str(item), stdout=open("/dev/null", "w"))
    query = dump2dcm(oracle / "Encodings" / "query.dump", tmp_path / "q.dcm")
    (answer,) = findscu_w(dimse_listener, query, tmp_path / "rsp")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "Test-éüäöòДΘĝדصķћ๛ﾈİ"


def test_findscu_latin1_item_answered_in_latin1_when_asked(dimse_listener, tmp_path, oracle):
    """A Latin-1 worklist item (orthanc issue 49): a request in ISO_IR 100 gets the name back
    in ISO_IR 100, a request without a character set gets it in UTF-8; both read the same."""
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    call_command("import_worklist", str(oracle / "Encodings" / "issue49-latin1.wl"),
                 stdout=open("/dev/null", "w"))
    plain = dump2dcm(oracle / "Encodings" / "issue49-latin1.query", tmp_path / "q.dcm")
    (answer,) = findscu_w(dimse_listener, plain, tmp_path / "rsp")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "VANILLÉ^LAURA^^^Mme"
    latin1 = tmp_path / "q1.dump"
    latin1.write_text("(0008,0005) CS [ISO_IR 100]\n(0010,0010) PN [*]\n"
                      "(0032,1060) LO []\n")
    (answer,) = findscu_w(dimse_listener, dump2dcm(latin1, tmp_path / "q1.dcm"),
                          tmp_path / "rsp")
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert str(answer.PatientName) == "VANILLÉ^LAURA^^^Mme"
    assert answer.RequestedProcedureDescription == "ÉCHOGRAPHIE"


def test_findscu_station_filter_for_an_ae_restricted_to_its_station(dimse_listener, tmp_path):
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True, worklist_own_station_only=True)
    _order("CT1", dt.datetime(2026, 11, 23, 9, 0), patient_id="MINE")
    _order("CT2", dt.datetime(2026, 11, 23, 9, 0), patient_id="OTHER")
    query = tmp_path / "q.dump"
    query.write_text("(0010,0020) LO []\n(0040,0100) SQ\n(fffe,e000) -\n(0040,0001) AE []\n"
                     "(fffe,e00d) -\n(fffe,e0dd) -\n")
    answers = findscu_w(dimse_listener, dump2dcm(query, tmp_path / "q.dcm"), tmp_path / "rsp",
                        calling="CT1")
    assert [a.PatientID for a in answers] == ["MINE"]


def test_an_edited_priority_reaches_the_worklist(dimse_listener):
    """The worklist answers the order as it is now, not a copy made when it was created."""
    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    order = _order("CT1", dt.datetime(2026, 11, 23, 9, 0))
    ds = _query("CT1")
    ds.RequestedProcedurePriority = ""
    assert [d.RequestedProcedurePriority for d in _mwl(dimse_listener, ds)] == ["ROUTINE"]
    services.update_order(order, changes={"priority": "HIGH"}, actor="sched")
    assert [d.RequestedProcedurePriority for d in _mwl(dimse_listener, ds)] == ["HIGH"]


def test_an_mpps_that_matches_no_step_is_listed_and_linked_by_hand(dimse_listener, scheduled,
                                                                    client):
    """IHE 'mismatch': the modality names the accession and step but its own Study Instance
    UID. Answered 0x0000 (the MPPS is kept), the step waits; the Reconciliation page shows the
    MPPS with its step as candidate, and linking it lets the step follow (then N-SET)."""
    from django.urls import reverse

    from tests.users import user_with

    uid = generate_uid()
    create = _in_progress(scheduled)
    create.ScheduledStepAttributesSequence[0].StudyInstanceUID = generate_uid()
    assoc = _mpps_assoc(dimse_listener)
    try:
        status, _ = assoc.send_n_create(create, MPPS, uid)
        assert status.Status == 0x0000
        scheduled.refresh_from_db()
        assert scheduled.status == "SCHEDULED"
        client.force_login(user_with("front", "scheduler"))
        page = client.get(reverse("reconciliation")).content.decode()
        listed = page.split('id="unlinked-mpps"')[1].split("</section>")[0]
        assert scheduled.scheduled_procedure_step_id in listed and "Link" in listed
        mpps = PerformedProcedureStep.objects.get(sop_instance_uid=uid)
        linked = client.post(reverse("mpps-link", args=[mpps.pk]), {"step": scheduled.pk})
        assert linked.status_code == 302
        scheduled.refresh_from_db()
        assert scheduled.status == "IN PROGRESS"
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_set(done, MPPS, uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    scheduled.refresh_from_db()
    assert scheduled.status == "COMPLETED"
    page = client.get(reverse("reconciliation")).content.decode()
    assert "Every MPPS matched its step." in page


def test_an_empty_sequence_key_asks_for_every_attribute_of_its_item(dimse_listener):
    """PS3.4 C.2.2.2.6: a sequence key with zero items, or one item that holds no attributes,
    is a universal match, and every attribute of the item comes back (as DCMTK wlmscpfs
    answers dcmjs-dimse's default worklist request), nested sequences included."""
    from worklist.query import SPS_ITEM

    ApplicationEntity.objects.create(ae_title="CT1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    order = services.create_order(
        patient=services.PatientData("P9", "ROE^RICHARD"), procedure=None, actor="test",
        step=services.StepData(modality="CT", start=dt.datetime(2026, 11, 23, 9),
                               station_ae_title="CT1", station_name="ct1"),
        code=services.Code("CTHEAD", "LOCAL", "CT of the head"))
    ScheduledProcedureStep.objects.filter(requested_procedure__order=order).update(
        protocol_code_value="P1", protocol_coding_scheme="LOCAL",
        protocol_code_meaning="head protocol")
    for sps in ([Dataset()], []):  # one empty item, then no item at all
        query = Dataset()
        query.PatientID = "P9"
        query.ScheduledProcedureStepSequence = sps
        query.RequestedProcedureCodeSequence = []
        (answer,) = _mwl(dimse_listener, query)
        (step,) = answer.ScheduledProcedureStepSequence
        assert [e.keyword for e in step] == sorted(
            (a.keyword for a in SPS_ITEM), key=tag_for_keyword)
        assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledStationName) == (
            "CT", "CT1", "ct1")
        (protocol,) = step.ScheduledProtocolCodeSequence
        assert (protocol.CodeValue, protocol.CodingSchemeDesignator,
                protocol.CodeMeaning) == ("P1", "LOCAL", "head protocol")
        (code,) = answer.RequestedProcedureCodeSequence
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "CTHEAD", "LOCAL", "CT of the head")
