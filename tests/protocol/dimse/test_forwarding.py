"""Forwarding rules (auto-routing) against DCMTK: a modality stores with storescu, the portal
forwards what matches a rule to a DCMTK storescp destination."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from pydicom import dcmread

from pacs.models import ApplicationEntity, ForwardingRule, ForwardItem
from pacs.services import forwarding
from pacs.services.ingest import store_instance
from tests.peers import Storescp
from tests.samples import encoded, free_port, sample
from tests.users import user_with
from tests.waiting import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture
def dest(dimse_listener, known_aes):
    port = free_port()
    ae = ApplicationEntity.objects.create(ae_title="DEST", host="127.0.0.1", port=port)
    forwarding.rules.forget()
    yield ae
    forwarding.rules.forget()


def _storescu(listener, *names: str, tool: str = "storescu") -> None:
    """DCMTK storescu (uncompressed files), or dcmsend (it proposes compressed syntaxes)."""
    host, port = listener.address
    proc = subprocess.run([f"/usr/bin/{tool}", "-aet", "STORESCU", "-aec", "PORTAL", host,
                           str(port), *[str(sample(n)) for n in names]],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "E:" not in proc.stderr, proc.stderr


def _statuses() -> list[str]:
    return list(ForwardItem.objects.order_by("pk").values_list("status", flat=True))


def test_what_matches_a_rule_is_forwarded(dimse_listener, dest, tmp_path):
    ForwardingRule.objects.create(name="CT to reading", destination=dest,
                                  source_ae_titles="STORESCU", modalities="CT")
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        _storescu(dimse_listener, "CT_small.dcm", "MR_small.dcm")
        ct = dcmread(sample("CT_small.dcm"))
        ct.SOPInstanceUID += ".2"
        store_instance(data=encoded(ct), received_from="import:boss")  # not from STORESCU
        received = scp.received(1)
    finally:
        scp.stop()
    assert [d.SOPInstanceUID for d in received] == [dcmread(sample("CT_small.dcm")).SOPInstanceUID]
    assert _statuses() == ["sent"]
    assert np.array_equal(received[0].pixel_array, ct.pixel_array)


def test_compressed_images_go_decoded_to_a_destination_that_wants_them_so(dimse_listener, dest,
                                                                          tmp_path):
    ForwardingRule.objects.create(name="all", destination=dest)
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        _storescu(dimse_listener, "MR2_J2KR.dcm", "CT_small.dcm", tool="dcmsend")
        received = scp.received(2)
    finally:
        scp.stop()
    mr = next(d for d in received if d.Modality == "MR")
    assert not mr.file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(mr.pixel_array, dcmread(sample("MR2_J2KR.dcm")).pixel_array)
    assert _statuses() == ["sent", "sent"]


def test_a_destination_that_is_down_gets_the_queue_when_it_comes_up(dimse_listener, dest,
                                                                    tmp_path):
    ForwardingRule.objects.create(name="all", destination=dest)
    _storescu(dimse_listener, "CT_small.dcm", "MR_small.dcm")
    wait_until(ForwardItem.objects.filter(attempts__gte=1).exists,  # the next try in 2 s
               timeout=10, interval=0.05, what="a first failed attempt")
    assert _statuses() == ["pending", "pending"]
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        received = scp.received(2)
    finally:
        scp.stop()
    assert len(received) == 2 and _statuses() == ["sent", "sent"]


def test_failed_items_are_shown_and_sent_again_on_retry(dimse_listener, dest, tmp_path,
                                                        client, monkeypatch):
    monkeypatch.setattr(forwarding, "retry_delay", lambda attempts: None)  # one attempt only
    ForwardingRule.objects.create(name="all", destination=dest)
    _storescu(dimse_listener, "CT_small.dcm")
    wait_until(lambda: _statuses() == ["failed"], timeout=10, interval=0.05,
               what=lambda: f"a failed item (statuses: {_statuses()})")
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    page = client.get(reverse("forwarding")).content.decode()
    assert "out of attempts: no association with DEST" in page
    assert '<td class="failed">1</td>' in page
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        response = client.post(reverse("forwarding-retry", args=[dest.pk]), follow=True)
        assert "Sending 1 failed instance(s) to DEST again." in response.content.decode()
        assert len(scp.received(1)) == 1
    finally:
        scp.stop()
    assert _statuses() == ["sent"]


def test_rules_page_adds_validates_and_deletes(dest, client):
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    bad = client.post(reverse("forwarding"), {"name": "x", "destination": dest.pk,
                                              "source_ae_titles": "OK, MUCH_TOO_LONG_FOR_AN_AET",
                                              "enabled": "on"})
    assert "Not an AE title" in bad.content.decode() and not ForwardingRule.objects.exists()
    response = client.post(reverse("forwarding"), {
        "name": "CT to reading", "destination": dest.pk, "source_ae_titles": "ct1, ct2",
        "modalities": "ct", "enabled": "on"}, follow=True)
    assert "Saved CT to reading." in response.content.decode()
    rule = ForwardingRule.objects.get()
    assert (rule.source_ae_titles, rule.modalities) == ("CT1 CT2", "CT")
    assert client.post(reverse("forwarding-delete", args=[rule.pk])).status_code == 302
    assert not ForwardingRule.objects.exists()
    from core.models import AuditEvent

    assert list(AuditEvent.objects.filter(category="admin").order_by("pk").values_list(
        "action", "actor")) == [("forwarding rule added", "boss"),
                                ("forwarding rule deleted", "boss")]
    client.force_login(user_with("viewer", "viewer"))
    assert client.get(reverse("forwarding")).status_code == 403


def test_an_unreadable_file_fails_its_item_and_the_queue_goes_on(dest, tmp_path):
    from pacs.models import Instance
    from pacs.storage import get_storage

    uids = []
    for n in (1, 2):
        ds = dcmread(sample("CT_small.dcm"))
        ds.SOPInstanceUID += f".{n}"
        store_instance(data=encoded(ds), received_from="test")
        uids.append(ds.SOPInstanceUID)
        ForwardItem.objects.create(destination=dest, sop_instance_uid=ds.SOPInstanceUID)
    first = Instance.objects.get(sop_instance_uid=uids[0])
    get_storage().delete(first.file_key)  # lost from the disk
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        forwarding.courier.wake(str(dest.pk))
        received = scp.received(1)
    finally:
        scp.stop()
    assert [d.SOPInstanceUID for d in received] == [uids[1]]
    failed, sent = ForwardItem.objects.order_by("pk")
    assert (failed.status, sent.status) == ("failed", "sent")
    assert failed.last_error.startswith("not sent: FileNotFoundError")


def test_queue_summary_counts_each_destination(dest):
    from pacs.selectors import forwarding_queues

    other = ApplicationEntity.objects.create(ae_title="OTHER", host="127.0.0.1", port=1)
    for status, error in (("sent", ""), ("sent", ""), ("failed", "answered 0xA700"),
                          ("pending", "no association with DEST")):
        ForwardItem.objects.create(destination=dest, sop_instance_uid="1.2", status=status,
                                   last_error=error)
    ForwardItem.objects.create(destination=other, sop_instance_uid="1.3", status="sent")
    assert forwarding_queues() == [
        {"pk": dest.pk, "ae_title": "DEST", "pending": 1, "sent": 2, "failed": 1,
         "last_error": "no association with DEST"},
        {"pk": other.pk, "ae_title": "OTHER", "pending": 0, "sent": 1, "failed": 0,
         "last_error": None}]


def test_the_queue_item_by_item_retry_cancel_and_a_source_gone(dimse_listener, dest, tmp_path,
                                                                client, monkeypatch):
    from pacs.services import deletion

    monkeypatch.setattr(forwarding, "retry_delay", lambda attempts: None)  # one attempt only
    ForwardingRule.objects.create(name="all", destination=dest)
    _storescu(dimse_listener, "CT_small.dcm", "MR_small.dcm")
    wait_until(lambda: _statuses() == ["failed", "failed"], timeout=10, interval=0.05,
               what=lambda: f"two failed items (statuses: {_statuses()})")
    ct, mr = ForwardItem.objects.order_by("pk")
    # the MR is deleted from the archive: its item can never be sent
    deletion.delete("instance", mr.sop_instance_uid, actor="boss")
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw-123456"))
    page = client.get(reverse("forwarding-queue")).content.decode()
    assert "source gone" in page and "deleted after it was queued" in page
    assert page.count(">Retry</button>") == 1  # the CT's, not the MR's
    answer = client.post(reverse("forward-item-retry", args=[mr.pk]), follow=True)
    assert "its instance is no longer in the archive" in answer.content.decode()
    # the page's retry on the CT sends that one item
    scp = Storescp(dest.port, tmp_path / "dest")
    try:
        client.post(reverse("forward-item-retry", args=[ct.pk]))
        received = scp.received(1)
    finally:
        scp.stop()
    assert received[0].SOPInstanceUID == ct.sop_instance_uid
    assert _statuses() == ["sent", "failed"]
    # a failed (or pending) item can be canceled, and stays listed as such
    client.post(reverse("forward-item-cancel", args=[mr.pk]))
    assert _statuses() == ["sent", "canceled"]
    page = client.get(reverse("forwarding-queue"), {"status": "canceled"}).content.decode()
    assert page.count('<tr class="state-canceled">') == 1 and "state-sent" not in page
    # and the destination's "Retry failed" leaves out what can no longer be sent
    ForwardItem.objects.filter(pk=mr.pk).update(status="failed")
    assert forwarding.retry_failed(dest) == 0
