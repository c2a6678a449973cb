"""Who may associate: an AE title is only a claim, so a known AE is admitted from its own
addresses only (its host, a name looked up, or its calling addresses: IPs and networks).
DCMTK and pynetdicom call from loopback addresses; 127.0.0.0/8 gives several sources."""

from __future__ import annotations

import subprocess

import pytest
from django.test import Client
from django.urls import reverse
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from core.models import AuditEvent
from pacs.models import ApplicationEntity, Instance
from tests.samples import sample
from tests.users import user_with

pytestmark = pytest.mark.interop


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


@pytest.fixture
def spoofed(dimse_listener):
    """An AE with every right, registered at an address the tests never call from."""
    ae = ApplicationEntity.objects.create(
        ae_title="SPOOFED", host="10.99.99.99", port=104, may_store=True, may_query=True,
        may_retrieve=True, may_query_worklist=True, may_send_mpps=True)
    dimse_listener.policy.invalidate()
    return ae


def _echo(listener, aet: str, source: str = "127.0.0.1", called: str = "PORTAL") -> bool:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    host, port = listener.address
    assoc = ae.associate(host, port, ae_title=called, bind_address=(source, 0))
    try:
        return assoc.is_established
    finally:
        if assoc.is_established:
            assoc.release()


def test_a_known_ae_title_from_another_address_is_refused_everything(dimse_listener,
                                                                      spoofed, storage_dir):
    host, port = dimse_listener.address
    echo = run("/usr/bin/echoscu", "-aet", "SPOOFED", "-aec", "PORTAL", host, str(port))
    assert "Association Rejected" in echo.stderr
    assert "Calling AE Title Not Recognized" in echo.stderr
    find = run("/usr/bin/findscu", "-S", "-aet", "SPOOFED", "-aec", "PORTAL", host, str(port),
               "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=*")
    assert "Association Rejected" in find.stderr
    get = run("/usr/bin/getscu", "-S", "-aet", "SPOOFED", "-aec", "PORTAL", host, str(port),
              "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3")
    assert "Association Rejected" in get.stderr
    store = run("/usr/bin/storescu", "-aet", "SPOOFED", "-aec", "PORTAL", host, str(port),
                str(sample("CT_small.dcm")))
    assert "Association Rejected" in store.stderr and store.returncode != 0
    assert not Instance.objects.exists()
    refusals = AuditEvent.objects.filter(category="association", outcome="refused",
                                         actor="SPOOFED")
    assert refusals.count() == 4
    assert all("not accepted from 127.0.0.1" in e.detail and "10.99.99.99" in e.detail
               for e in refusals)
    # and the admins see it on the dashboard
    client = Client()
    client.force_login(user_with("boss", "admin"))
    page = client.get(reverse("dashboard")).content.decode()
    refused = page.split('id="refusals"')[1].split("</section>")[0]
    assert "SPOOFED" in refused and "not accepted from 127.0.0.1" in refused


def test_calling_addresses_networks_and_names(dimse_listener, spoofed):
    assert not _echo(dimse_listener, "SPOOFED")
    spoofed.calling_addresses = "10.0.0.0/8, 127.0.0.0/30"
    spoofed.save()
    dimse_listener.policy.invalidate()
    assert _echo(dimse_listener, "SPOOFED", "127.0.0.1")
    assert _echo(dimse_listener, "SPOOFED", "127.0.0.3")
    assert not _echo(dimse_listener, "SPOOFED", "127.0.0.5")
    # a name is looked up: localhost is 127.0.0.1 (and ::1), not 127.0.0.5
    spoofed.calling_addresses, spoofed.host = "", "localhost"
    spoofed.save()
    dimse_listener.policy.invalidate()
    assert _echo(dimse_listener, "SPOOFED", "127.0.0.1")
    assert not _echo(dimse_listener, "SPOOFED", "127.0.0.5")


def test_any_host_per_ae_and_for_the_site(dimse_listener, spoofed, settings):
    spoofed.any_host = True
    spoofed.save()
    dimse_listener.policy.invalidate()
    assert _echo(dimse_listener, "SPOOFED", "127.0.0.7")
    spoofed.any_host = False
    spoofed.save()
    dimse_listener.policy.invalidate()
    assert not _echo(dimse_listener, "SPOOFED", "127.0.0.7")
    settings.DIMSE_ANY_HOST = True
    assert _echo(dimse_listener, "SPOOFED", "127.0.0.7")


def test_a_query_from_the_right_address_is_answered(dimse_listener, spoofed, storage_dir):
    from pacs.services.ingest import store_instance

    store_instance(data=sample("CT_small.dcm").read_bytes(), received_from="test")
    spoofed.calling_addresses = "127.0.0.2"
    spoofed.save()
    dimse_listener.policy.invalidate()
    ae = AE(ae_title="SPOOFED")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    host, port = dimse_listener.address
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.PatientID = "STUDY", ""
    for source, expected in (("127.0.0.2", 1), ("127.0.0.1", None)):
        assoc = ae.associate(host, port, ae_title="PORTAL", bind_address=(source, 0))
        if expected is None:
            assert assoc.is_rejected
            continue
        answers = [ds for status, ds in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind) if status.Status == 0xFF00]
        assoc.release()
        assert [a.PatientID for a in answers] == [dcmread(sample("CT_small.dcm")).PatientID]


def test_the_called_ae_title_is_checked_when_asked(dimse_listener, known_aes, settings):
    host, port = dimse_listener.address
    assert _echo(dimse_listener, "ECHOSCU", called="ANYONE")  # not checked by default
    settings.DIMSE_CHECK_CALLED_AET = True
    echo = run("/usr/bin/echoscu", "-aet", "ECHOSCU", "-aec", "ANYONE", host, str(port))
    assert "Called AE Title Not Recognized" in echo.stderr
    assert _echo(dimse_listener, "ECHOSCU", called="PORTAL")
    event = AuditEvent.objects.get(outcome="refused", actor="ECHOSCU")
    assert "called AE title 'ANYONE' is not ours" in event.detail
