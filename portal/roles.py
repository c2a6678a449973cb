"""Roles: admins are staff users; everybody else who can log in may browse."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, user_passes_test


def is_admin(user) -> bool:
    return user.is_authenticated and (user.is_staff or user.is_superuser)


def admin_required(view):
    return login_required(user_passes_test(is_admin)(view))


SCHEDULER_GROUP = "scheduler"


def is_scheduler(user) -> bool:
    """Schedulers create and change orders: members of the 'scheduler' group, and admins."""
    return is_admin(user) or (user.is_authenticated
                              and user.groups.filter(name=SCHEDULER_GROUP).exists())


def scheduler_required(view):
    return login_required(user_passes_test(is_scheduler)(view))
