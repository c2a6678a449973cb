"""One small threaded TCP server for the portal's listeners (DIMSE, MLLP): a listening socket
that several processes may share (SO_REUSEPORT), an accept loop, one thread per connection
with TCP_NODELAY."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable


class TcpServer:
    def __init__(self, host: str, port: int,
                 handle: Callable[[socket.socket, tuple[str, int]], None],
                 *, name: str, backlog: int = 128) -> None:
        self.handle, self.name = handle, name
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind((host, port))
        self._sock.listen(backlog)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._sock], [], [], 0.2)[0]:
                continue
            try:
                conn, address = self._sock.accept()
            except OSError:
                continue  # another process took it (shared port) or the peer gave up
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.handle, args=(conn, address[:2]), daemon=True,
                             name=f"{self.name}-{address[0]}:{address[1]}").start()
