"""Group commit for SQLite: the concurrent writers of a process hand their jobs to one leader
thread, which commits them together (see ``write_together``)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, transaction

T = TypeVar("T")

MAX_GROUP = 16


class _Ticket:
    __slots__ = ("job", "done", "result", "error")

    def __init__(self, job: Callable[[], Any]) -> None:
        self.job, self.done, self.result, self.error = job, False, None, None


_group = threading.Condition()  # guards _waiting and _leading
_waiting: deque[_Ticket] = deque()
_leading = False


def write_together(job: Callable[[], T]) -> T:
    """``job()`` in a write transaction; its result, or its exception raised here.

    On SQLite (one writer at a time) the threads of a process do not queue in SQLite's busy
    handler, which sleeps up to 100 ms between tries (bench/hl7_orders.py: p99 ~400 ms over 4
    connections). They hand their job to one leader thread, which runs the jobs waiting at
    that moment in one transaction, each in its own savepoint (a job that fails is undone
    alone), and commits once for all (group commit: one WAL write instead of one per job).
    A thread alone is its own leader: one job, one transaction, no savepoint. If the commit
    fails, every job of the group gets that error. Jobs see the leader's connection, so they
    must not depend on thread-local state. Other databases take concurrent writers: the job
    runs in its own transaction on the calling thread."""
    global _leading
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "sqlite" or db.in_atomic_block:
        with transaction.atomic():
            return job()
    ticket = _Ticket(job)
    with _group:
        _waiting.append(ticket)
        while _leading and not ticket.done:
            _group.wait()
        if ticket.done:  # a leader ran it
            lead = False
        else:
            lead = _leading = True
    if lead:
        try:
            while not ticket.done:
                with _group:
                    batch = [_waiting.popleft()
                             for _ in range(min(MAX_GROUP, len(_waiting)))]
                _run_group(batch)
                with _group:
                    _group.notify_all()  # their results are ready
        finally:
            with _group:
                _leading = False
                _group.notify_all()  # one of those still waiting leads next
    if ticket.error is not None:
        raise ticket.error
    return ticket.result


def _run_group(batch: list[_Ticket]) -> None:
    alone = len(batch) == 1
    try:
        with transaction.atomic():
            for ticket in batch:
                try:
                    with transaction.atomic(savepoint=not alone):
                        ticket.result = ticket.job()
                except Exception as exc:
                    ticket.error = exc
                    if alone:
                        raise
    except Exception as exc:  # the commit (or a lone job) failed: nothing of them is kept
        for ticket in batch:
            ticket.error, ticket.result = ticket.error or exc, None
    finally:
        for ticket in batch:
            ticket.done = True
