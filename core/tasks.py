"""Celery tasks of core, and how every app queues a task: by the name it is registered under,
so that a service never imports the tasks module that imports the service."""

from __future__ import annotations

import logging

from celery import current_app, shared_task

log = logging.getLogger(__name__)


def send_task(name: str, *args: object) -> None:
    """Queue the task registered as ``name`` for a worker (scale mode)."""
    current_app.send_task(name, args=args)


@shared_task(name="core.sweep_deliveries")
def sweep_deliveries() -> None:
    """Scale mode, run by Celery beat every PORTAL_DELIVERY_SWEEP_SECONDS and once when a
    worker starts: start a sender for each peer whose deliveries are pending with none
    scheduled (a task lost with the broker, or messages of before a restart). A peer that has
    one is left alone, so a sweep that runs twice does no harm."""
    from core.signals import deliveries_due

    for receiver, result in deliveries_due.send_robust(sender=sweep_deliveries):
        if isinstance(result, Exception):
            log.error("delivery sweep: %s failed: %r", receiver.__qualname__, result)
