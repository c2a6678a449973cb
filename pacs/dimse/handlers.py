"""DIMSE services: translate a message, authorize, call one service, map errors to statuses."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode

from core import access, audit, connections
from core.errors import NotAuthorized, ServiceError
from dicomnet import status, wire
from dicomnet.engine import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    Association,
    Context,
)
from dicomnet.registry import Service
from pacs import query
from pacs.dicomfile import part10_prefix
from pacs.dimse.identifiers import AnswerEncoder
from pacs.dimse.policy import AePolicy, Permissions, Refusal
from pacs.services.ingest import store_instance
from pacs.storage import get_storage

log = logging.getLogger("pacs.dimse")

FIND_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
}
MOVE_MODELS = {"1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"}
GET_MODELS = {"1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"}


# C-FIND extended negotiation (PS3.4 C.5.1.1.1): byte 0 relational queries, 1 combined
# date-time matching, 2 fuzzy semantic matching of person names, 3 timezone adjustment.
FIND_EXTENDED_SUPPORT = bytes([0, 1, 1, 0])
COMBINED_DATETIME_BYTE = 1
FUZZY_NAMES_BYTE = 2


def _authorize(policy: AePolicy, calling: str, permission: str, action: str) -> None:
    """Per-request permission from the AE table; refused with 0x0124 by the caller's mapping."""
    if not getattr(policy.permissions(calling), permission):
        raise NotAuthorized(f"{calling} may not {action}")


def decode_identifier(assoc: Association, message: wire.Message) -> Dataset:
    """The request's data set as pydicom reads it in the context's transfer syntax."""
    if message.dataset is None:
        raise query.InvalidQuery("the request has no identifier")
    syntax = UID(assoc.context(message).transfer_syntax)
    try:
        ds = decode(io.BytesIO(message.dataset), syntax.is_implicit_VR,
                    syntax.is_little_endian, syntax.is_deflated)
        ds.keys()  # pydicom parses lazily: touch the elements now
        for _element in ds:
            pass
    except Exception as exc:  # pydicom raises many types on garbage
        raise query.InvalidQuery(f"cannot decode the identifier: {type(exc).__name__}") from exc
    return ds


def encode_in(context: Context, ds: Dataset) -> bytes:
    """``ds`` encoded in the transfer syntax of a presentation context."""
    syntax = UID(context.transfer_syntax)
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if data is None:
        raise ServiceError("cannot encode the data set")
    return data


def identifier_summary(identifier: Dataset | None) -> str:
    """The matching keys of a request (its top-level attributes with a value), for the audit
    trail: what was asked for, in a line."""
    if identifier is None:
        return "(no identifier)"
    parts = []
    for element in identifier:
        if element.keyword in ("SpecificCharacterSet", "QueryRetrieveLevel") or element.VR == "SQ":
            continue
        value = element.value
        if value not in (None, "", b"") and not (isinstance(value, bytes)):
            parts.append(f"{element.keyword or element.tag}={value}")
    level = str(identifier.get("QueryRetrieveLevel", "") or "")
    return f"{level} {', '.join(parts) or '(all)'}".strip()[:1000]


def record_access(assoc: Association, what: str, identifier: Dataset | None,
                  result: str, outcome: str = "success") -> None:
    """One audit row per C-FIND, C-MOVE or C-GET request: who (calling AE and address),
    what keys, and how it ended. A failure to write it never fails the request."""
    try:
        access.record(actor=assoc.calling_aet, source=assoc.peer_host, action=what,
                      outcome=outcome, detail=f"{identifier_summary(identifier)}: {result}")
    except Exception:
        log.exception("audit row for %s from %s not written", what, assoc.calling_aet)


def handle_echo(assoc: Association, message: wire.Message) -> None:
    assoc.respond(message, status.SUCCESS)


