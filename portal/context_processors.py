from django.conf import settings


def portal(request) -> dict:
    return {
        "portal_aet": settings.DIMSE_AET,
        "portal_scale_mode": settings.SCALE_MODE,
    }
