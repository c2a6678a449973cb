"""SQLite WAL checkpoints mostly off a listener's answer path (embedded mode only).

By default the connection whose commit fills the WAL past 1,000 pages copies them into the
database file inside that commit: on the CI machine every ~25th HL7 order paid ~10-20 ms for
it. While a listener runs, one thread per process checkpoints PASSIVE every ``INTERVAL``
seconds on its own connection: SQLite releases the GIL while it copies, so this runs on
another core, and PASSIVE never blocks a writer. A listener's connection threads call
``defer()``: their own connections checkpoint only past ``WRITER_PAGES``. That threshold is
the safety net: under continuous writes a PASSIVE checkpoint never catches up with the end
of the WAL, and the WAL only starts over after a checkpoint that did; the writer's own
checkpoint finds most pages already copied, finishes, and the WAL restarts (without it the
WAL grew past 1 GB in 8,000 orders). bench/hl7_orders.py, 8,000 orders in a row: ~240 msg/s
without this, ~290 with it. Other connections (web pages, commands) keep SQLite's default.
Other databases: nothing to do. The DIMSE SCP does not use it: in interleaved bench/ingest.py
runs it made no clear difference with one SCP process, and with four (four checkpointers, each
syncing the database file) it cost 10-25%.
"""

from __future__ import annotations

import logging
import threading

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.signals import connection_created

log = logging.getLogger(__name__)

INTERVAL = 0.05
WRITER_PAGES = 4000

_lock = threading.Lock()
_users = 0
_running: tuple[threading.Thread, threading.Event] | None = None
_deferring = threading.local()


def _sqlite() -> bool:
    return connections[DEFAULT_DB_ALIAS].vendor == "sqlite"


def defer() -> None:
    """This thread's connection leaves checkpoints to the checkpointer up to ``WRITER_PAGES``
    (call ``start`` first), and so do the connections it opens later."""
    if _sqlite():
        _deferring.on = True
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_PAGES}")


def _on_connection_created(sender, connection, **kwargs) -> None:
    if getattr(_deferring, "on", False) and connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_PAGES}")


connection_created.connect(_on_connection_created, dispatch_uid="core.checkpoints")


def start() -> None:
    """One more listener needs the checkpointer (started with the first)."""
    global _users, _running
    if not _sqlite():
        return
    with _lock:
        _users += 1
        if _running is None or not _running[0].is_alive():
            stopping = threading.Event()
            thread = threading.Thread(target=_run, args=(stopping,), name="wal-checkpoint",
                                      daemon=True)
            thread.start()
            _running = (thread, stopping)


def stop() -> None:
    """One listener less; the last one stops the checkpointer after a final checkpoint."""
    global _users, _running
    if not _sqlite():
        return
    with _lock:
        _users = max(0, _users - 1)
        if _users or _running is None:
            return
        (thread, stopping), _running = _running, None
    stopping.set()
    thread.join(timeout=10)


def _run(stop_event: threading.Event) -> None:
    db = connections[DEFAULT_DB_ALIAS]  # this thread's own connection
    try:
        while True:
            stopping = stop_event.wait(INTERVAL)
            try:
                with db.cursor() as cursor:
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as exc:  # a busy or closing database: try again next time
                log.debug("WAL checkpoint failed: %s", exc)
            if stopping:
                return
    finally:
        db.close()
