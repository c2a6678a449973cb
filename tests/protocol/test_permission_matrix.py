"""Every page, DICOMweb and UPS-RS route, for anonymous callers, an account of each role (and
one without a role), a token of each, and a bogus token, against the real WSGI server: the
status each gets is the one the roles allow.

The expected rights are written here from the role definitions (viewer: browse and retrieve;
technologist: store, send, perform workitems; scheduler: orders, create and cancel workitems;
admin: everything), not read from core.roles, so a change of the table shows here. A route
the matrix does not know fails the test: a new page must say who may open it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
import requests
from django.urls import URLPattern, URLResolver, get_resolver
from pydicom import dcmread

from hl7gw.models import Message, Outbound, Receiver, Sender
from pacs.models import ApplicationEntity, ForwardingRule, ForwardItem, Job
from pacs.services.ingest import store_instance
from tests.samples import free_port, sample
from tests.users import PASSWORD, user_with
from worklist.models import Order, Procedure, ScheduledProcedureStep, Station
from worklist.services import PatientData, StepData, create_order

pytestmark = pytest.mark.interop

VIEWER, TECH, SCHED, ADMIN = "viewer", "technologist", "scheduler", "admin"
ALL = {VIEWER, TECH, SCHED}
# action -> the roles (besides admin) that may do it: the role definitions of the user guide
RIGHTS = {
    "browse": ALL, "store": {TECH}, "send": {TECH}, "worklist": ALL, "schedule": {SCHED},
    "perform": {TECH}, "status": {TECH, SCHED}, "admin": set(), "subscribe": set(),
    "reconcile": {SCHED}, "patient": {SCHED},
    "login": ALL | {None}, "anything": ALL,
}

# (method, route pattern, right) for the pages: the login form for anonymous callers
PAGES = [
    ("GET", "", "anything"), ("GET", "audit/", "admin"),
    ("GET", "studies/", "browse"), ("GET", "studies/<str:study_uid>/", "browse"),
    ("POST", "studies/<str:study_uid>/delete/", "admin"),
    ("GET", "studies/<str:study_uid>/modify/", "admin"),
    ("GET", "studies/<str:study_uid>/download/", "browse"),
    ("GET", "series/<str:series_uid>/download/", "browse"),
    ("GET", "upload/", "store"), ("GET", "viewer/", "browse"),
    ("GET", "viewer/<path:path>", "browse"), ("POST", "studies/download/", "browse"),
    ("POST", "studies/bulk/", "browse"),
    ("POST", "studies/<str:study_uid>/anonymize/", "admin"),
    ("GET", "series/<str:series_uid>/modify/", "admin"),
    ("GET", "instances/<str:sop_uid>/tags/", "browse"),
    ("GET", "patients/", "worklist"), ("GET", "patients/<int:pk>/", "worklist"),
    ("GET", "patients/<int:pk>/edit/", "patient"), ("POST", "patients/<int:pk>/merge/", "patient"),
    ("POST", "patients/<int:pk>/anonymize/", "admin"),
    ("POST", "patients/merges/<int:pk>/unmerge/", "patient"),
    ("GET", "series/<str:series_uid>/", "browse"),
    ("POST", "series/<str:series_uid>/delete/", "admin"),
    ("GET", "instances/<str:sop_uid>/preview.png", "browse"),
    ("GET", "instances/<str:sop_uid>/file", "browse"),
    ("POST", "instances/<str:sop_uid>/delete/", "admin"),
    ("GET", "aes/", "admin"), ("GET", "aes/new/", "admin"),
    ("GET", "aes/<int:pk>/edit/", "admin"), ("POST", "aes/<int:pk>/delete/", "admin"),
    ("POST", "aes/<int:pk>/echo/", "admin"),
    ("GET", "forwarding/", "admin"), ("GET", "forwarding/<int:pk>/", "admin"),
    ("POST", "forwarding/<int:pk>/delete/", "admin"),
    ("POST", "forwarding/retry/<int:ae_pk>/", "admin"),
    ("GET", "forwarding/queue/", "admin"), ("POST", "forwarding/items/<int:pk>/retry/", "admin"),
    ("POST", "forwarding/items/<int:pk>/cancel/", "admin"),
    ("GET", "jobs/", "browse"), ("GET", "jobs/<int:pk>/", "browse"),
    ("GET", "jobs/<int:pk>/progress/", "browse"), ("POST", "jobs/<int:pk>/cancel/", "send"),
    ("POST", "jobs/<int:pk>/retry/", "send"), ("POST", "send/<str:level>/<str:uid>/", "send"),
    ("GET", "remote/", "send"), ("GET", "remote/<int:ae_pk>/studies/<str:study_uid>/", "send"),
    ("POST", "remote/<int:ae_pk>/retrieve/", "send"),
    ("GET", "worklist/", "worklist"), ("GET", "worklist/orders/new/", "schedule"),
    ("GET", "worklist/orders/<int:pk>/", "worklist"),
    ("POST", "worklist/orders/<int:pk>/cancel/", "schedule"),
    ("POST", "worklist/orders/<int:pk>/edit/", "schedule"),
    ("GET", "worklist/orders/<int:pk>/explain/", "worklist"),
    ("GET", "worklist/queries/", "worklist"),
    ("POST", "worklist/steps/<int:pk>/status/", "status"),
    ("POST", "worklist/steps/<int:pk>/reschedule/", "schedule"),
    ("GET", "worklist/workitems/", "worklist"),
    ("GET", "worklist/workitems/<str:uid>/", "worklist"),
    ("GET", "reconciliation/", "reconcile"),
    ("POST", "reconciliation/<int:pk>/resolve/", "reconcile"),
    ("POST", "reconciliation/mpps/<int:pk>/link/", "reconcile"),
    ("POST", "reconciliation/studies/<str:study_uid>/link/", "reconcile"),
    ("GET", "worklist/subscriptions/", "admin"),
    ("POST", "worklist/subscriptions/<path:ae_title>/retry/", "admin"),
    ("GET", "worklist/stations/", "admin"), ("GET", "worklist/stations/<int:pk>/", "admin"),
    ("GET", "worklist/catalog/", "admin"), ("GET", "worklist/catalog/<int:pk>/", "admin"),
    ("GET", "hl7/", "admin"), ("GET", "hl7/<int:pk>/", "admin"),
    ("POST", "hl7/<int:pk>/replay/", "admin"), ("POST", "hl7/<int:pk>/resend/", "admin"),
    ("GET", "hl7/senders/", "admin"), ("GET", "hl7/traffic/", "admin"),
    ("POST", "hl7/receivers/<int:pk>/test/", "admin"),
    ("GET", "hl7/senders/<int:pk>/", "admin"), ("GET", "hl7/receivers/", "admin"),
    ("GET", "hl7/receivers/<int:pk>/", "admin"), ("GET", "hl7/outbound/", "admin"),
    ("POST", "hl7/outbound/<int:pk>/retry/", "admin"), ("GET", "hl7/outbound/<int:pk>/", "admin"),
    ("POST", "hl7/outbound/<int:pk>/cancel/", "admin"), ("GET", "api/token/", "login"),
    ("GET", "password/", "login"),
]

S = "dicomweb/studies/<uid:study>"
SE = f"{S}/series/<uid:series>"
IN = f"{SE}/instances/<uid:instance>"
W = "dicomweb/workitems/<uid:workitem>"
# (method, route, right) for DICOMweb and UPS-RS: 401 for anonymous callers and bad tokens
API = [
    ("GET", "dicomweb/studies", "browse"), ("POST", "dicomweb/studies", "store"),
    ("GET", "dicomweb/series", "browse"), ("GET", "dicomweb/instances", "browse"),
    ("GET", S, "browse"), ("POST", S, "store"), ("GET", f"{S}/metadata", "browse"),
    ("GET", f"{S}/rendered", "browse"), ("GET", f"{S}/thumbnail", "browse"),
    ("GET", f"{S}/series", "browse"), ("GET", f"{S}/instances", "browse"),
    ("GET", SE, "browse"), ("GET", f"{SE}/metadata", "browse"),
    ("GET", f"{SE}/rendered", "browse"), ("GET", f"{SE}/thumbnail", "browse"),
    ("GET", f"{SE}/instances", "browse"), ("GET", IN, "browse"),
    ("GET", f"{IN}/metadata", "browse"), ("GET", f"{IN}/rendered", "browse"),
    ("GET", f"{IN}/thumbnail", "browse"), ("GET", f"{IN}/frames/<str:frames>", "browse"),
    ("GET", f"{IN}/frames/<str:frames>/rendered", "browse"),
    ("GET", f"{IN}/frames/<str:frames>/thumbnail", "browse"),
    ("GET", f"{IN}/bulkdata/<path:tag>", "browse"), ("GET", "dicomweb/wado", "browse"),
    ("GET", "wado", "browse"),
    ("GET", "dicomweb/workitems", "worklist"), ("POST", "dicomweb/workitems", "schedule"),
    ("GET", W, "worklist"), ("POST", W, "perform"), ("PUT", f"{W}/state", "perform"),
    ("POST", f"{W}/cancelrequest", "schedule"),
    ("POST", f"{W}/subscribers/<str:aetitle>", "subscribe"),
    ("DELETE", f"{W}/subscribers/<str:aetitle>", "subscribe"),
    ("POST", f"{W}/subscribers/<str:aetitle>/suspend", "subscribe"),
    ("GET", "api/schema/", "login"), ("GET", "metrics", "admin"),
]
# and django-admin/, Django's own (staff only); an unknown DICOMweb path reads nothing;
# the health probes say nothing of the archive (tests/protocol/test_operations.py)
PUBLIC = {"login/", "logout/", "^dicomweb/", "health/live", "health/ready", "favicon.ico"}


def all_routes(patterns=None, prefix: str = ""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            if not str(p.pattern).startswith("django-admin"):
                yield from all_routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern)


@dataclass
class Caller:
    name: str
    role: str | None  # None: no role; "-": no account at all
    session: requests.Session
    token: bool = False  # the account's API token, not its login session
    bogus: bool = False


@pytest.fixture
def world(web, storage_dir):
    """One of everything the routes name."""
    data = sample("CT_small.dcm").read_bytes()
    store_instance(data=data, received_from="test")
    ds = dcmread(sample("CT_small.dcm"))
    ae = ApplicationEntity.objects.create(ae_title="MATRIXAE", host="127.0.0.1",
                                          port=free_port(), is_move_destination=True)
    station = Station.objects.create(ae_title="CT1", name="ct1", modality="CT")
    procedure = Procedure.objects.create(code_value="CT1", code_meaning="CT", modality="CT")
    order = create_order(patient=PatientData("M1", "MATRIX^ONE"), procedure=procedure,
                         step=StepData(modality="CT", start=dt.datetime(2026, 12, 7, 9),
                                       station_ae_title="CT1"), actor="test")
    step = ScheduledProcedureStep.objects.get(requested_procedure__order=order)
    rule = ForwardingRule.objects.create(name="r", destination=ae)
    item = ForwardItem.objects.create(destination=ae, rule=rule, status="failed",
                                      sop_instance_uid=ds.SOPInstanceUID)
    job = Job.objects.create(kind="send", remote=ae, level="STUDY", keys={"x": "y"},
                             state="failed")
    sender = Sender.objects.create(sending_application="M", addresses="127.0.0.1")
    receiver = Receiver.objects.create(name="R", host="127.0.0.1", port=free_port())
    message = Message.objects.create(raw=b"MSH|^~\\&|M", peer="127.0.0.1:1")
    outbound = Outbound.objects.create(receiver=receiver, step_id=step.pk, order_status="IP",
                                       text="MSH|^~\\&|", control_id="C1")
    from pacs.models import Discrepancy
    from worklist.models import PerformedProcedureStep

    discrepancy = Discrepancy.objects.create(kind="study", study_instance_uid="1.2.3",
                                             detail="StudyDescription differs")
    performed = PerformedProcedureStep.objects.create(sop_instance_uid="1.2.3.4.5",
                                                      status="IN PROGRESS")
    from worklist.models import PatientMerge

    merge = PatientMerge.objects.create(survivor=order.patient, prior_patient_id="PRIOR1")
    return {
        "study_uid": ds.StudyInstanceUID, "series_uid": ds.SeriesInstanceUID,
        "sop_uid": ds.SOPInstanceUID, "study": ds.StudyInstanceUID,
        "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID, "frames": "1",
        "tag": "7FE00010", "path": "app-config.js", "level": "STUDY",
        "uid": ds.StudyInstanceUID, "ae_pk": ae.pk,
        "ae_title": "MATRIXAE", "aetitle": "MATRIXAE", "workitem": step.ups_instance_uid,
        "pk": {"aes": ae.pk, "forwarding": rule.pk, "jobs": job.pk, "orders": order.pk,
               "steps": step.pk, "stations": station.pk, "catalog": procedure.pk,
               "hl7/senders": sender.pk, "hl7/receivers": receiver.pk, "hl7/outbound":
               outbound.pk, "hl7": message.pk, "reconciliation": discrepancy.pk,
               "reconciliation/mpps": performed.pk, "patients": order.patient_id,
               "patients/merges": merge.pk, "forwarding/items": item.pk},
    }


def fill(route: str, world: dict) -> str:
    path = route
    for part in route.split("/"):
        if part.startswith("<"):
            name = part.strip("<>").split(":")[-1]
            if name == "pk":
                key = next(k for k in sorted(world["pk"], key=len, reverse=True)
                           if route.startswith(k) or f"/{k}/" in f"/{route}")
                value = world["pk"][key]
            elif name == "uid" and route.startswith("worklist/workitems"):
                value = world["workitem"]
            else:
                value = world[name]
            path = path.replace(part, str(value), 1)
    query = {"wado": "?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID="
                     "{instance}"}.get(route.rsplit("/", 1)[-1], "")
    return "/" + path + query.format(**world)


@pytest.fixture
def callers(web, world) -> list[Caller]:
    from rest_framework.authtoken.models import Token

    found = [Caller("anonymous", "-", requests.Session()),
             Caller("bogus token", "-", requests.Session(), bogus=True)]
    for role in (None, VIEWER, TECH, SCHED, ADMIN):
        name = f"u-{role or 'none'}"
        user = user_with(name, *([role] if role else []))
        session = requests.Session()
        session.get(f"{web}/login/", timeout=10)
        login = session.post(f"{web}/login/", allow_redirects=False, timeout=10, data={
            "username": name, "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"]})
        assert login.status_code == 302, login.text
        found.append(Caller(name, role, session))
        tokened = requests.Session()
        tokened.headers["Authorization"] = f"Token {Token.objects.create(user=user).key}"
        found.append(Caller(f"{name} token", role, tokened, token=True))
    found[1].session.headers["Authorization"] = "Token 00000000000000000000000000000000"
    return found


def may(caller: Caller, right: str) -> bool:
    if caller.role == "-":
        return False
    return caller.role == ADMIN or caller.role in RIGHTS[right]


def call(web: str, caller: Caller, method: str, path: str) -> requests.Response:
    headers = {}
    if not caller.token and "csrftoken" in caller.session.cookies:
        headers = {"X-CSRFToken": caller.session.cookies["csrftoken"], "Referer": f"{web}/"}
    return caller.session.request(method, web + path, headers=headers, allow_redirects=False,
                                  timeout=30)


def test_every_route_is_in_the_matrix():
    known = {route for _, route, _ in PAGES + API} | PUBLIC
    assert set(all_routes()) - known == set()


def test_the_matrix(web, world, callers):
    wrong = []
    for method, route, right in PAGES:
        path = fill(route, world)
        for caller in callers:
            answer = call(web, caller, method, path)
            to_login = answer.status_code == 302 and answer.headers.get(
                "Location", "").startswith("/login/")
            if caller.token or caller.role == "-":
                # a page is opened with a login session, never a token; a POST without the
                # session's CSRF token is refused before anything else
                ok = to_login or (method == "POST" and answer.status_code == 403)
            elif may(caller, right):
                ok = answer.status_code not in (401, 403, 500) and not to_login
            else:
                ok = answer.status_code == 403
            if not ok:
                wrong.append(f"{method} {path} as {caller.name}: {answer.status_code}")
    for method, route, right in API:
        path = fill(route, world)
        for caller in callers:
            answer = call(web, caller, method, path)
            if caller.role == "-":
                ok = answer.status_code == 401
            elif may(caller, right) or (right == "login" and caller.role is None):
                ok = answer.status_code not in (401, 403, 500)
            else:
                ok = answer.status_code == 403
            if not ok:
                wrong.append(f"{method} {path} as {caller.name}: {answer.status_code}")
    assert not wrong, "\n".join(wrong)


def test_anonymous_reading_when_the_site_opens_it(web, world, callers, settings):
    settings.DICOMWEB_ANONYMOUS_READ = True
    anonymous = callers[0]
    for method, route, right in API:
        status = call(web, anonymous, method, fill(route, world)).status_code
        if right == "browse" and method == "GET":
            assert status not in (401, 403, 500), route
        else:
            assert status == 401, (method, route, status)
    assert Order.objects.exists()
