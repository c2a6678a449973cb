from django.conf import settings

from core.roles import allowed


class _Can:
    """``{% if can.archive_send %}``: the permission check for templates (dots become
    underscores: template lookups cannot hold a dot)."""

    def __init__(self, user) -> None:
        self.user = user

    def __getitem__(self, name: str) -> bool:
        action = name.replace("_", ".", 1) if name != "admin" else name
        try:
            return allowed(self.user, action)
        except KeyError:
            return False


def portal(request) -> dict:
    return {
        "portal_aet": settings.DIMSE_AET,
        "portal_scale_mode": settings.SCALE_MODE,
        "can": _Can(getattr(request, "user", None)),
    }
