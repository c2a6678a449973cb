"""DIMSE event handlers: translate the wire format, call one service, map errors to statuses."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import close_old_connections, connection
from pydicom.dataset import Dataset
from pynetdicom import evt

from pacs import query
from pacs.dicomfile import is_multi_value
from pacs.dimse.policy import AePolicy
from pacs.errors import NotAuthorized, PacsError
from pacs.services.ingest import store_instance
from portal import audit

log = logging.getLogger("pacs.dimse")

# Status codes used here (PS3.4 B.2.3, C.4.1.1.4; PS3.7 C).
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_UNABLE_TO_PROCESS = 0xC000


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]  # LO: 64 characters
    return ds


def _peer(event: evt.Event) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


def _authorize(policy: AePolicy, calling: str, permission: str, action: str) -> None:
    """Per-request permission from the AE table; refused with 0x0124 by the caller's mapping."""
    if not getattr(policy.permissions(calling), permission):
        raise NotAuthorized(f"{calling} may not {action}")


def handle_echo(event: evt.Event) -> int:
    return STATUS_SUCCESS


def make_store_handler(policy: AePolicy):
    def handle_store(event: evt.Event) -> int | Dataset:
        calling, host = _peer(event)
        close_old_connections()
        try:
            _authorize(policy, calling, "may_store", "store")
            request = event.request
            store_instance(
                data=event.encoded_dataset(include_meta=True),
                received_from=f"dimse:{calling}@{host}",
                expected_sop_class_uid=str(request.AffectedSOPClassUID),
                expected_sop_instance_uid=str(request.AffectedSOPInstanceUID),
            )
        except PacsError as exc:
            log.warning("C-STORE from %s refused: %s", calling, exc)
            return _failure(exc.dimse_status, str(exc))
        except Exception as exc:  # never let one request take the association down
            log.exception("C-STORE from %s failed", calling)
            return _failure(STATUS_PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}")
        return STATUS_SUCCESS

    return handle_store


def make_rejected_handler(policy: AePolicy):
    def handle_rejected(event: evt.Event) -> None:
        calling, host = _peer(event)
        known = policy.permissions(calling).known or settings.DIMSE_ALLOW_UNKNOWN_AE
        reason = "association limit reached" if known else "calling AE title not in the AE table"
        log.warning("association from %s@%s refused: %s", calling, host, reason)
        try:
            audit.record(category="association", action="A-ASSOCIATE", outcome="refused",
                         actor=calling, source=host, detail=reason)
        finally:
            connection.close()

    return handle_rejected


def handle_conn_close(event: evt.Event) -> None:
    # Association threads are short-lived: give their database connection back.
    connection.close()


def make_find_handler(policy: AePolicy):
    """Query/Retrieve C-FIND (Patient Root and Study Root): PS3.4 C.4.1."""

    def handle_find(event: evt.Event):
        calling, _host = _peer(event)
        close_old_connections()
        try:
            _authorize(policy, calling, "may_query", "query")
            identifier = event.identifier
            level_name = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
            charset = query.answer_charset(_charset(identifier))
            level, qs = query.search(level_name, identifier)
            for answer in query.answers(level, qs, identifier, charset=charset):
                if event.is_cancelled:
                    yield STATUS_CANCEL, None
                    return
                yield STATUS_PENDING, answer
        except PacsError as exc:
            log.warning("C-FIND from %s refused: %s", calling, exc)
            yield _failure(exc.dimse_status, str(exc)), None
            return
        except Exception as exc:
            log.exception("C-FIND from %s failed", calling)
            comment = f"unable to process: {type(exc).__name__}"
            yield _failure(STATUS_UNABLE_TO_PROCESS, comment), None
            return
        yield STATUS_SUCCESS, None

    return handle_find


def _charset(identifier: Dataset) -> str:
    value = identifier.get("SpecificCharacterSet", "")
    if is_multi_value(value):
        value = value[-1] if value else ""
    return str(value or "").strip()
