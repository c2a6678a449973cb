from __future__ import annotations

import re

from django import forms

from core import addresses
from pacs.models import ApplicationEntity, ForwardingRule

# PS3.5 6.2 AE: up to 16 characters of the default repertoire, no backslash or control codes.
AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ApplicationEntityForm(forms.ModelForm):
    class Meta:
        model = ApplicationEntity
        fields = [
            "ae_title", "host", "port", "kind", "description", "calling_addresses", "any_host",
            "use_tls", "may_store", "may_query", "may_retrieve", "is_move_destination",
            "may_query_worklist", "may_send_mpps", "worklist_own_station_only",
            "worklist_charset", "account",
        ]

    def clean_ae_title(self) -> str:
        value = self.cleaned_data["ae_title"].strip()
        if not AET_RE.match(value):
            raise forms.ValidationError(
                "An AE title is 1-16 printable ASCII characters without a backslash."
            )
        return value

    def clean_calling_addresses(self) -> str:
        try:
            return addresses.cleaned(self.cleaned_data["calling_addresses"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_port(self) -> int:
        port = self.cleaned_data["port"]
        if not 1 <= port <= 65535:
            raise forms.ValidationError("A port is between 1 and 65535.")
        return port


class DateRangeForm(forms.Form):
    """A 'From'/'To' pair of dates, checked for order; the DICOM range via date_range()."""

    date_from = forms.DateField(required=False, label="From",
                                widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To",
                              widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("'From' must not be after 'To'.")
        return data

    def date_range(self) -> str:
        """'YYYYMMDD-YYYYMMDD' (either side may be open), or '' without dates."""
        start, end = self.cleaned_data.get("date_from"), self.cleaned_data.get("date_to")
        if not (start or end):
            return ""
        fmt = "%Y%m%d"
        return f"{start.strftime(fmt) if start else ''}-{end.strftime(fmt) if end else ''}"


class StudySearchForm(DateRangeForm):
    field_order = ["patient_name", "patient_id", "date_from", "date_to"]
    patient_name = forms.CharField(required=False, label="Patient name")
    patient_id = forms.CharField(required=False, label="Patient ID")
    modality = forms.CharField(required=False, max_length=16)
    accession_number = forms.CharField(required=False, label="Accession")


class RemoteAeField(forms.ModelChoiceField):
    def label_from_instance(self, obj: ApplicationEntity) -> str:
        return f"{obj.ae_title} ({obj.host}:{obj.port})"


class SendForm(forms.Form):
    remote = RemoteAeField(queryset=ApplicationEntity.objects.order_by("ae_title"),
                           label="Send to")


class RemoteQueryForm(DateRangeForm):
    field_order = ["remote", "patient_name", "patient_id", "date_from", "date_to"]
    remote = RemoteAeField(queryset=ApplicationEntity.objects.order_by("ae_title"),
                           label="Remote AE")
    patient_name = forms.CharField(required=False, label="Patient name",
                                   help_text="Wildcards * and ? allowed")
    patient_id = forms.CharField(required=False, label="Patient ID")
    modality = forms.CharField(required=False, max_length=16)
    accession_number = forms.CharField(required=False, label="Accession", max_length=16)

    def clean(self):
        data = super().clean()
        if not any(data.get(k) for k in ("patient_name", "patient_id", "date_from", "date_to",
                                          "modality", "accession_number")):
            raise forms.ValidationError("Give at least one search field: a remote archive "
                                        "may hold millions of studies.")
        return data


class ForwardingRuleForm(forms.ModelForm):
    class Meta:
        model = ForwardingRule
        fields = ["name", "destination", "source_ae_titles", "modalities", "enabled"]

    def clean_source_ae_titles(self) -> str:
        from pacs.services.forwarding import words

        titles = words(self.cleaned_data["source_ae_titles"])
        bad = sorted(t for t in titles if not AET_RE.match(t))
        if bad:
            raise forms.ValidationError(f"Not an AE title: {', '.join(bad)}")
        return " ".join(sorted(titles))

    def clean_modalities(self) -> str:
        from pacs.services.forwarding import words

        return " ".join(sorted(words(self.cleaned_data["modalities"])))


class AnonymizeForm(forms.Form):
    """The options of an anonymised copy (PS3.15 Annex E, pacs.services.anonymize)."""

    patient_id = forms.CharField(label="New Patient ID (empty: made up, ANON-…)", max_length=64,
                                 required=False)
    patient_name = forms.CharField(label="New patient name", max_length=64,
                                   initial="ANONYMOUS")
    retain_dates = forms.BooleanField(label="Retain full dates and times (not the birth date)",
                                      required=False)
    retain_device = forms.BooleanField(label="Retain device identity (station, serial "
                                             "numbers)", required=False)
    retain_institution = forms.BooleanField(label="Retain institution identity",
                                            required=False)
    retain_patient_characteristics = forms.BooleanField(
        label="Retain patient characteristics (sex, age, size, weight)", required=False)
    keep_descriptions = forms.BooleanField(
        label="Keep descriptions (study, series, protocol): I checked that they name nobody",
        required=False)


class StudyModifyForm(forms.Form):
    """Study attributes an admin may change (pacs.services.modify.STUDY_ATTRIBUTES)."""

    StudyDescription = forms.CharField(label="Study description", max_length=64,
                                       required=False)
    AccessionNumber = forms.CharField(label="Accession number", max_length=16, required=False)
    StudyID = forms.CharField(label="Study ID", max_length=16, required=False)
    StudyDate = forms.RegexField(label="Study date (YYYYMMDD)", regex=r"^(\d{8})?$",
                                 required=False)
    StudyTime = forms.RegexField(label="Study time (HHMMSS)", regex=r"^(\d{2,6}(\.\d{1,6})?)?$",
                                 required=False)
    ReferringPhysicianName = forms.CharField(label="Referring physician (FAMILY^GIVEN)",
                                             max_length=64, required=False)


class SeriesModifyForm(forms.Form):
    SeriesDescription = forms.CharField(label="Series description", max_length=64,
                                        required=False)
    SeriesNumber = forms.RegexField(label="Series number", regex=r"^(-?\d{1,11})?$",
                                    required=False)
    BodyPartExamined = forms.CharField(label="Body part examined", max_length=16,
                                       required=False)
    StationName = forms.CharField(label="Station name", max_length=16, required=False)
