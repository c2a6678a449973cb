from __future__ import annotations

from celery import shared_task

from worklist.ups_events import courier


@shared_task(name="worklist.send_ups_events", bind=True, max_retries=None, acks_late=True)
def send_ups_events_task(self, ae_title: str, token: str = "") -> None:
    """Scale mode: N-EVENT-REPORTs to a DIMSE subscriber, from a worker; while the subscriber
    cannot be reached, the task runs again with backoff (portal.retry, portal.delivery)."""
    delay = courier.run_task(ae_title, token)
    if delay is not None:
        raise self.retry(countdown=delay)
