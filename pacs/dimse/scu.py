"""DIMSE SCU helpers (we are the requestor)."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification

from pacs.errors import PacsError

log = logging.getLogger("pacs.dimse")

# pynetdicom's "standard" log handlers run on every PDU and log identifiers (PHI): off.
_config.LOG_HANDLER_LEVEL = "none"


def set_nodelay(assoc: Association) -> None:
    """TCP_NODELAY on a requestor association's socket (pynetdicom leaves Nagle on)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(*, host: str, port: int, called_aet: str, calling_aet: str,
         timeout: float = 10) -> tuple[bool, str]:
    """C-ECHO; returns (success, human-readable detail)."""
    try:  # a plain connect first tells "nobody listens" apart from a DICOM-level refusal
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return False, f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        if assoc.is_rejected:
            return False, "association rejected by the peer (check the AE titles)"
        if assoc.is_aborted:
            return False, "association aborted by the peer"
        return False, f"no association with {host}:{port} (timeout)"
    try:
        set_nodelay(assoc)
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and getattr(status, "Status", None) == 0x0000:
        return True, "C-ECHO succeeded (status 0x0000)"
    if status and "Status" in status:
        return False, f"C-ECHO answered with status 0x{status.Status:04X}"
    return False, "no C-ECHO response (timeout or aborted)"


@dataclass(frozen=True)
class Peer:
    """Where to connect: a remote AE (from the AE table or typed in)."""

    ae_title: str
    host: str
    port: int


UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255


def storage_contexts(pairs: set[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts for (SOP class, stored transfer syntax) pairs: each as stored, plus one
    uncompressed context per SOP class so an uncompressed file can be converted."""
    contexts: list[PresentationContext] = []
    classes = sorted({sop_class for sop_class, _ts in pairs})
    for sop_class in classes:
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    for sop_class, ts in sorted(pairs):
        if ts not in UNCOMPRESSED:
            contexts.append(build_context(sop_class, [ts]))
    if len(contexts) > MAX_CONTEXTS:
        raise PacsError(f"too many SOP class/transfer syntax pairs ({len(contexts)})")
    return contexts


class StoreSession:
    """One association to a peer that sends stored instances with C-STORE (SCU).

    Used by C-MOVE (sub-operations) and by the portal's send jobs. send() returns the peer's
    status, or a failure status of ours when the instance cannot be sent on this association.
    """

    def __init__(self, peer: Peer, *, calling_aet: str, pairs: set[tuple[str, str]],
                 timeout: float = 30, move_originator: tuple[str, int] | None = None) -> None:
        self.peer, self.calling_aet, self.pairs = peer, calling_aet, pairs
        self.timeout, self.move_originator = timeout, move_originator
        self.assoc: Association | None = None

    def __enter__(self) -> StoreSession:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.requested_contexts = storage_contexts(self.pairs)
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
        if not assoc.is_established:
            raise PeerUnavailable(
                f"no association with {self.peer.ae_title}@{self.peer.host}:{self.peer.port}")
        set_nodelay(assoc)
        self.assoc = assoc
        return self

    def __exit__(self, *exc_info) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()

    def send(self, path: Path, sop_class: str, transfer_syntax: str) -> int:
        assert self.assoc is not None
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                    for cx in self.assoc.accepted_contexts}
        extra = {}
        if self.move_originator:
            extra = {"originator_aet": self.move_originator[0],
                     "originator_id": self.move_originator[1]}
        if (sop_class, transfer_syntax) in accepted:
            dataset: Path | Dataset = path  # sent as stored, without decoding
        elif transfer_syntax in UNCOMPRESSED and any(
                (sop_class, ts) in accepted for ts in UNCOMPRESSED):
            dataset = dcmread(path)  # pynetdicom re-encodes it for the accepted context
        else:
            return STATUS_NO_CONTEXT
        try:
            status = self.assoc.send_c_store(dataset, **extra)
        except (ValueError, RuntimeError) as exc:
            log.warning("C-STORE to %s failed: %s", self.peer.ae_title, exc)
            return STATUS_NO_CONTEXT
        if not status or "Status" not in status:
            raise PeerUnavailable(f"no C-STORE response from {self.peer.ae_title}")
        return int(status.Status)


STATUS_NO_CONTEXT = 0xA702  # our failure code for a sub-operation we could not even send


class PeerUnavailable(PacsError):
    """The remote AE could not be reached or dropped the association."""

    dimse_status = 0xA702
