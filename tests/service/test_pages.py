"""Portal pages through Django's test client (the browser tests drive the same pages)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from pacs.models import ApplicationEntity
from pacs.services.ingest import store_instance
from tests.samples import sample
from tests.users import user_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("boss", password="pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(client):
    client.force_login(user_with("viewer", "viewer"))
    return client


@pytest.fixture
def stored(storage_dir):
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "reportsi.dcm"):
        store_instance(data=sample(name).read_bytes(), received_from="test")


def test_everything_needs_login(client):
    for name in ("dashboard", "study-list", "ae-list", "audit"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_admin_pages_need_admin(viewer_client):
    assert viewer_client.get(reverse("study-list")).status_code == 200
    assert viewer_client.get(reverse("ae-list")).status_code == 403


def test_dashboard_counts(admin_client, stored):
    page = admin_client.get(reverse("dashboard")).content.decode()
    assert 'id="count-studies">3<' in page and 'id="count-instances">3<' in page


def test_study_search(admin_client, stored):
    url = reverse("study-list")
    assert (
        "CompressedSamples^CT1"
        in admin_client.get(url, {"patient_name": "compressed"}).content.decode()
    )
    page = admin_client.get(url, {"modality": "MR"}).content.decode()
    assert "CompressedSamples^MR1" in page and "CompressedSamples^CT1" not in page
    page = admin_client.get(
        url, {"date_from": "2004-01-01", "date_to": "2004-01-31"}
    ).content.decode()
    assert "CompressedSamples^CT1" in page and "CompressedSamples^MR1" not in page
    page = admin_client.get(url, {"patient_id": "1C?1"}).content.decode()
    assert "CompressedSamples^CT1" in page
    bad = admin_client.get(url, {"date_from": "2005-01-01", "date_to": "2004-01-01"})
    assert "must not be after" in bad.content.decode()


def test_drill_down_and_preview(admin_client, stored):
    from pacs.models import Instance

    ct = Instance.objects.get(series__modality="CT")
    study_uid = ct.series.study.study_instance_uid
    assert (
        ct.series.series_instance_uid
        in admin_client.get(reverse("study-detail", args=[study_uid])).content.decode()
    )
    series_page = admin_client.get(reverse("series-detail", args=[ct.series.series_instance_uid]))
    assert ct.sop_instance_uid in series_page.content.decode()
    for inst in Instance.objects.filter(has_pixel_data=True):
        png = admin_client.get(reverse("instance-preview", args=[inst.sop_instance_uid]))
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    sr = Instance.objects.get(has_pixel_data=False)
    assert (
        admin_client.get(reverse("instance-preview", args=[sr.sop_instance_uid])).status_code == 415
    )
    f = admin_client.get(reverse("instance-file", args=[ct.sop_instance_uid]))
    assert f.status_code == 200 and b"".join(f.streaming_content)[128:132] == b"DICM"
    assert admin_client.get(reverse("study-detail", args=["9.9"])).status_code == 404


def test_ae_create_validate_echo_delete(admin_client, dimse_listener):
    url = reverse("ae-new")
    bad = admin_client.post(url, {"ae_title": "BAD\\AET", "host": "h", "port": 0, "kind": "pacs"})
    assert "without a backslash" in bad.content.decode()
    assert "between 1 and 65535" in bad.content.decode()
    host, port = dimse_listener.address
    # The portal's own SCP knows the calling AE title (PORTAL) once it is in the table.
    ok = admin_client.post(
        url, {"ae_title": "PORTAL", "host": host, "port": port, "kind": "pacs", "may_store": "on"}
    )
    assert ok.status_code == 302
    ae = ApplicationEntity.objects.get(ae_title="PORTAL")
    page = admin_client.post(reverse("ae-echo", args=[ae.pk]), follow=True).content.decode()
    assert "C-ECHO succeeded" in page
    ae.refresh_from_db()
    assert ae.last_echo_ok is True
    ApplicationEntity.objects.create(ae_title="DEAD", host="127.0.0.1", port=1, kind="pacs")
    dead = ApplicationEntity.objects.get(ae_title="DEAD")
    page = admin_client.post(reverse("ae-echo", args=[dead.pk]), follow=True).content.decode()
    assert "cannot connect" in page
    admin_client.post(reverse("ae-delete", args=[dead.pk]))
    assert not ApplicationEntity.objects.filter(ae_title="DEAD").exists()
    # every change of the AE table is in the audit trail, with the fields it set
    from core.models import AuditEvent

    trail = {e.action: e for e in AuditEvent.objects.filter(category="admin")}
    assert {"application entity added", "application entity deleted"} <= set(trail)
    assert trail["application entity added"].detail.endswith("ae_title, host, port, kind")


def test_send_form_creates_a_job_and_the_job_pages_show_it(admin_client, stored):
    from pacs.models import Job, Study

    ae = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=104)
    study = Study.objects.get(patient__patient_id="1CT1")
    detail = admin_client.get(reverse("study-detail", args=[study.study_instance_uid]))
    assert b"Send study" in detail.content and b"DEST (127.0.0.1:104)" in detail.content
    response = admin_client.post(reverse("send", args=["STUDY", study.study_instance_uid]),
                                 {"remote": ae.pk})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("job-detail",
                                                                           args=[job.pk])
    assert (job.kind, job.level, job.keys) == ("send", "STUDY",
                                               {"StudyInstanceUID": study.study_instance_uid})
    Job.objects.filter(pk=job.pk).update(state="running", total=10, completed=4, failed=1)
    page = admin_client.get(reverse("job-detail", args=[job.pk])).content.decode()
    assert '<progress max="100" value="50">' in page and "1 failed" in page
    assert 'http-equiv="refresh"' in page  # follows progress while running
    listing = admin_client.get(reverse("job-list")).content.decode()
    assert "DEST" in listing and "5/10" in listing
    progress = admin_client.get(reverse("job-progress", args=[job.pk])).json()
    assert progress["percent"] == 50 and progress["state"] == "running"


def test_viewers_see_jobs_but_cannot_start_or_cancel(viewer_client, stored):
    from pacs.models import Job, Study

    ae = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=104)
    study = Study.objects.first()
    job = Job.objects.create(kind="send", remote=ae, level="STUDY", keys={"x": "y"})
    assert viewer_client.get(reverse("job-list")).status_code == 200
    assert b"Send study" not in viewer_client.get(
        reverse("study-detail", args=[study.study_instance_uid])).content
    assert viewer_client.post(reverse("send", args=["STUDY", study.study_instance_uid]),
                              {"remote": ae.pk}).status_code == 403
    assert viewer_client.post(reverse("job-cancel", args=[job.pk])).status_code == 403
    assert Job.objects.count() == 1 and not Job.objects.get().cancel_requested


def test_remote_search_needs_a_criterion_and_reports_an_unreachable_ae(admin_client):
    from tests.samples import free_port

    ae = ApplicationEntity.objects.create(ae_title="GONE", host="127.0.0.1", port=free_port())
    page = admin_client.get(reverse("remote-search"), {"remote": ae.pk}).content.decode()
    assert "Give at least one search field" in page
    page = admin_client.get(reverse("remote-search"),
                            {"remote": ae.pk, "patient_name": "A*"}).content.decode()
    assert "no association with GONE" in page


def test_api_token_page_creates_and_replaces_the_token(viewer_client):
    from rest_framework.authtoken.models import Token

    page = viewer_client.get(reverse("api-token"))
    assert b"no API token yet" in page.content and b"/dicomweb" in page.content
    viewer_client.post(reverse("api-token"))
    first = Token.objects.get().key
    assert first.encode() in viewer_client.get(reverse("api-token")).content
    viewer_client.post(reverse("api-token"))
    assert Token.objects.get().key != first  # the old token stops working
    assert viewer_client.get("/dicomweb/studies",
                             HTTP_ACCEPT="application/dicom+json").status_code == 200


def test_an_ae_that_jobs_name_is_not_deleted_and_the_page_says_why(admin_client):
    from pacs.models import Job

    ae = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=104)
    Job.objects.create(kind="send", remote=ae, level="STUDY", keys={"x": "y"})
    response = admin_client.post(reverse("ae-delete", args=[ae.pk]), follow=True)
    assert response.status_code == 200
    assert "DEST is not deleted: 1 transfer job(s) refer to it" in response.content.decode()
    assert ApplicationEntity.objects.filter(pk=ae.pk).exists()


def test_audit_trail_exports_the_filtered_rows_as_csv(admin_client):
    """What an auditor takes away: the rows the filter shows, as CSV, with a cell a
    spreadsheet would run as a formula defused; every category in the trail is offered."""
    import csv
    import io

    from core import audit
    from core.models import AuditEvent

    audit.record(category="hl7", action="message refused", outcome="refused",
                 actor="RIS", source="10.0.0.7", detail="=HYPERLINK(\"http://evil\")")
    audit.record(category="store", action="C-STORE", actor="CT1", detail="1.2.3")
    audit.record(category="legacy-import", action="old row", actor="x")
    page = admin_client.get(reverse("audit")).content.decode()
    assert 'value="legacy-import"' in page and 'value="access"' in page
    assert "format=csv" in page
    answer = admin_client.get(reverse("audit"), {"category": "hl7", "format": "csv"})
    assert answer["Content-Type"].startswith("text/csv")
    assert "attachment" in answer["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert rows[0] == ["time (UTC)", "category", "action", "outcome", "actor", "source",
                       "detail"]
    assert [r[1:6] for r in rows[1:]] == [["hl7", "message refused", "refused", "RIS",
                                           "10.0.0.7"]]
    assert rows[1][6] == "'=HYPERLINK(\"http://evil\")"
    assert AuditEvent.objects.filter(action="audit trail exported").exists()


def test_every_user_changes_their_own_password(client):
    """A viewer (any role, or none) changes their password: the old one is asked, weak ones
    are refused, the session stays, the new one logs in, the audit trail says so."""
    from core.models import AuditEvent

    user = user_with("reader", "viewer", password="first-pass-word-1")
    client.force_login(user)
    page = client.get(reverse("password_change")).content.decode()
    assert 'name="old_password"' in page and 'name="new_password2"' in page
    wrong = client.post(reverse("password_change"), {
        "old_password": "not-it", "new_password1": "Second-pass-word-2",
        "new_password2": "Second-pass-word-2"})
    assert wrong.status_code == 200 and "incorrect" in wrong.content.decode()
    weak = client.post(reverse("password_change"), {
        "old_password": "first-pass-word-1", "new_password1": "password",
        "new_password2": "password"})
    assert weak.status_code == 200 and "too common" in weak.content.decode()
    done = client.post(reverse("password_change"), {
        "old_password": "first-pass-word-1", "new_password1": "Second-pass-word-2",
        "new_password2": "Second-pass-word-2"}, follow=True)
    assert "Your password was changed." in done.content.decode()
    assert client.get(reverse("study-list")).status_code == 200  # still logged in
    user.refresh_from_db()
    assert user.check_password("Second-pass-word-2")
    event = AuditEvent.objects.get(action="password changed")
    assert event.actor == "reader" and "Second" not in event.detail
