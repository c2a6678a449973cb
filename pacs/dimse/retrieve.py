"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): select the instances, run the sub-operations,
report counts in pending responses and the outcome in one final response."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydicom.dataset import Dataset

from core import connections
from core.errors import ServiceError
from dicomnet import status, wire
from dicomnet.engine import Association, Context
from dicomnet.scu import Peer, PeerUnavailable, Progress, StoreSession
from dicomnet.transcode import CannotConvert, decompressed, sending_syntax
from pacs.dicomfile import dataset_offset
from pacs.dimse.handlers import (
    GET_MODELS,
    MOVE_MODELS,
    Service,
    _authorize,
    decode_identifier,
    encode_in,
    record_access,
)
from pacs.dimse.policy import AePolicy
from pacs.models import ApplicationEntity
from pacs.selectors import RetrievalItem, retrieval_items
from pacs.services.sending import send_stored
from pacs.storage import get_storage

log = logging.getLogger("pacs.dimse")


def _counts(progress: Progress, *, final: bool) -> dict[int, object]:
    """Sub-operation counts for a response; Remaining only while pending or cancelled."""
    items: dict[int, object] = {
        wire.COMPLETED_SUB_OPERATIONS: progress.completed,
        wire.FAILED_SUB_OPERATIONS: progress.failed,
        wire.WARNING_SUB_OPERATIONS: progress.warning,
    }
    if not final:
        items[wire.REMAINING_SUB_OPERATIONS] = progress.remaining or 0
    return items


def _select(policy: AePolicy, assoc: Association, message: wire.Message,
            asked: list[Dataset]) -> list[RetrievalItem]:
    """The instances asked for; the identifier is appended to ``asked`` (for the audit trail)
    once decoded."""
    connections.before_request()
    _authorize(policy, assoc.calling_aet, "may_retrieve", "retrieve")
    identifier = decode_identifier(assoc, message)
    asked.append(identifier)
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    return retrieval_items(level, identifier)


def _run(assoc: Association, message: wire.Message, items: list[RetrievalItem],
         send: Callable[[RetrievalItem], int]) -> Progress:
    """Send each item, answering pending after each; the final response comes last. The
    counts, for the audit trail."""
    counts = Progress(remaining=len(items))
    for index, item in enumerate(items):
        if assoc.cancel_requested(message):
            _final(assoc, message, counts, status.CANCEL, cancelled=True)
            return counts
        try:
            outcome = send(item)
        except PeerUnavailable as exc:
            log.warning("retrieve for %s stopped: %s", assoc.calling_aet, exc)
            for rest in items[index:]:
                counts.record(rest.sop_instance_uid, status.UNABLE_TO_PROCESS)
            break
        except (wire.ProtocolError, wire.PeerClosed, ConnectionError, TimeoutError):
            raise  # the requestor's association itself failed
        except Exception as exc:  # this instance only: its file unreadable, say
            log.warning("retrieve for %s: %s not sent: %r", assoc.calling_aet,
                        item.sop_instance_uid, exc)
            outcome = status.UNABLE_TO_PROCESS
        counts.record(item.sop_instance_uid, outcome)
        if counts.remaining:
            assoc.respond(message, status.PENDING, extra=_counts(counts, final=False))
    if counts.failed and not (counts.completed or counts.warning):
        _final(assoc, message, counts, status.SUB_OPERATIONS_FAILED)
    elif counts.failed or counts.warning:
        _final(assoc, message, counts, status.SUB_OPERATIONS_WARNING)
    else:
        _final(assoc, message, counts, status.SUCCESS)
    return counts


def _sent(counts: Progress, destination: str = "") -> str:
    to = f" to {destination}" if destination else ""
    return (f"{counts.completed} sent{to}, {counts.failed} failed, {counts.warning} warning"
            + (f", {counts.remaining} not sent" if counts.remaining else ""))


def _final(assoc: Association, message: wire.Message, counts: Progress, final: int,
           *, cancelled: bool = False) -> None:
    dataset = None
    if counts.failed_uids:  # PS3.4 C.4.2.1.4.2: Failed SOP Instance UID List
        ds = Dataset()
        ds.FailedSOPInstanceUIDList = counts.failed_uids
        dataset = encode_in(assoc.context(message), ds)
    assoc.respond(message, final, dataset=dataset, extra=_counts(counts, final=not cancelled))


def _refuse(assoc: Association, message: wire.Message, exc: Exception) -> None:
    status.answer_failure(assoc, message, exc, "retrieve", crash_status=status.UNABLE_TO_PROCESS)


