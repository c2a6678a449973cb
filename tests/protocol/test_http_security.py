"""The web face against a browser-like client (requests) on the real WSGI server: login
throttling with lockout and its audit trail, the Content-Security-Policy, the API schema behind
login, and DICOMweb writes from a logged-in session with its CSRF token."""

from __future__ import annotations

import re

import requests
from pydicom.uid import generate_uid

from core.models import AuditEvent
from pacs.dicomweb import multipart
from pacs.models import Instance
from tests.samples import sample
from tests.users import PASSWORD, user_with


def login(web, username: str, password: str, session: requests.Session | None = None
          ) -> requests.Response:
    session = session or requests.Session()
    session.get(f"{web}/login/", timeout=10)
    return session.post(f"{web}/login/", timeout=10, allow_redirects=False, data={
        "username": username, "password": password,
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})


def test_forty_wrong_passwords_lock_the_account_out_and_are_audited(web, settings):
    user_with("nurse", "viewer")
    answers = [login(web, "nurse", f"guess-{n}").status_code for n in range(40)]
    limit = settings.AXES_FAILURE_LIMIT
    assert answers[:limit - 1] == [200] * (limit - 1)  # the form again, with an error
    assert set(answers[limit:]) == {429}  # locked out
    right = login(web, "nurse", PASSWORD)
    assert right.status_code == 429 and "Login locked" in right.text  # even the right one
    failures = AuditEvent.objects.filter(category="auth", action="login", outcome="failure",
                                         actor="nurse")
    assert failures.count() >= limit
    assert AuditEvent.objects.filter(category="auth", action="login locked out",
                                     actor="nurse", source="127.0.0.1").exists()
    assert not AuditEvent.objects.filter(category="auth", action="login",
                                         outcome="success").exists()
    # another account from the same address is not locked
    user_with("doctor", "viewer")
    assert login(web, "doctor", PASSWORD).status_code == 302
    assert AuditEvent.objects.filter(category="auth", action="login", outcome="success",
                                     actor="doctor").exists()


def test_pages_carry_a_content_security_policy(web):
    for path in ("/login/", "/dicomweb/studies"):
        policy = requests.get(f"{web}{path}", timeout=10).headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    page = requests.get(f"{web}/login/", timeout=10).text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline script
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handler


def test_the_api_schema_needs_a_login(web, client_session, auth):
    assert requests.get(f"{web}/api/schema/", timeout=10).status_code == 401
    assert requests.get(f"{web}/api/schema/", headers=auth, timeout=10).status_code == 200
    assert client_session.get(f"{web}/api/schema/", timeout=10).status_code == 200


def test_a_logged_in_session_writes_dicomweb_with_its_csrf_token(web, client_session):
    csrf = client_session.cookies["csrftoken"]
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream(boundary, [(
        multipart.part_header(boundary, "application/dicom"),
        [sample("CT_small.dcm").read_bytes()])]))
    headers = {"Content-Type": multipart.content_type(boundary, "application/dicom"),
               "Accept": "application/dicom+json", "Referer": f"{web}/"}
    refused = client_session.post(f"{web}/dicomweb/studies", data=body, headers=headers,
                                  timeout=20)
    assert refused.status_code == 403 and "CSRF" in refused.text  # no token: refused
    stored = client_session.post(f"{web}/dicomweb/studies", data=body, timeout=20,
                                 headers={**headers, "X-CSRFToken": csrf})
    assert stored.status_code == 200, stored.text
    assert Instance.objects.count() == 1
    uid = generate_uid()
    workitem = {"00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
                "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
                "00741204": {"vr": "LO", "Value": ["Post-processing"]},
                "00404041": {"vr": "CS", "Value": ["READY"]},
                "00404005": {"vr": "DT", "Value": ["20261207120000"]},
                "00100020": {"vr": "LO", "Value": ["CSRF1"]}}
    created = client_session.post(f"{web}/dicomweb/workitems?{uid}", json=workitem,
                                  timeout=10, headers={
                                      "Content-Type": "application/dicom+json",
                                      "X-CSRFToken": csrf, "Referer": f"{web}/"})
    assert created.status_code == 201, created.text
