"""Roles: admins are staff users; everybody else who can log in may browse."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, user_passes_test


def is_admin(user) -> bool:
    return user.is_authenticated and (user.is_staff or user.is_superuser)


def admin_required(view):
    return login_required(user_passes_test(is_admin)(view))
