"""One inbound HL7 message: store the raw bytes, parse, apply, answer. Never raises: every
message gets an ACK (AA, AE or AR with an ERR segment), even one that does not parse."""

from __future__ import annotations

import logging
from functools import lru_cache

from django.conf import settings
from django.db import close_old_connections, transaction
from hl7apy.core import Segment as ApySegment
from hl7apy.parser import parse_segment

from core import audit, connections, group_commit, statements
from core.addresses import AddressList, split_list
from core.errors import ServiceError
from hl7gw import errors
from hl7gw.ack import build_ack
from hl7gw.er7 import Segment, codec_for, decode, encoding_of, raw_msh_field, split_segments
from hl7gw.inbound.mapping import Outcome, Parsed, apply_adt, apply_order
from hl7gw.models import Message, Sender

log = logging.getLogger("hl7gw")

SUPPORTED_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1")
ADT_EVENTS = {"A01", "A04", "A05", "A08", "A40", "A47"}
ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
MERGE_EVENTS = {"A40", "A47"}
CR = bytes([13])


def split_frame(raw: bytes) -> list[bytes]:
    """The messages of one MLLP frame (a batch, or messages back to back), as raw bytes:
    segments are split on CR (LF tolerated), batch/file header and trailer segments dropped."""
    segments = [s for s in raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
                if s.strip()]
    messages: list[list[bytes]] = []
    wrapped = False
    for segment in segments:
        if segment[:3] in (b"FHS", b"BHS", b"BTS", b"FTS"):
            wrapped = True
            continue
        if segment[:3] == b"MSH" or not messages:
            messages.append([])
        messages[-1].append(segment)
    if len(messages) <= 1 and not wrapped:
        return [raw]  # one message: its bytes exactly as received
    return [b"\r".join(m) + b"\r" for m in messages]


def peer_host(peer: str) -> str:
    """The address part of ``host:port``."""
    return peer.rsplit(":", 1)[0].strip("[]")


def receive_frame(raw: bytes, *, peer: str) -> bytes:
    """The ACK bytes for one frame: one ACK per message; a batch (BHS ... BTS) is answered
    with a batch of ACKs (HL7 v2.5 2.10.3), messages back to back with ACKs back to back."""
    connections.before_request()
    acks = [receive(message, peer=peer) for message in split_frame(raw)]
    body = b"".join(acks)
    head = raw.lstrip()[:3]
    if head in (b"BHS", b"FHS"):
        sep = raw.lstrip()[3:4] or b"|"
        encoding = raw.lstrip()[4:8]
        return (b"BHS" + sep + encoding + CR + body
                + b"BTS" + sep + str(len(acks)).encode() + CR)
    return body


def receive(raw: bytes, *, peer: str, replay_of: Message | None = None) -> bytes:
    try:
        return process(raw, peer=peer, replay_of=replay_of)[0]
    except Exception as exc:  # the log itself could not be written (e.g. the database is down)
        log.exception("HL7 message from %s could not be stored", peer)
        return _unstored_ack(raw, exc)


def _unstored_ack(raw: bytes, exc: Exception) -> bytes:
    """AR (HL7: rejected for reasons unrelated to its content): nothing of the message was
    kept, so the sender must send it again."""
    return build_ack(_raw_msh(raw), "AR", error=errors.INTERNAL_ERROR,
                     text=f"message not stored ({type(exc).__name__}): send it again",
                     location="MSH").encode("latin_1", "replace")


def _raw_msh(raw: bytes) -> Segment | None:
    """The MSH of bytes that may not be a whole message, if it reads."""
    segments = split_segments(raw[:64 * 1024].decode("latin_1"))
    if segments and segments[0].startswith("MSH"):
        try:
            return Segment(segments[0], encoding_of(segments[0]))
        except ValueError:
            pass
    return None


