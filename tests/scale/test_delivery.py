"""core.delivery's scale-mode scheduling against the real Redis of the scale slice: one
scheduled task per peer however many messages wake it, and no wake lost between the last
pass and the end of the task."""

from __future__ import annotations

import uuid

import pytest

from core.delivery import TaskCourier, _redis

pytestmark = [pytest.mark.scale]

scheduled: list[tuple[str, str]] = []  # (key, token) of each task scheduled


class _RecordingCourier(TaskCourier):
    """Records what it would schedule instead of sending the Celery task."""

    def _schedule(self, key: str, token: str) -> None:
        scheduled.append((key, token))


@pytest.fixture
def key():
    scheduled.clear()
    return uuid.uuid4().hex


def _courier(send) -> TaskCourier:
    return _RecordingCourier(f"test-{uuid.uuid4().hex[:8]}", send, task="test.unused")


def test_many_wakes_schedule_one_task_until_it_is_done(key):
    passes = []
    courier = _courier(lambda k: passes.append(k))  # one pass; nothing left (None)
    for _ in range(5):
        courier.wake(key)
    ((_, token),) = scheduled
    assert courier.run_task(key, token) is None
    assert passes == [key]
    courier.wake(key)  # the task ended: the next message schedules a new one
    assert [k for k, _ in scheduled] == [key, key]


def test_a_task_that_must_wait_stays_the_scheduled_one(key):
    courier = _courier(lambda k: 5.0)  # the peer is down: try again in 5 s
    courier.wake(key)
    ((_, token),) = scheduled
    assert courier.run_task(key, token) == 5.0
    courier.wake(key)
    assert len(scheduled) == 1
    assert _redis().ttl(courier._flag(key)) > 300  # outlives the retry countdown


def test_retry_now_replaces_the_scheduled_task(key):
    passes = []
    courier = _courier(lambda k: passes.append(k) or 300.0)  # down: next try in 5 minutes
    courier.wake(key)
    assert courier.run_task(key, scheduled[0][1]) == 300.0
    courier.wake(key, now=True)  # an admin's Retry now: a task that runs at once
    (_, waiting), (_, fresh) = scheduled
    assert courier.run_task(key, fresh) == 300.0
    assert courier.run_task(key, waiting) is None  # its countdown ended: replaced, no pass
    assert passes == [key, key]


def test_a_message_queued_during_the_last_pass_is_sent_by_the_same_task(key):
    """It finds the flag still set and schedules nothing; the task must look again."""
    passes = []

    def send(k: str) -> None:
        passes.append(k)
        if len(passes) == 1:
            courier.wake(k)

    courier = _courier(send)
    courier.wake(key)
    ((_, token),) = scheduled
    assert courier.run_task(key, token) is None
    assert len(scheduled) == 1 and passes == [key, key]
    assert not _redis().exists(courier._flag(key))


def test_a_queue_another_process_is_sending_is_looked_at_again_later(key):
    courier = _courier(lambda k: pytest.fail("sent while another process holds the lock"))
    lock = _redis().lock(f"portal:{courier.name}:lock:{key}", timeout=10)
    assert lock.acquire(blocking=False)
    try:
        courier.wake(key)
        assert courier.run_task(key, scheduled[0][1]) == 1.0
    finally:
        lock.release()
