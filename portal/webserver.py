"""The production web server of `serve`: waitress, bounded against slow and greedy clients.

Waitress already reads every request in one I/O thread and hands a worker thread only a
complete request, so a slow client never holds a worker. What it lacks, and what this adds
(about 60 lines, not a second server: waitress keeps the measured WADO-RS figures):

- a per-source cap on open connections (``max_per_source``), checked at accept: a client that
  opens hundreds of slow connections gets no more than that, and a high ``connection_limit``
  leaves room for everybody else (waitress stops accepting altogether at its limit, 100 by
  default, which is what a slowloris client aimed for);
- a deadline for a request's header (``header_seconds`` from its first byte) and for its body
  (a minimum rate, ``min_bytes_per_second``, on top): waitress's own timeout only closes
  connections that are *silent*, so one byte every few seconds kept a connection forever;
- the idle keep-alive timeout (``idle_seconds``) and a check every second.
"""

from __future__ import annotations

import logging
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from core import quiet

log = logging.getLogger(__name__)


class _TimedParser(HTTPRequestParser):
    """A request being read, with the time its first byte came."""

    def __init__(self, adj) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _Channel(HTTPChannel):
    parser_class = _TimedParser


class BoundedServer(TcpWSGIServer):
    channel_class = _Channel

    def __init__(self, *args, max_per_source: int, header_seconds: float,
                 min_bytes_per_second: int, **kwargs) -> None:
        self.max_per_source = max_per_source
        self.header_seconds = header_seconds
        self.min_bytes_per_second = min_bytes_per_second
        super().__init__(*args, **kwargs)

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        source = addr[0] if isinstance(addr, tuple) else str(addr)
        open_here = sum(1 for channel in self.active_channels.values()
                        if _source(channel) == source)
        if open_here >= self.max_per_source:
            conn.close()
            if quiet.due(f"web refused {source}"):  # a flood: once a minute per source
                log.warning("web: connection from %s refused: %d open from there (limit %d)",
                            source, open_here, self.max_per_source)
            return
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        """Waitress's idle check, plus the deadlines of requests still being read."""
        super().maintenance(now)
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            request = channel.request
            if request is None or request.completed:
                continue
            deadline = request.started + self.header_seconds
            if request.headers_finished:
                deadline += (request.content_length or 0) / self.min_bytes_per_second
            if clock > deadline:
                channel.will_close = True  # waitress closes it in its loop


def _source(channel) -> str:
    addr = channel.addr
    return addr[0] if isinstance(addr, tuple) else str(addr)


def create_web_server(application, *, host: str, port: int, threads: int = 8,
                      max_connections: int = 1000, max_per_source: int = 64,
                      header_seconds: float = 10, min_bytes_per_second: int = 10_000,
                      idle_seconds: int = 60, **adjustments) -> BoundedServer:
    """A waitress server for ``application`` on ``host:port`` with the bounds above;
    ``adjustments`` go to waitress (max_request_body_size, trusted_proxy, ...)."""
    adj = Adjustments(host=host, port=port, threads=threads, connection_limit=max_connections,
                      channel_timeout=idle_seconds, cleanup_interval=1, **adjustments)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    return BoundedServer(application, {}, True, None, dispatcher=dispatcher, adj=adj,
                         sockinfo=adj.listen[0], max_per_source=max_per_source,
                         header_seconds=header_seconds,
                         min_bytes_per_second=min_bytes_per_second)
