"""The patient registry from its pages and the changes of what is stored: demographics edited,
merged and unmerged (as ADT^A40 does), study and series attributes changed, each followed by
the stored headers (the files that retrieves give out) and kept in the patient's history."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from pydicom import dcmread

from core.models import AuditEvent
from pacs.models import Instance, Job, Patient, PatientChange, Series, Study
from pacs.services import jobs, modify
from pacs.services.ingest import store_instance
from pacs.storage import get_storage
from tests.samples import encoded, sample
from tests.users import user_with
from worklist import selectors, services
from worklist.models import Order, PatientMerge

pytestmark = pytest.mark.django_db(transaction=True)  # files and jobs go on commit

ROOT = "1.2.826.0.1.3680043.8.498.2026"


@pytest.fixture(autouse=True)
def jobs_inline(monkeypatch):
    """Queued jobs run at once in this thread (the real job code), not in a thread of their
    own, so that a test sees their end."""
    monkeypatch.setattr(jobs, "enqueue", jobs.run_job)


def _store(patient_id: str, name: str, study: str, count: int = 2, **more) -> list[str]:
    uids = []
    for n in range(1, count + 1):
        ds = dcmread(sample("CT_small.dcm"))
        ds.PatientID, ds.PatientName = patient_id, name
        ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
        ds.StudyInstanceUID = f"{ROOT}.{study}"
        ds.SeriesInstanceUID = f"{ROOT}.{study}.1"
        ds.SOPInstanceUID = f"{ROOT}.{study}.1.{n}"
        for keyword, value in more.items():
            setattr(ds, keyword, value)
        store_instance(data=encoded(ds), received_from="test")
        uids.append(ds.SOPInstanceUID)
    return uids


def _stored(sop_uid: str):
    """The stored file of an instance, as a retrieve would send it."""
    inst = Instance.objects.get(sop_instance_uid=sop_uid)
    with get_storage().open(inst.file_key) as file:  # an object store's is not seekable
        return dcmread(io.BytesIO(file.read())), inst


def _order(patient_id: str, name: str) -> Order:
    return services.create_order(
        patient=services.PatientData(patient_id, name), procedure=None,
        step=services.StepData(modality="CT", start=__import__("datetime").datetime(
            2026, 12, 7, 10)), actor="tester")


def test_editing_demographics_rewrites_every_stored_header(storage_dir):
    uids = _store("P-EDIT", "OLD^NAME", "1")
    old_keys = {Instance.objects.get(sop_instance_uid=u).file_key for u in uids}
    patient = Patient.objects.get(patient_id="P-EDIT")
    assert services.edit_patient(patient, name="ŁUKASIEWICZ^ANNA", birth_date="19800202", sex="F",
                                 actor="sched")
    patient.refresh_from_db()
    assert (patient.patient_name, patient.patient_birth_date) == ("ŁUKASIEWICZ^ANNA", "19800202")
    for uid in uids:
        ds, inst = _stored(uid)
        # the file and the index's JSON header both say the new name; Ł is not in the
        # file's Latin-1 (ISO_IR 100), so the data set is UTF-8 now; the UIDs are the same
        assert str(ds.PatientName) == "ŁUKASIEWICZ^ANNA" and ds.PatientBirthDate == "19800202"
        assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.SOPInstanceUID == uid
        assert inst.metadata["00100010"]["Value"][0]["Alphabetic"] == "ŁUKASIEWICZ^ANNA"
        assert inst.file_size == len(get_storage().open(inst.file_key).read())
    new_keys = {Instance.objects.get(sop_instance_uid=u).file_key for u in uids}
    assert not (new_keys & old_keys)
    assert not any(get_storage().exists(key) for key in old_keys)  # no old copy left behind
    job = Job.objects.get(kind=Job.Kind.MODIFY)
    assert (job.state, job.completed, job.failed) == ("done", 2, 0)
    change = PatientChange.objects.get(patient=patient, action="demographics changed")
    assert change.source == "page" and change.actor == "sched"
    assert "'OLD^NAME' -> 'ŁUKASIEWICZ^ANNA'" in change.detail
    assert AuditEvent.objects.filter(category="patient", action="patient updated").exists()


def test_an_unchanged_edit_changes_nothing(storage_dir):
    _store("P-SAME", "SAME^NAME", "2", count=1)
    patient = Patient.objects.get(patient_id="P-SAME")
    assert not services.edit_patient(patient, name="SAME^NAME", birth_date="19700101",
                                     sex="F", actor="sched")
    assert not Job.objects.exists() and not PatientChange.objects.filter(patient=patient)


def test_merge_and_unmerge_give_back_exactly_what_moved(storage_dir):
    prior_uids = _store("P-PRIOR", "DOE^JANE", "3")
    _store("P-SURV", "DOE^JANE", "4", count=1)
    _order("P-PRIOR", "DOE^JANE")
    survivor = Patient.objects.get(patient_id="P-SURV")
    prior = Patient.objects.get(patient_id="P-PRIOR")
    services.edit_patient(prior, name="DOE^JANE", birth_date="19700101", sex="",
                          actor="sched")  # a line of the prior patient's own history
    # the same name and birth date under two IDs: each is the other's probable duplicate
    assert selectors.probable_duplicates(survivor) == [prior]
    assert selectors.patient_search("DOE").get(pk=prior.pk).probable_duplicate

    merge = services.merge_into(prior, survivor, actor="sched", source="page")
    assert not Patient.objects.filter(patient_id="P-PRIOR").exists()
    assert Study.objects.filter(patient=survivor).count() == 2
    assert Order.objects.filter(patient=survivor).count() == 1
    ds, _ = _stored(prior_uids[0])
    assert ds.PatientID == "P-SURV"  # the moved images' headers follow the registry
    assert PatientChange.objects.filter(patient=survivor, action="merged").exists()
    # the prior patient's own history moved along, then comes back
    registered = PatientChange.objects.get(action="demographics changed")
    assert registered.patient_id == survivor.pk

    prior_again = services.unmerge(merge, actor="sched")
    assert (prior_again.patient_id, prior_again.patient_name, prior_again.patient_birth_date,
            prior_again.patient_sex) == ("P-PRIOR", "DOE^JANE", "19700101", "")
    assert Study.objects.filter(patient=prior_again).get().study_instance_uid == f"{ROOT}.3"
    assert Study.objects.filter(patient=survivor).get().study_instance_uid == f"{ROOT}.4"
    assert Order.objects.get().patient_id == prior_again.pk
    assert PatientChange.objects.get(pk=registered.pk).patient_id == prior_again.pk
    ds, _ = _stored(prior_uids[1])
    assert ds.PatientID == "P-PRIOR"
    merge.refresh_from_db()
    assert merge.undone_at is not None and merge.undone_by == "sched"
    with pytest.raises(services.WorklistError, match="undone already"):
        services.unmerge(merge, actor="sched")
    actions = set(AuditEvent.objects.filter(category="patient").values_list("action",
                                                                              flat=True))
    assert {"patients merged", "patients unmerged"} <= actions


def test_an_hl7_merge_can_be_undone_on_the_page_too(storage_dir):
    _order("HL-OLD", "SMITH^ANN")
    survivor = services.merge_patients(
        prior_id="HL-OLD", survivor=services.PatientData("HL-NEW", "SMITH^ANN"),
        actor="hl7:RIS", source="HL7 ADT^A40 MSG1 from 127.0.0.1")
    merge = PatientMerge.objects.get(survivor=survivor)
    assert merge.prior_patient_id == "HL-OLD" and len(merge.order_ids) == 1
    history = PatientChange.objects.filter(patient=survivor)
    # registered by the scheduler's order, by HL7 as the survivor, then the merge
    assert {c.source for c in history} == {"scheduler", "hl7", "merge"}
    services.unmerge(merge, actor="admin")
    assert Order.objects.get().patient.patient_id == "HL-OLD"


def test_changing_study_and_series_attributes(storage_dir):
    uids = _store("P-MOD", "MOD^ONE", "5", StudyDescription="OLD", AccessionNumber="A1")
    job = modify.modify_study(f"{ROOT}.5", {"StudyDescription": "CT THORAX",
                                            "AccessionNumber": "A1"}, actor="boss")
    job.refresh_from_db()
    assert job.changes == {"StudyDescription": "CT THORAX"}  # only what changed
    assert job.state == "done" and job.completed == 2
    assert Study.objects.get(study_instance_uid=f"{ROOT}.5").study_description == "CT THORAX"
    for uid in uids:
        ds, inst = _stored(uid)
        assert ds.StudyDescription == "CT THORAX" and ds.AccessionNumber == "A1"
        assert inst.metadata["00081030"]["Value"] == ["CT THORAX"]
    modify.modify_series(f"{ROOT}.5.1", {"SeriesDescription": "AXIAL 1mm",
                                         "SeriesNumber": "7"}, actor="boss")
    series = Series.objects.get(series_instance_uid=f"{ROOT}.5.1")
    assert (series.series_description, series.series_number) == ("AXIAL 1mm", 7)
    ds, _ = _stored(uids[0])
    assert ds.SeriesDescription == "AXIAL 1mm" and ds.SeriesNumber == 7
    assert AuditEvent.objects.filter(action="study modified", actor="boss").exists()
    assert modify.modify_study(f"{ROOT}.5", {"StudyDescription": "CT THORAX"},
                               actor="boss") is None
    with pytest.raises(modify.ServiceError, match="not changed here"):
        modify.modify_study(f"{ROOT}.5", {"StudyInstanceUID": "1.2.3"}, actor="boss")


def test_the_pages(client, storage_dir):
    _store("P-PAGE", "PAGE^ONE", "6", count=1)
    patient = Patient.objects.get(patient_id="P-PAGE")
    client.force_login(user_with("viewer1", "viewer"))
    page = client.get(reverse("patient-list"), {"q": "page"})
    assert page.status_code == 200 and b"PAGE^ONE" in page.content
    page = client.get(reverse("patient-detail", args=[patient.pk]))
    assert page.status_code == 200 and f"{ROOT}.6".encode() in page.content
    assert b"Edit demographics" not in page.content  # a viewer may not: no button
    assert client.get(reverse("patient-edit", args=[patient.pk])).status_code == 403

    client.force_login(user_with("sched1", "scheduler"))
    answer = client.post(reverse("patient-edit", args=[patient.pk]), {
        "family_name": "Page", "given_name": "Two", "birth_date": "1970-01-01", "sex": "F"})
    assert answer.status_code == 302
    patient.refresh_from_db()
    assert patient.patient_name == "PAGE^TWO"
    page = client.get(reverse("patient-detail", args=[patient.pk]))
    assert b"demographics changed" in page.content and b"Patient page" in page.content

    client.force_login(user_with("admin1", "admin"))
    sop = Instance.objects.get().sop_instance_uid
    tags = client.get(reverse("instance-tags", args=[sop]))
    assert tags.status_code == 200
    assert b"(0010,0010)" in tags.content and b"PAGE^TWO" in tags.content
    assert b"Patient&#x27;s Name" in tags.content
    answer = client.post(reverse("study-modify", args=[f"{ROOT}.6"]),
                         {"StudyDescription": "NEW DESC", "StudyDate": "2026130"})
    assert answer.status_code == 200 and b"YYYYMMDD" in answer.content  # refused, said why
