"""ASGI: Django over HTTP, and the UPS event channels over WebSocket (Django Channels).

`manage.py serve` runs WSGI (waitress) for HTTP and ``websocket_application`` on
PORTAL_WS_PORT, which answers WebSockets only. An ASGI server (uvicorn, daphne) can also serve
both from ``application``.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from portal.ws_auth import OriginCheckMiddleware, TokenAuthMiddleware  # noqa: E402
from worklist.consumers import UpsEventConsumer  # noqa: E402

websocket_routes = OriginCheckMiddleware(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter([
    path("dicomweb/subscribers/<str:aetitle>", UpsEventConsumer.as_asgi()),
    path("ws/subscribers/<str:aetitle>", UpsEventConsumer.as_asgi()),
]))))


async def websocket_port_http(scope, receive, send) -> None:
    """Plain HTTP on the WebSocket port: 404, pointing at the web UI's port."""
    if scope["type"] != "http":
        return
    body = b"This port serves the UPS event WebSocket only; the web UI has a port of its own.\n"
    await send({"type": "http.response.start", "status": 404, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_routes})
websocket_application = ProtocolTypeRouter({"http": websocket_port_http,
                                             "websocket": websocket_routes})
