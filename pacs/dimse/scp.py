"""The DIMSE SCP listener: one object with start()/stop()/address, used by `serve`, by the
`dimse_scp` command and by the Celery worker bootstep. The wire work is dicomnet.engine's."""

from __future__ import annotations

import logging
import signal
import threading
import time

from django.conf import settings
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from core import tls
from dicomnet import status, storage_classes, wire
from dicomnet.engine import DimseServer, ServerConfig
from dicomnet.registry import EXTENSIONS
from pacs.dimse import handlers, retrieve
from pacs.dimse.commitment import make_commitment_service
from pacs.dimse.policy import AePolicy
from pacs.services.commitment import STORAGE_COMMITMENT
from pacs.storage import get_storage

log = logging.getLogger(__name__)


def supported_contexts() -> list[PresentationContext]:
    """What we accept. Storage contexts allow both roles: SCP for C-STORE, SCU for C-GET.
    Every storage SOP class is accepted, retired ones too, and the private ones that
    PORTAL_DIMSE_PRIVATE_STORAGE_CLASSES names."""
    contexts = [build_context(Verification, ALL_TRANSFER_SYNTAXES),
                build_context(STORAGE_COMMITMENT, ALL_TRANSFER_SYNTAXES)]
    for model in (PatientRootQueryRetrieveInformationModelFind,
                  StudyRootQueryRetrieveInformationModelFind,
                  PatientRootQueryRetrieveInformationModelMove,
                  StudyRootQueryRetrieveInformationModelMove,
                  PatientRootQueryRetrieveInformationModelGet,
                  StudyRootQueryRetrieveInformationModelGet):
        contexts.append(build_context(model, ALL_TRANSFER_SYNTAXES))
    for extension in EXTENSIONS:
        contexts += [build_context(uid, ALL_TRANSFER_SYNTAXES)
                     for uid in extension.abstract_syntaxes]
    for storage in storage_classes.accepted(settings.DIMSE_PRIVATE_STORAGE_CLASSES):
        context = build_context(storage, ALL_TRANSFER_SYNTAXES)
        context.scu_role = context.scp_role = True
        contexts.append(context)
    return contexts


def _by_sop_class(services: dict[str, handlers.Service],
                  others: handlers.Service | None = None) -> handlers.Service:
    """One command field, several SOP classes (C-FIND: Query/Retrieve and worklist; N-ACTION:
    storage commitment here, UPS in the worklist's extension: ``others``)."""

    def dispatch(assoc, message) -> None:
        service = services.get(assoc.context(message).abstract_syntax, others)
        if service is None:
            assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED,
                          comment="not supported on this SOP class")
            return
        service(assoc, message)

    return dispatch


