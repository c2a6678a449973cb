"""Storage Commitment Push Model, SCP side (PS3.4 J): a modality asks whether we have safely
stored a list of instances (N-ACTION), and we answer with an N-EVENT-REPORT on an association
we open to it (its address from the AE table), as Orthanc does.

The request is kept as a row, so the answer outlives a restart and a modality that is down:
the report goes through ``courier`` (core.delivery), one sender per AE with backoff. What is
committed is decided when the report is sent: an instance is committed when its row is in the
index with that SOP class and its file is in storage.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from pydicom.dataset import Dataset

from core import audit, delivery
from core.errors import ServiceError
from core.retry import MAX_ATTEMPTS, retry_delay
from pacs.dicomfile import UID_RE
from pacs.models import CommitmentRequest, Instance
from pacs.storage import get_storage

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model SOP Class
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance
REQUEST_ACTION = 1  # Action Type ID: Request Storage Commitment
ALL_COMMITTED, FAILURES_EXIST = 1, 2  # Event Type IDs of the report

# Failure Reasons (PS3.4 J.3.2.1.1.2 / PS3.7 C)
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


class InvalidRequest(ServiceError):
    """The N-ACTION's information is missing something or wrong (0x0120 missing attribute,
    0x0121 missing attribute value, 0x0106 invalid attribute value)."""

    def __init__(self, message: str, status: int = 0x0120) -> None:
        super().__init__(message)
        self.dimse_status = status


def request(ae_title: str, ds: Dataset) -> CommitmentRequest:
    """Record a Storage Commitment request (the N-ACTION's Action Information) and have its
    report sent once this commits. Raises InvalidRequest."""
    transaction_uid = str(ds.get("TransactionUID", "") or "").strip()
    if not transaction_uid:
        raise InvalidRequest("Transaction UID (0008,1195) is missing")
    if not UID_RE.match(transaction_uid) or len(transaction_uid) > 64:
        raise InvalidRequest("Transaction UID (0008,1195) is not a UID", 0x0106)
    items = ds.get("ReferencedSOPSequence") or []
    if not items:
        raise InvalidRequest("Referenced SOP Sequence (0008,1199) is missing or empty")
    references = []
    for n, item in enumerate(items, 1):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise InvalidRequest(f"item {n} of the Referenced SOP Sequence lacks the SOP "
                                 "Class or Instance UID", 0x0121)
        references.append([sop_class, sop_instance])
    with transaction.atomic():
        row = CommitmentRequest.objects.create(
            ae_title=ae_title, transaction_uid=transaction_uid, references=references)
        transaction.on_commit(lambda: courier.wake(ae_title))
    return row


def report(row: CommitmentRequest) -> tuple[int, Dataset]:
    """The Event Type ID and Event Information of ``row``'s report, from the index now."""
    stored = {uid: (sop_class, key) for uid, sop_class, key in Instance.objects.filter(
        sop_instance_uid__in=[uid for _, uid in row.references]).values_list(
        "sop_instance_uid", "sop_class_uid", "file_key")}
    storage = get_storage()
    committed, failed = [], []
    for sop_class, uid in row.references:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
        found = stored.get(uid)
        if found is None or not storage.exists(found[1]):
            item.FailureReason = NO_SUCH_OBJECT_INSTANCE
            failed.append(item)
        elif found[0] != sop_class:
            item.FailureReason = CLASS_INSTANCE_CONFLICT
            failed.append(item)
        else:
            item.RetrieveAETitle = settings.DIMSE_AET
            committed.append(item)
    info = Dataset()
    info.TransactionUID = row.transaction_uid
    if committed:
        info.ReferencedSOPSequence = committed
    if failed:
        info.FailedSOPSequence = failed
    return (FAILURES_EXIST if failed else ALL_COMMITTED), info


def send_reports(ae_title: str) -> float | None:
    """Send the AE's pending reports (oldest first) as N-EVENT-REPORTs on one association.
    The seconds before trying again, or None when nothing is left to try (the courier's
    ``send``, see core.delivery)."""
    from pynetdicom.presentation import build_context, build_role

    from dicomnet.scu import Peer, PeerUnavailable, associate
    from pacs.models import ApplicationEntity

    rows = list(CommitmentRequest.objects.filter(ae_title=ae_title, delivered_at__isnull=True)
                .exclude(attempts__gte=MAX_ATTEMPTS)[:100])
    if not rows:
        return None
    peer = ApplicationEntity.objects.filter(ae_title=ae_title).first()
    if peer is None:
        return _failed(rows, f"{ae_title} is not in the AE table")
    try:  # we are the SCP of the SOP class on an association we request (PS3.4 J.3.3)
        assoc = associate(Peer.of(peer), settings.DIMSE_AET,
                          [build_context(STORAGE_COMMITMENT)], 15,
                          ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)])
    except PeerUnavailable as exc:
        return _failed(rows, str(exc))
    try:
        for row in rows:
            event_type, info = report(row)
            status, _ = assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT,
                                                  WELL_KNOWN_INSTANCE)
            if status is None or "Status" not in status or status.Status != 0x0000:
                return _failed([row], f"answered 0x{status.Status:04X}"
                               if status is not None and "Status" in status else "no response")
            _delivered(row, info)
    finally:
        if assoc.is_established:
            assoc.release()
    return 0 if len(rows) == 100 else None


courier = delivery.courier("stgcmt", send_reports, task="pacs.send_commitment_reports")


def _delivered(row: CommitmentRequest, info: Dataset) -> None:
    committed = len(info.get("ReferencedSOPSequence") or [])
    failed = len(info.get("FailedSOPSequence") or [])
    CommitmentRequest.objects.filter(pk=row.pk).update(
        delivered_at=timezone.now(), committed=committed, failed=failed, last_error="")
    audit.record(category="store", action="storage commitment", actor=row.ae_title,
                 outcome="success" if not failed else "failure",
                 detail=f"transaction {row.transaction_uid}: {committed} committed, "
                        f"{failed} failed")


def _failed(rows: list[CommitmentRequest], error: str) -> float | None:
    """Count the attempt; the delay before the next, or None once the oldest has used its
    attempts (then it waits for an admin's retry or the AE's next request)."""
    CommitmentRequest.objects.filter(pk__in=[r.pk for r in rows]).update(
        attempts=F("attempts") + 1, last_error=error[:255])
    log.warning("storage commitment reports for %s not delivered: %s", rows[0].ae_title, error)
    return retry_delay(rows[0].attempts + 1)


def resume_pending(**kwargs) -> list[str]:
    """Signal receiver (core.signals.deliveries_due): send the reports still pending."""
    names = sorted(set(CommitmentRequest.objects.filter(delivered_at__isnull=True)
                       .values_list("ae_title", flat=True)))
    for name in names:
        courier.wake(name)
    return names
