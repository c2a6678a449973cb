"""DICOM upper layer wire format (PS3.8 9.3) and DIMSE command sets (PS3.7 E).

Why not pynetdicom's DUL: its reactors poll with 1 ms sleeps and push every PDU through an
event queue and a state machine, which caps one association at ~150 C-STOREs/s on the CI
machine before any work is done (docs/benchmarks.md). Our acceptor reads PDUs with blocking
socket calls in one thread per association. This module frames PDUs and encodes the small
group-0000 command sets; dicomnet.acse reads and answers the A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import socket
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP = 0x0100, 0x8100
N_GET_RQ, N_GET_RSP = 0x0110, 0x8110
N_SET_RQ, N_SET_RSP = 0x0120, 0x8120
N_ACTION_RQ, N_ACTION_RSP = 0x0130, 0x8130
N_CREATE_RQ, N_CREATE_RSP = 0x0140, 0x8140
N_DELETE_RQ, N_DELETE_RSP = 0x0150, 0x8150
C_CANCEL_RQ = 0x0FFF

NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001

# Command elements (group 0000) and their VRs (PS3.7 E.1-1)
AFFECTED_SOP_CLASS_UID = 0x00000002
REQUESTED_SOP_CLASS_UID = 0x00000003
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
MOVE_DESTINATION = 0x00000600
PRIORITY = 0x00000700
COMMAND_DATA_SET_TYPE = 0x00000800
STATUS = 0x00000900
OFFENDING_ELEMENT = 0x00000901
ERROR_COMMENT = 0x00000902
ERROR_ID = 0x00000903
AFFECTED_SOP_INSTANCE_UID = 0x00001000
REQUESTED_SOP_INSTANCE_UID = 0x00001001
EVENT_TYPE_ID = 0x00001002
ATTRIBUTE_IDENTIFIER_LIST = 0x00001005
ACTION_TYPE_ID = 0x00001008
REMAINING_SUB_OPERATIONS = 0x00001020
COMPLETED_SUB_OPERATIONS = 0x00001021
FAILED_SUB_OPERATIONS = 0x00001022
WARNING_SUB_OPERATIONS = 0x00001023
MOVE_ORIGINATOR_AE_TITLE = 0x00001030
MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031

_US = {COMMAND_FIELD, MESSAGE_ID, MESSAGE_ID_BEING_RESPONDED_TO, PRIORITY, COMMAND_DATA_SET_TYPE,
       STATUS, ERROR_ID, EVENT_TYPE_ID, ACTION_TYPE_ID, REMAINING_SUB_OPERATIONS,
       COMPLETED_SUB_OPERATIONS, FAILED_SUB_OPERATIONS, WARNING_SUB_OPERATIONS,
       MOVE_ORIGINATOR_MESSAGE_ID}
_AE = {MOVE_DESTINATION, MOVE_ORIGINATOR_AE_TITLE}
_LO = {ERROR_COMMENT}
_AT = {OFFENDING_ELEMENT, ATTRIBUTE_IDENTIFIER_LIST}

MAX_PDU_ACCEPTED = 16 * 1024 * 1024  # refuse absurd PDU lengths instead of allocating them


class ProtocolError(Exception):
    """The peer broke the upper layer protocol: we answer with A-ABORT and close."""


class PeerClosed(Exception):
    """The TCP connection ended (possibly in the middle of a PDU)."""


class DatasetTooLarge(ProtocolError):
    """A message's data set grew past the limit: answered with a failure status, then the
    association is aborted; nothing of it is kept."""

    def __init__(self, message: str, context_id: int, command: dict[int, object]) -> None:
        super().__init__(message)
        self.context_id, self.command = context_id, command


@dataclass(frozen=True)
class Limits:
    """What one peer may make us spend on its association (settings.DIMSE_* give them)."""

    idle: float = 60.0  # seconds without the start of a PDU before we give up on the peer
    # a PDU must arrive at this rate at least (bytes/s) once it started (beyond ``idle``)
    min_rate: int = 64 * 1024
    max_dataset: int = 4 << 30  # a C-STORE data set, in bytes
    max_other: int = 16 << 20  # the data set of any other message (identifiers, N-CREATE...)
    spool_above: int = 32 << 20  # C-STORE data sets past this size go to a temporary file
    spool_dir: str | None = None


@dataclass
class Spooled:
    """A data set too large to hold in memory: in an unnamed temporary file (gone when
    closed), read from the start."""

    file: BinaryIO
    size: int

    def close(self) -> None:
        self.file.close()


@dataclass
class Message:
    """One DIMSE message: its command set (tag -> decoded value) and raw dataset bytes (a
    Spooled file for a large C-STORE data set; None when there is none, or when it was not
    kept because the request is refused anyway)."""

    context_id: int
    command: dict[int, object]
    dataset: bytes | Spooled | None = None

    @property
    def command_field(self) -> int:
        return int(self.command.get(COMMAND_FIELD, 0))  # type: ignore[arg-type]

    @property
    def message_id(self) -> int:
        return int(self.command.get(MESSAGE_ID, 0))  # type: ignore[arg-type]

    def text(self, tag: int) -> str:
        return str(self.command.get(tag, "") or "")


class _DatasetBuffer:
    """A message's data set fragments as they arrive: in memory, in a temporary file past
    ``spool_above`` bytes, or only counted when ``keep`` is false (the request will be
    refused: its bytes are read and dropped). Past ``limit`` bytes: DatasetTooLarge."""

    def __init__(self, limit: int, spool_above: int, spool_dir: str | None, keep: bool) -> None:
        self.limit, self.spool_above, self.spool_dir, self.keep = (limit, spool_above,
                                                                   spool_dir, keep)
        self.size = 0
        self.parts: list[bytes] = []
        self.file: BinaryIO | None = None

    def add(self, fragment: bytes, context_id: int, command: dict[int, object]) -> None:
        self.size += len(fragment)
        if self.size > self.limit:
            self.discard()
            raise DatasetTooLarge(f"data set larger than {self.limit} bytes", context_id,
                                  command)
        if not self.keep:
            return
        if self.file is not None:
            self.file.write(fragment)
            return
        self.parts.append(fragment)
        if self.spool_above and self.size > self.spool_above:
            self.file = tempfile.TemporaryFile(dir=self.spool_dir)
            for part in self.parts:
                self.file.write(part)
            self.parts = []

    def value(self) -> bytes | Spooled | None:
        if not self.keep:
            return None
        if self.file is not None:
            self.file.seek(0)
            return Spooled(self.file, self.size)
        return b"".join(self.parts)

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.parts = []


@dataclass
class _Partial:
    command: list[bytes] = field(default_factory=list)
    dataset: _DatasetBuffer | None = None
    context_id: int = 0
    command_done: bool = False
    decoded: dict[int, object] = field(default_factory=dict)


# --- PDU framing ------------------------------------------------------------------------


class PduSocket:
    """Blocking PDU reads and writes on one TCP connection, each read bounded in time: a PDU
    must start within ``limits.idle`` seconds and then arrive at ``limits.min_rate`` at least,
    so a peer that trickles bytes cannot hold the association (and its thread) forever.
    ``keep_dataset(command)``: whether to keep a message's data set at all (a request that
    will be refused is read and dropped, not buffered)."""

    def __init__(self, sock: socket.socket, limits: Limits | None = None,
                 keep_dataset: Callable[[dict[int, object]], bool] | None = None) -> None:
        self.sock = sock
        self.limits = limits or Limits()
        self.keep_dataset = keep_dataset
        self._partial = _Partial()
        self._ready: deque[Message] = deque()

    def _recv_exact(self, size: int, deadline: float) -> bytes:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the peer is too slow")
            self.sock.settimeout(left)
            n = self.sock.recv_into(view[got:], size - got)
            if n == 0:
                raise PeerClosed("connection closed by the peer")
            got += n
        return bytes(buf)

    def read_pdu(self, *, deadline: float | None = None,
                 max_length: int = MAX_PDU_ACCEPTED) -> tuple[int, bytes]:
        """The next PDU, whole by ``deadline`` (monotonic; default: it starts within the idle
        time and arrives at the minimum rate)."""
        started = time.monotonic()
        header = self._recv_exact(6, deadline or started + self.limits.idle)
        pdu_type, length = header[0], struct.unpack(">I", header[2:6])[0]
        if not A_ASSOCIATE_RQ <= pdu_type <= A_ABORT:
            raise ProtocolError(f"unrecognized PDU type 0x{pdu_type:02X}")
        if length > max_length:
            raise ProtocolError(f"PDU length {length} too large")
        if not length:
            return pdu_type, b""
        now = time.monotonic()
        body_deadline = deadline or now + max(self.limits.idle, length / self.limits.min_rate)
        return pdu_type, self._recv_exact(length, body_deadline)

    def send_raw(self, pdu: bytes) -> None:
        self.sock.sendall(pdu)

    def read_message(self) -> Message | int:
        """The next complete DIMSE message, or the type of a non-P-DATA PDU that arrived."""
        while not self._ready:
            pdu_type, body = self.read_pdu()
            if pdu_type != P_DATA_TF:
                return pdu_type
            self._feed(body)
        return self._ready.popleft()

    def has_buffered_message(self) -> bool:
        return bool(self._ready)

    def _feed(self, body: bytes) -> None:
        """Add one P-DATA-TF's PDVs (PS3.8 9.3.5.1, E.2); complete messages go to _ready."""
        pos = 0
        while pos < len(body):
            part = self._partial
            if pos + 6 > len(body):
                raise ProtocolError("truncated PDV item")
            length = struct.unpack_from(">I", body, pos)[0]
            if length < 2 or pos + 4 + length > len(body):
                raise ProtocolError("bad PDV item length")
            context_id, control = body[pos + 4], body[pos + 5]
            fragment = body[pos + 6:pos + 4 + length]
            pos += 4 + length
            if part.context_id and context_id != part.context_id:
                raise ProtocolError("PDV for another presentation context inside a message")
            part.context_id = context_id
            if control & 0x01:  # bit 0 set: command fragment (PS3.8 E.2)
                if part.command_done:
                    raise ProtocolError("command fragment after the command set ended")
                part.command.append(fragment)
                if control & 0x02:
                    part.command_done = True
                    part.decoded = decode_command(b"".join(part.command))
            else:
                if not part.command_done:
                    raise ProtocolError("data set fragment before the command set ended")
                if part.dataset is None:
                    part.dataset = self._buffer_for(part.decoded)
                part.dataset.add(fragment, context_id, part.decoded)
            if part.command_done:
                command = part.decoded
                has_data = command.get(COMMAND_DATA_SET_TYPE, NO_DATASET) != NO_DATASET
                if not has_data or (control & 0x03) == 0x02:  # data set, last fragment
                    dataset = None
                    if has_data:
                        dataset = part.dataset.value() if part.dataset is not None else b""
                    self._ready.append(Message(context_id, command, dataset))
                    self._partial = _Partial()

    def _buffer_for(self, command: dict[int, object]) -> _DatasetBuffer:
        store = command.get(COMMAND_FIELD) == C_STORE_RQ
        keep = self.keep_dataset is None or self.keep_dataset(command)
        limits = self.limits
        return _DatasetBuffer(limits.max_dataset if store else limits.max_other,
                              limits.spool_above if store else 0, limits.spool_dir, keep)

    def close(self) -> None:
        """Drop what a message cut short holds (a spooled file)."""
        if self._partial.dataset is not None:
            self._partial.dataset.discard()
        for message in self._ready:
            if isinstance(message.dataset, Spooled):
                message.dataset.close()

    def send_message(self, context_id: int, command: bytes, dataset: bytes | None,
                     max_pdu: int) -> None:
        """Send a command set (+ data set) as P-DATA-TF PDUs no larger than the peer accepts."""
        self.sock.sendall(message_bytes(context_id, command, dataset, max_pdu))


