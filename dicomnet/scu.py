"""DIMSE SCU helpers (we are the requestor)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context, build_role
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyRootFind
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as StudyRootGet
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as StudyRootMove
from pynetdicom.sop_class import Verification

from core import tls
from core.errors import ServiceError
from dicomnet.transcode import SENT_UNCOMPRESSED, CannotConvert, decompressed, sending_syntax

log = logging.getLogger("dicomnet")

# pynetdicom's "standard" log handlers run on every PDU and log identifiers (PHI): off.
_config.LOG_HANDLER_LEVEL = "none"


def set_nodelay(assoc: Association) -> None:
    """TCP_NODELAY on a requestor association's socket (pynetdicom leaves Nagle on, and has
    no option for it). Reached through documented attributes: Association.dul (the
    DULServiceProvider), its AssociationSocket, and that one's socket."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(*, host: str, port: int, called_aet: str, calling_aet: str,
         timeout: float = 10, use_tls: bool = False) -> tuple[bool, str]:
    """C-ECHO; returns (success, human-readable detail)."""
    try:  # a plain connect first tells "nobody listens" apart from a DICOM-level refusal
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return False, f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_aet,
                         tls_args=(tls.client_context(), None) if use_tls else None)
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
    """Where to connect: a remote AE (from the AE table or typed in); ``tls``: over DICOM TLS
    (core.tls.client_context)."""

    ae_title: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def of(cls, ae) -> Peer:
        """The AE table's entry (pacs.models.ApplicationEntity) as a peer to call."""
        return cls(ae.ae_title, ae.host, ae.port, ae.use_tls)


MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255


