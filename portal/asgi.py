"""ASGI: Django over HTTP, and the UPS event channels over WebSocket (Django Channels).

`manage.py serve` runs WSGI (waitress) for HTTP and this application for WebSockets on
PORTAL_WS_PORT; an ASGI server (uvicorn, daphne) can also serve both from this module.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from portal.ws_auth import TokenAuthMiddleware  # noqa: E402
from worklist.consumers import UpsEventConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AuthMiddlewareStack(TokenAuthMiddleware(URLRouter([
        path("dicomweb/subscribers/<str:aetitle>", UpsEventConsumer.as_asgi()),
        path("ws/subscribers/<str:aetitle>", UpsEventConsumer.as_asgi()),
    ]))),
})
