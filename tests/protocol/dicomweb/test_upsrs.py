"""UPS-RS over raw HTTP (no UPS-RS client library is installable: requests written from
PS3.18 11): retrieve a workitem, change its state with the standard's rules and codes, and the
change seen by the other faces (MWL C-FIND, the order's history)."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

from pacs.models import ApplicationEntity
from worklist import services
from worklist.models import ScheduledProcedureStep, StepEvent

JSON = "application/dicom+json"


@pytest.fixture
def step(web):
    order = services.create_order(
        patient=services.PatientData("UPS1", "DOE^JOHN"), procedure=None,
        step=services.StepData(modality="CT", start=dt.datetime(2026, 11, 23, 9, 30),
                               station_ae_title="CT1", description="CT head"),
        actor="scheduler")
    return order.procedures.get().steps.get()


def url(web: str, step: ScheduledProcedureStep, suffix: str = "") -> str:
    return f"{web}/dicomweb/workitems/{step.ups_instance_uid}{suffix}"


def put_state(web, auth, step, state: str, transaction: str | None):
    body = {"00741000": {"vr": "CS", "Value": [state]}}
    if transaction is not None:
        body["00081195"] = {"vr": "UI", "Value": [transaction]}
    return requests.put(url(web, step, "/state"), json=body, timeout=10,
                        headers={**auth, "Content-Type": JSON})


PERFORMED = {"00741216": {"vr": "SQ", "Value": [{
    "00404050": {"vr": "DT", "Value": ["20261123093100"]},
    "00404051": {"vr": "DT", "Value": ["20261123094500"]}}]}}


def report_performed(web, auth, step, transaction: str) -> None:
    """What a performer sends before COMPLETED: when the work started and ended."""
    response = requests.post(url(web, step, f"?{transaction}"), json=PERFORMED, timeout=10,
                             headers={**auth, "Content-Type": JSON})
    assert response.status_code == 200, response.content


def test_every_step_is_a_workitem_with_mwl_attributes_mapped(web, auth, step):
    assert step.ups_instance_uid
    response = requests.get(url(web, step), headers={**auth, "Accept": JSON}, timeout=10)
    assert response.status_code == 200
    (item,) = response.json()
    assert item["00080018"]["Value"] == [step.ups_instance_uid]
    assert item["00741000"]["Value"] == ["SCHEDULED"]
    assert item["00100010"]["Value"] == [{"Alphabetic": "DOE^JOHN"}]
    assert item["00404005"]["Value"][0].startswith("202611230930")
    assert item["00741204"]["Value"] == ["CT head"]
    assert item["00404025"]["Value"][0]["00080100"]["Value"] == ["CT1"]
    request = item["0040A370"]["Value"][0]
    assert request["00080050"]["Value"] == [step.requested_procedure.order.accession_number]
    assert "00081195" not in item  # the Transaction UID is never shown
    missing = requests.get(f"{web}/dicomweb/workitems/1.2.3", headers=auth, timeout=10)
    assert missing.status_code == 404 and "C307" in missing.headers["Warning"]


def test_claim_complete_and_the_rules_of_the_state_model(web, auth, step):
    mine, other = generate_uid(), generate_uid()
    assert put_state(web, auth, step, "IN PROGRESS", None).status_code == 400
    assert put_state(web, auth, step, "SCHEDULED", mine).status_code == 400
    assert put_state(web, auth, step, "DONE", mine).status_code == 400
    early = put_state(web, auth, step, "COMPLETED", mine)
    assert early.status_code == 409 and "C310" in early.headers["Warning"]
    assert put_state(web, auth, step, "IN PROGRESS", mine).status_code == 200
    again = put_state(web, auth, step, "IN PROGRESS", other)
    assert again.status_code == 409 and "C302" in again.headers["Warning"]
    wrong = put_state(web, auth, step, "COMPLETED", other)
    assert wrong.status_code == 409 and "C301" in wrong.headers["Warning"]
    unfinished = put_state(web, auth, step, "COMPLETED", mine)  # final state requirements
    assert unfinished.status_code == 409 and "C304" in unfinished.headers["Warning"]
    report_performed(web, auth, step, mine)
    assert put_state(web, auth, step, "COMPLETED", mine).status_code == 200
    repeated = put_state(web, auth, step, "COMPLETED", mine)
    assert repeated.status_code == 200 and "B306" in repeated.headers["Warning"]
    final = put_state(web, auth, step, "CANCELED", mine)
    assert final.status_code == 409 and "C311" in final.headers["Warning"]
    step.refresh_from_db()
    assert step.status == "COMPLETED"
    changes = [(e.status, e.source, e.actor) for e in StepEvent.objects.filter(step=step)
               if e.source == "ups" and e.status != e.previous_status]
    assert changes == [("IN PROGRESS", "ups", "clinician"), ("COMPLETED", "ups", "clinician")]


def test_cancel_by_the_performer_discontinues_the_step(web, auth, step):
    mine = generate_uid()
    assert put_state(web, auth, step, "IN PROGRESS", mine).status_code == 200
    assert put_state(web, auth, step, "CANCELED", mine).status_code == 200
    step.refresh_from_db()
    assert step.status == "DISCONTINUED"
    item = requests.get(url(web, step), headers=auth, timeout=10).json()[0]
    assert item["00741000"]["Value"] == ["CANCELED"]
    warned = put_state(web, auth, step, "CANCELED", mine)
    assert warned.status_code == 200 and "B304" in warned.headers["Warning"]


def test_bad_bodies_and_no_login(web, auth, step):
    plain = requests.put(url(web, step, "/state"), data=b"IN PROGRESS", timeout=10,
                         headers={**auth, "Content-Type": "text/plain"})
    assert plain.status_code == 415
    garbage = requests.put(url(web, step, "/state"), data=b"{", timeout=10,
                           headers={**auth, "Content-Type": JSON})
    assert garbage.status_code == 400
    anonymous = requests.put(url(web, step, "/state"), json={}, timeout=10,
                             headers={"Content-Type": JSON})
    assert anonymous.status_code == 401


def test_a_claim_over_ups_rs_is_seen_by_mwl_c_find(web, auth, step, dimse_listener):
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    assert put_state(web, auth, step, "IN PROGRESS", generate_uid()).status_code == 200
    # a claimed item leaves the modalities' default worklist, and is found as IN PROGRESS
    assert mwl_statuses(dimse_listener, "", PatientID="UPS1") == []
    assert mwl_statuses(dimse_listener, "IN PROGRESS", PatientID="UPS1") == ["IN PROGRESS"]


def mwl_statuses(dimse_listener, status: str, **keys: str) -> list[str]:
    """The step statuses a modality's MWL C-FIND (pynetdicom) answers with."""
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    sps = Dataset()
    sps.ScheduledProcedureStepStatus = status
    query.ScheduledProcedureStepSequence = [sps]
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", dimse_listener.address[1], ae_title="PORTAL")
    assert assoc.is_established
    try:
        answers = [ds for st, ds in assoc.send_c_find(query, MWL) if st.Status == 0xFF00]
    finally:
        assoc.release()
    return [a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus for a in answers]


