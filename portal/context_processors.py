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


def _viewer_links(request) -> list[tuple[str, str]]:
    """The configured viewers' URL templates, {dicomweb} filled in (for the study_link
    filter: {study} and {patient_id} are the study's)."""
    if not settings.VIEWER_LINKS:
        return []
    from urllib.parse import quote

    base = quote(request.build_absolute_uri("/dicomweb"), safe="")
    return [(name.strip(), template.strip().replace("{dicomweb}", base))
            for name, template in settings.VIEWER_LINKS]


def portal(request) -> dict:
    from portal import viewer

    return {
        "viewer_installed": viewer.installed(),
        "viewer_links": _viewer_links(request),
        "portal_aet": settings.DIMSE_AET,
        "portal_scale_mode": settings.SCALE_MODE,
        "can": _Can(getattr(request, "user", None)),
    }
