"""API tokens on WebSocket handshakes: ``Authorization: Token|Bearer <key>`` or, for browsers
(which cannot set headers on a WebSocket), ``?access_token=<key>``."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async


@database_sync_to_async
def _user_for(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token and token.user.is_active else None


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
        if key:
            user = await _user_for(key)
            if user is not None:
                scope = {**scope, "user": user}
        return await self.app(scope, receive, send)
