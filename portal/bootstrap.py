"""First-run set-up: the first admin account."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command


def ensure_admin() -> str:
    """Make sure an admin exists; return a line telling how to log in (a generated password is
    shown once, here, and never stored in clear)."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        admins = User.objects.filter(is_superuser=True).values_list("username", flat=True)
        names = ", ".join(admins[:3])
        return f"log in as an existing admin ({names})"
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
    if username and os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
        os.environ.setdefault("DJANGO_SUPERUSER_EMAIL", "")
        call_command("createsuperuser", interactive=False, verbosity=0)
        return f"log in as {username} with the password from DJANGO_SUPERUSER_PASSWORD"
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username="admin", email="", password=password)
    return f"log in as admin / {password}   (generated now, shown once: change it after login)"
