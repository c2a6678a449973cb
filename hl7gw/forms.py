from __future__ import annotations

from django import forms

from hl7gw.models import Receiver, Sender


class SenderForm(forms.ModelForm):
    class Meta:
        model = Sender
        fields = ["sending_application", "sending_facility", "description", "default_charset",
                  "accession_field", "default_station_ae_title", "active"]


class ReceiverForm(forms.ModelForm):
    class Meta:
        model = Receiver
        fields = ["name", "host", "port", "kind", "version", "receiving_application",
                  "receiving_facility", "charset", "on_started", "on_completed",
                  "on_discontinued", "active"]
