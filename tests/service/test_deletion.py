"""Deleting studies, series and instances: rows, computed keys, files, and the pages."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from pydicom import dcmread

from core.errors import NotFound
from core.models import AuditEvent
from pacs import query
from pacs.models import Instance, Patient, Series, Study
from pacs.services import deletion
from pacs.services.ingest import Outcome, store_instance
from tests import stored
from tests.samples import encoded, sample
from tests.users import user_with

pytestmark = pytest.mark.django_db(transaction=True)  # the files go on commit

STUDY = "1.2.826.0.1.3680043.8.498.77"


def _store(name: str, series: str, number: int) -> str:
    ds = dcmread(sample(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, f"{STUDY}.{series}"
    ds.SOPInstanceUID = f"{STUDY}.{series}.{number}"
    ds.PatientID, ds.PatientName = "DEL-1", "DELETE^ME"
    store_instance(data=encoded(ds), received_from="test")
    return ds.SOPInstanceUID


@pytest.fixture
def study(storage_dir):
    """One study: a CT series of three instances and an MR series of two."""
    uids = {"ct": [_store("CT_small.dcm", "1", n) for n in (1, 2, 3)],
            "mr": [_store("MR_small.dcm", "2", n) for n in (1, 2)]}
    return uids


def _files() -> set[str]:
    return set(stored.keys())


def _study_answer() -> dict:
    """What a C-FIND / QIDO-RS at STUDY level answers from the computed keys."""
    return Study.objects.filter(study_instance_uid=STUDY).values(
        "number_of_series", "number_of_instances", "modalities_in_study").get()


def test_deleting_an_instance_keeps_the_counts_true(study):
    key = Instance.objects.get(sop_instance_uid=study["ct"][0]).file_key
    done = deletion.delete("instance", study["ct"][0], actor="boss")
    assert (done.studies, done.series, done.instances) == (0, 0, 1)
    assert key not in _files() and len(_files()) == 4
    assert _study_answer() == {"number_of_series": 2, "number_of_instances": 4,
                               "modalities_in_study": "CT\\MR"}
    assert Series.objects.get(series_instance_uid=f"{STUDY}.1").number_of_instances == 2


def test_deleting_a_series_updates_modalities_in_study_and_a_resend_is_stored_again(study):
    done = deletion.delete("series", f"{STUDY}.2", actor="boss")
    assert (done.studies, done.series, done.instances) == (0, 1, 2)
    assert _study_answer() == {"number_of_series": 1, "number_of_instances": 3,
                               "modalities_in_study": "CT"}
    assert len(_files()) == 3
    _, qs = query.search("STUDY", _mr_query())
    assert not qs.exists()  # ModalitiesInStudy=MR no longer matches
    # the modality sends the series again: stored anew, not taken as a duplicate
    ds = dcmread(sample("MR_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, f"{STUDY}.2"
    ds.SOPInstanceUID, ds.PatientID = f"{STUDY}.2.1", "DEL-1"
    assert store_instance(data=encoded(ds), received_from="test").outcome == Outcome.STORED
    assert _study_answer()["modalities_in_study"] == "CT\\MR"


def _mr_query():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.StudyInstanceUID, ds.ModalitiesInStudy = STUDY, "MR"
    return ds


def test_the_last_instance_takes_its_series_and_study_along(study):
    for uid in study["ct"]:
        deletion.delete("instance", uid, actor="boss")
    assert not Series.objects.filter(series_instance_uid=f"{STUDY}.1").exists()
    assert _study_answer()["modalities_in_study"] == "MR"
    done = deletion.delete("series", f"{STUDY}.2", actor="boss")
    assert (done.studies, done.series) == (1, 1)
    assert not Study.objects.exists() and _files() == set()
    assert Patient.objects.filter(patient_id="DEL-1").exists()  # the registry keeps patients


def test_deleting_a_study_removes_rows_files_and_is_audited(study):
    done = deletion.delete("study", STUDY, actor="boss")
    assert (done.studies, done.series, done.instances) == (1, 2, 5)
    assert not Instance.objects.exists() and not Series.objects.exists()
    assert _files() == set()
    event = AuditEvent.objects.get(action="study deleted")
    assert event.actor == "boss" and STUDY in event.detail and "DELETE" not in event.detail
    with pytest.raises(NotFound):
        deletion.delete("study", STUDY, actor="boss")


def test_a_failed_deletion_deletes_nothing(study, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr(deletion.audit, "record", broken)
    with pytest.raises(RuntimeError):
        deletion.delete("study", STUDY, actor="boss")
    assert Instance.objects.count() == 5 and len(_files()) == 5


def test_pages_delete_for_admins_only(client, study):
    client.force_login(user_with("viewer", "viewer"))
    page = client.get(reverse("study-detail", args=[STUDY])).content.decode()
    assert "Delete study" not in page
    assert client.post(reverse("study-delete", args=[STUDY])).status_code == 403
    assert Study.objects.exists()
    boss = get_user_model().objects.create_superuser("boss", password="pw-123456")
    client.force_login(boss)
    page = client.get(reverse("series-detail", args=[f"{STUDY}.2"])).content.decode()
    assert "Delete series" in page and "its 2 instances" in page
    assert client.get(reverse("series-delete", args=[f"{STUDY}.2"])).status_code == 405
    response = client.post(reverse("series-delete", args=[f"{STUDY}.2"]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("study-detail", args=[STUDY])
    assert "Deleted the series: 2 instances." in response.content.decode()
    response = client.post(reverse("study-delete", args=[STUDY]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("study-list")
    assert "Deleted the study: 1 series, 3 instances." in response.content.decode()
    assert client.post(reverse("study-delete", args=[STUDY])).status_code == 404


def test_instance_delete_page_goes_back_to_what_is_left(client, study):
    client.force_login(user_with("viewer", "viewer"))
    ct_series = reverse("series-detail", args=[f"{STUDY}.1"])
    assert 'class="delete-instance"' not in client.get(ct_series).content.decode()
    assert client.post(reverse("instance-delete", args=[study["ct"][0]])).status_code == 403
    assert Instance.objects.count() == 5  # a viewer may not; nothing deleted
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    page = client.get(ct_series).content.decode()
    assert page.count('class="delete-instance"') == 3
    assert reverse("instance-delete", args=[study["ct"][1]]) in page
    assert client.get(reverse("instance-delete", args=[study["ct"][0]])).status_code == 405

    response = client.post(reverse("instance-delete", args=[study["ct"][0]]), follow=True)
    assert response.redirect_chain[-1][0] == ct_series
    assert "Deleted the instance." in response.content.decode()
    assert _study_answer()["number_of_instances"] == 4 and len(_files()) == 4
    for uid in study["mr"]:  # the MR series' last instance takes its series along
        response = client.post(reverse("instance-delete", args=[uid]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("study-detail", args=[STUDY])
    assert "the series is gone too" in response.content.decode()
    assert _study_answer() == {"number_of_series": 1, "number_of_instances": 2,
                               "modalities_in_study": "CT"}
    client.post(reverse("instance-delete", args=[study["ct"][1]]))
    response = client.post(reverse("instance-delete", args=[study["ct"][2]]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("study-list")
    assert "the study is gone too" in response.content.decode()
    assert not Study.objects.exists() and _files() == set()
    assert client.post(reverse("instance-delete", args=[study["ct"][2]])).status_code == 404
