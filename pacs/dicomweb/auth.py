"""Who may use DICOMweb and UPS-RS: portal users (session) and API tokens, each with the
roles of its user (``core.roles``, the check every face asks); anonymous reading only when
PORTAL_DICOMWEB_ANONYMOUS_READ is on."""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import BasePermission

from core.roles import allowed, anonymous_may


class ApiTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` (DRF's form) or ``Authorization: Bearer <key>`` (what
    viewers such as OHIF send)."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header[:7].lower() == "bearer ":
            request.META["HTTP_AUTHORIZATION"] = "Token " + header[7:]
        return super().authenticate(request)


class PortalSessionAuthentication(SessionAuthentication):
    """The portal's login session, with Django's CSRF check on unsafe methods.

    DRF's own check reads ``request.POST`` of its Request, which parses the body first: a
    DICOMweb body (multipart/related, application/dicom+json) then fails as 415 before the
    CSRF token in the X-CSRFToken header is even looked at. Django's request only parses form
    bodies, so the check runs on it."""

    def enforce_csrf(self, request):
        return super().enforce_csrf(request._request)


class RolePermission(BasePermission):
    """The action a view names for the request's method (``DicomWebView.actions``), asked of
    core.roles. Anonymous callers get 401 (the authenticators' challenge); a user or token
    whose roles do not allow the action gets 403."""

    message = "your role does not allow this"

    def has_permission(self, request, view) -> bool:
        action = view.action_for(request.method)
        user = request.user
        if user and user.is_authenticated:
            if allowed(user, action):
                return True
            self.message = f"your role does not allow this ({action})"
            return False
        return anonymous_may(action)