def new_workitem(**changes) -> dict:
    item = {
        "00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
        "00741200": {"vr": "CS", "Value": ["HIGH"]},
        "00741204": {"vr": "LO", "Value": ["AI lung nodule analysis"]},
        "00404005": {"vr": "DT", "Value": ["20261124103000"]},
        "00404041": {"vr": "CS", "Value": ["READY"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "MÜLLER^ANNA"}]},
        "00100020": {"vr": "LO", "Value": ["UPS2"]},
        "00404025": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["AI1"]},
                                            "00080102": {"vr": "SH", "Value": ["DCM_AET"]}}]},
        "0040A370": {"vr": "SQ", "Value": [{"00080050": {"vr": "SH", "Value": ["ACC-UPS-2"]},
                                            "0020000D": {"vr": "UI", "Value": ["1.2.3.4.5"]}}]},
    }
    item.update(changes)
    return item


def post(web, auth, body, query: str = ""):
    return requests.post(f"{web}/dicomweb/workitems{query}", json=body, timeout=10,
                         headers={**auth, "Content-Type": JSON})


def test_create_workitem_then_retrieve_it(web, auth):
    uid = generate_uid()
    created = post(web, auth, new_workitem(), f"?{uid}")
    assert created.status_code == 201, created.content
    assert created.headers["Location"].endswith(f"/dicomweb/workitems/{uid}")
    item = requests.get(created.headers["Location"], headers=auth, timeout=10).json()[0]
    assert item["00741000"]["Value"] == ["SCHEDULED"]
    assert item["00100010"]["Value"] == [{"Alphabetic": "MÜLLER^ANNA"}]
    assert item["00741200"]["Value"] == ["HIGH"]
    assert item["0040A370"]["Value"][0]["00080050"]["Value"] == ["ACC-UPS-2"]
    step = ScheduledProcedureStep.objects.get(ups_instance_uid=uid)
    assert step.requested_procedure.order.source == "ups"
    assert post(web, auth, new_workitem(), f"?workitem={uid}").status_code == 409  # exists


