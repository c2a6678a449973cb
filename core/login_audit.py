"""Logins, failed logins, lockouts and logouts into the audit trail (Django's auth signals and
django-axes's lockout signal), whichever page or backend they came through."""

from __future__ import annotations

from core import audit
from core.models import AuditEvent


def _address(request) -> str:
    return (request.META.get("REMOTE_ADDR", "") if request is not None else "")[:128]


def on_logged_in(sender, request, user, **kwargs) -> None:
    audit.record(category=AuditEvent.Category.AUTH, action="login",
                 actor=user.get_username(), source=_address(request))


def on_logged_out(sender, request, user, **kwargs) -> None:
    audit.record(category=AuditEvent.Category.AUTH, action="logout",
                 actor=user.get_username() if user is not None else "",
                 source=_address(request))


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    audit.record(category=AuditEvent.Category.AUTH, action="login", outcome="failure",
                 actor=str(credentials.get("username", ""))[:128], source=_address(request),
                 detail="wrong user name or password")


def on_locked_out(sender, request=None, username="", ip_address="", **kwargs) -> None:
    audit.record(category=AuditEvent.Category.AUTH, action="login locked out",
                 outcome="refused", actor=str(username or "")[:128],
                 source=str(ip_address or _address(request))[:128],
                 detail="too many failed logins: locked out (django-axes)")


def connect() -> None:
    from axes.signals import user_locked_out
    from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

    user_logged_in.connect(on_logged_in, dispatch_uid="portal-audit-login")
    user_logged_out.connect(on_logged_out, dispatch_uid="portal-audit-logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="portal-audit-login-failed")
    user_locked_out.connect(on_locked_out, dispatch_uid="portal-audit-locked-out")