def refuse_frame(raw: bytes, *, peer: str, reason: str) -> bytes:
    """AR for bytes the listener will not process (outside a frame, a frame too large):
    nothing of them is applied; one log row keeps them (as far as they were read) and says
    why."""
    msh = _raw_msh(raw)
    ack = build_ack(msh, "AR", error=errors.INTERNAL_ERROR, text=reason, location="MSH")
    try:
        close_old_connections()
        Message.objects.create(raw=raw, peer=peer[:64], text=raw.decode("latin_1"),
                               status=Message.Status.REJECTED, error=reason, ack=ack,
                               control_id=msh.get(10)[:64] if msh else "")
    except Exception:
        log.exception("refused HL7 bytes from %s could not be logged", peer)
    return ack.encode("latin_1", "replace")


def process(raw: bytes, *, peer: str, replay_of: Message | None = None,
            host: str | None = None) -> tuple[bytes, Message]:
    """(ACK bytes, the logged message).

    The message is processed in a savepoint (an error undoes what it changed, never its log
    row), and its log row (raw bytes, outcome, ACK, links) is written in the same transaction,
    whatever the outcome, so the raw text is committed exactly when the effects are. On
    SQLite, messages arriving together on several connections share one commit
    (``group_commit.write_together``); each is still all or nothing. The ACK goes out only after the
    commit: a message is
    acknowledged once it and everything it did are stored; a crash before that leaves it
    unacknowledged, so the sender sends it again (HL7 original acknowledgment mode), and a
    log that cannot be written at all is answered AR (``receive``)."""
    def job() -> tuple[bytes, Message]:
        message = Message(raw=raw, peer=peer[:64], replay_of=replay_of)
        return _process(message, raw, peer_host(peer) if host is None else host), message

    return group_commit.write_together(job)


def _process(message: Message, raw: bytes, host: str) -> bytes:
    msh = None
    charset = ""
    try:
        with transaction.atomic():
            msh, charset, outcome = _parse_and_apply(message, raw, host)
    except _Failed as failed:
        msh, charset, exc = failed.args
        if exc.code == errors.NOT_AUTHORIZED and exc.reject:
            audit.record(category="hl7", action="message refused", outcome="refused",
                         actor=_sender_name(msh), source=host, detail=exc.text)
        return _answer(message, msh, charset, exc)
    message.status = Message.Status.PROCESSED
    ack = build_ack(msh, "AA", charset=charset, warnings=outcome.warnings)
    _finish(message, ack, outcome)
    return ack.encode(codec_for(charset), "replace")


class _Failed(Exception):
    """(msh, charset, Hl7Error): carries what was known when processing failed out of the
    savepoint."""


