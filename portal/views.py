from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from pacs.selectors import archive_totals, recent_studies
from portal import audit
from portal.models import AuditEvent
from portal.roles import admin_required, allowed


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
        "dimse": {"aet": settings.DIMSE_AET, "port": settings.DIMSE_PORT,
                  "processes": settings.DIMSE_PROCESSES},
        "hl7_port": settings.HL7_PORT,
    }
    return render(request, "portal/dashboard.html", context)


@admin_required
def audit_list(request):
    events = AuditEvent.objects.all()
    category = request.GET.get("category", "")
    if category:
        events = events.filter(category=category)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(
        request, "portal/audit.html",
        {"page": page, "category": category, "categories": AuditEvent.Category.choices},
    )


@login_required
def api_token(request):
    """The user's DICOMweb API token: shown, created or replaced (POST)."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.filter(user=request.user).first()
    if request.method == "POST":
        if token:
            token.delete()
        token = Token.objects.create(user=request.user)
        audit.record(category=AuditEvent.Category.AUTH, action="api token issued",
                     actor=request.user.get_username(), source="web")
    base = settings.DICOMWEB_BASE_URL or request.build_absolute_uri("/dicomweb")
    return render(request, "portal/api_token.html", {"token": token, "base_url": base})
