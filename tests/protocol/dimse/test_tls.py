"""DICOM TLS (PS3.15 B.9) from outside: DCMTK's echoscu, storescu and findscu with +tls against
our TLS port, with a certificate authority made for the test; our SCU side (C-MOVE
sub-operations, send jobs, C-ECHO, UPS event reports, Storage Commitment reports) calling
peers that speak TLS only (DCMTK storescp +tls, pynetdicom servers with an SSL context)."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from core import tls
from core.models import AuditEvent
from pacs.models import ApplicationEntity, Instance, Job
from pacs.services.aes import echo_application_entity
from pacs.services.ingest import store_instance
from tests.peers import Storescp, start_commitment_listener, start_event_scp
from tests.samples import free_port, sample
from tests.tls_pki import make_pki
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_settings(settings, pki):
    settings.TLS_CERT, settings.TLS_KEY = str(pki.portal[1]), str(pki.portal[0])
    settings.TLS_CA = str(pki.ca)
    tls.forget()
    yield settings
    tls.forget()


@pytest.fixture
def listener(tls_settings, transactional_db, storage_dir):
    from pacs.dimse.scp import DimseListener

    listener = DimseListener(host="127.0.0.1", port=0, ae_title="PORTAL", tls_port=0)
    listener.start()
    for title in ("ECHOSCU", "STORESCU", "FINDSCU", "MOVESCU"):
        ApplicationEntity.objects.create(ae_title=title, host="127.0.0.1", port=104,
                                         may_store=True, may_query=True, may_retrieve=True)
    yield listener
    listener.stop()


def dcmtk(tool: str, address: tuple[str, int], *args: str,
          files: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([f"/usr/bin/{tool}", *args, "-aec", "PORTAL", address[0],
                           str(address[1]), *files], capture_output=True, text=True, timeout=60)


def as_modality(pki) -> list[str]:
    return ["+tls", str(pki.modality[0]), str(pki.modality[1]), "+cf", str(pki.ca)]


def test_dcmtk_clients_over_tls(listener, pki):
    tls_address = listener.tls_address
    echo = dcmtk("echoscu", tls_address, *as_modality(pki), "-aet", "ECHOSCU")
    assert echo.returncode == 0, echo.stderr
    store = dcmtk("storescu", tls_address, *as_modality(pki), "-aet", "STORESCU",
                  files=(str(sample("CT_small.dcm")),))
    assert store.returncode == 0, store.stderr
    stored = Instance.objects.get()
    assert stored.received_from == "dimse:STORESCU@127.0.0.1"
    find = dcmtk("findscu", tls_address, *as_modality(pki), "-S", "-aet", "FINDSCU",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=1CT1")
    assert find.returncode == 0 and "1CT1" in find.stderr + find.stdout, find.stderr


def test_plain_and_tls_ports_do_not_mix(listener, pki):
    plain_to_tls = dcmtk("echoscu", listener.tls_address, "-aet", "ECHOSCU", "-to", "5")
    assert plain_to_tls.returncode != 0
    tls_to_plain = dcmtk("echoscu", listener.address, *as_modality(pki), "-aet", "ECHOSCU")
    assert tls_to_plain.returncode != 0
    refused = AuditEvent.objects.filter(category="association", outcome="refused")
    assert any("TLS handshake failed" in e.detail for e in refused)


def test_client_certificates_are_verified_when_asked(tls_settings, listener, pki):
    tls_settings.TLS_VERIFY_CLIENT = True
    tls.forget()
    listener.stop()
    listener.start()  # the TLS context is built at start
    stranger = dcmtk("echoscu", listener.tls_address, "+tls", str(pki.stranger[0]),
                     str(pki.stranger[1]), "+cf", str(pki.ca), "-aet", "ECHOSCU")
    assert stranger.returncode != 0
    anonymous = dcmtk("echoscu", listener.tls_address, "+tla", "+cf", str(pki.ca),
                      "-aet", "ECHOSCU")
    assert anonymous.returncode != 0
    good = dcmtk("echoscu", listener.tls_address, *as_modality(pki), "-aet", "ECHOSCU")
    assert good.returncode == 0, good.stderr


def _tls_peer(pki) -> list[str]:
    """storescp's TLS options: the modality's certificate; ours must chain to the site CA."""
    return ["+tls", str(pki.modality[0]), str(pki.modality[1]), "+cf", str(pki.ca)]


def test_our_scu_side_calls_tls_peers(listener, pki, tmp_path):
    store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="test")
    study = dcmread(sample("CT_small.dcm")).StudyInstanceUID
    port = free_port()
    peer = Storescp(port, tmp_path / "dest", tls=_tls_peer(pki))
    try:
        dest = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=port,
                                                is_move_destination=True, use_tls=True)
        assert echo_application_entity(ae=dest).ok
        move = dcmtk("movescu", listener.address, "-S", "-aet", "MOVESCU", "-aem", "DEST",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
        assert move.returncode == 0, move.stderr
        assert [ds.SOPInstanceUID for ds in peer.received(1)] == [
            Instance.objects.get().sop_instance_uid]
        from pacs.services import jobs

        job = jobs.create_job(kind=Job.Kind.SEND, remote=dest, level="STUDY",
                              keys={"StudyInstanceUID": study}, actor="test")
        wait_until(lambda: Job.objects.get(pk=job.pk).is_final, timeout=20, what="the job")
        assert Job.objects.get(pk=job.pk).state == "done"
        dest.use_tls = False  # the same peer, called in plain TCP: it does not answer
        dest.save()
        assert not echo_application_entity(ae=dest).ok
    finally:
        peer.stop()


def _server_context(pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.modality[1], pki.modality[0])
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED  # our client certificate is checked
    return context


def test_ups_events_and_commitment_reports_over_tls(tls_settings, transactional_db, pki,
                                                    storage_dir):
    from pacs.services import commitment
    from worklist import ups_events
    from worklist.services import PatientData, StepData, create_order

    events_port, commit_port = free_port(), free_port()
    ApplicationEntity.objects.create(ae_title="AINODE", host="127.0.0.1", port=events_port,
                                     use_tls=True)
    ApplicationEntity.objects.create(ae_title="MODALITY", host="127.0.0.1", port=commit_port,
                                     use_tls=True, may_store=True)
    events, received = start_event_scp(events_port, ssl_context=_server_context(pki))
    reports, committed = start_commitment_listener(commit_port,
                                                   ssl_context=_server_context(pki))
    try:
        import datetime as dt

        ups_events.subscribe(ups_events.GLOBAL, "AINODE", delivery="dimse")
        create_order(patient=PatientData("TLS1", "TLS^PATIENT"), procedure=None,
                     step=StepData(modality="CT", start=dt.datetime(2026, 12, 7, 9)),
                     actor="test")
        uid, event_type, _info = received.get(timeout=20)
        assert event_type == 1
        stored = store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="t")
        request = Dataset()
        request.TransactionUID = "1.2.3.99"
        item = Dataset()
        item.ReferencedSOPClassUID = stored.sop_class_uid
        item.ReferencedSOPInstanceUID = stored.sop_instance_uid
        request.ReferencedSOPSequence = [item]
        commitment.request("MODALITY", request)
        calling, report_type, info = committed.get(timeout=20)
        assert (calling, report_type) == ("PORTAL", 1)  # all committed
    finally:
        events.shutdown()
        reports.shutdown()
