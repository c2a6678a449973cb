from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from core import health
from core.models import AuditEvent
from core.roles import admin_required, allowed, issue_token
from pacs.forms import DateRangeForm
from pacs.selectors import archive_totals, recent_studies


class AuditFilterForm(DateRangeForm):
    field_order = ["category", "actor", "date_from", "date_to", "text"]
    category = forms.ChoiceField(required=False, choices=[("", "All categories"),
                                                          *AuditEvent.Category.choices])
    actor = forms.CharField(required=False, label="User or AE title")
    text = forms.CharField(required=False, label="Detail contains")


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
    }
    return render(request, "portal/dashboard.html", context)


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
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "portal/audit.html",
                  {"page": page, "form": form, "query": query.urlencode()})


@login_required
def api_token(request):
    """The user's DICOMweb API token: shown, created or replaced (POST)."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.filter(user=request.user).first()
    if request.method == "POST":
        token = issue_token(request.user)
    base = settings.DICOMWEB_BASE_URL or request.build_absolute_uri("/dicomweb")
    return render(request, "portal/api_token.html", {"token": token, "base_url": base})
