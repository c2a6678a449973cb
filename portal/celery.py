"""Celery app. In scale mode a worker started with ``--listeners dimse,hl7`` also runs the DIMSE
SCP and the HL7 MLLP listener as a bootstep, next to ordinary task execution. Periodic work
(the delivery sweep) is Celery beat's: settings.CELERY_BEAT_SCHEDULE."""

from __future__ import annotations

import os

from celery import Celery, bootsteps
from celery.signals import worker_ready
from click import Option

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.user_options["worker"].add(
    Option(
        ("--listeners",),
        default="",
        help="Comma-separated listeners to run inside this worker: dimse, hl7",
    )
)


class ListenersStep(bootsteps.StartStopStep):
    """Runs the portal's network listeners in the worker's main process.

    Started after the pool, so prefork children are forked before the listening sockets exist
    and do not inherit them."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent, listeners: str = "", **options) -> None:
        super().__init__(parent, **options)
        self.names = [n.strip() for n in (listeners or "").split(",") if n.strip()]
        self.running: list = []

    def start(self, parent) -> None:
        from core import health
        from core.process import settle_heap
        from portal.listeners import build_listener

        for name in self.names:
            listener = build_listener(name)
            listener.start()
            health.announce(listener)
            self.running.append(listener)
        if self.running:
            settle_heap()  # as serve and the listener commands do

    def stop(self, parent) -> None:
        from django.conf import settings

        from core import health

        while self.running:
            listener = self.running.pop()
            health.withdraw(listener)
            if listener.name == "dimse":  # running associations finish (HL7 senders resend)
                listener.stop(settings.SHUTDOWN_GRACE_SECONDS)
            else:
                listener.stop()


@worker_ready.connect
def sweep_deliveries_at_start(**kwargs) -> None:
    """Messages queued before a restart go out now, not at beat's next sweep."""
    from django.conf import settings

    if settings.SCALE_MODE and settings.DELIVERY_SWEEP_SECONDS > 0:
        app.send_task("core.sweep_deliveries")


app.steps["worker"].add(ListenersStep)