def test_create_names_what_is_missing_or_wrong(web, auth):
    incomplete = new_workitem()
    del incomplete["00741204"], incomplete["00100020"]
    refused = post(web, auth, incomplete)
    assert refused.status_code == 400
    assert "ProcedureStepLabel" in refused.json()["error"]
    assert "PatientID" in refused.json()["error"]
    started = post(web, auth, new_workitem(**{"00741000": {"vr": "CS", "Value": ["COMPLETED"]}}))
    assert started.status_code == 400 and "SCHEDULED" in started.json()["error"]
    bad_date = post(web, auth, new_workitem(**{"00404005": {"vr": "DT", "Value": ["soon"]}}))
    assert bad_date.status_code == 400
    assert ScheduledProcedureStep.objects.count() == 0


def test_search_workitems(web, auth, step):
    assert post(web, auth, new_workitem()).status_code == 201

    def search(query: str) -> list[str]:
        response = requests.get(f"{web}/dicomweb/workitems?{query}", timeout=10,
                                headers={**auth, "Accept": JSON})
        assert response.status_code == 200, response.content
        return [item["00100020"]["Value"][0] for item in response.json()]

    assert sorted(search("")) == ["UPS1", "UPS2"]
    assert search("PatientName=m%C3%BCller*") == ["UPS2"]
    assert search("ScheduledStationNameCodeSequence.CodeValue=CT1") == ["UPS1"]
    assert search("ScheduledProcedureStepStartDateTime=20261124") == ["UPS2"]
    assert search("ScheduledProcedureStepStartDateTime=20261123090000-20261123100000") == [
        "UPS1"]
    assert search("ReferencedRequestSequence.AccessionNumber=ACC-UPS-2") == ["UPS2"]
    assert search("limit=1&offset=1") == ["UPS2"]
    put_state(web, auth, step, "IN PROGRESS", generate_uid())
    assert search("ProcedureStepState=SCHEDULED") == ["UPS2"]
    assert search("ProcedureStepState=IN%20PROGRESS") == ["UPS1"]
    assert requests.get(f"{web}/dicomweb/workitems?Nonsense=1", headers=auth,
                        timeout=10).status_code == 400


def test_cross_face_order_found_claimed_completed_over_ups_rs(web, auth, step,
                                                              dimse_listener):
    """A scheduler's order, found by UPS-RS search, claimed and completed over UPS-RS: the
    MWL C-FIND and the order's status show it."""
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    found = requests.get(f"{web}/dicomweb/workitems?PatientID=UPS1&ProcedureStepState=SCHEDULED",
                         headers=auth, timeout=10).json()
    (uid,) = [item["00080018"]["Value"][0] for item in found]
    assert uid == step.ups_instance_uid
    mine = generate_uid()
    assert put_state(web, auth, step, "IN PROGRESS", mine).status_code == 200
    report_performed(web, auth, step, mine)
    assert put_state(web, auth, step, "COMPLETED", mine).status_code == 200
    assert mwl_statuses(dimse_listener, "COMPLETED", PatientID="UPS1") == ["COMPLETED"]
    step.refresh_from_db()
    assert step.status == "COMPLETED"


def test_update_progress_and_label_with_the_transaction_rule(web, auth, step):
    def update(body, query=""):
        return requests.post(url(web, step, query), json=body, timeout=10,
                             headers={**auth, "Content-Type": JSON})

    label = {"00741204": {"vr": "LO", "Value": ["CT head, contrast"]}}
    assert update(label).status_code == 200  # SCHEDULED: no Transaction UID needed
    mine = generate_uid()
    assert put_state(web, auth, step, "IN PROGRESS", mine).status_code == 200
    progress = {"00741002": {"vr": "SQ", "Value": [{
        "00741004": {"vr": "DS", "Value": [40]},
        "00741006": {"vr": "ST", "Value": ["reconstructing"]}}]}}
    assert update(progress).status_code == 400  # IN PROGRESS: Transaction UID required
    wrong = update(progress, f"?{generate_uid()}")
    assert wrong.status_code == 409 and "C301" in wrong.headers["Warning"]
    assert update(progress, f"?{mine}").status_code == 200
    ignored = update({**progress, "00081080": {"vr": "LO", "Value": ["x"]}},
                     f"?transaction={mine}")
    assert ignored.status_code == 200 and "00081080" in ignored.headers["Warning"]
    item = requests.get(url(web, step), headers=auth, timeout=10).json()[0]
    assert item["00741204"]["Value"] == ["CT head, contrast"]
    info = item["00741002"]["Value"][0]
    assert info["00741004"]["Value"] == [40] and info["00741006"]["Value"] == ["reconstructing"]
    state = update({"00741000": {"vr": "CS", "Value": ["COMPLETED"]}}, f"?{mine}")
    assert state.status_code == 400
    assert update(PERFORMED, f"?{mine}").status_code == 200
    item = requests.get(url(web, step), headers=auth, timeout=10).json()[0]
    assert item["00741216"]["Value"][0]["00404051"]["Value"] == ["20261123094500"]
    assert put_state(web, auth, step, "COMPLETED", mine).status_code == 200
    final = update(label, f"?{mine}")
    assert final.status_code == 409 and "C300" in final.headers["Warning"]


