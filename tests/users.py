"""Portal accounts with roles, for tests."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from core.roles import grant

PASSWORD = "pw-123456"


def user_with(name: str, *roles: str, password: str = PASSWORD):
    """A new account holding ``roles`` (groups of core.roles); no role: a bare account."""
    user = get_user_model().objects.create_user(name, password=password)
    grant(user, *roles)
    return user
