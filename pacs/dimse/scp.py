"""The DIMSE SCP listener: one object with start()/stop()/address, used by `serve`, by the
`dimse_scp` command and by the Celery worker bootstep."""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

from django.conf import settings
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from pacs.dimse import handlers, negotiation
from pacs.dimse.policy import AePolicy

# pynetdicom's "standard" log handlers run on every PDU and log identifiers: off.
_config.LOG_HANDLER_LEVEL = "none"
negotiation.install()


class TunedAssociationServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on accepted sockets (Nagle costs ~40 ms per DIMSE exchange) and
    SO_REUSEPORT on the listening socket so several SCP processes can share one port."""

    def server_bind(self) -> None:
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


class PortalAE(AE):
    """An AE whose calling-AE-title check reads the AE table at each association."""

    def __init__(self, ae_title: str, policy: AePolicy) -> None:
        super().__init__(ae_title=ae_title)
        self.policy = policy

    @property
    def require_calling_aet(self) -> list[str]:  # type: ignore[override]
        return self.policy.allowed_calling_titles()

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        pass  # the AE table is the single source of truth


class DimseListener:
    name = "dimse"

    def __init__(self, host: str | None = None, port: int | None = None,
                 ae_title: str | None = None) -> None:
        self.host = settings.DIMSE_HOST if host is None else host
        self.port = settings.DIMSE_PORT if port is None else port
        self.ae_title = ae_title or settings.DIMSE_AET
        self.policy = AePolicy()
        self._server: TunedAssociationServer | None = None

    def _make_ae(self) -> PortalAE:
        ae = PortalAE(self.ae_title, self.policy)
        ae.maximum_pdu_size = settings.DIMSE_MAX_PDU
        ae.maximum_associations = 64
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for model in (PatientRootQueryRetrieveInformationModelFind,
                      StudyRootQueryRetrieveInformationModelFind):
            ae.add_supported_context(model)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> None:
        ae = self._make_ae()
        handlers_ = [
            (evt.EVT_C_ECHO, handlers.handle_echo),
            (evt.EVT_C_STORE, handlers.make_store_handler(self.policy)),
            (evt.EVT_C_FIND, handlers.make_find_handler(self.policy)),
            (evt.EVT_REJECTED, handlers.make_rejected_handler(self.policy)),
            (evt.EVT_CONN_CLOSE, handlers.handle_conn_close),
        ]
        self._server = ae.make_server(
            (self.host, self.port),
            evt_handlers=handlers_,
            server_class=TunedAssociationServer,
        )
        ae._servers.append(self._server)  # as AE.start_server() does; shutdown() removes it
        thread = threading.Thread(
            target=self._server.serve_forever, name="dimse-scp", daemon=True
        )
        thread.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "listener not started"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # also closes the socket
            self._server = None

    def serve_forever(self) -> None:
        """Blocking variant for the dedicated command."""
        self.start()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stop()
