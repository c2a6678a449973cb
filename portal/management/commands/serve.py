"""Embedded mode: web UI + DIMSE SCP + HL7 listener in one command (SQLite, local files)."""

from __future__ import annotations

import signal
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from core import health
from core.process import settle_heap
from core.signals import deliveries_due
from pacs.dimse.workers import spawn_scp_processes, stop_processes
from portal.bootstrap import ensure_admin
from portal.listeners import build_listener
from portal.webserver import create_web_server
from portal.websocket import WebSocketServer
from portal.wsgi import application


class Command(BaseCommand):
    help = "Start the whole portal: web UI, DICOM SCP and HL7 MLLP listener."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-migrate", action="store_true", help="skip `migrate`")
        parser.add_argument("--threads", type=int, default=8, help="web server threads")
        parser.add_argument("--no-dimse", action="store_true",
                            help="no DICOM SCP here (scale mode: it runs in Celery workers)")
        parser.add_argument("--no-hl7", action="store_true",
                            help="no HL7 listener here (scale mode: it runs in Celery workers)")

    def handle(self, *args, no_migrate: bool, threads: int, no_dimse: bool, no_hl7: bool,
               **options) -> None:
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        login = ensure_admin()
        proxy = {} if settings.HTTPS_MODE != "proxy" else {
            "trusted_proxy": settings.TRUSTED_PROXY,
            "trusted_proxy_headers": {"x-forwarded-proto", "x-forwarded-host",
                                      "x-forwarded-port", "x-forwarded-for"}}
        web = create_web_server(
            application, host=settings.HTTP_HOST, port=settings.HTTP_PORT, threads=threads,
            max_request_body_size=settings.UPLOAD_MAX_BYTES,  # waitress's own default is 1 GiB
            **settings.HTTP_LIMITS, **proxy,
        )
        dimse, port, children = None, None, []
        if not no_dimse:
            dimse = build_listener("dimse")
            dimse.start()
            port = dimse.address[1]
            extra = settings.DIMSE_PROCESSES - 1
            children = spawn_scp_processes(extra, dimse.share()) if extra > 0 else []
        hl7 = None if no_hl7 else build_listener("hl7")
        if hl7:
            hl7.start()
        for listener in (dimse, hl7):
            if listener:
                health.announce(listener)
        if not settings.SCALE_MODE:
            deliveries_due.send(sender=self.__class__)  # scale mode: the workers do
        ws, ws_port = None, None
        if settings.WS_PORT >= 0:
            ws = WebSocketServer(settings.HTTP_HOST, settings.WS_PORT)
            ws_port = ws.start()
            health.listening("websocket", (settings.HTTP_HOST, ws_port))

        def _stop(*_: object) -> None:
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, _stop)  # before the banner: whoever waits for it may stop us
        try:
            self._banner(web, port, hl7.address[1] if hl7 else None, login, ws_port,
                         tls_ports=(dimse.tls_address if dimse else None,
                                    hl7.tls_address if hl7 else None))
            settle_heap()
            web.run()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            web.close()
            for listener in (dimse, hl7):
                if listener:
                    health.withdraw(listener)
            if ws:
                health.stopped("websocket", (settings.HTTP_HOST, ws_port))
            if dimse:
                dimse.stop(settings.SHUTDOWN_GRACE_SECONDS)
            if hl7:
                hl7.stop()
            if ws:
                ws.stop()
            stop_processes(children)
            self.stdout.write("portal stopped")

    def _banner(self, web, dimse_port: int | None, hl7_port: int | None, login: str,
                ws_port: int | None, tls_ports: tuple = (None, None)) -> None:
        dimse_tls, hl7_tls = tls_ports
        http_port = web.effective_port
        host = settings.HTTP_HOST if settings.HTTP_HOST not in ("0.0.0.0", "") else "localhost"
        lines = [
            "Radiology portal is running (embedded mode)" if not settings.SCALE_MODE
            else "Radiology portal is running (scale mode)",
            f"  Web UI:     http://{host}:{http_port}/",
            f"  DICOM SCP:  AE title {settings.DIMSE_AET}, port {dimse_port} "
            f"({settings.DIMSE_PROCESSES} process(es))" if dimse_port
            else "  DICOM SCP:  not started here (--no-dimse)",
            *([f"  DICOM TLS:  port {dimse_tls[1]}"] if dimse_tls else []),
            f"  HL7 MLLP:   port {hl7_port}" if hl7_port
            else "  HL7 MLLP:   not started here (--no-hl7)",
            *([f"  HL7 TLS:    port {hl7_tls[1]}"] if hl7_tls else []),
            f"  DICOMweb:   http://{host}:{http_port}/dicomweb"
            + (f" (UPS events: ws://{host}:{ws_port}/dicomweb/subscribers/<AE title>)"
               if ws_port else ""),
            f"  Data dir:   {settings.DATA_DIR}",
            f"  Login:      {login}",
            "  Stop with Ctrl+C.",
        ]
        self.stdout.write("\n".join(lines))
        sys.stdout.flush()
