"""The address lists of the AE table and the HL7 senders, as an admin types them."""

from __future__ import annotations

import pytest

from hl7gw.forms import SenderForm
from pacs.forms import ApplicationEntityForm

pytestmark = pytest.mark.django_db


def test_an_ae_keeps_its_addresses_tidy_and_refuses_garbage():
    data = {"ae_title": "CT1", "host": "10.1.2.3", "port": 104, "kind": "modality",
            "calling_addresses": "10.1.2.0/24;  ct1.example.org\n::1", "worklist_charset": ""}
    form = ApplicationEntityForm(data)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["calling_addresses"] == "10.1.2.0/24, ct1.example.org, ::1"
    form = ApplicationEntityForm({**data, "calling_addresses": "10.1.2.0/24, not!a host"})
    assert not form.is_valid()
    assert "Not an address, network or host name: not!a" in str(form.errors)


def test_a_sender_keeps_its_addresses_tidy_and_refuses_garbage():
    data = {"sending_application": "RIS", "addresses": "* ", "default_charset": "",
            "accession_field": "OBR-18", "active": True}
    form = SenderForm(data)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["addresses"] == "*"
    form = SenderForm({**data, "addresses": "192.168.0.300/33"})
    assert not form.is_valid() and "192.168.0.300/33" in str(form.errors)
    form = SenderForm({**data, "sending_application": "", "addresses": "*"})
    assert not form.is_valid() and "Give MSH-3, MSH-4 or both." in str(form.errors)