def storage_contexts(pairs: set[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts for (SOP class, stored transfer syntax) pairs: each as stored, plus one
    uncompressed context per SOP class so an uncompressed file can be converted."""
    contexts: list[PresentationContext] = []
    classes = sorted({sop_class for sop_class, _ts in pairs})
    for sop_class in classes:
        contexts.append(build_context(sop_class, list(SENT_UNCOMPRESSED)))
    for sop_class, ts in sorted(pairs):
        if ts not in SENT_UNCOMPRESSED:
            contexts.append(build_context(sop_class, [ts]))
    if len(contexts) > MAX_CONTEXTS:
        raise ServiceError(f"too many SOP class/transfer syntax pairs ({len(contexts)})")
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
        self.last_error = ""

    def __enter__(self) -> StoreSession:
        self.assoc = associate(self.peer, self.calling_aet, storage_contexts(self.pairs),
                                self.timeout)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()

    def send(self, path: Path, sop_class: str, transfer_syntax: str) -> int:
        """The peer's status, or STATUS_NO_CONTEXT when the object could not be sent at all
        (``last_error`` says why): no accepted context for it, it cannot be decoded, or its
        file cannot be read. Raises PeerUnavailable when the association fails."""
        self.last_error = ""
        try:
            return self._send(path, sop_class, transfer_syntax)
        except PeerUnavailable:
            raise
        except Exception as exc:  # this object only: its file unreadable, say
            return self.not_sent(path, f"{type(exc).__name__}: {exc}")

    def not_sent(self, path: Path, error: str) -> int:
        """Record that the object at ``path`` could not be sent at all, and why."""
        self.last_error = error
        log.warning("C-STORE of %s to %s: not sent: %s", path.name, self.peer.ae_title, error)
        return STATUS_NO_CONTEXT

    def _send(self, path: Path, sop_class: str, transfer_syntax: str) -> int:
        assert self.assoc is not None
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                    for cx in self.assoc.accepted_contexts}
        extra = {}
        if self.move_originator:
            extra = {"originator_aet": self.move_originator[0],
                     "originator_id": self.move_originator[1]}
        syntax, convert = sending_syntax(transfer_syntax,
                                         {ts for cls, ts in accepted if cls == sop_class})
        if syntax is None:
            return self.not_sent(path, "the destination took neither its transfer syntax "
                                        "nor an uncompressed one it can be decoded to")
        dataset: Path | Dataset = path  # sent as stored, without decoding
        if convert:  # pynetdicom encodes it for the accepted uncompressed context
            try:
                dataset = decompressed(path)
            except CannotConvert as exc:
                return self.not_sent(path, str(exc))
        status = self.assoc.send_c_store(dataset, **extra)
        if not status or "Status" not in status:
            raise PeerUnavailable(f"no C-STORE response from {self.peer.ae_title}")
        return int(status.Status)


STATUS_NO_CONTEXT = 0xA702  # our failure code for a sub-operation we could not even send


class PeerUnavailable(ServiceError):
    """The remote AE could not be reached or dropped the association."""

    dimse_status = 0xA702


def associate(peer: Peer, calling_aet: str, contexts: list[PresentationContext],
               timeout: float, **kwargs) -> Association:
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.requested_contexts = contexts
    if peer.tls:
        kwargs["tls_args"] = (tls.client_context(), None)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, **kwargs)
    if not assoc.is_established:
        where = f"{peer.ae_title}@{peer.host}:{peer.port}" + (" over TLS" if peer.tls else "")
        raise PeerUnavailable(f"no association with {where}: {_why_not(assoc, peer, timeout)}")
    set_nodelay(assoc)
    return assoc


# A-ASSOCIATE-RJ (result source, reason) in words (PS3.8 Table 9-21)
_REJECT_REASONS = {
    (1, 1): "no reason given", (1, 2): "application context name not supported",
    (1, 3): "our AE title is not recognized there (register it on the peer)",
    (1, 7): "the called AE title is not recognized there (check the AE title)",
    (2, 1): "no reason given (ACSE)", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded (too many associations)",
}


def _why_not(assoc: Association, peer: Peer, timeout: float) -> str:
    """Why an association was not made, told apart as a user needs it: the peer cannot be
    reached at all, it rejected us (and why), it offers none of the services asked for, or
    it accepted the connection and then aborted."""
    if assoc.is_rejected:
        primitive = getattr(assoc.acceptor, "primitive", None)
        if primitive is not None:
            source, reason = int(primitive.result_source), int(primitive.diagnostic)
            kind = "permanently" if int(primitive.result) == 1 else "for now"
            return (f"association rejected {kind}: "
                    f"{_REJECT_REASONS.get((source, reason), f'source {source}, reason {reason}')}")
        return "association rejected"
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        names = ", ".join(sorted({str(cx.abstract_syntax.name)
                                  for cx in assoc.rejected_contexts}))
        return f"the peer accepted the association but offers none of: {names}"
    try:
        socket.create_connection((peer.host, peer.port), timeout=min(timeout, 5)).close()
    except OSError as exc:
        return f"peer unreachable ({exc.strerror or exc})"
    hint = "" if peer.tls else " (does it expect DICOM TLS?)"
    return f"the peer took the connection, then aborted or closed it{hint}"


def _failed(status: Dataset | None, what: str, peer: Peer) -> ServiceError:
    if status is None or "Status" not in status:
        return PeerUnavailable(f"no {what} response from {peer.ae_title}")
    comment = str(status.get("ErrorComment", "") or "")
    return RemoteFailure(f"{peer.ae_title} answered {what} with status 0x{status.Status:04X}"
                         + (f": {comment}" if comment else ""))


class RemoteFailure(ServiceError):
    """The remote AE answered with a failure status."""


def find(peer: Peer, identifier: Dataset, *, calling_aet: str, timeout: float = 30,
         limit: int = 1000) -> list[Dataset]:
    """C-FIND SCU (Study Root): the matches, at most ``limit`` (then C-CANCEL)."""
    assoc = associate(peer, calling_aet, [build_context(StudyRootFind)], timeout)
    results: list[Dataset] = []
    try:
        for status, answer in assoc.send_c_find(identifier, StudyRootFind, msg_id=1):
            if status is None or "Status" not in status:
                raise _failed(status, "C-FIND", peer)
            if status.Status in (0xFF00, 0xFF01) and answer is not None:
                results.append(answer)
                if len(results) >= limit:
                    assoc.send_c_cancel(1, _context_id(assoc, StudyRootFind))
            elif status.Status not in (0x0000, 0xFE00):
                raise _failed(status, "C-FIND", peer)
    finally:
        if assoc.is_established:
            assoc.release()
    return results[:limit]


def _context_id(assoc: Association, abstract_syntax: str) -> int:
    return next(cx.context_id for cx in assoc.accepted_contexts
                if cx.abstract_syntax == abstract_syntax)


@dataclass
class Progress:
    """Sub-operation counts of a transfer (C-MOVE/C-GET either side, send jobs)."""

    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def record(self, sop_instance_uid: str, status: int) -> None:
        """Count one C-STORE sub-operation by its status (PS3.4 B.2.3: 0xBxxx are warnings)."""
        if self.remaining:
            self.remaining -= 1
        if status == 0x0000:
            self.completed += 1
        elif status & 0xF000 == 0xB000:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)


ProgressCallback = Callable[[Progress], bool]  # returns False to cancel


def _progress(status: Dataset, identifier: Dataset | None) -> Progress:
    failed_uids: list[str] = []
    if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
        value = identifier.FailedSOPInstanceUIDList
        values = value if isinstance(value, MutableSequence | tuple) else [value]
        failed_uids = [str(v) for v in values if v]
    return Progress(
        remaining=status.get("NumberOfRemainingSuboperations"),
        completed=int(status.get("NumberOfCompletedSuboperations", 0) or 0),
        failed=int(status.get("NumberOfFailedSuboperations", 0) or 0),
        warning=int(status.get("NumberOfWarningSuboperations", 0) or 0),
        failed_uids=failed_uids,
    )


def _drive(assoc: Association, responses, model: str, what: str, peer: Peer,
           on_progress: ProgressCallback) -> Progress:
    """Follow C-MOVE/C-GET responses; cancel when the callback says so."""
    last = Progress()
    cancel_sent = False
    for status, identifier in responses:
        if status is None or "Status" not in status:
            raise _failed(status, what, peer)
        last = _progress(status, identifier)
        if status.Status in (0xFF00, 0xFF01):
            if not on_progress(last) and not cancel_sent:
                assoc.send_c_cancel(1, _context_id(assoc, model))
                cancel_sent = True
            continue
        if status.Status in (0x0000, 0xB000, 0xFE00):
            on_progress(last)
            return last
        if status.Status == 0xA702 and (last.failed or last.completed):
            on_progress(last)
            return last
        raise _failed(status, what, peer)
    raise PeerUnavailable(f"{peer.ae_title} ended the association during {what}")


def move(peer: Peer, identifier: Dataset, *, calling_aet: str, destination: str,
         on_progress: ProgressCallback, timeout: float = 60) -> Progress:
    """C-MOVE SCU: ask ``peer`` to send to ``destination`` (usually our own AE title)."""
    assoc = associate(peer, calling_aet, [build_context(StudyRootMove)], timeout)
    try:
        responses = assoc.send_c_move(identifier, destination, StudyRootMove, msg_id=1)
        return _drive(assoc, responses, StudyRootMove, "C-MOVE", peer, on_progress)
    finally:
        if assoc.is_established:
            assoc.release()


# C-GET must offer storage contexts before anything comes (PS3.4 C.4.3.1: SCP/SCU roles).
# The SCP picks one transfer syntax per accepted context, so a context that lists several
# lets it choose one it then cannot send in (Orthanc picks Explicit VR Little Endian and fails
# to send a JPEG 2000 image as is). Each compressed syntax gets a context of its own, as
# DCMTK getscu proposes them, beside one for the uncompressed syntaxes.
GET_UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
GET_COMPRESSED = [
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99",
]
GET_TRANSFER_SYNTAXES = GET_UNCOMPRESSED + GET_COMPRESSED
_SCOPE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def get_contexts(classes: dict[str, set[str]] | None) -> list[PresentationContext]:
    """The storage contexts a C-GET proposes: for each SOP class to come (with the transfer
    syntaxes it is stored in, when the peer told them), one context of the uncompressed
    syntaxes and one per compressed syntax. Without ``classes``, or when that takes more
    than the 127 contexts left beside the C-GET model's, one context per common storage
    class listing every syntax (what a peer that sends uncompressed always takes)."""
    if classes:
        contexts = []
        for uid, syntaxes in classes.items():
            contexts.append(build_context(uid, GET_UNCOMPRESSED))
            compressed = [t for t in (sorted(syntaxes) or GET_COMPRESSED)
                          if t not in GET_UNCOMPRESSED]
            contexts += [build_context(uid, [syntax]) for syntax in compressed]
        if len(contexts) < MAX_CONTEXTS:
            return contexts
    storage = [cx.abstract_syntax for cx in StoragePresentationContexts][:MAX_CONTEXTS - 1]
    return [build_context(uid, GET_TRANSFER_SYNTAXES) for uid in storage]


def stored_classes(peer: Peer, identifier: Dataset, *, calling_aet: str,
                   timeout: float = 30) -> dict[str, set[str]] | None:
    """The SOP classes (each with the transfer syntaxes the peer holds it in, if it says:
    Available Transfer Syntax UID, PS3.4 C.6.1.1.5) of what ``identifier`` names, by an
    IMAGE-level C-FIND; None when the peer answers no such query."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    for keyword in _SCOPE_KEYS:
        if keyword in identifier:
            setattr(query, keyword, identifier.get(keyword))
    query.SOPClassUID = ""
    query.AvailableTransferSyntaxUID = ""
    try:
        answers = find(peer, query, calling_aet=calling_aet, timeout=timeout, limit=100_000)
    except ServiceError as exc:
        log.info("C-GET from %s: no IMAGE-level C-FIND first (%s)", peer.ae_title, exc)
        return None
    classes: dict[str, set[str]] = {}
    for answer in answers:
        uid = str(answer.get("SOPClassUID", "") or "").strip()
        if uid:
            available = answer.get("AvailableTransferSyntaxUID", "") or ""
            values = available if isinstance(available, MutableSequence) else [available]
            classes.setdefault(uid, set()).update(str(v).strip() for v in values if v)
    return classes or None


def get(peer: Peer, identifier: Dataset, *, calling_aet: str,
        store: Callable[[bytes], int], on_progress: ProgressCallback,
        timeout: float = 60) -> Progress:
    """C-GET SCU: the peer sends on our association; ``store(part10_bytes)`` keeps each."""
    storage = get_contexts(stored_classes(peer, identifier, calling_aet=calling_aet,
                                          timeout=timeout))
    contexts = [build_context(StudyRootGet), *storage]
    roles = [build_role(uid, scp_role=True)
             for uid in dict.fromkeys(cx.abstract_syntax for cx in storage)]

    def on_store(event) -> int:
        return store(event.encoded_dataset(include_meta=True))

    # The stores run in pynetdicom's association thread: give its DB connection back at the end.
    assoc = associate(peer, calling_aet, contexts, timeout, ext_neg=roles,
                       evt_handlers=[(evt.EVT_C_STORE, on_store),
                                     (evt.EVT_CONN_CLOSE, lambda _event: connection.close())])
    try:
        responses = assoc.send_c_get(identifier, StudyRootGet, msg_id=1)
        return _drive(assoc, responses, StudyRootGet, "C-GET", peer, on_progress)
    finally:
        if assoc.is_established:
            assoc.release()