def test_cancellation_requests(web, auth, step):
    reason = {"00741238": {"vr": "LT", "Value": ["patient left"]}}
    cancel = requests.post(url(web, step, "/cancelrequest"), json=reason, timeout=10,
                           headers={**auth, "Content-Type": JSON})
    assert cancel.status_code == 202
    step.refresh_from_db()
    assert step.status == "CANCELED"  # it was only SCHEDULED: canceled at once
    again = requests.post(url(web, step, "/cancelrequest"), headers=auth, timeout=10)
    assert again.status_code == 409 and "B304" in again.headers["Warning"]

    other = services.create_order(
        patient=services.PatientData("UPS3", "ROE^RICHARD"), procedure=None,
        step=services.StepData(modality="MR", start=dt.datetime(2026, 11, 23, 11, 0)),
        actor="scheduler").procedures.get().steps.get()
    mine = generate_uid()
    assert put_state(web, auth, other, "IN PROGRESS", mine).status_code == 200
    asked = requests.post(url(web, other, "/cancelrequest"), json=reason, timeout=10,
                          headers={**auth, "Content-Type": JSON})
    assert asked.status_code == 202
    other.refresh_from_db()
    assert other.status == "IN PROGRESS"  # the performer decides
    info = requests.get(url(web, other), headers=auth, timeout=10).json()[0]["00741002"]
    assert info["Value"][0]["00741238"]["Value"] == ["patient left"]
    report_performed(web, auth, other, mine)
    assert put_state(web, auth, other, "COMPLETED", mine).status_code == 200
    done = requests.post(url(web, other, "/cancelrequest"), headers=auth, timeout=10)
    assert done.status_code == 409 and "C311" in done.headers["Warning"]


def test_cross_face_hl7_order_claimed_and_completed_over_ups_rs(web, auth, dimse_listener,
                                                               hl7_senders):
    """An ORM^O01 over MLLP (python-hl7's client, the real listener) becomes a workitem: found
    by UPS-RS search, claimed and completed there; MWL C-FIND and the order status follow."""
    from hl7.client import MLLPClient

    from hl7gw.mllp import MllpListener

    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    listener = MllpListener(host="127.0.0.1", port=0)
    listener.start()
    try:
        obr = ["OBR", "1", "PL9", "", "CTHEAD^CT head^L"] + [""] * 20
        obr[18], obr[24] = "HL7UPS1", "CT"
        message = "\r".join([
            "MSH|^~\\&|RIS|H|PORTAL|H|20261123080000||ORM^O01|UPS9|P|2.3.1",
            "PID|||UPS1^^^H||DOE^JOHN", "ORC|NW|PL9", "|".join(obr)]) + "\r"
        with MLLPClient(*listener.address) as client:
            assert b"MSA|AA|UPS9" in client.send_message(message)
    finally:
        listener.stop()
    found = requests.get(f"{web}/dicomweb/workitems", timeout=10, headers=auth, params={
        "ReferencedRequestSequence.AccessionNumber": "HL7UPS1"}).json()
    (uid,) = [item["00080018"]["Value"][0] for item in found]
    step = ScheduledProcedureStep.objects.get(ups_instance_uid=uid)
    assert step.requested_procedure.order.source == "hl7"
    mine = generate_uid()
    assert put_state(web, auth, step, "IN PROGRESS", mine).status_code == 200
    report_performed(web, auth, step, mine)
    assert put_state(web, auth, step, "COMPLETED", mine).status_code == 200
    assert mwl_statuses(dimse_listener, "COMPLETED", AccessionNumber="HL7UPS1") == [
        "COMPLETED"]
    step.refresh_from_db()
    assert step.status == "COMPLETED"
