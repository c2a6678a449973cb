"""The DIMSE acceptor: one thread per association, blocking reads, no polling.

The engine negotiates the association (policy from the AE table), reads DIMSE messages and
hands each to the service registered for its command field (the apps' SCP handlers). Services
answer through Association.respond(), request() and send_pending(); they never see PDUs.
"""

from __future__ import annotations

import hashlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from django.db import connection
from pynetdicom.presentation import PresentationContext

from core import quiet
from core.tcp import TcpServer
from dicomnet import acse, status, wire

log = logging.getLogger("dicomnet")

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1456.1"
# Ours, not the version of a library we use: the pyproject version (PS3.7 D.3.3.2.3: 16 chars)
IMPLEMENTATION_VERSION = "RADPORTAL_0_1_0"

ANSWER_BATCH_BYTES = 64 * 1024  # pending responses per socket write, about

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)


@dataclass(frozen=True)
class Context:
    """An accepted presentation context."""

    id: int
    abstract_syntax: str
    transfer_syntax: str
    as_scu: bool  # we may send requests on it (C-GET's C-STOREs)


class Refusal(NamedTuple):
    """Why the admission policy turns a caller away."""

    reason: str
    called: bool = False  # the called AE title is the problem (A-ASSOCIATE-RJ reason 7)


class Refused(Exception):
    def __init__(self, reason: str, rj: tuple[int, int, int]) -> None:
        super().__init__(reason)
        self.rj = rj


class Cancelled(Exception):
    """A C-CANCEL-RQ arrived for the operation in progress."""


class Quota:
    """At most ``total`` holders at once, and at most ``per[kind]`` holding the same key of
    that kind (e.g. per calling AE title, per source address). enter() says why not."""

    def __init__(self, total: int, **per: int) -> None:
        self.total, self.per = total, per
        self._lock = threading.Lock()
        self._held = 0
        self._counts: dict[str, Counter[str]] = {kind: Counter() for kind in per}

    def enter(self, **keys: str) -> str | None:
        with self._lock:
            if self._held >= self.total:
                return f"{self.total} at once in all"
            for kind, key in keys.items():
                if self._counts[kind][key] >= self.per[kind]:
                    return f"{self.per[kind]} at once per {kind.replace('_', ' ')}"
            self._held += 1
            for kind, key in keys.items():
                self._counts[kind][key] += 1
        return None

    @property
    def held(self) -> int:
        return self._held

    def leave(self, **keys: str) -> None:
        with self._lock:
            self._held -= 1
            for kind, key in keys.items():
                self._counts[kind][key] -= 1
                if self._counts[kind][key] <= 0:
                    del self._counts[kind][key]


MAX_RQ_BYTES = 1 << 20  # an A-ASSOCIATE-RQ with 128 contexts is ~40 KB; more is not a request


@dataclass
class ServerConfig:
    ae_title: str
    supported: list[PresentationContext]
    services: dict[int, Callable[[Association, wire.Message], None]]
    # (calling AET, called AET, host) -> why it is refused, or None
    admit: Callable[[str, str, str], Refusal | None]
    on_refused: Callable[[str, str, str], None]
    max_pdu: int = 0
    # SOP Class Extended Negotiation we support: SOP class UID -> application info bytes
    extended: dict[str, bytes] = field(default_factory=dict)
    max_associations: int = 64  # admitted associations at once, in all
    max_per_ae: int = 16  # ... per calling AE title
    max_per_source: int = 32  # ... per source address
    max_pending: int = 32  # connections whose A-ASSOCIATE-RQ is still awaited, in all
    max_pending_per_source: int = 4  # ... per source address
    artim: float = 10.0  # seconds a connection has to deliver its whole A-ASSOCIATE-RQ
    limits: wire.Limits = field(default_factory=wire.Limits)
    # (association, command set) -> keep the data set? (False: the request will be refused)
    keep_dataset: Callable[[Association, dict[int, object]], bool] | None = None
    # called once an admitted association is over (released, aborted or broken)
    on_finished: Callable[[Association], None] | None = None
    negotiations: NegotiationCache = field(default_factory=lambda: NegotiationCache())
    support: dict[str, acse.Support] = field(init=False)  # ``supported`` by abstract syntax

    def __post_init__(self) -> None:
        self.support = {
            str(cx.abstract_syntax): acse.Support(
                frozenset(str(ts) for ts in cx.transfer_syntax), (cx.scu_role, cx.scp_role))
            for cx in self.supported
        }


