from __future__ import annotations

from celery import shared_task

from worklist.ups_events import send_dimse_events


@shared_task(name="worklist.send_ups_events", acks_late=True)
def send_ups_events_task(ae_title: str) -> int:
    """Scale mode: N-EVENT-REPORTs to a DIMSE subscriber, from a worker."""
    return send_dimse_events(ae_title)
