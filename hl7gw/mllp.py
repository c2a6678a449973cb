"""MLLP (HL7 v2.5 Appendix C) listener: persistent connections, many frames per connection,
one thread per connection, TCP_NODELAY, buffered reads.

hl7apy's own MLLP server closes after one message and reads byte by byte; this framing layer
scans a buffer for <VT> ... <FS><CR>. Bytes outside a frame get AR and are never applied; a
frame past the size limit gets one AR and the connection is closed; a connection closed inside
a frame leaves that frame in the message log. Connections are limited in all and per source.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from core import checkpoints, quiet, tls
from core.tcp import TcpServer
from hl7gw.framing import FrameBuffer, frame

log = logging.getLogger("hl7gw")

HANDSHAKE_TIMEOUT = 30.0  # seconds for a TLS client to finish its handshake
KEPT_BYTES = 64 * 1024  # of a refused frame, in its log row


def _warn(source: str, reason: str) -> None:
    """A refusal in the log, once per source address and minute (a refused frame is in the
    message log anyway): a client sending garbage in a loop must not flood the log."""
    if quiet.due(f"hl7 {source}"):
        log.warning("HL7 from %s: %s (more from there within a minute: not logged here)",
                    source, reason)


class MllpListener:
    name = "hl7"

    def __init__(self, host: str | None = None, port: int | None = None,
                 handler: Callable[[bytes, str], bytes] | None = None,
                 tls_port: int | None = None) -> None:
        """``tls_port``: also MLLP over TLS there (default PORTAL_HL7_TLS_PORT; -1: not)."""
        self.host = settings.HL7_HOST if host is None else host
        self.port = settings.HL7_PORT if port is None else port
        self.tls_port = settings.HL7_TLS_PORT if tls_port is None else tls_port
        self.handler = handler or _default_handler
        self.refuse = _default_refuse
        self._tcp: TcpServer | None = None
        self._tls_tcp: TcpServer | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        limits = {"max_connections": settings.HL7_MAX_CONNECTIONS,
                  "max_per_source": settings.HL7_MAX_PER_SOURCE}
        self._tcp = TcpServer(self.host, self.port, self._serve, name="mllp", backlog=64,
                              **limits)
        if self.tls_port >= 0:
            self._tls_tcp = TcpServer(self.host, self.tls_port, self._serve_tls,
                                      name="mllp-tls", backlog=64, **limits)
        checkpoints.start()
        self._tcp.start()
        if self._tls_tcp is not None:
            self._tls_tcp.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self._tcp is not None, "listener not started"
        return self._tcp.address

    @property
    def tls_address(self) -> tuple[str, int] | None:
        return self._tls_tcp.address if self._tls_tcp is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._tls_tcp is not None:
            self._tls_tcp.stop()
            self._tls_tcp = None
        if self._tcp is not None:
            self._tcp.stop()
            self._tcp = None
            checkpoints.stop()

    def _serve_tls(self, conn: socket.socket, address: tuple[str, int]) -> None:
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            conn = tls.server_context().wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            _warn(address[0], f"TLS handshake failed: {exc}")
            conn.close()
            return
        self._serve(conn, address)

    def _serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        """One connection: frames in, ACK frames out. Bounded: a connection silent for
        PORTAL_HL7_IDLE_SECONDS is closed, and so is one whose frame takes longer than
        PORTAL_HL7_FRAME_SECONDS or grows past PORTAL_HL7_MAX_FRAME_BYTES (after one AR and
        one log row saying why); bytes outside a frame get AR and are not applied."""
        peer = f"{address[0]}:{address[1]}"
        buffer = FrameBuffer(settings.HL7_MAX_FRAME_BYTES)
        try:
            checkpoints.defer()
            while not self._stop.is_set():
                conn.settimeout(self._wait(buffer))
                chunk = conn.recv(65536)
                if not chunk:
                    break
                for kind, payload in buffer.feed(chunk):
                    if kind == "frame":
                        conn.sendall(frame(self.handler(payload, peer)))
                        continue
                    reason = (f"a frame of more than {settings.HL7_MAX_FRAME_BYTES} bytes: "
                              "not processed" if kind == "oversize" else
                              "bytes outside an MLLP frame (no start block): not processed")
                    _warn(address[0], reason)
                    # the log row keeps what shows what it was, not megabytes of it
                    conn.sendall(frame(self.refuse(payload[:KEPT_BYTES], peer, reason)))
                    if kind == "oversize":
                        buffer.data.clear()
                        return  # the rest of it is not read: the connection goes
        except (OSError, TimeoutError):
            pass
        finally:
            leftover = buffer.leftover()
            if leftover.strip():  # the peer closed (or stalled) inside a frame: keep what came
                _warn(address[0], "connection closed inside a frame")
                _keep_truncated(leftover[:settings.HL7_MAX_FRAME_BYTES], peer)
            conn.close()
            connection.close()

    @staticmethod
    def _wait(buffer: FrameBuffer) -> float:
        """Seconds to wait for more: the idle time, or what is left of the frame's time."""
        if buffer.started is None:
            return settings.HL7_IDLE_SECONDS
        left = buffer.started + settings.HL7_FRAME_SECONDS - time.monotonic()
        if left <= 0:
            raise TimeoutError("the frame took too long")
        return left


def _default_handler(payload: bytes, peer: str) -> bytes:
    from hl7gw.inbound.service import receive_frame

    return receive_frame(payload, peer=peer)


def _default_refuse(payload: bytes, peer: str, reason: str) -> bytes:
    from hl7gw.inbound.service import refuse_frame

    return refuse_frame(payload, peer=peer, reason=reason)


def _keep_truncated(payload: bytes, peer: str) -> None:
    from hl7gw.models import Message

    Message.objects.create(raw=payload, peer=peer[:64], text=payload.decode("latin_1"),
                           status=Message.Status.REJECTED,
                           error="connection closed before the end of the MLLP frame")