@dataclass(frozen=True)
class _Negotiated:
    """What an A-ASSOCIATE-RQ gave once, for the next identical one.

    A modality opens an association per study or series and proposes the same contexts each
    time; storescu proposes 128. Decoding and negotiating them (dicomnet.acse) takes ~2 ms
    of CPU on the CI machine, so an identical request (same bytes: same AE titles, contexts,
    roles and user items) reuses the answer. Admission (the AE table) is still checked every
    time; the answer depends only on the request and on this server's fixed configuration."""

    calling_aet: str
    called_aet: str
    application_context: str
    ac_pdu: bytes
    contexts: dict[int, Context]
    peer_max_pdu: int
    extended: dict[str, bytes]


class NegotiationCache:
    """Answers to A-ASSOCIATE-RQs, by a digest of the request's bytes (the newest ``size``
    kept; requests over ``max_request`` bytes are not kept, so the cache holds at most
    ``size`` answers of bounded size, whatever callers send).

    Identical requests that arrive together (a sender opening several associations at once)
    are negotiated once: the first one claims the request, the others wait for its answer.
    Whoever gets None from claim() negotiates and then calls settle()."""

    WAIT_SECONDS = 5.0

    def __init__(self, size: int = 64, max_request: int = 256 * 1024) -> None:
        self.size, self.max_request = size, max_request
        self._lock = threading.Lock()
        self._done: dict[bytes, _Negotiated] = {}
        self._pending: dict[bytes, threading.Event] = {}

    @staticmethod
    def key(body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=20).digest()

    def __len__(self) -> int:
        return len(self._done)

    def clear(self) -> None:
        with self._lock:
            self._done.clear()

    def claim(self, body: bytes) -> _Negotiated | None:
        if len(body) > self.max_request:
            return None
        body = self.key(body)
        with self._lock:
            known = self._done.get(body)
            if known is not None:
                return known
            event = self._pending.get(body)
            if event is None:
                self._pending[body] = threading.Event()
                return None
        event.wait(self.WAIT_SECONDS)
        with self._lock:
            return self._done.get(body)  # None: refused or failed there, negotiate here

    def settle(self, body: bytes, answer: _Negotiated | None) -> None:
        if len(body) > self.max_request:
            return
        body = self.key(body)
        with self._lock:
            if answer is not None:
                if len(self._done) >= self.size:
                    self._done.pop(next(iter(self._done)), None)  # the oldest
                self._done[body] = answer
            event = self._pending.pop(body, None)
        if event is not None:
            event.set()


