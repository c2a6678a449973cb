from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from pacs.dimse.scp import DimseListener
from pacs.dimse.workers import spawn_scp_processes, stop_processes
from portal.listeners import settle_heap


class Command(BaseCommand):
    help = "Run the DIMSE SCP (C-ECHO, C-STORE) on its own, optionally as several processes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.DIMSE_PORT)
        parser.add_argument("--processes", type=int, default=settings.DIMSE_PROCESSES)
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args, port: int, processes: int, quiet: bool, **options) -> None:
        if processes > 1 and port == 0:
            raise SystemExit("--processes > 1 needs a fixed --port")
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        listener = DimseListener(port=port)
        listener.start()
        settle_heap()
        children = spawn_scp_processes(processes - 1, port) if processes > 1 else []
        if not quiet:
            host, bound = listener.address
            self.stdout.write(
                f"DIMSE SCP {settings.DIMSE_AET} on {host}:{bound} ({processes} process(es))",
            )
        try:
            done.wait()
        finally:
            listener.stop()
            stop_processes(children)
