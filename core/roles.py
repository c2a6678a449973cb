"""Roles, and the one permission check that every face asks: pages, DICOMweb, UPS-RS, API
tokens (a token acts with its user's roles) and the UPS event WebSocket.

A role is a Django group of the same name (made by migration ``portal.0002_roles``); staff
users and superusers are admins. A user without a role may log in, change their password and
log out, and sees nothing else: an account is given access on purpose, never by default.
"""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render

VIEWER = "viewer"
TECHNOLOGIST = "technologist"
SCHEDULER = "scheduler"
ADMIN = "admin"
ROLES = (VIEWER, TECHNOLOGIST, SCHEDULER, ADMIN)

# What each role may do besides what admins may do (everything). One table for every face.
PERMISSIONS: dict[str, frozenset[str]] = {
    # studies, series, previews, files; QIDO-RS, WADO-RS/URI; jobs list
    "archive.view": frozenset({VIEWER, TECHNOLOGIST, SCHEDULER}),
    "archive.store": frozenset({TECHNOLOGIST}),  # STOW-RS
    # send jobs, remote search and retrieve, cancel and retry jobs
    "archive.send": frozenset({TECHNOLOGIST}),
    "worklist.view": frozenset({VIEWER, TECHNOLOGIST, SCHEDULER}),  # board, orders, workitems
    # orders: create, edit, reschedule, cancel; UPS-RS create and cancellation requests
    "worklist.schedule": frozenset({SCHEDULER}),
    # UPS-RS claim, update, progress, complete (change state); MPPS-like step changes
    "worklist.perform": frozenset({TECHNOLOGIST}),
    # a step's status on the board (arrived, ...): front desk and modality room
    "worklist.status": frozenset({TECHNOLOGIST, SCHEDULER}),
    # the patient registry from its pages: demographics, merge and unmerge (as ADT does)
    "patient.edit": frozenset({SCHEDULER}),
    # the Reconciliation page: data that disagree, MPPS and studies that match no order
    "reconcile": frozenset({SCHEDULER}),
    # everything else an admin does: AE titles, HL7 senders and receivers, forwarding,
    # stations, catalog, deletion, audit, UPS subscriptions of AE titles, changing stored
    # study and series attributes, anonymised copies
    "admin": frozenset(),
    "ups.subscribe": frozenset(),
}


def roles_of(user) -> frozenset[str]:
    """The user's roles (cached on the user object for the request)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    cached = getattr(user, "_portal_roles", None)
    if cached is None:
        names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if user.is_staff or user.is_superuser:
            names.add(ADMIN)
        cached = user._portal_roles = frozenset(names)
    return cached


def allowed(user, action: str) -> bool:
    """May ``user`` do ``action`` (a key of PERMISSIONS)? Anonymous users may only read the
    archive, and only where PORTAL_DICOMWEB_ANONYMOUS_READ opens it (``anonymous_read``)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}")
    roles = roles_of(user)
    return ADMIN in roles or bool(roles & PERMISSIONS[action])


def anonymous_may(action: str) -> bool:
    """What a caller without a user may do: reading the archive over DICOMweb, and only when
    the site opens it on purpose (a public teaching file)."""
    return action == "archive.view" and settings.DICOMWEB_ANONYMOUS_READ


def is_admin(user) -> bool:
    return allowed(user, "admin")


def is_scheduler(user) -> bool:
    return allowed(user, "worklist.schedule")


def permission_required(action: str):
    """A page for ``action``: the login form for anonymous visitors, 403 for a logged-in user
    without the right (never the login form again)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not allowed(request.user, action):
                return render(request, "403.html", {"action": action}, status=403)
            return view(request, *args, **kwargs)

        wrapped.required_action = action  # read by the permission matrix test
        return wrapped

    return decorator


admin_required = permission_required("admin")
scheduler_required = permission_required("worklist.schedule")


def grant(user, *roles: str) -> None:
    """Give ``user`` these roles (creating their groups where a test database lacks them)."""
    from django.contrib.auth.models import Group

    for role in roles:
        if role not in ROLES:
            raise KeyError(f"unknown role {role!r}")
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    user.__dict__.pop("_portal_roles", None)


def issue_token(user) -> object:
    """A new DICOMweb API token for ``user``, in place of any it had (audited): a token acts
    with its user's roles."""
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from core import audit

    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        audit.record(category="auth", action="api token issued", actor=user.get_username(),
                     source="web")
    return token
