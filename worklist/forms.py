from __future__ import annotations

import datetime as dt

from django import forms

from pacs.forms import AET_RE
from worklist.models import Order, Procedure, Station

SEX = [("", "unknown"), ("F", "female"), ("M", "male"), ("O", "other")]


class OrderForm(forms.Form):
    patient_id = forms.CharField(label="Patient ID", max_length=64)
    family_name = forms.CharField(label="Family name", max_length=64)
    given_name = forms.CharField(label="Given name", max_length=64, required=False)
    birth_date = forms.DateField(label="Birth date", required=False,
                                 widget=forms.DateInput(attrs={"type": "date"}))
    sex = forms.ChoiceField(choices=SEX, required=False)
    procedure = forms.ModelChoiceField(queryset=Procedure.objects.filter(active=True))
    station = forms.ModelChoiceField(queryset=Station.objects.filter(active=True))
    date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}))
    referring_physician = forms.CharField(max_length=64, required=False,
                                          help_text="Family^Given")
    reason = forms.CharField(label="Reason for the procedure", max_length=64, required=False)
    priority = forms.ChoiceField(choices=Order.Priority.choices, initial=Order.Priority.ROUTINE)

    def clean_patient_id(self) -> str:
        value = self.cleaned_data["patient_id"].strip()
        if "\\" in value or "^" in value:
            raise forms.ValidationError("A patient ID cannot contain \\ or ^.")
        return value

    def clean(self):
        data = super().clean()
        procedure, station = data.get("procedure"), data.get("station")
        if procedure and station and procedure.modality != station.modality:
            self.add_error("station", f"{station.ae_title} is a {station.modality} station; "
                                      f"this procedure needs {procedure.modality}.")
        for key in ("family_name", "given_name"):
            if "^" in (data.get(key) or "") or "=" in (data.get(key) or ""):
                self.add_error(key, "Names cannot contain ^ or =.")
        return data

    def patient_name(self) -> str:
        d = self.cleaned_data
        return "^".join(p for p in (d["family_name"].strip().upper(),
                                    (d.get("given_name") or "").strip().upper()) if p)

    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.cleaned_data["date"], self.cleaned_data["time"])


class RescheduleForm(forms.Form):
    station = forms.ModelChoiceField(queryset=Station.objects.filter(active=True),
                                     required=False, help_text="empty: keep the station")
    date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}))


class StationForm(forms.ModelForm):
    class Meta:
        model = Station
        fields = ["ae_title", "name", "modality", "location", "active"]

    def clean_ae_title(self) -> str:
        value = self.cleaned_data["ae_title"].strip()
        if not AET_RE.match(value):
            raise forms.ValidationError("1-16 printable ASCII characters without a backslash.")
        return value


class ProcedureForm(forms.ModelForm):
    class Meta:
        model = Procedure
        fields = ["code_value", "coding_scheme_designator", "code_meaning", "modality",
                  "duration_minutes", "active"]


class BoardForm(forms.Form):
    date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    modality = forms.CharField(required=False, max_length=16)


class OrderEditForm(forms.ModelForm):
    class Meta:
        model = Order
        fields = ["referring_physician_name", "reason", "priority", "medical_alerts",
                  "contrast_allergies"]