class Association:
    def __init__(self, sock: socket.socket, host: str, config: ServerConfig) -> None:
        self.sock = sock
        self.peer_host = host
        self.config = config
        keep = config.keep_dataset
        self.pdu = wire.PduSocket(sock, config.limits,
                                  (lambda command: keep(self, command)) if keep else None)
        self.slot: dict[str, str] | None = None  # the keys of the association slot it holds
        self.calling_aet = ""
        self.called_aet = ""
        self.peer_max_pdu = 0
        self.contexts: dict[int, Context] = {}
        self.extended: dict[str, bytes] = {}  # accepted extended negotiation per SOP class
        self._next_message_id = 1
        self._cancelled: set[int] = set()
        # what the services did on it, for their summary at the end (e.g. studies stored)
        self.tally: dict[str, dict[str, int]] = {}

    # --- negotiation -----------------------------------------------------------------

    def negotiate(self, slots: Quota, started: float | None = None) -> bool:
        """Read the A-ASSOCIATE-RQ within ARTIM (PS3.8 9.1.5: an overall deadline from the
        connection, however the bytes trickle in), admit or refuse it, answer. An admitted
        association takes one of ``slots`` (held in ``self.slot`` until released)."""
        deadline = (started or time.monotonic()) + self.config.artim
        pdu_type, body = self.pdu.read_pdu(deadline=deadline, max_length=MAX_RQ_BYTES)
        if pdu_type != wire.A_ASSOCIATE_RQ:
            raise wire.ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type {pdu_type}")
        known = self.config.negotiations.claim(body)
        answer: _Negotiated | None = None
        try:
            if known is None:
                answer = self._negotiate(body, slots)
                return answer is not None
            return self._reuse(known, slots)
        finally:
            if known is None:
                self.config.negotiations.settle(body, answer)

    def _negotiate(self, body: bytes, slots: Quota) -> _Negotiated | None:
        """Decode and answer the request; what to reuse for an identical one, or None if it
        was refused."""
        request = acse.parse_request(body)
        self.calling_aet, self.called_aet = request.calling_aet, request.called_aet
        if not self._admit(slots, request.application_context):
            return None
        ac_pdu = self._accept(request)
        self.pdu.send_raw(ac_pdu)
        return _Negotiated(self.calling_aet, self.called_aet, request.application_context,
                           ac_pdu, dict(self.contexts), self.peer_max_pdu, dict(self.extended))

    def _reuse(self, known: _Negotiated, slots: Quota) -> bool:
        self.calling_aet, self.called_aet = known.calling_aet, known.called_aet
        if not self._admit(slots, known.application_context):
            return False
        self.contexts, self.peer_max_pdu = dict(known.contexts), known.peer_max_pdu
        self.extended = dict(known.extended)
        self.pdu.send_raw(known.ac_pdu)
        return True

    def _admit(self, slots: Quota, application_context: str) -> bool:
        """Admission from the AE table, checked for every association, then a slot: only an
        admitted caller takes one, so callers the AE table refuses (or that never finish
        their request) cannot crowd out registered modalities. Refusals are answered."""
        try:
            if application_context != APPLICATION_CONTEXT:
                raise Refused("unsupported application context", REJECT_APPLICATION_CONTEXT)
            refusal = self.config.admit(self.calling_aet, self.called_aet, self.peer_host)
            if refusal:
                raise Refused(refusal.reason,
                              REJECT_CALLED_AE if refusal.called else REJECT_CALLING_AE)
            keys = {"calling_AE_title": self.calling_aet.strip(),
                    "source_address": self.peer_host}
            full = slots.enter(**keys)
            if full:
                raise Refused(f"association limit reached ({full})", REJECT_LOCAL_LIMIT)
            self.slot = keys
        except Refused as exc:
            # audited before the peer hears of it: the record exists once the refusal is seen
            try:
                self.config.on_refused(self.calling_aet, self.peer_host, str(exc))
            finally:
                self.pdu.send_raw(wire.reject_pdu(*exc.rj))
            return False
        return True

    def _accept(self, request: acse.AssociateRequest) -> bytes:
        self.peer_max_pdu = request.max_pdu
        results, roles = acse.negotiate(request, self.config.support)
        self.contexts = {
            cx.id: Context(cx.id, cx.abstract_syntax, cx.transfer_syntax, cx.as_scu)
            for cx in results if cx.result == acse.ACCEPTED
        }
        # SOP Class Extended Negotiation (PS3.7 D.3.3.5): each requested option we support,
        # a byte-wise AND
        for uid, requested in request.extended.items():
            supported = self.config.extended.get(uid)
            if supported is not None:
                self.extended[uid] = bytes(a & b for a, b in zip(requested, supported,
                                                                 strict=False))
        return acse.encode_accept(request, APPLICATION_CONTEXT, results, self.config.max_pdu,
                                  IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, roles,
                                  self.extended)

    def extended_flag(self, message: wire.Message, index: int) -> bool:
        """Was option ``index`` of the context's SOP class accepted in extended negotiation?"""
        accepted = self.extended.get(self.context(message).abstract_syntax, b"")
        return len(accepted) > index and accepted[index] == 1

    # --- message loop ----------------------------------------------------------------

    def serve(self) -> None:
        try:
            self._serve()
        except wire.DatasetTooLarge as exc:
            # PS3.7 C-STORE: 0xA700 refused, out of resources; then nothing more of it
            _quietly(partial(self.respond, wire.Message(exc.context_id, exc.command), 0xA700,
                             comment=str(exc)[:64]))
            raise

    def _serve(self) -> None:
        while True:
            item = self.pdu.read_message()
            if item == wire.A_RELEASE_RQ:
                self.pdu.send_raw(wire.RELEASE_RP)
                return
            if item == wire.A_ABORT:
                return
            if isinstance(item, int):
                raise wire.ProtocolError(f"unexpected PDU type {item}")
            self.dispatch(item)

    def dispatch(self, message: wire.Message) -> None:
        if message.context_id not in self.contexts:
            raise wire.ProtocolError(f"message on unaccepted context {message.context_id}")
        field = message.command_field
        if field == wire.C_CANCEL_RQ:
            return  # nothing in progress any more: PS3.7 9.3.2.3 lets us ignore it
        service = self.config.services.get(field)
        if service is None:
            self.respond(message, 0x0211, comment="unrecognized operation")
            return
        service(self, message)

    # --- what services use --------------------------------------------------------------

    def context(self, message: wire.Message) -> Context:
        return self.contexts[message.context_id]

    def respond(self, message: wire.Message, status: int, *, dataset: bytes | None = None,
                comment: str | None = None, extra: dict[int, object] | None = None) -> None:
        """Send the response to ``message`` (command field | 0x8000)."""
        command = self.response_command(message, status, has_dataset=dataset is not None,
                                        comment=comment, extra=extra)
        self.pdu.send_message(message.context_id, command, dataset, self.peer_max_pdu)

    def send_pending(self, message: wire.Message, datasets: Iterable[bytes]) -> int:
        """Pending responses (0xFF00) to ``message``, one per encoded data set, batched into
        few socket writes: how many were sent, or -1 - how many when the requestor cancelled
        (C-CANCEL-RQ) meanwhile.

        Each answer normally fits one P-DATA-TF holding two PDVs: the (constant) command set
        and the data set (PS3.8 9.3.5 allows several PDVs per PDU)."""
        pending = self.response_command(message, status.PENDING, has_dataset=True)
        context_id, max_pdu = message.context_id, self.peer_max_pdu
        command_pdv = struct.pack(">IBB", len(pending) + 2, context_id, 0x03) + pending
        batch: list[bytes] = []
        size = sent = 0
        for data in datasets:
            sent += 1
            length = len(command_pdv) + 6 + len(data)
            if max_pdu and length > max_pdu:
                pdu = wire.message_bytes(context_id, pending, data, max_pdu)
            else:
                pdu = b"".join((struct.pack(">BBI", wire.P_DATA_TF, 0, length), command_pdv,
                                struct.pack(">IBB", len(data) + 2, context_id, 0x02), data))
            batch.append(pdu)
            size += len(pdu)
            if size >= ANSWER_BATCH_BYTES:
                self.pdu.send_raw(b"".join(batch))
                batch, size = [], 0
                if self.cancel_requested(message):
                    return -1 - sent
        if batch:
            self.pdu.send_raw(b"".join(batch))
        return -1 - sent if self.cancel_requested(message) else sent

    def response_command(self, message: wire.Message, status: int, *, has_dataset: bool,
                         comment: str | None = None, extra: dict[int, object] | None = None
                         ) -> bytes:
        rq = message.command
        command: dict[int, object] = {
            wire.AFFECTED_SOP_CLASS_UID: rq.get(wire.AFFECTED_SOP_CLASS_UID)
            or rq.get(wire.REQUESTED_SOP_CLASS_UID),
            wire.COMMAND_FIELD: message.command_field | 0x8000,
            wire.MESSAGE_ID_BEING_RESPONDED_TO: message.message_id,
            wire.COMMAND_DATA_SET_TYPE: wire.DATASET_PRESENT if has_dataset else wire.NO_DATASET,
            wire.STATUS: status,
            wire.ERROR_COMMENT: comment,
            **(extra or {}),
        }
        instance = rq.get(wire.AFFECTED_SOP_INSTANCE_UID) or rq.get(
            wire.REQUESTED_SOP_INSTANCE_UID)
        if instance and wire.AFFECTED_SOP_INSTANCE_UID not in command:
            command[wire.AFFECTED_SOP_INSTANCE_UID] = instance
        return wire.encode_command(command)

    def request(self, context: Context, command: dict[int, object], dataset: bytes,
                *, cancel_of: int) -> wire.Message:
        """Send a request on this association (C-GET's C-STORE) and wait for its response.

        A C-CANCEL-RQ for message ``cancel_of`` arriving meanwhile is remembered; any other
        message is a protocol error (we negotiate synchronous operations only).
        """
        message_id = self._next_message_id
        self._next_message_id = message_id % 0xFFFF + 1
        command = {**command, wire.MESSAGE_ID: message_id,
                   wire.COMMAND_DATA_SET_TYPE: wire.DATASET_PRESENT}
        self.pdu.send_message(context.id, wire.encode_command(command), dataset,
                              self.peer_max_pdu)
        while True:
            item = self.pdu.read_message()
            if isinstance(item, int):
                raise wire.PeerClosed(f"peer sent PDU type {item} during a sub-operation")
            if item.command_field == wire.C_CANCEL_RQ:
                self._note_cancel(item, cancel_of)
                continue
            if item.command.get(wire.MESSAGE_ID_BEING_RESPONDED_TO) == message_id:
                return item
            raise wire.ProtocolError("unexpected message during a sub-operation")

    def cancel_requested(self, message: wire.Message) -> bool:
        """Has a C-CANCEL-RQ for ``message`` arrived? Reads without blocking."""
        while self.pdu.has_buffered_message() or _readable(self.sock):
            item = self.pdu.read_message()
            if isinstance(item, int) or item.command_field != wire.C_CANCEL_RQ:
                raise wire.ProtocolError("unexpected message while an operation runs")
            self._note_cancel(item, message.message_id)
        return message.message_id in self._cancelled

    def _note_cancel(self, item: wire.Message, message_id: int) -> None:
        if item.command.get(wire.MESSAGE_ID_BEING_RESPONDED_TO) == message_id:
            self._cancelled.add(message_id)


