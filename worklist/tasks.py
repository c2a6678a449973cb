from __future__ import annotations

from core.delivery import celery_task
from worklist.ups_events import courier

send_ups_events_task = celery_task(
    courier, "worklist.send_ups_events",
    "Scale mode: N-EVENT-REPORTs to a DIMSE subscriber, oldest first, from a worker.")