def _parse_and_apply(message: Message, raw: bytes, host: str
                     ) -> tuple[Segment, str, Outcome]:
    msh = None
    charset = ""
    try:
        sender = _sender(raw)
        text, charset = decode(raw, sender.default_charset if sender else "")
        segments = split_segments(text)
        if not segments or not segments[0].startswith("MSH"):
            raise errors.Hl7Error(errors.SEGMENT_SEQUENCE, "the message does not start with MSH",
                                  location="MSH", reject=True)
        try:
            enc = encoding_of(segments[0], codec_for(charset))
        except ValueError as exc:
            raise errors.Hl7Error(errors.SEGMENT_SEQUENCE, str(exc), location="MSH",
                                  reject=True) from exc
        msh = Segment(segments[0], enc)
        message.text, message.sender = text, sender
        message.control_id, message.version = msh.get(10)[:64], msh.get(12)[:16]
        message.message_type = "^".join(p for p in (msh.get(9, 1), msh.get(9, 2)) if p)[:32]
        return msh, charset, _apply(message, msh, [Segment(s, enc, for_dicom=True)
                                                    for s in segments], host)
    except errors.Hl7Error as exc:
        raise _Failed(msh, charset, exc) from exc
    except Exception as exc:  # a bug must cost one AE, not the listener
        log.exception("HL7 message %s from %s failed", message.control_id, message.peer)
        raise _Failed(msh, charset, errors.Hl7Error(
            errors.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")) from exc


def _apply(message: Message, msh: Segment, segments: list[Segment], host: str) -> Outcome:
    _admit(message.sender, msh, host)
    version = msh.get(12)
    if version not in SUPPORTED_VERSIONS:
        raise errors.Hl7Error(errors.UNSUPPORTED_VERSION, f"HL7 version {version!r} not "
                              f"supported ({', '.join(SUPPORTED_VERSIONS)})", location="MSH-12",
                              reject=True)
    _check_structure(segments, version)
    kind, trigger = msh.get(9, 1).upper(), msh.get(9, 2).upper()
    actor = f"hl7:{message.sender or msh.get(3)}"
    source = f"HL7 {kind}^{trigger} {msh.get(10)[:64]} from {host}"
    parsed = Parsed(segments)
    if kind == "ADT" and trigger in ADT_EVENTS:
        _may(message.sender, "may_merge_patients" if trigger in MERGE_EVENTS
             else "may_update_patients", f"{kind}^{trigger}")
        return apply_adt(parsed, trigger, actor, source)
    if (kind, trigger) in ORDER_TYPES:
        _may(message.sender, "may_order", f"{kind}^{trigger}")
        return apply_order(parsed, message.sender, actor)
    if kind in ("ADT", "ORM", "OMI"):
        raise errors.Hl7Error(errors.UNSUPPORTED_EVENT, f"{kind}^{trigger} is not supported",
                              location="MSH-9", reject=True)
    raise errors.Hl7Error(errors.UNSUPPORTED_MESSAGE_TYPE, f"message type {kind!r} is not "
                          "supported", location="MSH-9", reject=True)


def _admit(sender: Sender | None, msh: Segment, host: str) -> None:
    """A message is applied only from a registered sender (MSH-3/MSH-4), from one of its
    addresses; PORTAL_HL7_ALLOW_UNKNOWN_SENDER opens the gateway to anyone on purpose."""
    if sender is None:
        if settings.HL7_ALLOW_UNKNOWN_SENDER:
            return
        raise errors.Hl7Error(errors.NOT_AUTHORIZED,
                              f"sender {_sender_name(msh)!r} (MSH-3/MSH-4) is not registered",
                              location="MSH-3", reject=True)
    addresses = AddressList(split_list(sender.addresses))
    if not addresses.matches(host):
        raise errors.Hl7Error(errors.NOT_AUTHORIZED,
                              f"sender {sender} is not accepted from {host}",
                              location="MSH-3", reject=True)


def _may(sender: Sender | None, right: str, what: str) -> None:
    """The sender's right for this kind of message (an unknown sender let in by the setting
    may send everything)."""
    if sender is not None and not getattr(sender, right):
        raise errors.Hl7Error(errors.NOT_AUTHORIZED, f"sender {sender} may not send {what}",
                              location="MSH-9", reject=True)


def _sender_name(msh: Segment | None) -> str:
    if msh is None:
        return ""
    return "/".join(p for p in (msh.get(3), msh.get(4)) if p)[:128]


def _check_structure(segments: list[Segment], version: str) -> None:
    """hl7apy reads the MSH (field types of the message's version; once per header shape) and
    tells which segment names its version knows. Z-segments and unknown segments are ignored
    by the mapping.

    The whole message is not run through hl7apy's parse_message: at ~45 ms per ORM on the CI
    machine it cost more than everything else together (bench/hl7_orders.py); the mapping
    reads the fields it needs and answers AE/AR when required segments or fields are missing.
    """
    problem = _msh_problem(segments[0].text.translate(_DIGITS_TO_ZERO), version)
    if problem:
        raise errors.Hl7Error(errors.SEGMENT_SEQUENCE, f"cannot parse MSH: {problem}"[:200],
                              location="MSH", reject=True)
    unknown = [s.name for s in segments if not s.name.startswith("Z")
               and not _known(s.name, version)]
    if unknown:
        log.info("HL7 %s: segments %s not in version %s: ignored", segments[0].get(10),
                 ",".join(unknown), version)


_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")


@lru_cache(maxsize=1024)
def _msh_problem(shape: str, version: str) -> str:
    """What hl7apy finds wrong with an MSH ('' when nothing), asked once per header shape:
    the header with every digit turned into 0, so one sender's stream of messages (new time
    stamps and control IDs each time) costs one hl7apy parse (~4.6 ms) instead of one each.
    Digits never change how hl7apy splits or checks a segment."""
    try:
        parse_segment(shape, version=version)
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return ""


@lru_cache(maxsize=512)
def _known(name: str, version: str) -> bool:
    try:
        ApySegment(name, version=version)
    except Exception:
        return False
    return True


def _sender(raw: bytes) -> Sender | None:
    if b"MSH" not in raw:
        return None
    app, facility = raw_msh_field(raw, 3), raw_msh_field(raw, 4)
    senders = statements.select(Sender, sending_application=app, active=True, order_by="id")
    return (next((s for s in senders if s.sending_facility == facility), None)
            or next((s for s in senders if not s.sending_facility), None))


def _answer(message: Message, msh: Segment | None, charset: str,
            exc: errors.Hl7Error) -> bytes:
    code = "AR" if exc.reject else "AE"
    message.status = Message.Status.REJECTED if exc.reject else Message.Status.ERROR
    message.error = f"{exc.code}: {exc.text}"
    ack = build_ack(msh, code, error=exc.code, text=exc.text, location=exc.location,
                    charset=charset)
    _finish(message, ack, None)
    return ack.encode(codec_for(charset), "replace")


def _finish(message: Message, ack: str, outcome: Outcome | None) -> None:
    """The log row with its outcome and ACK, and its links (one INSERT each: no index entry
    is written twice)."""
    message.ack = ack
    if not message.text:
        message.text = bytes(message.raw).decode("latin_1")
    statements.insert(message)
    for order in outcome.orders if outcome else ():
        statements.insert_row(Message.orders.through, message_id=message.pk, order_id=order.pk)
    for patient in outcome.patients if outcome else ():
        statements.insert_row(Message.patients.through, message_id=message.pk,
                        patient_id=patient.pk)


def resend_edited(original: Message, text: str, *, actor: str) -> Message:
    """An admin's corrected copy of a logged message (e.g. a missing field filled in),
    processed as a new message linked to the original, with the original sender's rights;
    the original's log entry stays as it came. Audited with both messages' numbers."""
    segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
                if s.strip()]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise ServiceError("The message must start with its MSH segment.")
    text = "\r".join(segments) + "\r"
    declared = raw_msh_field(text.encode("utf_8", "replace"), 18) or (
        original.sender.default_charset if original.sender else "")
    codec = codec_for(declared) if declared else "utf_8"  # as decode() will read it
    try:
        raw = text.encode(codec)
    except UnicodeEncodeError as exc:
        raise ServiceError(f"{text[exc.start:exc.end]!r} cannot be written in the message's "
                           f"character set ({declared}): change MSH-18 or the text.") from exc
    if len(raw) > settings.HL7_MAX_FRAME_BYTES:
        raise ServiceError(f"The message is larger than {settings.HL7_MAX_FRAME_BYTES} bytes.")
    again = process(raw, peer=f"edited by {actor}"[:64], replay_of=original,
                    host=peer_host(original.peer))[1]
    audit.record(category="hl7", action="message edited and resent", actor=actor,
                 detail=f"message {original.pk} edited, processed as message {again.pk}: "
                        f"{again.get_status_display()}")
    return again


def replay(original: Message, *, actor: str) -> Message:
    """Process a logged message again (e.g. after fixing a sender's mapping or the catalog);
    the new attempt is a new log entry pointing back to the original."""
    return process(bytes(original.raw), peer=f"replay by {actor}", replay_of=original,
                   host=peer_host(original.peer))[1]
