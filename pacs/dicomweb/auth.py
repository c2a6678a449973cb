"""Who may use DICOMweb: logged-in portal users (session) and API tokens; anonymous reading
only when PORTAL_DICOMWEB_ANONYMOUS_READ is on. Storing always needs a user."""

from __future__ import annotations

from django.conf import settings
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` (DRF's form) or ``Authorization: Bearer <key>`` (what
    viewers such as OHIF send)."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header[:7].lower() == "bearer ":
            request.META["HTTP_AUTHORIZATION"] = "Token " + header[7:]
        return super().authenticate(request)


class DicomWebAccess(BasePermission):
    message = "log in or send an API token (Authorization: Token <key>)"

    def has_permission(self, request, view) -> bool:
        user = request.user
        if user and user.is_authenticated:
            return True
        return request.method in SAFE_METHODS and settings.DICOMWEB_ANONYMOUS_READ