def _readable(sock: socket.socket) -> bool:
    """Bytes to read now: decrypted ones TLS holds already, or more on the socket."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return bool(select.select([sock], [], [], 0)[0])


class DimseServer:
    """The acceptor on a (shareable) port: core.tcp.TcpServer with an association each.
    With ``tls`` (a server SSLContext) every connection speaks TLS (PS3.15 B.9).

    What a caller can make it spend is bounded: connections in all and per source address
    (refused at accept, before a thread is started); connections still waiting for their
    A-ASSOCIATE-RQ, in all and per source, each for ARTIM at most; admitted associations in
    all, per calling AE title and per source (A-ASSOCIATE-RJ local limit beyond)."""

    def __init__(self, host: str, port: int, config: ServerConfig,
                 listen_fd: int | None = None, tls: ssl.SSLContext | None = None,
                 shared: tuple[Quota, Quota] | None = None) -> None:
        """``shared``: the (association, pending connection) quotas of another server of the
        same listener: the plain and the TLS port count together."""
        self.config = config
        self.tls = tls
        # associations accepted and rejected since start, for the listener's health row
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self.quotas = shared or (
            Quota(config.max_associations, calling_AE_title=config.max_per_ae,
                  source_address=config.max_per_source),
            Quota(config.max_pending, source_address=config.max_pending_per_source))
        self._tcp = TcpServer(host, port, self._run, name="dimse-tls" if tls else "dimse",
                              inherited_fd=listen_fd,
                              max_connections=config.max_associations + config.max_pending,
                              max_per_source=config.max_per_source + config.max_pending_per_source)

    @property
    def address(self) -> tuple[str, int]:
        return self._tcp.address

    def share(self) -> int:
        """The listening socket for SCP processes started by this one (TcpServer.share)."""
        return self._tcp.share()

    def start(self) -> None:
        self._tcp.start()

    def stop(self, grace: float = 0.0) -> None:
        """Stop accepting; with ``grace``, let running associations end, for that long."""
        self._tcp.stop(grace)

    def _run(self, conn: socket.socket, address: tuple[str, int]) -> None:
        host = address[0]
        started = time.monotonic()
        slots, pending = self.quotas
        if pending.enter(source_address=host):  # too many waiting for their request
            _quietly(conn.close)
            return
        waiting = True
        assoc: Association | None = None
        try:
            if self.tls is not None:
                try:
                    conn = _tls_handshake(conn, self.tls, self.config.artim)
                except (OSError, ssl.SSLError) as exc:  # no TLS, a certificate not trusted
                    _quietly(conn.close)
                    self._refused("", host, f"TLS handshake failed: {exc}")
                    return
            assoc = Association(conn, host, self.config)
            admitted = assoc.negotiate(slots, started)
            pending.leave(source_address=host)
            waiting = False
            with self._counts_lock:
                self.counts["accepted" if admitted else "rejected"] += 1
            if admitted:
                assoc.serve()
        except (wire.PeerClosed, TimeoutError, ConnectionError):
            pass  # the peer went away or took too long; nothing to answer
        except wire.ProtocolError as exc:
            if quiet.due(f"dimse {host}"):  # a broken or hostile client: once a minute
                log.warning("association from %s@%s aborted: %s",
                            assoc.calling_aet if assoc else "", host, exc)
            _quietly(conn.sendall, wire.abort_pdu(0x02, 0x00))
        except Exception:
            log.exception("association from %s@%s aborted", assoc.calling_aet if assoc else "",
                          host)
            _quietly(conn.sendall, wire.abort_pdu(0x02, 0x00))
        finally:
            if waiting:
                pending.leave(source_address=host)
            if assoc is not None:
                assoc.pdu.close()
                if assoc.slot is not None:
                    slots.leave(**assoc.slot)
                    if self.config.on_finished is not None:
                        _quietly(self.config.on_finished, assoc)
            _quietly(conn.close)
            connection.close()  # this thread's database connection

    def _refused(self, calling: str, host: str, reason: str) -> None:
        try:
            self.config.on_refused(calling, host, reason)
        except Exception:
            log.exception("refusal of %s not recorded", host)


def _tls_handshake(conn: socket.socket, context: ssl.SSLContext,
                   timeout: float) -> ssl.SSLSocket:
    """The server side of the TLS handshake, bounded in time (a caller that connects and
    says nothing must not hold the thread)."""
    conn.settimeout(timeout)
    tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
    tls.do_handshake()
    return tls


def _quietly(func: Callable, *args) -> None:
    try:
        func(*args)
    except OSError:
        pass
