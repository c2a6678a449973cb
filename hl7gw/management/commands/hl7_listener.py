"""Run the HL7 MLLP listener on its own."""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from core.process import settle_heap
from hl7gw.mllp import MllpListener


class Command(BaseCommand):
    help = "Run the HL7 v2 MLLP listener (orders and patient updates into the worklist)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.HL7_PORT)
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args, port: int, quiet: bool, **options) -> None:
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        listener = MllpListener(port=port)
        listener.start()
        settle_heap()
        if not quiet:
            host, bound = listener.address
            self.stdout.write(f"HL7 MLLP listener on {host}:{bound}")
        try:
            done.wait()
        finally:
            listener.stop()
