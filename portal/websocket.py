"""The WebSocket listener of `serve`: the UPS event channels (WebSocket only) on uvicorn, in a
thread next to the WSGI web server."""

from __future__ import annotations

import threading
import time


class WebSocketServer:
    def __init__(self, host: str, port: int) -> None:
        import uvicorn

        from portal.asgi import websocket_application

        config = uvicorn.Config(websocket_application, host=host, port=port, log_level="warning",
                                lifespan="off", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="websocket", daemon=True)

    def start(self, timeout: float = 20) -> int:
        """Start serving; return the port (useful with port 0)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the WebSocket listener did not start")
            time.sleep(0.05)
        return self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
