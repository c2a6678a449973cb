"""Which listeners are up, across processes and hosts: each process that runs listeners
(`serve`, an SCP process, a Celery worker) says so in the database when one starts, again
every BEAT_SECONDS, and takes its row away when it stops. The readiness endpoint, the
metrics and the dashboard read these rows; one not refreshed for STALE_SECONDS is down
(its process died without saying so).

The database is the one store every node shares in both modes (embedded SQLite, scale-mode
PostgreSQL), so no other service is needed for this.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone

from core.models import ListenerStatus

log = logging.getLogger(__name__)

BEAT_SECONDS = float(os.environ.get("PORTAL_HEARTBEAT_SECONDS", "") or 10)
STALE_SECONDS = BEAT_SECONDS * 3.5  # three beats missed
FORGET_AFTER = dt.timedelta(days=1)  # rows of listeners long gone are deleted
NODE = os.environ.get("PORTAL_NODE_NAME", "") or socket.gethostname()

Counters = Callable[[], dict[str, int]]


class _Beats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (name, port) -> (host, started, counters)
        self.listening: dict[tuple[str, int], tuple[str, dt.datetime, Counters | None]] = {}
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def add(self, name: str, host: str, port: int, counters: Counters | None) -> None:
        with self.lock:
            self.listening[(name, port)] = (host, timezone.now(), counters)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="heartbeat",
                                               daemon=True)
                self.thread.start()
        self.beat()  # at once: readiness right after start-up is true

    def remove(self, name: str, port: int) -> None:
        with self.lock:
            self.listening.pop((name, port), None)
        try:
            ListenerStatus.objects.filter(node=NODE, pid=os.getpid(), name=name,
                                          port=port).delete()
        except Exception:  # the database may be gone at shutdown; the row goes stale
            log.debug("listener row of %s:%s not removed", name, port, exc_info=True)

    def beat(self) -> None:
        now = timezone.now()
        with self.lock:
            entries = list(self.listening.items())
        # rows of listeners long gone (their process died) are forgotten here, by whoever
        # beats, rather than by every page and scrape that reads them
        ListenerStatus.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()
        for (name, port), (host, started, counters) in entries:
            try:
                values = counters() if counters else {}
            except Exception:
                values = {}
            ListenerStatus.objects.update_or_create(
                node=NODE, pid=os.getpid(), name=name, port=port,
                defaults={"host": host, "started_at": started, "seen_at": now,
                          "counters": values})

    def _run(self) -> None:
        while True:
            self.wake.wait(BEAT_SECONDS)
            self.wake.clear()
            with self.lock:
                if not self.listening:
                    self.thread = None
                    return
            try:
                close_old_connections()
                self.beat()
            except Exception:
                log.warning("listener heartbeat not written", exc_info=True)
            finally:
                connection.close()


_beats = _Beats()


def listening(name: str, address: tuple[str, int], counters: Counters | None = None) -> None:
    """``name`` is up at ``address`` in this process; ``counters`` gives its figures."""
    _beats.add(name, str(address[0]), int(address[1]), counters)


def stopped(name: str, address: tuple[str, int]) -> None:
    _beats.remove(name, int(address[1]))


def listeners() -> list[dict[str, Any]]:
    """Every listener known, up or down (not refreshed for STALE_SECONDS), by node."""
    now = timezone.now()
    out = []
    for row in ListenerStatus.objects.all():
        age = (now - row.seen_at).total_seconds()
        out.append({"name": row.name, "node": row.node, "pid": row.pid, "host": row.host,
                    "port": row.port, "up": age <= STALE_SECONDS, "seen_seconds_ago": round(age),
                    "since": row.started_at.isoformat(), "counters": row.counters})
    return out


def announce(listener: Any) -> None:
    """A started listener (its ``name``, ``address``, and ``tls_address`` and ``counters``
    if it has them) is up: its plain port as its name, its TLS port as name-tls."""
    name = listener.name
    counters = getattr(listener, "counters", None)
    listening(name, listener.address, counters)
    tls_address = getattr(listener, "tls_address", None)
    if tls_address:
        listening(f"{name}-tls", tls_address, counters)


def withdraw(listener: Any) -> None:
    """A listener ``announce`` named is stopping (call before its stop())."""
    name = listener.name
    try:
        addresses = [(name, listener.address)]
        if getattr(listener, "tls_address", None):
            addresses.append((f"{name}-tls", listener.tls_address))
    except (AssertionError, AttributeError):  # not started
        return
    for label, address in addresses:
        stopped(label, address)
