"""The database connection at the start of a listener's request (a C-STORE, a C-FIND, an HL7
frame): Django's ``close_old_connections``, without its health check on a connection that
this thread began a request on a moment ago."""

from __future__ import annotations

import threading
import time

from django.db import close_old_connections, connections

# A connection this thread began a request on this recently is taken as it is.
RECENT_SECONDS = 1.0

_last = threading.local()


def before_request() -> None:
    """Call where a listener starts a request, in place of ``close_old_connections``.

    Why: with CONN_HEALTH_CHECKS (settings), ``close_old_connections`` makes each request's
    first query wait for a ``SELECT 1`` first. On SQLite that costs nothing; on PostgreSQL it
    is one more round trip to the server, ~0.4 ms of a C-STORE that otherwise makes one
    (bench/scale.py). A modality storing a series sends requests back to back, so the
    connection it gets was used milliseconds ago: it is kept without the check when this
    thread started a request less than RECENT_SECONDS ago, no database error has happened on
    it since, and it is not past CONN_MAX_AGE. Otherwise (the first request of an association
    or connection, a pause, an error) Django's full check runs. A server that goes away within
    that second fails the request as if it went away during it, and the error makes the next
    request check and reconnect.

    Leans on ``BaseDatabaseWrapper``'s ``errors_occurred`` and ``close_at``, as Django's own
    ``close_if_unusable_or_obsolete`` does (tests/service/test_connections.py)."""
    now = time.monotonic()
    last = getattr(_last, "started", None)
    _last.started = now
    if last is not None and now - last < RECENT_SECONDS and all(
            _in_use(conn, now) for conn in connections.all(initialized_only=True)):
        return
    close_old_connections()


def _in_use(conn, now: float) -> bool:
    return (conn.connection is not None and not conn.errors_occurred
            and (conn.close_at is None or now < conn.close_at))
