from __future__ import annotations

import argparse
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from core import health
from core.process import settle_heap
from pacs.dimse.scp import DimseListener
from pacs.dimse.workers import report_ready, spawn_scp_processes, stop_processes


class Command(BaseCommand):
    help = "Run the DIMSE SCP (C-ECHO, C-STORE) on its own, optionally as several processes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=settings.DIMSE_PORT)
        parser.add_argument("--processes", type=int, default=settings.DIMSE_PROCESSES)
        parser.add_argument("--quiet", action="store_true")
        # Set by the process that starts more SCP processes: accept on its socket.
        parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
        parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args, port: int, processes: int, quiet: bool, listen_fd: int | None,
               ready_fd: int | None, **options) -> None:
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        listener = DimseListener(port=port, listen_fd=listen_fd)
        listener.start()
        health.announce(listener)
        settle_heap()
        report_ready(ready_fd)
        children = spawn_scp_processes(processes - 1, listener.share()) if processes > 1 else []
        if not quiet:
            host, bound = listener.address
            self.stdout.write(
                f"DIMSE SCP {settings.DIMSE_AET} on {host}:{bound} ({processes} process(es))",
            )
        try:
            done.wait()
        finally:
            health.withdraw(listener)
            listener.stop(settings.SHUTDOWN_GRACE_SECONDS)
            stop_processes(children)
