"""Clients that misbehave on purpose, for the tests of the listeners' bounds: raw sockets that
connect and say nothing, trickle bytes, or send DIMSE data that never ends. The A-ASSOCIATE-RQ
is encoded by pynetdicom's PDU classes."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

from dicomnet import wire

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def associate_rq(calling: str, called: str = "PORTAL", padding: int = 0) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing CT storage (context 1); ``padding`` bytes of an unknown
    user information sub-item appended (PS3.8 lets an acceptor ignore unknown items)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    context = build_context(CT, [EXPLICIT])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4"
    primitive.user_information = [length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    data = pdu.encode()
    if not padding:
        return data
    # unknown variable items (PS3.8 9.3.2 lets an acceptor ignore them), 64 KB each
    item = b"\x99\x00" + struct.pack(">H", 0xFFF0) + bytes(0xFFF0)
    body = data[6:] + item * max(1, padding // len(item))
    return bytes([0x01, 0x00]) + struct.pack(">I", len(body)) + body


def connect(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(address)
    return sock


def associated(address: tuple[str, int], calling: str, source: str = "127.0.0.1"
               ) -> socket.socket:
    """A connection with an accepted association (raises if it is not accepted)."""
    sock = connect(address, source)
    sock.sendall(associate_rq(calling))
    pdu_type, _ = wire.PduSocket(sock).read_pdu()
    if pdu_type != wire.A_ASSOCIATE_AC:
        raise AssertionError(f"association not accepted: PDU type {pdu_type}")
    return sock


def c_store_command(sop_instance: str = "1.2.3.4.5.6.7", message_id: int = 1) -> bytes:
    return wire.encode_command({
        wire.AFFECTED_SOP_CLASS_UID: CT, wire.COMMAND_FIELD: wire.C_STORE_RQ,
        wire.MESSAGE_ID: message_id, wire.PRIORITY: 0,
        wire.COMMAND_DATA_SET_TYPE: wire.DATASET_PRESENT,
        wire.AFFECTED_SOP_INSTANCE_UID: sop_instance})


def pdv(payload: bytes, control: int) -> bytes:
    length = len(payload) + 2
    return struct.pack(">BBIIBB", wire.P_DATA_TF, 0, length + 4, length, 1, control) + payload


def endless_dataset(sock: socket.socket, total: int, chunk: int = 1 << 20) -> int:
    """Send a C-STORE command, then data set fragments that never say 'last' until ``total``
    bytes went or the peer stopped reading; the bytes sent."""
    sock.sendall(pdv(c_store_command(), 0x03))
    piece = pdv(os.urandom(chunk), 0x00)
    sent = 0
    try:
        while sent < total:
            sock.sendall(piece)
            sent += chunk
    except OSError:  # the portal closed the association
        pass
    return sent


def rss_mb(pid: int | None = None) -> float:
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def threads(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or os.getpid()}/task"))


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Does the peer close (or reset) the connection within ``seconds``?"""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False
