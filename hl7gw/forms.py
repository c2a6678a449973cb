from __future__ import annotations

from django import forms

from core import addresses
from hl7gw.models import Receiver, Sender


class SenderForm(forms.ModelForm):
    class Meta:
        model = Sender
        fields = ["sending_application", "sending_facility", "addresses", "may_order",
                  "may_update_patients", "may_merge_patients", "description",
                  "default_charset", "accession_field", "default_station_ae_title", "active"]

    def clean_addresses(self) -> str:
        try:
            return addresses.cleaned(self.cleaned_data["addresses"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean(self):
        data = super().clean()
        if not (data.get("sending_application") or data.get("sending_facility")):
            raise forms.ValidationError("Give MSH-3, MSH-4 or both.")
        return data


class ReceiverForm(forms.ModelForm):
    class Meta:
        model = Receiver
        fields = ["name", "host", "port", "kind", "version", "receiving_application",
                  "receiving_facility", "charset", "on_started", "on_completed",
                  "on_discontinued", "active"]
