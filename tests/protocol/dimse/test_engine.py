"""The DIMSE acceptor's upper layer under bad input: raw sockets, then a normal client."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as StudyGet

from dicomnet import wire
from pacs.models import ApplicationEntity
from pacs.services.ingest import store_instance
from tests.samples import sample

pytestmark = pytest.mark.interop


def _echo_ok(listener) -> bool:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate(*listener.address, ae_title="PORTAL")
    try:
        return assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def _raw(listener, payload: bytes) -> bytes:
    with socket.create_connection(listener.address, timeout=5) as sock:
        sock.sendall(payload)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the listener already aborted and closed: what it sent is still read below
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # closed with our bytes unread: a reset after the A-ABORT
    return b"".join(chunks)


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not DICOM at all
    b"\x01\x00\x00\x00\x00\x10garbage",  # A-ASSOCIATE-RQ cut short
    b"\x01\x00\xff\xff\xff\xff",  # absurd PDU length
    bytes(range(256)) * 4,
])
def test_garbage_gets_abort_or_close_and_listener_lives(dimse_listener, known_aes, payload):
    answer = _raw(dimse_listener, payload)
    assert answer == b"" or answer[0] == wire.A_ABORT
    assert _echo_ok(dimse_listener)


def test_unknown_command_field_gets_0211(dimse_listener, known_aes):
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL")
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    context_id = assoc.accepted_contexts[0].context_id
    # Talk raw on the established association: pynetdicom's reader thread is stopped first,
    # or it may take our reply off the socket (then this read saw the connection close).
    assoc.dul.kill_dul()
    assoc.dul.join(5)
    try:
        command = wire.encode_command({
            wire.AFFECTED_SOP_CLASS_UID: Verification, wire.COMMAND_FIELD: 0x0ABC,
            wire.MESSAGE_ID: 3, wire.COMMAND_DATA_SET_TYPE: wire.NO_DATASET})
        pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
        sock.sendall(struct.pack(">BBI", wire.P_DATA_TF, 0, len(pdv)) + pdv)
        reply = wire.PduSocket(sock).read_message()
    finally:
        sock.close()
        assoc.kill()
    assert isinstance(reply, wire.Message)
    assert reply.command[wire.STATUS] == 0x0211
    assert reply.command[wire.COMMAND_FIELD] == 0x8ABC


def test_get_sends_fragments_within_the_peers_max_pdu(dimse_listener, known_aes):
    """A requestor accepting only 4 KB PDUs still receives a 39 KB image intact over C-GET."""
    ApplicationEntity.objects.create(ae_title="SMALLPDU", host="127.0.0.1", port=1,
                                     may_retrieve=True)
    original = dcmread(sample("CT_small.dcm"))
    store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="test")
    received = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="SMALLPDU")
    ae.maximum_pdu_size = 4096
    ae.add_requested_context(StudyGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL", max_pdu=4096,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    sent_sizes = []
    assoc.bind(evt.EVT_PDU_RECV, lambda event: sent_sizes.append(len(event.pdu.encode())))
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = original.StudyInstanceUID
    try:
        (status, _), = list(assoc.send_c_get(ds, StudyGet))
    finally:
        assoc.release()
    assert status.Status == 0x0000
    assert received[0].PixelData == original.PixelData
    assert max(sent_sizes) <= 4096 + 6 and len(sent_sizes) > 10


def _store_contexts_ae(title: str) -> AE:
    ae = AE(ae_title=title)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def test_identical_association_requests_reuse_the_negotiation(dimse_listener, known_aes):
    """A second identical A-ASSOCIATE-RQ gets the same answer without renegotiating, and the
    association works as the first did; a different request is negotiated afresh."""
    kept = dimse_listener._server.config.negotiations
    kept.clear()
    accepted = []
    for _ in range(2):
        assoc = _store_contexts_ae("PYNETDICOM").associate(*dimse_listener.address,
                                                           ae_title="PORTAL")
        assert assoc.is_established
        accepted.append(sorted((cx.context_id, cx.abstract_syntax, cx.transfer_syntax[0])
                               for cx in assoc.accepted_contexts))
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(dcmread(sample("CT_small.dcm"))).Status == 0
        assoc.release()
        assert len(kept) == 1
    assert accepted[0] == accepted[1]
    assert _echo_ok(dimse_listener)  # another request: negotiated, and kept too
    assert len(kept) == 2


def test_a_reused_negotiation_still_checks_the_ae_table(dimse_listener, known_aes):
    kept = dimse_listener._server.config.negotiations
    kept.clear()
    ae = _store_contexts_ae("PYNETDICOM")
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL")
    assert assoc.is_established
    assoc.release()
    assert len(kept) == 1
    ApplicationEntity.objects.filter(ae_title="PYNETDICOM").delete()
    dimse_listener.policy.invalidate()
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL")
    assert assoc.is_rejected


def test_identical_requests_arriving_together_are_negotiated_once(dimse_listener, known_aes):
    kept = dimse_listener._server.config.negotiations
    kept.clear()
    results: list[bool] = []

    def store_one() -> None:
        assoc = _store_contexts_ae("PYNETDICOM").associate(*dimse_listener.address,
                                                           ae_title="PORTAL")
        ok = assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
        results.append(ok)

    threads = [threading.Thread(target=store_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [True] * 4
    assert len(kept) == 1