class DimseListener:
    name = "dimse"

    def __init__(self, host: str | None = None, port: int | None = None,
                 ae_title: str | None = None, listen_fd: int | None = None,
                 tls_port: int | None = None) -> None:
        """`listen_fd`: accept on the listening socket of the process that started this one.
        `tls_port`: also listen for DICOM TLS there (default PORTAL_DIMSE_TLS_PORT; -1: not);
        SCP processes started by another one (`listen_fd`) leave TLS to the first."""
        self.host = settings.DIMSE_HOST if host is None else host
        self.port = settings.DIMSE_PORT if port is None else port
        self.ae_title = ae_title or settings.DIMSE_AET
        self.listen_fd = listen_fd
        if tls_port is None:
            tls_port = settings.DIMSE_TLS_PORT if listen_fd is None else -1
        self.tls_port = tls_port
        self.policy = AePolicy()
        self._server: DimseServer | None = None
        self._tls_server: DimseServer | None = None

    def _config(self) -> ServerConfig:
        extended = {field: make(self.policy) for extension in EXTENSIONS
                    for field, make in extension.services.items()}
        return ServerConfig(
            ae_title=self.ae_title,
            on_finished=handlers.association_finished,
            supported=supported_contexts(),
            services={
                wire.C_ECHO_RQ: handlers.handle_echo,
                wire.C_STORE_RQ: handlers.make_store_service(self.policy),
                wire.C_FIND_RQ: _by_sop_class({
                    **dict.fromkeys(handlers.FIND_MODELS, handlers.make_find_service(self.policy)),
                    **{uid: make(self.policy) for extension in EXTENSIONS
                       for uid, make in extension.find.items()},
                }),
                wire.C_MOVE_RQ: retrieve.make_move_service(self.policy, self.ae_title),
                wire.C_GET_RQ: retrieve.make_get_service(self.policy),
                **extended,
                wire.N_ACTION_RQ: _by_sop_class(
                    {STORAGE_COMMITMENT: make_commitment_service(self.policy)},
                    others=extended.get(wire.N_ACTION_RQ)),
            },
            extended={**{model: handlers.FIND_EXTENDED_SUPPORT for model in handlers.FIND_MODELS},
                      **{uid: options for extension in EXTENSIONS
                         for uid, options in extension.extended.items()}},
            admit=handlers.make_admission(self.policy, self.ae_title),
            on_refused=handlers.record_refusal,
            max_pdu=settings.DIMSE_MAX_PDU,
            max_associations=settings.DIMSE_MAX_ASSOCIATIONS,
            max_per_ae=settings.DIMSE_MAX_PER_AE,
            max_per_source=settings.DIMSE_MAX_PER_SOURCE,
            max_pending=settings.DIMSE_MAX_PENDING,
            max_pending_per_source=settings.DIMSE_MAX_PENDING_PER_SOURCE,
            artim=settings.DIMSE_ARTIM_SECONDS,
            limits=wire.Limits(idle=settings.DIMSE_IDLE_SECONDS,
                               min_rate=settings.DIMSE_MIN_BYTES_PER_SECOND,
                               max_dataset=settings.DIMSE_MAX_DATASET_BYTES,
                               spool_above=settings.DIMSE_SPOOL_BYTES,
                               spool_dir=str(get_storage().incoming_dir())),
            keep_dataset=handlers.make_dataset_filter(self.policy),
        )

    SWEEP_SECONDS = 900.0  # how often a running listener sweeps the incoming folder

    def start(self) -> None:
        self._sweep()
        config = self._config()
        self._server = DimseServer(self.host, self.port, config, self.listen_fd)
        if self.tls_port >= 0:
            self._tls_server = DimseServer(self.host, self.tls_port, config,
                                           tls=tls.server_context(), shared=self._server.quotas)
            self._tls_server.start()
        self._server.start()
        self._stopping = threading.Event()
        threading.Thread(target=self._sweep_now_and_then, args=(self._stopping,), daemon=True,
                         name="incoming-sweeper").start()

    def _sweep(self) -> None:
        """Temporary files older than an hour: what a crash or a kill left, here or in a web
        process that stores STOW-RS uploads into the same storage."""
        try:
            swept = get_storage().sweep_incoming()
        except OSError as exc:
            log.warning("cannot sweep the incoming folder: %s", exc)
            return
        if swept:
            log.info("removed %d temporary file(s) older than an hour", swept)

    def _sweep_now_and_then(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.SWEEP_SECONDS):
            self._sweep()

    def counters(self) -> dict[str, int]:
        """Associations accepted and rejected since start (both ports), and open now."""
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        totals = {"associations_accepted": 0, "associations_rejected": 0,
                  "associations_active": servers[0].quotas[0].held if servers else 0}
        for server in servers:
            totals["associations_accepted"] += server.counts["accepted"]
            totals["associations_rejected"] += server.counts["rejected"]
        return totals

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "listener not started"
        return self._server.address

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """Where DICOM TLS is answered, if it is."""
        return self._tls_server.address if self._tls_server is not None else None

    def share(self) -> int:
        """The listening socket's descriptor for more SCP processes (pacs.dimse.workers)."""
        assert self._server is not None, "listener not started"
        return self._server.share()

    def stop(self, grace: float = 0.0) -> None:
        """Stop accepting associations. With ``grace`` (seconds), the associations already
        running may finish first, for at most that long: a modality in the middle of a
        study completes it instead of seeing its association aborted at a restart."""
        servers = [s for s in (self._server, self._tls_server) if s is not None]
        self._stopping.set()
        for server in servers:
            server.stop()  # no new association on either port
        deadline = time.monotonic() + grace
        for server in servers:
            server.stop(max(0.0, deadline - time.monotonic()))
        self._server = self._tls_server = None

    def serve_forever(self) -> None:
        """Blocking variant for the dedicated command."""
        self.start()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stop()
