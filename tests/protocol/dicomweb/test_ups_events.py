"""UPS subscriptions and the WebSocket event channel, against the real `serve` process: a
watcher receives state and progress reports and cancel requests while another client changes
workitems."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from pydicom.uid import generate_uid
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.portal_process import start_portal
from worklist.ups_events import GLOBAL, GLOBAL_FILTERED

JSON = "application/dicom+json"


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    p = start_portal(tmp_path_factory.mktemp("ups-events") / "var",
                     DJANGO_SUPERUSER_USERNAME="chief", DJANGO_SUPERUSER_PASSWORD="Xr4y-s3cret!")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def auth(portal) -> dict[str, str]:
    """An API token, obtained as a user would: log in, open the token page, create one."""
    session = requests.Session()
    session.get(f"{portal.url}/login/", timeout=10)
    session.post(f"{portal.url}/login/", timeout=10, data={
        "username": "chief", "password": "Xr4y-s3cret!",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    page = session.post(f"{portal.url}/api/token/", timeout=10,
                        data={"csrfmiddlewaretoken": session.cookies["csrftoken"]}).text
    key = re.search(r'id="api-token">([0-9a-f]+)<', page).group(1)
    return {"Authorization": f"Token {key}"}


def create(portal, auth, patient_id: str) -> str:
    uid = generate_uid()
    body = {
        "00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
        "00741200": {"vr": "CS", "Value": ["MEDIUM"]},
        "00741204": {"vr": "LO", "Value": ["Post-processing"]},
        "00404005": {"vr": "DT", "Value": ["20261123120000"]},
        "00404041": {"vr": "CS", "Value": ["READY"]},
        "00100020": {"vr": "LO", "Value": [patient_id]},
    }
    response = requests.post(f"{portal.url}/dicomweb/workitems?{uid}", json=body, timeout=10,
                             headers={**auth, "Content-Type": JSON})
    assert response.status_code == 201, response.content
    return uid


def put_state(portal, auth, uid: str, state: str, transaction: str) -> int:
    body = {"00741000": {"vr": "CS", "Value": [state]},
            "00081195": {"vr": "UI", "Value": [transaction]}}
    return requests.put(f"{portal.url}/dicomweb/workitems/{uid}/state", json=body, timeout=10,
                        headers={**auth, "Content-Type": JSON}).status_code


def subscribe(portal, auth, target: str, aet: str, query: str = "") -> requests.Response:
    return requests.post(f"{portal.url}/dicomweb/workitems/{target}/subscribers/{aet}{query}",
                         headers=auth, timeout=10)


def receive(ws, count: int) -> list[tuple[str, int, dict]]:
    events = []
    for _ in range(count):
        event = json.loads(ws.recv(timeout=10))
        events.append((event["00001000"]["Value"][0], event["00001002"]["Value"][0], event))
    return events


def test_watcher_receives_state_progress_reports_and_cancel_requests(portal, auth):
    first = create(portal, auth, "EV1")
    assert subscribe(portal, auth, first, "WATCHER").status_code == 201
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/WATCHER"
    with connect(channel, additional_headers=auth) as ws:
        ((uid, kind, event),) = receive(ws, 1)  # the initial state report
        assert (uid, kind, event["00741000"]["Value"]) == (first, 1, ["SCHEDULED"])
        mine = generate_uid()
        assert put_state(portal, auth, first, "IN PROGRESS", mine) == 200
        ((uid, kind, event),) = receive(ws, 1)
        assert (uid, kind, event["00741000"]["Value"]) == (first, 1, ["IN PROGRESS"])
        progress = {"00741002": {"vr": "SQ", "Value": [{
            "00741004": {"vr": "DS", "Value": [30]},
            "00741006": {"vr": "ST", "Value": ["registration"]}}]}}
        update = requests.post(f"{portal.url}/dicomweb/workitems/{first}?{mine}", json=progress,
                               headers={**auth, "Content-Type": JSON}, timeout=10)
        assert update.status_code == 200, update.content
        ((uid, kind, event),) = receive(ws, 1)
        assert (uid, kind, event["00741002"]) == (first, 3, progress["00741002"])
        cancel = requests.post(f"{portal.url}/dicomweb/workitems/{first}/cancelrequest",
                               json={"00741238": {"vr": "LT", "Value": ["wrong patient"]}},
                               headers={**auth, "Content-Type": JSON}, timeout=10)
        assert cancel.status_code == 202
        ((uid, kind, event),) = receive(ws, 1)
        assert (kind, event["00741238"]["Value"]) == (2, ["wrong patient"])
        assert put_state(portal, auth, first, "CANCELED", mine) == 200
        ((uid, kind, event),) = receive(ws, 1)
        assert event["00741000"]["Value"] == ["CANCELED"]


def test_global_filtered_subscription_follows_new_matching_workitems(portal, auth):
    assert subscribe(portal, auth, GLOBAL_FILTERED, "AI NODE", "?filter=PatientID=EV3"
                     ).status_code == 201
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/AI%20NODE"
    with connect(channel, additional_headers=auth) as ws:
        create(portal, auth, "EV2")  # does not match the filter
        wanted = create(portal, auth, "EV3")
        ((uid, kind, event),) = receive(ws, 1)
        assert (uid, event["00741000"]["Value"]) == (wanted, ["SCHEDULED"])
        # suspended: new workitems no longer reported, the ones already followed still are
        suspend = requests.post(f"{portal.url}/dicomweb/workitems/{GLOBAL}/subscribers/"
                                "AI%20NODE/suspend", headers=auth, timeout=10)
        assert suspend.status_code == 200
        create(portal, auth, "EV3")
        assert put_state(portal, auth, wanted, "IN PROGRESS", generate_uid()) == 200
        ((uid, kind, event),) = receive(ws, 1)
        assert (uid, event["00741000"]["Value"]) == (wanted, ["IN PROGRESS"])
    unsubscribed = requests.delete(f"{portal.url}/dicomweb/workitems/{GLOBAL}/subscribers/"
                                   "AI%20NODE", headers=auth, timeout=10)
    assert unsubscribed.status_code == 200


def test_event_channel_needs_a_user_and_bad_subscriptions_are_refused(portal, auth):
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/NOBODY"
    with pytest.raises(InvalidStatus, match="403"):  # refused at the handshake
        connect(channel)
    assert subscribe(portal, auth, "1.2.3.4", "WATCHER").status_code == 404
    assert subscribe(portal, auth, GLOBAL_FILTERED, "WATCHER").status_code == 400  # no filter
    assert subscribe(portal, auth, GLOBAL, "WATCHER", "?filter=Nonsense=1").status_code == 400
    assert requests.post(f"{portal.url}/dicomweb/workitems/{GLOBAL}/subscribers/NONE/suspend",
                         headers=auth, timeout=10).status_code == 404


def test_two_channels_of_one_subscriber_get_each_event_once(portal, auth):
    """A subscriber that reconnected before its old connection closed holds two channels:
    each event goes out on one of them, once, and in order."""
    uid = create(portal, auth, "EV4")
    assert subscribe(portal, auth, uid, "TWIN").status_code == 201
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/TWIN"
    with connect(channel, additional_headers=auth) as one, \
            connect(channel, additional_headers=auth) as two:
        mine = generate_uid()
        assert put_state(portal, auth, uid, "IN PROGRESS", mine) == 200
        for percent in range(10, 100, 10):
            progress = {"00741002": {"vr": "SQ", "Value": [{
                "00741004": {"vr": "DS", "Value": [percent]}}]}}
            update = requests.post(f"{portal.url}/dicomweb/workitems/{uid}?{mine}",
                                   json=progress, headers={**auth, "Content-Type": JSON},
                                   timeout=10)
            assert update.status_code == 200, update.content
        got: dict[str, list[tuple[int, object]]] = {"one": [], "two": []}
        deadline, quiet_until = time.monotonic() + 30, time.monotonic() + 2
        while time.monotonic() < quiet_until:  # until nothing more came for 2 s
            assert time.monotonic() < deadline
            for name, ws in (("one", one), ("two", two)):
                try:
                    event = json.loads(ws.recv(timeout=0.05))
                except TimeoutError:
                    continue
                kind = event["00001002"]["Value"][0]
                value = (event["00741000"]["Value"][0] if kind == 1 else
                         event["00741002"]["Value"][0]["00741004"]["Value"][0])
                got[name].append((kind, value))
                quiet_until = time.monotonic() + 2
    expected = [(1, "SCHEDULED"), (1, "IN PROGRESS")] + [(3, p) for p in range(10, 100, 10)]
    assert sorted(got["one"] + got["two"], key=expected.index) == expected  # once each
    for events in got.values():
        assert events == sorted(events, key=expected.index)  # in order on each channel


def account(portal, name: str, *roles: str, ae_title: str = "") -> dict[str, str]:
    """An account with ``roles`` in the running portal (bound to ``ae_title`` in the AE table
    if given): its API token header."""
    key = portal.shell(
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "from pacs.models import ApplicationEntity\n"
        "from core.roles import grant\n"
        f"user = User.objects.create_user({name!r}, password='Pw-{name}-12345')\n"
        f"grant(user, *{list(roles)!r})\n"
        f"if {ae_title!r}: ApplicationEntity.objects.create(ae_title={ae_title!r}, "
        "host='127.0.0.1', port=104, account=user)\n"
        "print(Token.objects.create(user=user).key)").split()[-1]
    return {"Authorization": f"Token {key}"}


def test_plain_users_may_not_subscribe_or_read_an_aes_events(portal, auth):
    viewer = account(portal, "looker", "viewer")
    tech = account(portal, "tech", "technologist")
    uid = create(portal, auth, "EV5")
    for who in (viewer, tech):
        assert subscribe(portal, who, uid, "VICTIM").status_code == 403
        assert subscribe(portal, who, GLOBAL, "VICTIM").status_code == 403
        assert requests.delete(f"{portal.url}/dicomweb/workitems/{GLOBAL}/subscribers/VICTIM",
                               headers=who, timeout=10).status_code == 403
    assert subscribe(portal, auth, uid, "VICTIM").status_code == 201  # the admin may
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/VICTIM"
    for who in (viewer, tech, {"Authorization": "Token 0123456789abcdef"}):
        with pytest.raises(InvalidStatus, match="403"):
            connect(channel, additional_headers=who)
    with connect(channel, additional_headers=auth) as ws:  # still there for its subscriber
        ((got, kind, event),) = receive(ws, 1)
        assert (got, event["00741000"]["Value"]) == (uid, ["SCHEDULED"])


def test_an_admin_watching_takes_nothing_from_the_aes_own_channel(portal, auth):
    reader = account(portal, "reader", "technologist", ae_title="READER")
    uid = create(portal, auth, "EV6")
    assert subscribe(portal, auth, uid, "READER").status_code == 201
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/READER"
    with connect(channel, additional_headers=auth) as watcher:
        assert put_state(portal, auth, uid, "IN PROGRESS", generate_uid()) == 200
        ((got, kind, event),) = receive(watcher, 1)  # a copy of the new event
        assert event["00741000"]["Value"] == ["IN PROGRESS"]
    with connect(channel, additional_headers=reader) as own:  # everything is still queued
        states = [e["00741000"]["Value"][0] for _, _, e in receive(own, 2)]
    assert states == ["SCHEDULED", "IN PROGRESS"]
    with connect(channel, additional_headers=reader) as own, pytest.raises(TimeoutError):
        own.recv(timeout=1.5)  # taken once, by the subscriber


def test_a_page_of_another_origin_cannot_open_a_channel(portal, auth):
    """A logged-in user's browser sends its session cookie with any WebSocket handshake; the
    Origin tells the portal's own pages from another site's (even on the same host)."""
    session = requests.Session()
    session.get(f"{portal.url}/login/", timeout=10)
    session.post(f"{portal.url}/login/", timeout=10, data={
        "username": "chief", "password": "Xr4y-s3cret!",
        "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    cookie = {"Cookie": f"sessionid={session.cookies['sessionid']}"}
    channel = f"ws://127.0.0.1:{portal.ws_port}/dicomweb/subscribers/WATCHER"
    for origin in ("http://127.0.0.1:9", "http://evil.example", "null"):
        with pytest.raises(InvalidStatus, match="403"):
            connect(channel, additional_headers=cookie, origin=origin)
    with connect(channel, additional_headers=cookie, origin=portal.url):
        pass  # the portal's own page


def test_the_websocket_port_serves_no_web_pages(portal):
    for path in ("/login/", "/", "/dicomweb/studies", "/api/schema/"):
        response = requests.get(f"http://127.0.0.1:{portal.ws_port}{path}", timeout=10)
        assert response.status_code == 404 and "WebSocket only" in response.text
