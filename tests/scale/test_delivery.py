"""portal.delivery's scale-mode scheduling against the real Redis of the scale slice: one
scheduled task per peer however many messages wake it, and no wake lost between the last
pass and the end of the task."""

from __future__ import annotations

import uuid

import pytest

from portal.delivery import Courier, _redis

pytestmark = [pytest.mark.scale]

scheduled: list[str] = []


class _Task:
    """Stands in for the Celery task: records what would be scheduled."""

    @staticmethod
    def delay(key: str) -> None:
        scheduled.append(key)


task = _Task()


@pytest.fixture
def key():
    scheduled.clear()
    return uuid.uuid4().hex


def _courier(send) -> Courier:
    return Courier(f"test-{uuid.uuid4().hex[:8]}", send, task=f"{__name__}.task")


def test_many_wakes_schedule_one_task_until_it_is_done(key):
    passes = []
    courier = _courier(lambda k: passes.append(k))  # one pass; nothing left (None)
    for _ in range(5):
        courier.wake(key)
    assert scheduled == [key]
    assert courier.run_task(key) is None
    assert passes == [key]
    courier.wake(key)  # the task ended: the next message schedules a new one
    assert scheduled == [key, key]


def test_a_task_that_must_wait_stays_the_scheduled_one(key):
    courier = _courier(lambda k: 5.0)  # the peer is down: try again in 5 s
    courier.wake(key)
    assert courier.run_task(key) == 5.0
    courier.wake(key)
    assert scheduled == [key]
    assert _redis().ttl(courier._flag(key)) > 300  # outlives the retry countdown


def test_a_message_queued_during_the_last_pass_is_sent_by_the_same_task(key):
    """It finds the flag still set and schedules nothing; the task must look again."""
    passes = []

    def send(k: str) -> None:
        passes.append(k)
        if len(passes) == 1:
            courier.wake(k)

    courier = _courier(send)
    courier.wake(key)
    assert courier.run_task(key) is None
    assert scheduled == [key] and passes == [key, key]
    assert not _redis().exists(courier._flag(key))


def test_a_queue_another_process_is_sending_is_looked_at_again_later(key):
    courier = _courier(lambda k: pytest.fail("sent while another process holds the lock"))
    lock = _redis().lock(f"portal:{courier.name}:lock:{key}", timeout=10)
    assert lock.acquire(blocking=False)
    try:
        courier.wake(key)
        assert courier.run_task(key) == 1.0
    finally:
        lock.release()
