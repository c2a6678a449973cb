"""Health, readiness and metrics of a real `serve` process, asked as a load balancer and
Prometheus would (plain HTTP, no login for the probes)."""

from __future__ import annotations

import re

import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.portal_process import start_portal
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    portal = start_portal(tmp_path_factory.mktemp("ops") / "var", PORTAL_HEARTBEAT_SECONDS="1",
                          PORTAL_METRICS_TOKEN="scrape-me-please",
                          PORTAL_DIMSE_ALLOW_UNKNOWN_AE="1",
                          DJANGO_SUPERUSER_USERNAME="chief",
                          DJANGO_SUPERUSER_PASSWORD="Xr4y-s3cret!")
    yield portal
    portal.stop()


def test_liveness_and_readiness_with_the_listeners(portal):
    assert requests.get(f"{portal.url}/health/live", timeout=10).json() == {"status": "alive"}
    ready = requests.get(f"{portal.url}/health/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
    both = requests.get(f"{portal.url}/health/ready?listeners=dimse,hl7,websocket", timeout=10)
    assert both.status_code == 200, both.text
    elsewhere = requests.get(f"{portal.url}/health/ready?listeners=dimse&node=worker-b",
                             timeout=10)
    assert elsewhere.status_code == 503
    assert elsewhere.json()["checks"]["listener dimse"] == "down"
    missing = requests.get(f"{portal.url}/health/ready?listeners=hl7-tls", timeout=10)
    assert missing.status_code == 503  # no HL7 TLS port configured here


def test_metrics_for_the_token_and_admins_only(portal):
    assert requests.get(f"{portal.url}/metrics", timeout=10).status_code == 401
    wrong = requests.get(f"{portal.url}/metrics", timeout=10,
                         headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    for _ in range(2):
        assoc = ae.associate("127.0.0.1", portal.dimse_port, ae_title="PORTAL")
        assert assoc.is_established
        assoc.send_c_echo()
        assoc.release()

    def scraped() -> str | None:
        text = requests.get(f"{portal.url}/metrics", timeout=10,
                            headers={"Authorization": "Bearer scrape-me-please"}).text
        accepted = re.search(r'portal_dicom_associations_total\{[^}]*outcome="accepted"[^}]*\} '
                             r'(\d+)', text)
        return text if accepted and float(accepted.group(1)) == 2 else None

    text = wait_until(scraped, 15, what="two associations counted by the heartbeat")
    assert 'portal_archive_objects{level="instance"} 0.0' in text
    assert 'portal_listener_up{name="dimse"' in text and 'portal_listener_up{name="hl7"' in text
    assert 'portal_queue_backlog{queue="jobs"} 0.0' in text
    assert "portal_http_request_duration_seconds_bucket" in text
    key = portal.shell("from django.contrib.auth.models import User\n"
                       "from rest_framework.authtoken.models import Token\n"
                       "print(Token.objects.get_or_create(user=User.objects.get("
                       "username='chief'))[0].key)").split()[-1]
    admin = requests.get(f"{portal.url}/metrics", timeout=10,
                         headers={"Authorization": f"Token {key}"})
    assert admin.status_code == 200 and admin.headers["Content-Type"].startswith("text/plain")


def test_a_listener_whose_process_went_silent_is_down(portal):
    """A listener's row not refreshed for three beats is down: its process died without
    saying so (SIGKILL, power loss)."""
    portal.shell(
        "import datetime as dt\nfrom django.utils import timezone\n"
        "from core.models import ListenerStatus\n"
        "old = timezone.now() - dt.timedelta(minutes=5)\n"
        "ListenerStatus.objects.create(name='dimse', node='worker-gone', pid=1, host='10.0.0.9',"
        " port=11112, started_at=old, seen_at=old)")
    answer = requests.get(f"{portal.url}/health/ready?listeners=dimse&node=worker-gone",
                          timeout=10)
    assert answer.status_code == 503
    text = requests.get(f"{portal.url}/metrics", timeout=10,
                        headers={"Authorization": "Bearer scrape-me-please"}).text
    assert 'portal_listener_up{name="dimse",node="worker-gone",port="11112"} 0.0' in text


def test_the_dashboard_shows_the_true_state_of_each_listener(portal):
    """DICOM, HL7 and the WebSocket channel as their processes last said, with ports and
    association counts; a silent one as silent (not "not available yet" while it runs)."""
    session = requests.Session()
    session.get(f"{portal.url}/login/", timeout=10)
    session.post(f"{portal.url}/login/", timeout=10, data={
        "username": "chief", "password": "Xr4y-s3cret!",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    page = session.get(f"{portal.url}/", timeout=10).text
    table = page[page.index('id="listeners"'):page.index("</table>", page.index('id="listeners"'))]
    for label, port in (("DICOM", portal.dimse_port), ("HL7 MLLP", portal.hl7_port),
                        ("UPS events (WebSocket)", portal.ws_port)):
        assert f"<td>{label}</td>" in table and f"<code>{port}</code>" in table
    assert table.count("listening") >= 3
    assert "not available yet" not in page
    assert "accepted" in table  # the DICOM listener's association counts
