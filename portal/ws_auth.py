"""WebSocket handshakes: the caller's Origin, and API tokens.

Browsers send the page's Origin on every WebSocket handshake, and with it the portal's session
cookie, so a page of any other origin could read a logged-in user's channels (cross-site
WebSocket hijacking). A handshake with an Origin is accepted only from the portal's own pages
(same host name; the port of the handshake or of the web UI) or from an origin configured for
viewers (PORTAL_CORS_ORIGINS) or a proxy (DJANGO_CSRF_TRUSTED_ORIGINS). Clients that are not
browsers send no Origin and authenticate with a token.

Tokens: ``Authorization: Token|Bearer <key>`` or, for browsers (which cannot set headers on a
WebSocket), ``?access_token=<key>``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings


@database_sync_to_async
def _user_for(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token and token.user.is_active else None


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _endpoint(url: str) -> tuple[str, str, int | None]:
    """(scheme, host name, port) of a URL; ("", "", None) when it does not parse."""
    try:
        parts = urlsplit(url)
        return (parts.scheme, (parts.hostname or "").lower(),
                parts.port or _DEFAULT_PORTS.get(parts.scheme))
    except ValueError:
        return "", "", None


def origin_allowed(origin: str | None, host: str | None, scheme: str) -> bool:
    """May a page of ``origin`` open a WebSocket that arrived for ``host`` (its Host header)?"""
    if origin is None:
        return True  # not a browser: it authenticates by token, never by a cookie
    origin = origin.strip().rstrip("/")
    if origin in {*settings.CORS_ALLOWED_ORIGINS, *settings.CSRF_TRUSTED_ORIGINS}:
        return True
    origin_scheme, origin_host, origin_port = _endpoint(origin)
    if not host or origin_scheme not in ("http", "https"):
        return False
    _, ws_host, ws_port = _endpoint(f"{scheme}://{host}")
    return origin_host == ws_host and origin_port in {ws_port, settings.HTTP_PORT}


class OriginCheckMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(
                _header(scope, b"origin"), _header(scope, b"host"), scope.get("scheme", "ws")):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


class TokenAuthMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        key = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() in ("token", "bearer"):
                    key = rest.strip()
        if not key:
            key = parse_qs(scope.get("query_string", b"").decode()).get("access_token", [""])[0]
        if key:  # a key that fails is a failed login, never the session's user instead
            from django.contrib.auth.models import AnonymousUser

            user = await _user_for(key)
            scope = {**scope, "user": user if user is not None else AnonymousUser()}
        return await self.app(scope, receive, send)
