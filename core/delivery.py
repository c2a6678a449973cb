"""Ordered delivery to peers that may be down. Four queues use it: the HL7 status messages
of each receiver, the UPS event reports of each DIMSE subscriber, the Storage Commitment
reports of each AE, and the instances forwarded to each destination.

Each peer's queue is rows in the database, sent oldest first by one sender at a time, so that
messages go out once each and in order (a RIS must not see "completed" before "in progress").
While the peer cannot be reached the sender tries again with backoff (``core.retry``), and
what comes after the oldest message waits for it.

- Embedded mode (ThreadCourier): one thread per peer while its queue has something to send;
  a new message wakes it, so it tries at once.
- Scale mode (TaskCourier): a Celery task per peer that retries itself with a countdown. A
  Redis flag keeps it to one scheduled task per peer (otherwise every new message would add a
  task, and each would count its own attempts on the same oldest message), and a Redis lock
  makes sure two worker processes never send the same queue at once, should a task be
  delivered twice.

``courier()`` makes the one the process's mode needs; the apps never ask which it is.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import close_old_connections, connection

from core.tasks import send_task

log = logging.getLogger(__name__)

LOCK_SECONDS = 900  # longer than one pass over a queue can take; freed if its holder dies
FLAG_SECONDS = 900  # longer than the longest retry countdown (core.retry: 300 s)
BUSY_DELAY = 1.0  # another process sends this queue now: look again after this long


@functools.cache
def _redis():
    """One client (and connection pool) per process."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


class Courier:
    """The delivery of one kind of queue, keyed by peer.

    ``send(key)`` makes one pass over the peer's queue and returns the seconds to wait before
    the next pass (0: more to send now), or None when nothing is left to try (until something
    new is queued)."""

    def __init__(self, name: str, send: Callable[[str], float | None]) -> None:
        self.name, self.send = name, send
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def wake(self, key: str, *, now: bool = False) -> None:
        """Something was queued for ``key`` (call it once committed): send it. ``now``: an
        admin asked to try again at once, whatever backoff the sender is waiting out."""
        raise NotImplementedError

    def run(self, key: str) -> float | None:
        """One pass over ``key``'s queue, if no other sender has it now (else BUSY_DELAY)."""
        close_old_connections()
        with self._locks_lock:
            local = self._locks.setdefault(key, threading.Lock())
        with local, self._only_sender(key) as mine:
            return self.send(key) if mine else BUSY_DELAY

    @contextmanager
    def _only_sender(self, key: str) -> Iterator[bool]:
        """Whether this process may send ``key``'s queue now (its threads are kept apart
        already)."""
        yield True


class ThreadCourier(Courier):
    """Embedded mode: a sender thread per peer while its queue has messages."""

    def __init__(self, name: str, send: Callable[[str], float | None]) -> None:
        super().__init__(name, send)
        self._threads: dict[str, threading.Event] = {}  # key -> wake-up of its sender thread
        self._threads_lock = threading.Lock()

    def wake(self, key: str, *, now: bool = False) -> None:
        with self._threads_lock:
            wake = self._threads.get(key)
            if wake is not None:
                wake.set()  # the running sender looks at the queue again at once
                return
            wake = self._threads[key] = threading.Event()
        threading.Thread(target=self._deliver, args=(key, wake), daemon=True,
                         name=f"{self.name}-{key}").start()

    def _deliver(self, key: str, wake: threading.Event) -> None:
        try:
            while True:
                wake.clear()
                delay = self.run(key)
                if delay is None:
                    with self._threads_lock:
                        if not wake.is_set():
                            del self._threads[key]
                            return
                    continue
                wake.wait(delay)
        except BaseException:
            log.exception("%s: the sender of %s stopped; its queue waits for the next message",
                          self.name, key)
            with self._threads_lock:
                self._threads.pop(key, None)
        finally:
            connection.close()


class TaskCourier(Courier):
    """Scale mode: the Celery task registered as ``task`` (see ``celery_task``) sends a peer's
    queue from whichever worker runs it; Redis keeps it to one scheduled task per peer."""

    def __init__(self, name: str, send: Callable[[str], float | None], task: str) -> None:
        super().__init__(name, send)
        self.task = task

    def wake(self, key: str, *, now: bool = False) -> None:
        """In scale mode ``now`` replaces the scheduled task, which may be waiting out a long
        backoff, by one that runs now."""
        r = _redis()
        r.incr(self._counter(key))
        token = secrets.token_hex(8)  # names the scheduled task (see run_task)
        if r.set(self._flag(key), token, nx=not now, ex=FLAG_SECONDS):
            self._schedule(key, token)
        # else the scheduled task sends it on its next pass

    def _schedule(self, key: str, token: str) -> None:
        send_task(self.task, key, token)

    def run_task(self, key: str, token: str = "") -> float | None:
        """The scheduled task's body: the countdown for its retry, or None when done (then
        the next message queued schedules a new task). A task that is no longer the
        scheduled one (another was scheduled to run now) ends without sending."""
        r = _redis()
        flag = self._flag(key)
        token = token or secrets.token_hex(8)
        while True:
            scheduled = r.get(flag)
            if scheduled is None:  # none is (the flag expired, or a pass just ended): be it
                if not r.set(flag, token, nx=True, ex=FLAG_SECONDS):
                    return None
            elif scheduled.decode() != token:
                return None  # replaced by a newer task
            wakes = r.get(self._counter(key))
            delay = self.run(key)
            if delay is not None:
                r.expire(flag, FLAG_SECONDS)  # still scheduled: this task
                return delay
            r.delete(flag)
            # A message queued after this pass looked, but before the flag was gone, found
            # the flag and scheduled nothing: then look once more, as the scheduled task.
            if r.get(self._counter(key)) == wakes or not r.set(flag, token, nx=True,
                                                               ex=FLAG_SECONDS):
                return None

    @contextmanager
    def _only_sender(self, key: str) -> Iterator[bool]:
        import redis

        lock = _redis().lock(f"portal:{self.name}:lock:{key}", timeout=LOCK_SECONDS)
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("%s: the lock of %s expired while sending", self.name, key)

    def _flag(self, key: str) -> str:
        return f"portal:{self.name}:scheduled:{key}"

    def _counter(self, key: str) -> str:
        return f"portal:{self.name}:wakes:{key}"


def courier(name: str, send: Callable[[str], float | None], *, task: str) -> Courier:
    """The courier of this process's mode. ``task``: the name the queue's Celery task is
    registered under (``celery_task``), for scale mode."""
    if settings.SCALE_MODE:
        return TaskCourier(name, send, task)
    return ThreadCourier(name, send)


def celery_task(queue: Courier, name: str, doc: str):
    """The Celery task (registered as ``name``) that runs ``queue``'s courier for one peer in
    scale mode: a pass over its queue and, while the peer cannot be reached, the same task
    again after the backoff (core.retry). Nothing is lost meanwhile: the queue is rows."""
    from celery import shared_task

    def send(self, key: str, token: str = "") -> None:
        assert isinstance(queue, TaskCourier), "scale mode only"
        delay = queue.run_task(key, token)
        if delay is not None:
            raise self.retry(countdown=delay)

    send.__doc__ = doc
    return shared_task(name=name, bind=True, max_retries=None, acks_late=True)(send)