def make_store_service(policy: AePolicy) -> Service:
    def handle_store(assoc: Association, message: wire.Message) -> None:
        calling = assoc.calling_aet
        connections.before_request()
        sop_class = message.text(wire.AFFECTED_SOP_CLASS_UID)
        sop_instance = message.text(wire.AFFECTED_SOP_INSTANCE_UID)
        context = assoc.context(message)
        try:
            _authorize(policy, calling, "may_store", "store")
            if message.dataset is None:
                raise ServiceError("C-STORE request without a data set")
            if sop_class != context.abstract_syntax:
                assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED,
                              comment="SOP class differs from the presentation context's")
                return
            prefix = part10_prefix(
                sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                transfer_syntax_uid=context.transfer_syntax, source_aet=calling,
                implementation_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
            origin = f"dimse:{calling}@{assoc.peer_host}"
            if isinstance(message.dataset, wire.Spooled):  # too large for memory
                spooled = message.dataset
                try:
                    storage = get_storage()
                    written = storage.write_from(prefix, spooled.file, spooled.size)
                finally:
                    spooled.close()
                result = store_instance(written=written, storage=storage, received_from=origin,
                                        expected_sop_class_uid=sop_class,
                                        expected_sop_instance_uid=sop_instance)
            else:
                result = store_instance(
                    data=prefix + message.dataset, received_from=origin,
                    expected_sop_class_uid=sop_class, expected_sop_instance_uid=sop_instance)
        except Exception as exc:  # never let one request take the association down
            _count(assoc, "refused", "")
            status.answer_failure(assoc, message, exc, "C-STORE")
            return
        _count(assoc, "stored", result.study_instance_uid)
        if result.warning:  # PS3.4 B.2.3 warning class; the comment says what happened
            assoc.respond(message, status.STORE_WARNING, comment=result.warning[:64])
            return
        assoc.respond(message, status.SUCCESS)

    return handle_store


def _count(assoc: Association, what: str, study_uid: str) -> None:
    counts = assoc.tally.setdefault(what, {})
    counts[study_uid] = counts.get(study_uid, 0) + 1


def association_finished(assoc: Association) -> None:
    """The audit trail's rows for what an association stored: one per study (DICOM's
    "instances transferred" event, PS3.15 A.5.3), not one per instance, which would cost
    each store a row; and the refused ones, counted."""
    stored, refused = assoc.tally.get("stored", {}), sum(assoc.tally.get("refused", {}).values())
    if not stored and not refused:
        return
    try:
        for study_uid, count in stored.items():
            audit.record(category="store", action="instances stored", actor=assoc.calling_aet,
                         source=assoc.peer_host,
                         detail=f"{count} instance(s) of study {study_uid} over DICOM")
        if refused:
            audit.record(category="store", action="instances refused", outcome="failure",
                         actor=assoc.calling_aet, source=assoc.peer_host,
                         detail=f"{refused} C-STORE request(s) refused on one association")
    except Exception:  # the stores are done; a lost summary row must not fail anything
        log.exception("store summary of an association from %s not written",
                      assoc.calling_aet)


# (assoc, message, identifier, permissions) -> (level, matching rows, answer charset)
FindSearch = Callable[[Association, wire.Message, Dataset, Permissions],
                      tuple[query.Level, QuerySet, str]]


def make_find_service(policy: AePolicy, *, models: set[str] = FIND_MODELS,
                      permission: str = "may_query", search: FindSearch | None = None,
                      what: str = "C-FIND") -> Service:
    """A C-FIND SCP over the shared query engine: Query/Retrieve (PS3.4 C.4.1) by default,
    the Modality Worklist (K.4) with the worklist's ``search``. ``what``: its name in the audit
    trail."""
    # Query/Retrieve answers name where to retrieve from (PS3.4 C.4.1.1.3.2); MWL and UPS not
    retrieve_aet = settings.DIMSE_AET if search is None else ""
    search = search or _qr_search

    def handle_find(assoc: Association, message: wire.Message) -> None:
        if assoc.context(message).abstract_syntax not in models:
            assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED,
                          comment="C-FIND is not supported on this SOP class")
            return
        calling = assoc.calling_aet
        connections.before_request()
        identifier = None
        try:
            _authorize(policy, calling, permission, "query")
            identifier = decode_identifier(assoc, message)
            level, qs, charset = search(assoc, message, identifier, policy.permissions(calling))
            encoder = AnswerEncoder(level, identifier, charset,
                                    assoc.context(message).transfer_syntax,
                                    retrieve_aet=retrieve_aet)
            matches = query.find(level, qs, identifier, encoder.columns,
                                 fuzzy=assoc.extended_flag(message, FUZZY_NAMES_BYTE),
                                 with_metadata=encoder.needs_metadata)
            sent = assoc.send_pending(message, map(encoder.encode, matches))
            if sent < 0:
                assoc.respond(message, status.CANCEL)
                record_access(assoc, what, identifier, f"cancelled after {-sent - 1}")
                return
        except Exception as exc:
            outcome = status.answer_failure(assoc, message, exc, "C-FIND",
                                            crash_status=status.UNABLE_TO_PROCESS)
            detail = str(exc) if outcome == "refused" else type(exc).__name__
            record_access(assoc, what, identifier, detail, outcome)
            return
        assoc.respond(message, status.SUCCESS)
        record_access(assoc, what, identifier, f"{sent} match(es)")

    return handle_find


def _qr_search(assoc: Association, message: wire.Message, identifier: Dataset,
               permissions: Permissions) -> tuple[query.Level, QuerySet, str]:
    level_name = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    level, qs = query.search(level_name, identifier,
                             combine_datetime=assoc.extended_flag(message, COMBINED_DATETIME_BYTE),
                             fuzzy=assoc.extended_flag(message, FUZZY_NAMES_BYTE))
    return level, qs, query.answer_charset(query.charset_of(identifier))


def make_dataset_filter(policy: AePolicy
                        ) -> Callable[[Association, dict[int, object]], bool]:
    """Whether to keep a message's data set as it arrives: not a C-STORE's from an AE that
    may not store (it is read, dropped and refused with 0x0124), so a caller without the
    right cannot make us hold its bytes."""

    def keep(assoc: Association, command: dict[int, object]) -> bool:
        if command.get(wire.COMMAND_FIELD) != wire.C_STORE_RQ:
            return True
        return policy.permissions(assoc.calling_aet).may_store

    return keep


def make_admission(policy: AePolicy, our_aet: str
                   ) -> Callable[[str, str, str], Refusal | None]:
    def admit(calling: str, called: str, host: str) -> Refusal | None:
        return policy.refusal(calling, called, host, our_aet)

    return admit


def record_refusal(calling: str, host: str, reason: str) -> None:
    log.warning("association from %s@%s refused: %s", calling, host, reason)
    try:
        audit.record(category="association", action="A-ASSOCIATE", outcome="refused",
                     actor=calling, source=host, detail=reason)
    finally:
        connection.close()
