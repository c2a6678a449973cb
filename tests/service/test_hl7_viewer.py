"""The HL7 message viewer: segments and fields named from the version's definitions (hl7apy),
components and repetitions split, escapes decoded (HL7 v2.5 2.7), what each field the gateway
reads becomes, and the ACK beside the message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from hl7gw import viewer

ORDER = ("MSH|^~\\&|RIS|HOSP|PORTAL|RAD|20261207120000||ORM^O01^ORM_O01|C77|P|2.5\r"
         "PID|||P100^^^HOSP~X9^^^OTHER||M\\S\\LLER\\T\\CO^ANNA\\X41\\||19800203|F\r"
         "PV1||O||||||HOUSE^GREGORY\r"
         "ORC|NW|PL1|FI1\r"
         "OBR|1|PL1|FI1|CTH^CT head^L||||||||||||||ACC77||||||CT\r"
         "ZDS|1.2.3.4^RIS^Application^DICOM\r")


def _field(segments, name: str, n: int) -> viewer.FieldView:
    segment = next(s for s in segments if s.name == name)
    return next(f for f in segment.fields if f.n == n)


def test_fields_named_split_and_unescaped():
    segments = viewer.view(ORDER, "2.5")
    assert [s.name for s in segments] == ["MSH", "PID", "PV1", "ORC", "OBR", "ZDS"]
    name = _field(segments, "PID", 5)
    assert (name.name, name.datatype) == ("Patient Name", "XPN")
    family, given = name.repetitions[0][:2]
    # \S\ is the component separator, \T\ the subcomponent one, \X41\ hexadecimal data
    assert (family.name, family.value) == ("Family Name", "M^LLER&CO")
    assert (given.name, given.value) == ("Given Name", "ANNAA")
    assert name.raw == "M\\S\\LLER\\T\\CO^ANNA\\X41\\"
    ids = _field(segments, "PID", 3)
    assert ids.name == "Patient Identifier List" and len(ids.repetitions) == 2
    assert [(c.name, c.value) for c in ids.repetitions[1] if c.value] == [
        ("ID Number", "X9"), ("Assigning Authority", "OTHER")]
    message_type = _field(segments, "MSH", 9)
    assert [(c.name, c.value) for c in message_type.repetitions[0]][:2] == [
        ("Message Code", "ORM"), ("Trigger Event", "O01")]
    assert _field(segments, "MSH", 1).repetitions[0][0].value == "|"
    # what the gateway makes of them
    assert "Patient's Name (0010,0010)" in name.mapped
    assert "Accession Number (0008,0050)" in _field(segments, "OBR", 18).mapped
    assert "Referring Physician's Name" in _field(segments, "PV1", 8).mapped
    assert _field(segments, "MSH", 10).mapped == ""
    zds = next(s for s in segments if s.name == "ZDS")
    assert not zds.known and zds.fields[0].name == "" and "Study Instance UID" in \
        zds.fields[0].mapped


def test_each_version_s_own_names_and_the_nearest_for_others():
    old = viewer.view(ORDER.replace("|2.5\r", "|2.3.1\r"), "2.3.1")
    assert _field(old, "PID", 8).name == "Sex"  # "Administrative Sex" from 2.4 on
    assert _field(viewer.view(ORDER, "2.5"), "PID", 8).name == "Administrative Sex"
    assert viewer._nearest("2.9") == "2.8.2" and viewer._nearest("2.5.1") == "2.5.1"
    assert viewer._nearest("two") == "2.5" and viewer.view("", "2.5") == []


def test_the_mapping_table_says_what_the_inbound_mapping_reads():
    """MAPPED and hl7gw.inbound.mapping name the same fields: neither may drift."""
    source = (Path(__file__).resolve().parents[2] / "hl7gw" / "inbound" /
              "mapping.py").read_text()
    names = {"pid": "PID", "pv1": "PV1", "orc": "ORC", "obr": "OBR", "ipc": "IPC",
             "zds": "ZDS", "tq1": "TQ1", "mrg": "MRG"}
    read = set()
    for var, n in re.findall(r"\b(pid|pv1|orc|obr|ipc|zds|tq1|mrg)\.(?:get|repetitions)\("
                             r"(\d+)", source):
        read.add(f"{names[var]}-{n}")
    for var, n in re.findall(r"person_name\((pid|pv1|orc|obr), (\d+)", source):
        read.add(f"{names[var]}-{n}")
    assert read == set(viewer.MAPPED)


@pytest.mark.django_db(transaction=True)
def test_the_message_page_shows_both_message_and_ack_field_by_field(admin_client,
                                                                   hl7_senders):
    from hl7gw.inbound.service import receive
    from hl7gw.models import Message

    message = ("MSH|^~\\&|RIS|H|PORTAL|H|||ORM^O01|C5|P|2.5\rPID|||P5^^^H||ROE^ANN\r"
               "ORC|NW|X5\r")
    ack = receive(message.encode(), peer="127.0.0.1:2575")
    assert b"MSA|AE|C5" in ack or b"MSA|AR|C5" in ack  # no OBR: refused, with the reason
    logged = Message.objects.get(control_id="C5")
    page = admin_client.get(reverse("hl7-message", args=[logged.pk])).content.decode()
    fields = page[page.index('id="hl7-fields"'):page.index('id="hl7-ack-sent"')]
    assert "PID-5" in fields and "Patient Name" in fields and "Family Name" in fields
    assert "Patient&#x27;s Name (0010,0010)" in fields
    acked = page[page.index('id="hl7-ack-fields"'):]
    assert "MSA-1" in acked and "Acknowledgment Code" in acked
    assert "ERR" in acked or "Text Message" in acked  # the reason, in its field


@pytest.mark.django_db(transaction=True)
def test_edit_and_resend_is_a_new_linked_message_for_admins_only(admin_client, client,
                                                                 hl7_senders):
    """A refused order, fixed in the browser (its modality filled in), is processed as a
    new message pointing back to the original, which stays as it came; audited; admins only;
    a text that is no message, or does not fit its character set, is refused with the reason."""
    from core.models import AuditEvent
    from hl7gw.inbound.service import receive
    from hl7gw.models import Message
    from tests.users import user_with
    from worklist.models import Order

    def order(modality: str) -> str:
        obr = ["OBR", "1", "X1", "", "CTH^CT head"] + [""] * 13 + ["ACC5"] + [""] * 5
        return ("MSH|^~\\&|RIS|H|PORTAL|H|||ORM^O01|C6|P|2.5||||||8859/1\r"
                "PID|||P6^^^H||ROE^ANN\rORC|NW|X1\r" + "|".join(obr + [modality]) + "\r")

    assert b"MSA|AE|C6" in receive(order("").encode("latin_1"), peer="127.0.0.1:2575")
    original = Message.objects.get()
    assert original.status == "error" and "modality" in original.error
    url = reverse("hl7-resend", args=[original.pk])
    client.force_login(user_with("sched", "scheduler"))
    assert client.post(url, {"text": order("CT")}).status_code == 403
    edited = order("CT").replace("\r", "\r\n")  # as a browser's textarea sends it
    response = admin_client.post(url, {"text": edited})
    again = Message.objects.get(replay_of=original)
    assert response["Location"] == reverse("hl7-message", args=[again.pk])
    assert again.status == "processed" and Order.objects.get().accession_number == "ACC5"
    assert again.peer.startswith("edited by") and again.text.endswith("|CT\r")
    original.refresh_from_db()
    assert original.status == "error" and original.text.endswith("|\r")  # as it came
    event = AuditEvent.objects.get(action="message edited and resent")
    assert f"message {original.pk} edited, processed as message {again.pk}" in event.detail
    # no message, or one its MSH-18 cannot hold: refused, nothing processed
    for text, reason in (("PID|||P7", "must start with its MSH segment"),
                         (order("CT").replace("ROE^ANN", "ΩMEGA^ANN"), "cannot be written")):
        page = admin_client.post(url, {"text": text}, follow=True).content.decode()
        assert reason in page
    assert Message.objects.count() == 2
