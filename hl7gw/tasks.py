from __future__ import annotations

from core.delivery import celery_task
from hl7gw.outbound.service import courier

send_receiver_queue_task = celery_task(
    courier, "hl7gw.send_receiver_queue",
    "Scale mode: a receiver's pending status messages, oldest first, from a worker.")
