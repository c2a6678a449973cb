"""Who read what: one audit row per request that returns patient data (category access),
from outside: pages through a browser-like session, DICOMweb through dicomweb-client, C-FIND,
C-MOVE and C-GET through DCMTK; filtered on the audit page by user or AE and by date."""

from __future__ import annotations

import datetime as dt
import re
import subprocess

import pytest
import requests
from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from pacs.models import ApplicationEntity
from tests import stored
from tests.protocol.dimse.test_retrieve import _ct_series, storescp  # noqa: F401
from tests.users import user_with

pytestmark = pytest.mark.interop


def rows(**filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(category="access", **filters).order_by("id"))


def test_pages_and_downloads_are_recorded_once_per_request(web, client_session, storage_dir):
    study, series = _ct_series(3)
    start = len(rows())
    for path in ("/studies/?patient_name=compressed*", f"/studies/{study}/",
                 f"/series/{series}/"):
        assert client_session.get(web + path, timeout=10).status_code == 200
    page = client_session.get(f"{web}/series/{series}/", timeout=10).text
    previews = sorted(set(re.findall(r'src="(/instances/[^"]+/preview.png[^"]*)"', page)))
    assert len(previews) == 3
    for preview in previews:  # part of the page: not recorded on their own
        assert client_session.get(web + preview, timeout=10).status_code == 200
    sop = stored.dataset(stored.keys()[0]).SOPInstanceUID
    assert client_session.get(f"{web}/instances/{sop}/file", timeout=10).status_code == 200
    got = rows()[start:]
    assert [(r.action, r.actor, r.source) for r in got] == [
        ("study search", "clinician", "127.0.0.1"), ("study page", "clinician", "127.0.0.1"),
        ("series page", "clinician", "127.0.0.1"), ("series page", "clinician", "127.0.0.1"),
        ("download", "clinician", "127.0.0.1")]
    assert got[0].detail == "GET /studies/?patient_name=compressed* -> 200"


def test_dicomweb_searches_and_retrievals_name_the_tokens_user(web, dicomweb, auth,
                                                              storage_dir):
    study, series = _ct_series(3)
    start = len(rows())
    assert len(dicomweb.search_for_studies(search_filters={"StudyInstanceUID": study})) == 1
    assert len(dicomweb.retrieve_series(study, series)) == 3  # one request, three instances
    assert requests.get(f"{web}/dicomweb/studies", timeout=10).status_code == 401
    got = rows()[start:]
    assert [(r.action, r.actor, r.outcome) for r in got] == [
        ("DICOMweb", "clinician", "success"), ("DICOMweb", "clinician", "success"),
        ("DICOMweb", "anonymous", "refused")]
    assert got[1].detail.startswith(f"GET /dicomweb/studies/{study}/series/{series} -> 200")


def test_c_find_c_move_and_c_get_are_one_row_each(dimse_listener, storescp,  # noqa: F811
                                                  storage_dir):
    ApplicationEntity.objects.create(ae_title="READER", host="127.0.0.1", port=104,
                                     may_query=True, may_retrieve=True)
    study, _series = _ct_series(4)
    host, port = (str(x) for x in dimse_listener.address)
    common = ["-S", "-aet", "READER", "-aec", "PORTAL", host, port]
    for tool, extra in (("findscu", ["-k", "PatientID=1CT1", "-k", "StudyInstanceUID"]),
                        ("movescu", ["-aem", "DEST", "-k", f"StudyInstanceUID={study}"]),
                        ("getscu", ["-od", str(storage_dir.parent), "-k",
                                    f"StudyInstanceUID={study}"])):
        done = subprocess.run([f"/usr/bin/{tool}", *common, "-k", "QueryRetrieveLevel=STUDY",
                               *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    got = rows(actor="READER")
    assert [(r.action, r.source) for r in got] == [("C-FIND", "127.0.0.1"),
                                                   ("C-MOVE", "127.0.0.1"),
                                                   ("C-GET", "127.0.0.1")]
    assert got[0].detail == "STUDY PatientID=1CT1: 1 match(es)"
    assert got[1].detail == (f"STUDY StudyInstanceUID={study}: 4 sent to DEST, 0 failed, "
                             "0 warning")
    assert got[2].detail.endswith("4 sent, 0 failed, 0 warning")


def test_the_audit_page_filters_by_user_or_ae_and_date(db):
    for actor in ("alice", "READER", "bob"):
        AuditEvent.objects.create(category="access", action="study page", actor=actor,
                                  detail=f"GET /studies/x/ by {actor}")
    AuditEvent.objects.create(category="auth", action="login", actor="alice")
    client = Client()
    client.force_login(user_with("boss", "admin"))
    today = dt.date.today().isoformat()

    def shown(**query) -> list[str]:
        page = client.get(reverse("audit"), query).content.decode()
        table = page[page.index('id="audit-table"'):]
        return [a for a in ("alice", "READER", "bob") if f"<td>{a}</td>" in table]

    assert shown(category="access", actor="reader") == ["READER"]
    assert shown(category="access", date_from=today, date_to=today) == [
        "alice", "READER", "bob"]
    assert shown(category="access", date_to="2000-01-01") == []
    assert shown(text="by bob") == ["bob"]


def test_stores_are_one_row_per_study_and_association(dimse_listener, known_aes, storage_dir,
                                                      tmp_path):
    """DCMTK's storescu sends two studies on one association: one row per study, with its
    count of instances."""
    from pydicom import dcmread

    from tests.samples import encoded, sample

    files = []
    for study, count in (("1", 3), ("2", 1)):
        for n in range(count):
            ds = dcmread(sample("CT_small.dcm"))
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.515.{study}"
            ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
            ds.SOPInstanceUID = ds.SeriesInstanceUID + f".{n}"
            path = tmp_path / f"s{study}-{n}.dcm"
            path.write_bytes(encoded(ds))
            files.append(str(path))
    host, port = (str(x) for x in dimse_listener.address)
    done = subprocess.run(["/usr/bin/storescu", "-aet", known_aes[0].ae_title, "-aec",
                           "PORTAL", host, port, *files], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    from tests.waiting import wait_until

    wait_until(lambda: AuditEvent.objects.filter(category="store").count() == 2, timeout=10,
               interval=0.05, what="the association's store rows")
    got = {r.detail: (r.action, r.actor, r.source)
           for r in AuditEvent.objects.filter(category="store")}
    assert got == {
        "3 instance(s) of study 1.2.826.0.1.3680043.8.498.515.1 over DICOM":
            ("instances stored", known_aes[0].ae_title, "127.0.0.1"),
        "1 instance(s) of study 1.2.826.0.1.3680043.8.498.515.2 over DICOM":
            ("instances stored", known_aes[0].ae_title, "127.0.0.1")}
