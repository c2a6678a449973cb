"""Nothing silently overwritten, moved or dropped when data disagree: re-sent instances of
another patient, study or series, a study's images of another patient, images without a
PatientID, later images that describe the patient or the study differently. Each case has a
defined outcome and, where data disagree, a discrepancy for the Reconciliation page."""

from __future__ import annotations

import pytest
from pydicom import dcmread

from core.errors import IdentityConflict
from core.models import AuditEvent
from pacs.models import Discrepancy, Instance, Patient, Series, Study
from pacs.services import storage_check
from pacs.services.ingest import Outcome, store_instance
from tests.samples import encoded, sample

pytestmark = pytest.mark.django_db(transaction=True)


def ct(**changes):
    ds = dcmread(sample("CT_small.dcm"))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def store(ds, origin: str = "test"):
    return store_instance(data=encoded(ds), received_from=origin)


def counters_match() -> bool:
    for series in Series.objects.all():
        if series.number_of_instances != series.instances.count():
            return False
    for study in Study.objects.all():
        if study.number_of_instances != Instance.objects.filter(series__study=study).count():
            return False
        if study.number_of_series != study.series.count():
            return False
    return True


OTHER = {"PatientID": "B-2", "PatientName": "OTHER^PATIENT", "StudyInstanceUID": "1.2.826.9.1",
         "SeriesInstanceUID": "1.2.826.9.1.1"}


def test_keep_a_resent_instance_of_another_patient_is_a_warning(storage_dir, settings):
    first = store(ct())
    again = store(ct(**OTHER))
    assert again.outcome is Outcome.DUPLICATE and "another patient" in again.warning
    assert Instance.objects.get().series.study.patient.patient_id == dcmread(
        sample("CT_small.dcm")).PatientID  # the stored one stays where it was
    (found,) = Discrepancy.objects.filter(kind="duplicate")
    assert "as patient B-2" in found.detail and first.study_instance_uid == found.study_instance_uid
    assert AuditEvent.objects.filter(action="discrepancy: duplicate").exists()
    settings.DUPLICATE_CONFLICT = "refuse"
    with pytest.raises(IdentityConflict, match="sent again as patient B-2"):
        store(ct(**OTHER))
    assert Discrepancy.objects.filter(kind="duplicate").count() == 1  # the same one, once


def test_replace_never_moves_an_instance_to_another_patient_unless_allowed(storage_dir,
                                                                             settings):
    settings.DUPLICATE_POLICY = "replace"
    store(ct())
    with pytest.raises(IdentityConflict) as refused:
        store(ct(**OTHER))
    assert refused.value.dimse_status == 0xC000
    study = Instance.objects.get().series.study
    assert study.study_instance_uid != OTHER["StudyInstanceUID"]
    assert storage_check.check(min_age=0).clean and counters_match()
    # the same instance again, in place: replaced
    assert store(ct()).outcome is Outcome.REPLACED
    # an explicit setting lets it move: the counts follow, the emptied study goes
    settings.DUPLICATE_REPLACE_ACROSS = True
    assert store(ct(**OTHER)).outcome is Outcome.REPLACED
    assert Study.objects.get().study_instance_uid == OTHER["StudyInstanceUID"]
    assert counters_match() and storage_check.check(min_age=0).clean


def test_replace_into_another_series_of_the_study_keeps_the_counts(storage_dir, settings):
    settings.DUPLICATE_POLICY, settings.DUPLICATE_REPLACE_ACROSS = "replace", True
    base = ct()
    store(base)
    second = ct(SOPInstanceUID=base.SOPInstanceUID + ".2")
    store(second)
    moved = ct(SeriesInstanceUID=base.SeriesInstanceUID + ".9")
    assert store(moved).outcome is Outcome.REPLACED
    assert sorted(s.number_of_instances for s in Series.objects.all()) == [1, 1]
    assert Study.objects.get().number_of_instances == 2 and counters_match()


