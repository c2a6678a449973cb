"""core.connections.before_request: Django's close_old_connections at the start of a
listener's request, skipped only for a connection this thread used a moment ago."""

from __future__ import annotations

import pytest
from django.db import DEFAULT_DB_ALIAS
from django.db import connections as databases

from core import connections

pytestmark = pytest.mark.django_db


@pytest.fixture
def closings(monkeypatch):
    """How many times before_request handed over to close_old_connections (recorded, not
    run: inside the test's transaction Django's would close the connection)."""
    calls: list[int] = []
    monkeypatch.setattr(connections, "close_old_connections", lambda: calls.append(1))
    monkeypatch.setattr(connections._last, "started", None, raising=False)
    return calls


@pytest.fixture
def connection():
    """The connection itself (not Django's proxy: monkeypatch must restore its attributes)."""
    return databases[DEFAULT_DB_ALIAS]


def _used() -> None:
    with databases[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def test_back_to_back_requests_keep_the_connection_without_a_check(closings, monkeypatch,
                                                                  connection):
    monkeypatch.setattr(connection, "close_at", None)
    connections.before_request()  # the first request of this thread: Django's full check
    _used()
    connections.before_request()
    connections.before_request()
    assert closings == [1]


def test_a_pause_an_error_or_the_age_limit_bring_the_check_back(closings, monkeypatch,
                                                               connection):
    now = [1000.0]
    monkeypatch.setattr(connections.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(connection, "close_at", None)
    connections.before_request()
    _used()
    now[0] += connections.RECENT_SECONDS + 0.1  # a pause
    connections.before_request()
    assert len(closings) == 2
    # a database error in the request before
    monkeypatch.setattr(connection, "errors_occurred", True)
    now[0] += 0.01
    connections.before_request()
    assert len(closings) == 3
    # what Django's check does once the connection works
    monkeypatch.setattr(connection, "errors_occurred", False)
    _used()
    monkeypatch.setattr(connection, "close_at", now[0])  # CONN_MAX_AGE reached
    now[0] += 0.01
    connections.before_request()
    assert len(closings) == 4


def test_each_thread_checks_its_own_first_request(closings, monkeypatch, connection):
    import threading

    monkeypatch.setattr(connection, "close_at", None)
    connections.before_request()
    _used()
    thread = threading.Thread(target=connections.before_request)
    thread.start()
    thread.join()
    assert closings == [1, 1]
