"""Celery app. In scale mode a worker started with ``--listeners dimse,hl7`` also runs the DIMSE
SCP and the HL7 MLLP listener as a bootstep, next to ordinary task execution."""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery, bootsteps
from click import Option

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
log = logging.getLogger(__name__)

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
        from core.process import settle_heap
        from portal.listeners import build_listener

        for name in self.names:
            listener = build_listener(name)
            listener.start()
            self.running.append(listener)
        if self.running:
            settle_heap()  # as serve and the listener commands do

    def stop(self, parent) -> None:
        while self.running:
            self.running.pop().stop()


class DeliverySweepStep(bootsteps.StartStopStep):
    """Scale mode: when the worker starts and every PORTAL_DELIVERY_SWEEP_SECONDS, start a
    sender for each peer whose deliveries are pending with none scheduled (a task lost with
    the broker, or messages of before a restart). A peer that has one is left alone, so
    several workers sweeping do no harm."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent, **options) -> None:
        super().__init__(parent, **options)
        self._stopping = threading.Event()

    def start(self, parent) -> None:
        from django.conf import settings

        if settings.SCALE_MODE and settings.DELIVERY_SWEEP_SECONDS > 0:
            threading.Thread(target=self._sweep, args=(settings.DELIVERY_SWEEP_SECONDS,),
                             daemon=True, name="delivery-sweep").start()

    def _sweep(self, every: float) -> None:
        from django.db import close_old_connections

        from core.signals import deliveries_due

        while True:
            close_old_connections()
            for receiver, result in deliveries_due.send_robust(sender=type(self)):
                if isinstance(result, Exception):
                    log.error("delivery sweep: %s failed: %r", receiver.__qualname__, result)
            if self._stopping.wait(every):
                return

    def stop(self, parent) -> None:
        self._stopping.set()


app.steps["worker"].add(ListenersStep)
app.steps["worker"].add(DeliverySweepStep)
