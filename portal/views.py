from __future__ import annotations

import csv
import datetime as dt
import shutil

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils import timezone

from core import audit, health
from core.models import AuditEvent
from core.roles import admin_required, allowed, issue_token
from pacs.forms import DateRangeForm
from pacs.models import Study
from pacs.selectors import archive_totals, recent_studies
from portal import operations


class AuditFilterForm(DateRangeForm):
    field_order = ["category", "actor", "date_from", "date_to", "text"]
    category = forms.ChoiceField(required=False)
    actor = forms.CharField(required=False, label="User or AE title")
    text = forms.CharField(required=False, label="Detail contains")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # every category defined, and any other one the trail holds (older rows, new code)
        named = dict(AuditEvent.Category.choices)
        present = AuditEvent.objects.order_by().values_list("category", flat=True).distinct()
        extra = sorted(set(present) - set(named))
        self.fields["category"].choices = [("", "All categories"), *named.items(),
                                           *((c, c) for c in extra)]


LISTENER_LABELS = {"dimse": "DICOM", "dimse-tls": "DICOM TLS", "hl7": "HL7 MLLP",
                   "hl7-tls": "HL7 MLLP over TLS", "websocket": "UPS events (WebSocket)"}


@login_required
def dashboard(request):
    if not allowed(request.user, "archive.view"):
        # an account without a role: nothing of the archive, and why
        return render(request, "portal/no_role.html", status=403)
    context = {
        "totals": archive_totals(),
        "recent": recent_studies(),
        "events": AuditEvent.objects.all()[:8],
        # who was turned away at the door, and why (AE title, address, reason)
        "refusals": AuditEvent.objects.filter(outcome="refused", category__in=(
            AuditEvent.Category.ASSOCIATION, "hl7", AuditEvent.Category.AUTH))[:10],
        "dimse": {"aet": settings.DIMSE_AET},
        # what each listening process last said, on every node (core.health)
        "listeners": [{**row, "label": LISTENER_LABELS.get(row["name"], row["name"])}
                      for row in health.listeners()],
        "queues": [(QUEUE_LABELS[name], waiting) for name, waiting in
                   operations.backlogs().items()],
        "disk": _disk(),
        "growth": _growth(),
    }
    return render(request, "portal/dashboard.html", context)


QUEUE_LABELS = {"jobs": "Transfer and local jobs", "forwarding": "Forwarding (instances)",
                "hl7_outbound": "HL7 status messages", "storage_commitment":
                "Storage commitment answers"}


def _disk() -> dict:
    """The data dir's file system (the files themselves, unless an object store holds them)."""
    usage = shutil.disk_usage(settings.DATA_DIR)
    return {"total": usage.total, "free": usage.free,
            "used_percent": round(100 * (usage.total - usage.free) / usage.total)
            if usage.total else 0,
            "object_store": settings.STORAGE_URL.startswith("s3://")}


def _growth() -> list[tuple[str, int, int]]:
    """Studies received (or added to) in the last day and week, and their instances: from
    the studies' indexed last-update time, so it stays cheap at any archive size."""
    now = timezone.now()
    rows = []
    for label, days in (("last 24 hours", 1), ("last 7 days", 7)):
        found = Study.objects.filter(updated_at__gte=now - dt.timedelta(days=days)).aggregate(
            studies=Count("id"), instances=Sum("number_of_instances"))
        rows.append((label, found["studies"], found["instances"] or 0))
    return rows


@admin_required
def audit_list(request):
    """The audit trail, filtered by category, who (user name or calling AE title), date range
    and free text; PHI access rows (category access) answer "who read what"."""
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.all()
    if form.is_valid():
        d = form.cleaned_data
        if d["category"]:
            events = events.filter(category=d["category"])
        if d["actor"]:
            events = events.filter(actor__iexact=d["actor"].strip())
        if d["date_from"]:
            events = events.filter(created_at__date__gte=d["date_from"])
        if d["date_to"]:
            events = events.filter(created_at__date__lte=d["date_to"])
        if d["text"]:
            events = events.filter(detail__icontains=d["text"])
    if request.GET.get("format") == "csv":
        return _audit_csv(request, events)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "portal/audit.html",
                  {"page": page, "form": form, "query": query.urlencode()})


def _audit_csv(request, events) -> StreamingHttpResponse:
    """The filtered trail as CSV, streamed (a year of rows is never held in memory). A cell
    a spreadsheet would run as a formula (=, +, -, @ first) is written with a leading quote
    (OWASP CSV injection). The export itself is a row of the trail."""
    audit.record(category=AuditEvent.Category.ADMIN, action="audit trail exported",
                 actor=request.user.username, source=request.META.get("REMOTE_ADDR", ""),
                 detail=request.GET.urlencode()[:500])

    class Echo:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(Echo())
    columns = ("created_at", "category", "action", "outcome", "actor", "source", "detail")

    def rows():
        yield writer.writerow(["time (UTC)", *columns[1:]])
        for values in events.values_list(*columns).iterator(chunk_size=2000):
            when, *rest = values
            yield writer.writerow([when.strftime("%Y-%m-%d %H:%M:%S"),
                                   *(_cell(str(v)) for v in rest)])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit-trail.csv"'
    return response


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class PasswordChange(auth_views.PasswordChangeView):
    """Every user changes their own password (the old one asked first, Django's validators);
    the session stays logged in; the change is a row of the audit trail, the password never."""

    success_url = reverse_lazy("dashboard")

    def form_valid(self, form):
        response = super().form_valid(form)
        audit.record(category=AuditEvent.Category.AUTH, action="password changed",
                     actor=self.request.user.username,
                     source=self.request.META.get("REMOTE_ADDR", ""))
        messages.success(self.request, "Your password was changed.")
        return response


@login_required
def api_token(request):
    """The user's DICOMweb API token: shown, created or replaced (POST)."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.filter(user=request.user).first()
    if request.method == "POST":
        token = issue_token(request.user)
    base = settings.DICOMWEB_BASE_URL or request.build_absolute_uri("/dicomweb")
    return render(request, "portal/api_token.html", {"token": token, "base_url": base})
