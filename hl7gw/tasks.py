from __future__ import annotations

from celery import shared_task

from hl7gw.outbound.service import courier


@shared_task(name="hl7gw.send_receiver_queue", bind=True, max_retries=None, acks_late=True)
def send_receiver_queue_task(self, receiver_id: str, token: str = "") -> None:
    """Scale mode: a receiver's pending status messages, oldest first, from a worker; while
    the receiver is down the task runs again with backoff (portal.retry, portal.delivery)."""
    delay = courier.run_task(receiver_id, token)
    if delay is not None:  # the receiver is down: try again later, nothing is lost
        raise self.retry(countdown=delay)
