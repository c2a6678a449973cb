"""One small threaded TCP server for the portal's listeners (DIMSE, MLLP): a listening socket
that several processes may share, an accept loop, one thread per connection with TCP_NODELAY,
and a bound on connections, in all and per source address: past it a new connection is closed
at once, before a thread is started for it, so one client cannot exhaust threads or memory.

Processes share a port in one of two ways. Independent ones (two `dimse_scp` commands, Celery
workers) each bind it with SO_REUSEPORT, and the kernel picks a process for each connection by
a hash of the addresses. Processes started by one parent (`--processes N`) accept on the
parent's socket itself (`share()`), and a process that already serves connections waits a few
milliseconds per connection before it accepts, so the least busy process takes the next one."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

from core import quiet

log = logging.getLogger(__name__)

# Wait per connection already served before accepting on a shared socket, and the most.
BALANCE_DELAY = 0.01
BALANCE_MAX = 0.1


class TcpServer:
    def __init__(self, host: str, port: int,
                 handle: Callable[[socket.socket, tuple[str, int]], None],
                 *, name: str, backlog: int = 128, inherited_fd: int | None = None,
                 max_connections: int = 256, max_per_source: int = 64) -> None:
        """`inherited_fd`: a listening socket shared by the parent process (see share())."""
        self.handle, self.name = handle, name
        self.max_connections, self.max_per_source = max_connections, max_per_source
        self._sources: Counter[str] = Counter()
        if inherited_fd is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._sock.bind((host, port))
            self._sock.listen(backlog)
        else:
            self._sock = socket.socket(fileno=inherited_fd)
        # Non-blocking: when processes share the socket, another one may take the connection
        # between select() and accept().
        self._sock.setblocking(False)
        self._shared = inherited_fd is not None
        self._active = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def share(self) -> int:
        """The listening socket's descriptor, for child processes to accept on as well (pass
        it as `inherited_fd`). From now on this process, too, leaves a new connection to a less
        busy process."""
        self._shared = True
        return self._sock.fileno()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace: float = 0.0) -> None:
        """Stop accepting. With ``grace``, also wait up to that many seconds for the
        connections being served to end (an association storing a study finishes it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()
        deadline = time.monotonic() + grace
        while self._active and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def active(self) -> int:
        """Connections being served now."""
        return self._active

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._sock], [], [], 0.2)[0]:
                continue
            if self._shared and self._active:
                time.sleep(min(BALANCE_DELAY * self._active, BALANCE_MAX))
            try:
                conn, address = self._sock.accept()
            except OSError:
                continue  # another process took it (shared port) or the peer gave up
            source = address[0]
            with self._lock:
                full = (self._active >= self.max_connections
                        or self._sources[source] >= self.max_per_source)
                if not full:
                    self._active += 1
                    self._sources[source] += 1
            if full:
                self._refuse(conn, source)
                continue
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn, address[:2]), daemon=True,
                             name=f"{self.name}-{address[0]}:{address[1]}").start()

    def _refuse(self, conn: socket.socket, source: str) -> None:
        conn.close()
        if quiet.due(f"{self.name} refused {source}"):  # a flood: once a minute per source
            log.warning("%s: connection from %s refused: %d open from there, %d in all "
                        "(limits %d, %d)", self.name, source, self._sources[source],
                        self._active, self.max_per_source, self.max_connections)

    def _serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        try:
            self.handle(conn, address)
        finally:
            with self._lock:
                self._active -= 1
                self._sources[address[0]] -= 1
                if self._sources[address[0]] <= 0:
                    del self._sources[address[0]]