def message_bytes(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """A DIMSE message as P-DATA-TF PDUs, for sending now or batched with others."""
    # A PDV fits in a PDU of max_pdu bytes after the 4-byte length, id and control byte.
    chunk = max(max_pdu - 6 if max_pdu else 1 << 20, 1024)
    out = _fragments(context_id, command, chunk, command=True)
    if dataset is not None:
        out.extend(_fragments(context_id, dataset, chunk, command=False))
    return b"".join(out)


def _pdv_pdu(context_id: int, control: int, fragment: bytes | memoryview) -> bytes:
    pdv_length = len(fragment) + 2
    return (struct.pack(">BBIIBB", P_DATA_TF, 0, pdv_length + 4, pdv_length, context_id, control)
            + bytes(fragment))


def _fragments(context_id: int, payload: bytes, chunk: int, *, command: bool) -> list[bytes]:
    """PDVs with the message control header: bit 0 command/data, bit 1 last fragment."""
    view = memoryview(payload)
    kind = 0x01 if command else 0x00
    pieces = [view[i:i + chunk] for i in range(0, len(view), chunk)] or [view]
    return [_pdv_pdu(context_id, kind | (0x02 if i == len(pieces) - 1 else 0), piece)
            for i, piece in enumerate(pieces)]


def abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    """A-ABORT (PS3.8 9.3.8): source 0 = service user, 2 = service provider."""
    return struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return struct.pack(">BBIBBBB", A_ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


RELEASE_RP = struct.pack(">BBII", A_RELEASE_RP, 0, 4, 0)


# --- command sets (Implicit VR Little Endian, group 0000 only) --------------------------


def decode_command(data: bytes) -> dict[int, object]:
    out: dict[int, object] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if pos + length > end:
            raise ProtocolError("truncated command set")
        value = data[pos:pos + length]
        pos += length
        tag = (group << 16) | elem
        if group != 0x0000:
            raise ProtocolError("command set element outside group 0000")
        if tag in _US and length == 2:
            out[tag] = struct.unpack("<H", value)[0]
        elif tag in _AT:
            pairs = struct.iter_unpack("<HH", value[:length // 4 * 4])
            out[tag] = [(g << 16) | e for g, e in pairs]
        elif tag == 0x00000000:
            continue
        else:
            out[tag] = value.rstrip(b"\x00 ").decode("ascii", "replace")
    if pos != end:
        raise ProtocolError("trailing bytes in command set")
    return out


def encode_command(items: dict[int, object]) -> bytes:
    body = b"".join(_element(tag, items[tag]) for tag in sorted(items) if items[tag] is not None)
    return _element(0x00000000, len(body), ul=True) + body


def _element(tag: int, value: object, *, ul: bool = False) -> bytes:
    if ul:
        raw = struct.pack("<I", value)
    elif tag in _US:
        raw = struct.pack("<H", int(value))  # type: ignore[call-overload]
    elif tag in _AT:
        raw = b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in value)  # type: ignore[attr-defined]
    else:
        text = str(value).encode("ascii", "replace")
        if tag in _LO:
            text = text[:64]
        if len(text) % 2:
            text += b"\x00" if tag not in _AE and tag not in _LO else b" "
        raw = text
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(raw)) + raw