def test_a_study_never_takes_images_of_another_patient(storage_dir):
    store(ct())
    other = ct(PatientID="B-2", PatientName="OTHER^PATIENT",
               SOPInstanceUID="1.2.826.9.2", SeriesInstanceUID="1.2.826.9.2.1")
    with pytest.raises(IdentityConflict, match="but study .* is stored for patient"):
        store(other)
    assert not Patient.objects.filter(patient_id="B-2").exists()
    assert Instance.objects.count() == 1
    (found,) = Discrepancy.objects.filter(kind="patient")
    assert found.detail.startswith("names patient B-2")


def test_images_without_a_patient_id_get_an_identity_per_study(storage_dir):
    for n in range(3):
        store(ct(PatientID="", PatientName=f"NOBODY^{n}", StudyInstanceUID=f"1.2.826.8.{n}",
                 SeriesInstanceUID=f"1.2.826.8.{n}.1", SOPInstanceUID=f"1.2.826.8.{n}.1.1"))
    patients = list(Patient.objects.order_by("patient_name"))
    assert [p.patient_name for p in patients] == ["NOBODY^0", "NOBODY^1", "NOBODY^2"]
    assert len({p.patient_id for p in patients}) == 3
    assert all(p.patient_id.startswith("NOID-") for p in patients)
    from pydicom.dataset import Dataset

    from pacs import query

    identifier = Dataset()
    identifier.PatientName = "NOBODY^1"
    _level, qs = query.search("STUDY", identifier)
    assert [s.study_instance_uid for s in qs] == ["1.2.826.8.1"]


def test_images_never_rename_the_registry_patient(storage_dir):
    from worklist import services

    services.find_or_create_patient(services.PatientData(
        "1CT1", "MÜLLER^ZOË", birth_date="19800101"), actor="sched", source="portal")
    store(ct(PatientName="Müller^Zoë"))  # the same name, written otherwise: no discrepancy
    assert Patient.objects.get().patient_name == "MÜLLER^ZOË"
    assert not Discrepancy.objects.exists()
    store(ct(PatientName="SMITH^JOHN", PatientBirthDate="19991231",
             SOPInstanceUID="1.2.826.7.1", StudyInstanceUID="1.2.826.7",
             SeriesInstanceUID="1.2.826.7.1"))
    assert Patient.objects.get().patient_name == "MÜLLER^ZOË"
    (found,) = Discrepancy.objects.filter(kind="demographics")
    assert "PatientName: the registry has 'MÜLLER^ZOË', the images 'SMITH^JOHN'" in found.detail
    assert found.study.study_instance_uid == "1.2.826.7"


def test_the_first_received_study_attributes_stay(storage_dir):
    base = ct()
    store(base)
    later = ct(SOPInstanceUID=base.SOPInstanceUID + ".2", StudyDescription="SOMETHING ELSE",
               AccessionNumber="ACC-LATER", PatientName="LATER^NAME")
    store(later)
    study = Study.objects.get()
    assert study.study_description == (base.get("StudyDescription") or "")
    assert study.accession_number == (base.get("AccessionNumber") or "")
    assert study.patient.patient_name == str(base.PatientName)
    kinds = set(Discrepancy.objects.values_list("kind", flat=True))
    assert kinds == {"study", "demographics"}
    assert Study.objects.get().discrepancies.count() == 2


def test_the_local_issuer_is_one_namespace_for_every_source(storage_dir, settings):
    from worklist import services

    settings.LOCAL_ISSUER = "HOSP"
    services.find_or_create_patient(services.PatientData("1CT1", "FORM^PATIENT"))
    store(ct())  # the image names no issuer: the site's own
    (patient,) = Patient.objects.all()
    assert patient.issuer_of_patient_id == "HOSP"
    assert Study.objects.get().patient == patient


