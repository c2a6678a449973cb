"""Who may send what over HL7: only registered senders (MSH-3/MSH-4), from their addresses,
with the rights they were given. Anything else gets AR with an ERR saying why, nothing is
applied, and the raw message is still logged. Patient changes are in the audit trail with the
message they came from. Sent with python-hl7's MLLP client to the real listener."""

from __future__ import annotations

import pytest
from hl7.client import MLLPClient

from core.models import AuditEvent
from hl7gw.models import Message, Sender
from pacs.models import Patient, Study
from pacs.services.ingest import store_instance
from tests.samples import sample

pytestmark = pytest.mark.interop


@pytest.fixture
def hl7(transactional_db, storage_dir):
    from hl7gw.mllp import MllpListener

    listener = MllpListener(host="127.0.0.1", port=0)
    listener.start()
    yield listener
    listener.stop()


@pytest.fixture
def imaged():
    """Two patients with images: 1CT1 and 4MR1 (pydicom's samples)."""
    for name in ("CT_small.dcm", "MR_small.dcm"):
        store_instance(data=sample(name).read_bytes(), received_from="test")


def send(listener, app: str, event: str, control: str, body: str) -> str:
    message = (f"MSH|^~\\&|{app}|HOSP|PORTAL|RAD|20261207100000||ADT^{event}|{control}|P|2.5.1"
               f"\r{body}\r")
    with MLLPClient(*listener.address) as client:
        return client.send_message(message).decode("latin-1")


def rename(listener, app: str, control: str = "R1") -> str:
    return send(listener, app, "A08", control, "PID|||1CT1||EVIL^NAME")


def merge(listener, app: str, control: str = "M1") -> str:
    return send(listener, app, "A40", control, "PID|||4MR1||MR^PATIENT\rMRG|1CT1")


def code(ack: str) -> str:
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")[1]


def err(ack: str) -> str:
    """The ERR segment, with the component separator's escape (\\S\\) read back."""
    return next((s for s in ack.split("\r") if s.startswith("ERR")), "").replace("\\S\\", "^")


def untouched() -> None:
    ct = Patient.objects.get(patient_id="1CT1")
    assert ct.patient_name == "CompressedSamples^CT1"
    assert Study.objects.filter(patient=ct).count() == 1
    assert Patient.objects.count() == 2


def test_an_unknown_sender_is_refused_with_ar_and_nothing_changes(hl7, imaged):
    for ack in (rename(hl7, "EVIL"), merge(hl7, "EVIL")):
        assert code(ack) == "AR"
        assert "207" in err(ack) and "EVIL/HOSP" in err(ack) and "not registered" in err(ack)
    untouched()
    logged = Message.objects.order_by("id")
    assert [m.status for m in logged] == ["rejected", "rejected"]
    assert bytes(logged[0].raw).startswith(b"MSH|^~\\&|EVIL|HOSP")  # the raw text is kept
    refused = AuditEvent.objects.filter(category="hl7", outcome="refused")
    assert [(e.actor, e.source) for e in refused] == [("EVIL/HOSP", "127.0.0.1")] * 2
    assert not AuditEvent.objects.filter(category="patient").exists()


def test_a_registered_sender_from_another_address_is_refused(hl7, imaged):
    Sender.objects.create(sending_application="RIS", sending_facility="HOSP",
                          addresses="10.1.2.0/24, ris.invalid", may_update_patients=True,
                          may_merge_patients=True)
    ack = rename(hl7, "RIS")
    assert code(ack) == "AR" and "not accepted from 127.0.0.1" in err(ack)
    untouched()


def test_each_right_on_its_own(hl7, imaged):
    sender = Sender.objects.create(sending_application="RIS", addresses="127.0.0.0/8",
                                   may_order=True)
    ack = rename(hl7, "RIS", "R1")
    assert code(ack) == "AR" and "may not send ADT^A08" in err(ack)
    ack = merge(hl7, "RIS", "M1")
    assert code(ack) == "AR" and "may not send ADT^A40" in err(ack)
    untouched()
    sender.may_update_patients = True
    sender.save()
    assert code(rename(hl7, "RIS", "R2")) == "AA"
    assert Patient.objects.get(patient_id="1CT1").patient_name == "EVIL^NAME"
    assert code(merge(hl7, "RIS", "M2")) == "AR"  # renaming is not merging
    sender.may_merge_patients = True
    sender.save()
    assert code(merge(hl7, "RIS", "M3")) == "AA"
    assert not Patient.objects.filter(patient_id="1CT1").exists()
    assert Study.objects.filter(patient__patient_id="4MR1").count() == 2


