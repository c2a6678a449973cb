"""MLLP (HL7 v2.5 Appendix C) listener: persistent connections, many frames per connection,
one thread per connection, TCP_NODELAY, buffered reads.

hl7apy's own MLLP server closes after one message and reads byte by byte; this framing layer
scans a buffer for <VT> ... <FS><CR>. Bytes outside a frame are answered like a message that
does not parse (AR); a connection closed inside a frame leaves that frame in the message log.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import connection

from portal import checkpoints, tls
from portal.tcp import TcpServer

log = logging.getLogger("hl7gw")

START, END = b"\x0b", b"\x1c\r"
MAX_FRAME = 16 * 1024 * 1024
IDLE_TIMEOUT = 600.0
HANDSHAKE_TIMEOUT = 30.0


class FrameBuffer:
    """Accumulates received bytes; yields complete frames and stray bytes between frames."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[str, bytes]]:
        self.data += chunk
        while self.data:
            start = self.data.find(START)
            if start < 0:
                if len(self.data) > MAX_FRAME or b"\r" in self.data:
                    stray, self.data = bytes(self.data), bytearray()
                    if stray.strip():
                        yield "stray", stray
                return
            if start > 0:
                stray = bytes(self.data[:start])
                del self.data[:start]
                if stray.strip(b"\r\n\x1c "):
                    yield "stray", stray
            end = self.data.find(END, 1)
            if end < 0:
                if len(self.data) > MAX_FRAME:
                    yield "stray", bytes(self.data[1:])
                    self.data = bytearray()
                return
            frame = bytes(self.data[1:end])
            del self.data[:end + len(END)]
            yield "frame", frame

    def leftover(self) -> bytes:
        return bytes(self.data).lstrip(START)


def frame(payload: bytes) -> bytes:
    return START + payload + END


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
        self._tcp: TcpServer | None = None
        self._tls_tcp: TcpServer | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self._tcp = TcpServer(self.host, self.port, self._serve, name="mllp", backlog=64)
        if self.tls_port >= 0:
            self._tls_tcp = TcpServer(self.host, self.tls_port, self._serve_tls,
                                      name="mllp-tls", backlog=64)
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
            log.warning("HL7 TLS handshake with %s failed: %s", address[0], exc)
            conn.close()
            return
        self._serve(conn, address)

    def _serve(self, conn: socket.socket, address: tuple[str, int]) -> None:
        peer = f"{address[0]}:{address[1]}"
        buffer = FrameBuffer()
        conn.settimeout(IDLE_TIMEOUT)
        try:
            checkpoints.defer()
            while not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    break
                for kind, payload in buffer.feed(chunk):
                    conn.sendall(frame(self.handler(payload, peer)))
                    if kind == "stray":
                        log.warning("HL7 from %s: bytes outside an MLLP frame", peer)
        except (OSError, TimeoutError):
            pass
        finally:
            leftover = buffer.leftover()
            if leftover.strip():  # the peer closed inside a frame: keep what came
                log.warning("HL7 from %s: connection closed inside a frame", peer)
                _keep_truncated(leftover, peer)
            conn.close()
            connection.close()


def _default_handler(payload: bytes, peer: str) -> bytes:
    from hl7gw.inbound.service import receive_frame

    return receive_frame(payload, peer=peer)


def _keep_truncated(payload: bytes, peer: str) -> None:
    from hl7gw.models import Message

    Message.objects.create(raw=payload, peer=peer[:64], text=payload.decode("latin_1"),
                           status=Message.Status.REJECTED,
                           error="connection closed before the end of the MLLP frame")
