from __future__ import annotations

from celery import shared_task

from hl7gw.outbound.service import send


@shared_task(name="hl7gw.send_outbound", bind=True, max_retries=None, acks_late=True)
def send_outbound_task(self, outbound_id: int) -> None:
    delay = send(outbound_id)
    if delay is not None:  # the receiver is down: try again later, nothing is lost
        raise self.retry(countdown=delay)