def test_patient_changes_are_audited_with_their_message(hl7, imaged):
    Sender.objects.create(sending_application="RIS", addresses="localhost",
                          may_update_patients=True, may_merge_patients=True)
    assert code(rename(hl7, "RIS", "R7")) == "AA"
    assert code(send(hl7, "RIS", "A47", "C7", "PID|||4MR1-NEW||MR^PATIENT\rMRG|4MR1")) == "AA"
    assert code(send(hl7, "RIS", "A40", "M7", "PID|||4MR1-NEW||MR^PATIENT\rMRG|1CT1")) == "AA"
    events = {e.action: e for e in AuditEvent.objects.filter(category="patient")}
    assert set(events) == {"patient updated", "patient ID changed", "patients merged"}
    updated = events["patient updated"]
    assert updated.actor == "hl7:RIS" and updated.source == "HL7 ADT^A08 R7 from 127.0.0.1"
    assert updated.detail == "patient 1CT1: name changed"
    assert events["patient ID changed"].detail == "patient 4MR1 is now 4MR1-NEW"
    assert events["patient ID changed"].source == "HL7 ADT^A47 C7 from 127.0.0.1"
    assert events["patients merged"].detail == ("patient 1CT1 merged into 4MR1-NEW: "
                                                "0 order(s), 1 study(ies) moved")
    assert Study.objects.filter(patient__patient_id="4MR1-NEW").count() == 2


def test_the_gateway_opened_to_anyone_on_purpose(hl7, imaged, settings):
    settings.HL7_ALLOW_UNKNOWN_SENDER = True
    assert code(rename(hl7, "ANYONE")) == "AA"
    assert Patient.objects.get(patient_id="1CT1").patient_name == "EVIL^NAME"


def test_mllp_over_tls(transactional_db, settings, tmp_path):
    """MLLP over TLS (PORTAL_HL7_TLS_PORT) with a certificate authority made for the test:
    python-hl7's MLLP client on a TLS socket; a plain client gets nothing there."""
    import socket
    import ssl

    from core import tls
    from hl7gw.mllp import MllpListener
    from tests.tls_pki import make_pki

    pki = make_pki(tmp_path / "pki")
    settings.TLS_CERT, settings.TLS_KEY, settings.TLS_CA = (
        str(pki.portal[1]), str(pki.portal[0]), str(pki.ca))
    tls.forget()
    Sender.objects.create(sending_application="RIS", addresses="127.0.0.1",
                          may_update_patients=True)
    listener = MllpListener(host="127.0.0.1", port=0, tls_port=0)
    listener.start()
    try:
        context = ssl.create_default_context(cafile=str(pki.ca))
        client = MLLPClient(*listener.address)  # then moved onto the TLS port
        client.socket.close()
        client.socket = context.wrap_socket(
            socket.create_connection(listener.tls_address, timeout=10),
            server_hostname="localhost")
        with client:
            ack = client.send_message("MSH|^~\\&|RIS|HOSP|PORTAL|RAD|20261207||ADT^A08|T1|P|"
                                      "2.5.1\rPID|||TLS9||TLS^PATIENT\r").decode()
        assert code(ack) == "AA"
        assert Patient.objects.get(patient_id="TLS9").patient_name == "TLS^PATIENT"
        with socket.create_connection(listener.tls_address, timeout=5) as plain:
            plain.sendall(b"\x0bMSH|^~\\&|RIS|HOSP|||||ADT^A08|T2|P|2.5.1\r\x1c\r")
            try:
                answer = plain.recv(1024)
            except (ConnectionError, TimeoutError):
                answer = b""
            assert b"MSA" not in answer
    finally:
        listener.stop()
        tls.forget()
