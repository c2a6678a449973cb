"""Operations endpoints: liveness and readiness for load balancers and orchestrators, and
Prometheus metrics.

- ``/health/live``: the web process answers (no database touched).
- ``/health/ready``: the database answers, the storage directory is writable, and in scale
  mode the broker (Redis) answers; ``?listeners=dimse,hl7`` (and ``&node=NAME``) also
  requires those listeners up, on any node or on that one: a worker's listeners are checked
  through the web node (core.health keeps their heartbeats in the shared database). 503 and
  the failing check's name otherwise. Both are open to anyone (probes carry no login) and
  say nothing of the archive's content.
- ``/metrics``: the Prometheus text format, for an admin (session or API token) or for
  ``Authorization: Bearer <PORTAL_METRICS_TOKEN>``. Figures come from the shared database at
  each scrape (archive size, queue backlogs, HL7 messages by outcome, the listeners'
  heartbeat counters), so they are true for every node; request latencies are this web
  process's own.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from core import health
from core.roles import allowed
from hl7gw.models import Message, Outbound
from pacs.dicomweb.auth import ApiTokenAuthentication, PortalSessionAuthentication
from pacs.models import CommitmentRequest, ForwardItem, Instance, Job, Series, Study
from pacs.storage import get_storage

# --- health ---------------------------------------------------------------------------------


def live(request) -> JsonResponse:
    return JsonResponse({"status": "alive"})


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # the name of the failure, never a trace
        return f"failed: {type(exc).__name__}"
    return "ok"


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _storage() -> None:
    get_storage().ready()


def _broker() -> None:
    import redis

    redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()


def ready(request) -> JsonResponse:
    checks = {"database": _check(_database), "storage": _check(_storage)}
    if settings.SCALE_MODE:
        checks["broker"] = _check(_broker)
    wanted = [n.strip() for n in request.GET.get("listeners", "").split(",") if n.strip()]
    node = request.GET.get("node", "").strip()
    if wanted:
        up = [row for row in health.listeners() if row["up"] and (not node or row["node"] == node)]
        for name in wanted:
            checks[f"listener {name}"] = "ok" if any(r["name"] == name for r in up) else "down"
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ready" if ok else "not ready", "checks": checks},
                        status=200 if ok else 503)


# --- metrics --------------------------------------------------------------------------------

REQUEST_SECONDS = Histogram(
    "portal_http_request_duration_seconds", "Web requests of this process, by kind and status",
    ["kind", "status"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None)  # registered in each scrape's registry, not in the library's global one


def _kind(path: str) -> str:
    """A request's family, not its path (paths carry UIDs: unbounded label values)."""
    for prefix, kind in (("/dicomweb/workitems", "ups-rs"), ("/dicomweb/", "dicomweb"),
                         ("/wado", "wado-uri"), ("/health/", "health"), ("/metrics", "metrics"),
                         ("/static/", "static")):
        if path.startswith(prefix):
            return kind
    return "page"


class RequestTimingMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        REQUEST_SECONDS.labels(_kind(request.path), f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started)
        return response


class _ArchiveCollector:
    """Figures read from the shared database at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        archive = GaugeMetricFamily("portal_archive_objects", "Objects in the archive",
                                    labels=["level"])
        archive.add_metric(["study"], Study.objects.count())
        archive.add_metric(["series"], Series.objects.count())
        archive.add_metric(["instance"], Instance.objects.count())
        yield archive
        backlog = GaugeMetricFamily("portal_queue_backlog", "Work waiting, by queue",
                                    labels=["queue"])
        for queue, waiting in backlogs().items():
            backlog.add_metric([queue], waiting)
        yield backlog
        hl7 = CounterMetricFamily("portal_hl7_messages", "HL7 messages received, by outcome",
                                  labels=["outcome"])
        for row in Message.objects.values("status").annotate(n=Count("id")).order_by():
            hl7.add_metric([row["status"]], row["n"])
        yield hl7
        up = GaugeMetricFamily("portal_listener_up", "Listeners (1 up, 0 silent)",
                               labels=["name", "node", "port"])
        associations = CounterMetricFamily(
            "portal_dicom_associations", "DICOM associations since the process started",
            labels=["node", "pid", "port", "outcome"])
        active = GaugeMetricFamily("portal_dicom_associations_open", "Open associations",
                                   labels=["node", "pid", "port"])
        for row in health.listeners():
            up.add_metric([row["name"], row["node"], str(row["port"])], 1 if row["up"] else 0)
            counters = row["counters"] or {}
            if row["up"] and row["name"] == "dimse" and counters:
                where = [row["node"], str(row["pid"]), str(row["port"])]
                for outcome in ("accepted", "rejected"):
                    associations.add_metric([*where, outcome],
                                            counters.get(f"associations_{outcome}", 0))
                active.add_metric(where, counters.get("associations_active", 0))
        yield up
        yield associations
        yield active


def backlogs() -> dict[str, int]:
    """Work waiting, by queue: the metrics endpoint's and the dashboard's."""
    return {
        "jobs": Job.objects.filter(state__in=("queued", "running")).count(),
        "forwarding": ForwardItem.objects.filter(status__in=_open(ForwardItem)).count(),
        "hl7_outbound": Outbound.objects.filter(status__in=_open(Outbound)).count(),
        "storage_commitment": CommitmentRequest.objects.filter(
            delivered_at__isnull=True).count(),
    }


def _open(model) -> list[str]:
    """The statuses of a queue model that are still to be done."""
    final = {"done", "sent", "delivered", "canceled", "cancelled", "failed", "gone",
             "acknowledged"}
    return [value for value, _ in model.Status.choices if value not in final]


class _MetricsToken(BaseAuthentication):
    """``Authorization: Bearer <PORTAL_METRICS_TOKEN>``: a scraper, not a user."""

    def authenticate(self, request):
        token = settings.METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if token and header[:7].lower() == "bearer " and hmac.compare_digest(
                header[7:].strip().encode(), token.encode()):
            return AnonymousUser(), "metrics-token"
        return None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="portal metrics"'  # so that a caller without one gets 401


class _MetricsPermission(BasePermission):
    message = "metrics are for admins and the metrics token"

    def has_permission(self, request, view) -> bool:
        if request.auth == "metrics-token":
            return True
        return bool(request.user and request.user.is_authenticated
                    and allowed(request.user, "admin"))


class MetricsView(APIView):
    authentication_classes = [_MetricsToken, ApiTokenAuthentication, PortalSessionAuthentication]
    permission_classes = [_MetricsPermission]

    def get(self, request):
        registry = CollectorRegistry()
        registry.register(_ArchiveCollector())
        registry.register(REQUEST_SECONDS)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