def make_move_service(policy: AePolicy, ae_title: str) -> Service:
    def handle_move(assoc: Association, message: wire.Message) -> None:
        if assoc.context(message).abstract_syntax not in MOVE_MODELS:
            assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED, comment="not a C-MOVE model")
            return
        destination = message.text(wire.MOVE_DESTINATION).strip()
        asked: list[Dataset] = []
        try:
            items = _select(policy, assoc, message, asked)
            peer = _destination(destination)
        except Exception as exc:
            _refuse(assoc, message, exc)
            record_access(assoc, "C-MOVE", asked[0] if asked else None,
                          f"to {destination}: {exc}", "refused")
            return
        pairs = {(item.sop_class_uid, item.transfer_syntax_uid) for item in items}
        if not items:
            _final(assoc, message, Progress(remaining=0), status.SUCCESS)
            record_access(assoc, "C-MOVE", asked[0], f"nothing to send to {destination}")
            return
        try:
            with StoreSession(peer, calling_aet=ae_title, pairs=pairs,
                              move_originator=(assoc.calling_aet, message.message_id)) as session:
                counts = _run(assoc, message, items, lambda item: send_stored(
                    session, item.file_key, item.sop_class_uid, item.transfer_syntax_uid))
        except PeerUnavailable as exc:  # could not associate at all
            assoc.respond(message, status.SUB_OPERATIONS_FAILED, comment=str(exc))
            record_access(assoc, "C-MOVE", asked[0], f"to {destination}: {exc}", "failure")
            return
        record_access(assoc, "C-MOVE", asked[0], _sent(counts, destination))

    return handle_move


def _destination(ae_title: str) -> Peer:
    ae = ApplicationEntity.objects.filter(ae_title=ae_title, is_move_destination=True).first()
    if ae is None:
        raise MoveDestinationUnknown(f"move destination {ae_title!r} is not in the AE table")
    return Peer.of(ae)


class MoveDestinationUnknown(ServiceError):
    dimse_status = status.MOVE_DESTINATION_UNKNOWN


def make_get_service(policy: AePolicy) -> Service:
    def handle_get(assoc: Association, message: wire.Message) -> None:
        if assoc.context(message).abstract_syntax not in GET_MODELS:
            assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED, comment="not a C-GET model")
            return
        asked: list[Dataset] = []
        try:
            items = _select(policy, assoc, message, asked)
        except Exception as exc:
            _refuse(assoc, message, exc)
            record_access(assoc, "C-GET", asked[0] if asked else None, str(exc), "refused")
            return
        counts = _run(assoc, message, items,
                      lambda item: _store_on_association(assoc, message, item))
        record_access(assoc, "C-GET", asked[0], _sent(counts))

    return handle_get


def _store_on_association(assoc: Association, message: wire.Message,
                          item: RetrievalItem) -> int:
    """C-GET sub-operation: C-STORE on the requestor's own association (PS3.4 C.4.3.3)."""
    context, convert = _context_for(assoc, item)
    if context is None:
        return status.SUB_OPERATIONS_FAILED  # the requestor offered no context for it
    storage = get_storage()
    try:
        if convert:
            with storage.local_copy(item.file_key) as path:
                body = encode_in(context, decompressed(path))
        else:
            with storage.open(item.file_key) as file:
                data = file.read()
            body = data[dataset_offset(data):]
    except CannotConvert as exc:
        log.warning("cannot send %s to %s uncompressed: %s", item.sop_instance_uid,
                    assoc.calling_aet, exc)
        return status.SUB_OPERATIONS_FAILED
    except Exception as exc:  # its file unreadable: this sub-operation fails, not the rest
        log.warning("cannot read the file of %s: %s", item.sop_instance_uid, exc)
        return status.SUB_OPERATIONS_FAILED
    response = assoc.request(context, {
        wire.AFFECTED_SOP_CLASS_UID: item.sop_class_uid,
        wire.COMMAND_FIELD: wire.C_STORE_RQ,
        wire.PRIORITY: 0,
        wire.AFFECTED_SOP_INSTANCE_UID: item.sop_instance_uid,
    }, body, cancel_of=message.message_id)
    return int(response.command.get(wire.STATUS, status.UNABLE_TO_PROCESS))  # type: ignore[arg-type]


def _context_for(assoc: Association, item: RetrievalItem) -> tuple[Context | None, bool]:
    candidates = {cx.transfer_syntax: cx for cx in assoc.contexts.values()
                  if cx.abstract_syntax == item.sop_class_uid and cx.as_scu}
    syntax, convert = sending_syntax(item.transfer_syntax_uid, candidates)
    return (None, False) if syntax is None else (candidates[syntax], convert)
