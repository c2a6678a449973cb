"""Storage Commitment Push Model SCP against a pynetdicom modality: it stores with DCMTK
storescu, asks for commitment with N-ACTION, and receives the N-EVENT-REPORT on an association
that we open to it (its address from the AE table)."""

from __future__ import annotations

import queue
import subprocess

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StorageCommitmentPushModel

from core.models import AuditEvent
from pacs.models import ApplicationEntity, CommitmentRequest
from tests.peers import start_commitment_listener
from tests.samples import free_port, sample
from tests.waiting import wait_until

pytestmark = pytest.mark.interop

WELL_KNOWN = "1.2.840.10008.1.20.1.1"
CT, MR = dcmread(sample("CT_small.dcm")), dcmread(sample("MR_small.dcm"))


@pytest.fixture
def modality(dimse_listener):
    port = free_port()
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=port,
                                     may_store=True)
    host, scp_port = dimse_listener.address
    proc = subprocess.run(["/usr/bin/storescu", "-aet", "MODALITY", "-aec", "PORTAL", host,
                           str(scp_port), str(sample("CT_small.dcm")),
                           str(sample("MR_small.dcm"))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return dimse_listener, port


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    return item


def _request(listener, info: Dataset, *, action: int = 1, calling: str = "MODALITY",
             instance: str = WELL_KNOWN) -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(*listener.address, ae_title="PORTAL")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, action, StorageCommitmentPushModel, instance)
    finally:
        assoc.release()
    return status.Status


def _info(transaction_uid: str, *refs: Dataset) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = list(refs)
    return ds


def _report(received: queue.Queue, timeout: float = 10):
    return received.get(timeout=timeout)


def test_all_stored_instances_are_committed(modality):
    listener, port = modality
    server, received = start_commitment_listener(port)
    try:
        info = _info("1.2.3.4.100", _ref(CT.SOPClassUID, CT.SOPInstanceUID),
                     _ref(MR.SOPClassUID, MR.SOPInstanceUID))
        assert _request(listener, info) == 0x0000
        calling, event_type, report = _report(received)
    finally:
        server.shutdown()
    assert (calling, event_type) == ("PORTAL", 1)
    assert report.TransactionUID == "1.2.3.4.100"
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [
        CT.SOPInstanceUID, MR.SOPInstanceUID]
    assert all(i.RetrieveAETitle == "PORTAL" for i in report.ReferencedSOPSequence)
    assert "FailedSOPSequence" not in report
    row = CommitmentRequest.objects.get()
    assert (row.committed, row.failed) == (2, 0) and row.delivered_at is not None
    assert AuditEvent.objects.filter(action="storage commitment", actor="MODALITY",
                                     outcome="success").exists()


def test_unknown_instances_and_wrong_classes_are_listed_as_failures(modality):
    listener, port = modality
    server, received = start_commitment_listener(port)
    try:
        info = _info("1.2.3.4.101", _ref(CT.SOPClassUID, CT.SOPInstanceUID),
                     _ref(CT.SOPClassUID, "1.2.3.4.999"),
                     _ref(CT.SOPClassUID, MR.SOPInstanceUID))  # MR stored as MR, not CT
        assert _request(listener, info) == 0x0000
        _calling, event_type, report = _report(received)
    finally:
        server.shutdown()
    assert event_type == 2
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [
        CT.SOPInstanceUID]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] \
        == [("1.2.3.4.999", 0x0112), (MR.SOPInstanceUID, 0x0119)]


def test_the_report_waits_for_a_modality_that_is_down(modality):
    """The modality asks, then goes away; the report is retried (1 s, then 2 s) and arrives
    once the modality listens again."""
    listener, port = modality
    info = _info("1.2.3.4.102", _ref(CT.SOPClassUID, CT.SOPInstanceUID))
    assert _request(listener, info) == 0x0000
    wait_until(CommitmentRequest.objects.filter(attempts__gte=1).exists, timeout=10,
               interval=0.05, what="a first failed attempt")
    server, received = start_commitment_listener(port)
    try:
        _calling, event_type, report = _report(received, timeout=15)
    finally:
        server.shutdown()
    assert event_type == 1 and report.TransactionUID == "1.2.3.4.102"
    assert received.empty()


def test_bad_requests_get_failure_statuses(modality):
    listener, _port = modality
    ref = _ref(CT.SOPClassUID, CT.SOPInstanceUID)
    no_transaction = Dataset()
    no_transaction.ReferencedSOPSequence = [ref]
    assert _request(listener, no_transaction) == 0x0120  # missing attribute
    assert _request(listener, _info("1.2.3.4.103")) == 0x0120  # nothing referenced
    assert _request(listener, _info("1.2.3.4.104", _ref(CT.SOPClassUID, ""))) == 0x0121
    assert _request(listener, _info("not a uid", ref)) == 0x0106
    assert _request(listener, _info("1.2.3.4.105", ref), action=2) == 0x0123  # no such action
    assert _request(listener, _info("1.2.3.4.106", ref), instance="1.2.3") == 0x0112
    ApplicationEntity.objects.filter(ae_title="MODALITY").update(may_store=False)
    listener.policy.invalidate()  # this test's listener reads the AE table again now
    assert _request(listener, _info("1.2.3.4.107", ref)) == 0x0124  # not authorized
    assert not CommitmentRequest.objects.exists()