def test_a_merge_after_a_form_and_an_admission_leaves_one_patient(settings, hl7_senders):
    """The form names no issuer, the RIS does: with the site's issuer set, both are HOSP."""
    from hl7gw.inbound.service import receive
    from worklist import services

    settings.LOCAL_ISSUER = "HOSP"
    services.find_or_create_patient(services.PatientData("P1001", "MÜLLER^ZOË"))

    def adt(event: str, body: str, control: str) -> bytes:
        return receive((f"MSH|^~\\&|RIS|H|PORTAL|H|20261207||ADT^{event}|{control}|P|2.5.1\r"
                        + body).encode(), peer="127.0.0.1:2575")

    assert b"MSA|AA" in adt("A04", "PID|||P2099^^^HOSP||MÜLLER^ZOË\r", "C1")
    assert b"MSA|AA" in adt("A40", "PID|||P1001^^^HOSP||MÜLLER^ZOË\rMRG|P2099^^^HOSP\r", "C2")
    assert list(Patient.objects.values_list("patient_id", "issuer_of_patient_id")) == [
        ("P1001", "HOSP")]


def test_reconciliation_lists_links_and_settles(storage_dir, client):
    """Images that match no order are linked to the patient's waiting order; a discrepancy is
    flagged on the study page until someone settles it."""
    import datetime as dt

    from django.urls import reverse

    from tests.users import user_with
    from worklist import selectors, services

    order = services.create_order(
        patient=services.PatientData("1CT1", "CompressedSamples^CT1"), procedure=None,
        step=services.StepData(modality="CT", start=dt.datetime(2026, 12, 7, 9)), actor="t")
    stored = store(ct())
    store(ct(SOPInstanceUID=ct().SOPInstanceUID + ".2", StudyDescription="ANOTHER"))
    client.force_login(user_with("front", "scheduler"))
    page = client.get(reverse("reconciliation")).content.decode()
    unlinked = page.split('id="unlinked-studies"')[1].split("</section>")[0]
    assert stored.study_instance_uid in unlinked and order.accession_number in unlinked
    study_page = client.get(reverse("study-detail", args=[stored.study_instance_uid]))
    assert 'id="discrepancies"' in study_page.content.decode()
    for garbage in ("x", "", "9" * 30):  # a form tampered with: 404, never a 500
        assert client.post(reverse("study-link", args=[stored.study_instance_uid]),
                           {"order": garbage}).status_code == 404
    client.post(reverse("study-link", args=[stored.study_instance_uid]), {"order": order.pk})
    assert list(selectors.stored_studies(order)) == [stored.study_instance_uid]
    assert "Every study belongs to an order." in client.get(
        reverse("reconciliation")).content.decode()
    (open_one,) = Discrepancy.objects.filter(resolved_at__isnull=True)
    client.post(reverse("discrepancy-resolve", args=[open_one.pk]), {"note": "typo at CT"})
    open_one.refresh_from_db()
    assert open_one.resolved_by == "front" and open_one.note == "typo at CT"
    study_page = client.get(reverse("study-detail", args=[stored.study_instance_uid]))
    assert 'id="discrepancies"' not in study_page.content.decode()
    assert AuditEvent.objects.filter(action__in=["study linked", "discrepancy resolved"]
                                     ).count() == 2


def test_a_site_that_sets_its_issuer_later_adopts_it_once(storage_dir, settings, capsys):
    from django.core.management import call_command

    store(ct())  # stored before the setting: no issuer
    Patient.objects.create(patient_id="TWICE", issuer_of_patient_id="")
    Patient.objects.create(patient_id="TWICE", issuer_of_patient_id="HOSP")
    settings.LOCAL_ISSUER = "HOSP"
    call_command("adopt_local_issuer")
    out = capsys.readouterr().out
    assert "1 patient(s) now have issuer HOSP" in out and "TWICE" in out
    again = ct(SOPInstanceUID=ct().SOPInstanceUID + ".3")
    assert store(again).outcome is Outcome.STORED  # the study's patient is still theirs
    assert Study.objects.get().patient.issuer_of_patient_id == "HOSP"
