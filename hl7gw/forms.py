from __future__ import annotations

from django import forms

from hl7gw.models import Sender


class SenderForm(forms.ModelForm):
    class Meta:
        model = Sender
        fields = ["sending_application", "sending_facility", "description", "default_charset",
                  "accession_field", "default_station_ae_title", "active"]
