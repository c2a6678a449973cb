from __future__ import annotations

import datetime as dt

from django import forms
from django.utils import timezone

from dicomnet import modalities
from pacs.forms import AET_RE
from pacs.models import ApplicationEntity
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
    time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"))
    referring_family = forms.CharField(label="Referring physician: family name",
                                       max_length=64, required=False)
    referring_given = forms.CharField(label="Referring physician: given name", max_length=64,
                                      required=False)
    reason = forms.CharField(label="Reason for the procedure", max_length=64, required=False)
    priority = forms.ChoiceField(choices=Order.Priority.choices, initial=Order.Priority.ROUTINE)
    confirm_past = forms.BooleanField(
        label="Schedule in the past", required=False,
        help_text="Needed only when the date and time have passed (e.g. entering an "
                  "examination already done).")
    confirm_overlap = forms.BooleanField(
        label="Book anyway (double booking)", required=False,
        help_text="Needed only when the station is booked at that time.")

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
        _check_names(self, data, ("family_name", "given_name", "referring_family",
                                  "referring_given"))
        _check_past(self, data)
        return data

    def patient_name(self) -> str:
        d = self.cleaned_data
        return person_name(d["family_name"], d.get("given_name") or "")

    def referring_physician(self) -> str:
        d = self.cleaned_data
        return person_name(d.get("referring_family") or "", d.get("referring_given") or "")

    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.cleaned_data["date"], self.cleaned_data["time"])


def person_name(family: str, given: str) -> str:
    """A DICOM/HL7 person name (PN, XPN) from its fields: ``FAMILY^GIVEN``, upper case."""
    parts = [family.strip().upper(), given.strip().upper()]
    return parts[0] if not parts[1] else "^".join(parts)


def _check_names(form: forms.Form, data: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        if "^" in (data.get(key) or "") or "=" in (data.get(key) or ""):
            form.add_error(key, "Names cannot contain ^ or =.")


def _check_past(form: forms.Form, data: dict) -> None:
    """A date and time that have passed are refused unless confirmed: most often a typo (last
    year, a.m. for p.m.), and a modality asking for today's worklist would never see it."""
    day, time = data.get("date"), data.get("time")
    if day is None or time is None or data.get("confirm_past"):
        return
    start = timezone.make_aware(dt.datetime.combine(day, time))
    if start < timezone.now() - dt.timedelta(minutes=5):
        form.add_error("date", "This date and time have passed: tick \u201cSchedule in the "
                               "past\u201d to schedule it anyway.")


class RescheduleForm(forms.Form):
    station = forms.ModelChoiceField(queryset=Station.objects.filter(active=True),
                                     required=False, help_text="empty: keep the station")
    date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"))
    duration = forms.IntegerField(label="Minutes", min_value=1, max_value=1440, required=False,
                                  help_text="empty: keep the step's")
    confirm_past = forms.BooleanField(label="Schedule in the past", required=False)
    confirm_overlap = forms.BooleanField(label="Book anyway (double booking)", required=False)

    def clean(self):
        data = super().clean()
        _check_past(self, data)
        return data

    @classmethod
    def for_step(cls, step) -> RescheduleForm:
        """Prefilled with the step's station, date and time; element ids of its own, as an
        order page shows one form per step."""
        initial = {"station": Station.objects.filter(
            ae_title=step.scheduled_station_ae_title).first(),
            "duration": step.duration_minutes}
        try:
            initial["date"] = dt.datetime.strptime(step.start_date, "%Y%m%d").date()
            initial["time"] = dt.datetime.strptime(step.start_time[:4], "%H%M").time()
        except ValueError:  # an HL7 sender's odd value: nothing prefilled
            pass
        return cls(initial=initial, auto_id=f"id_step{step.pk}_%s")


class _ModalityChoice:
    """A modality chosen from the defined terms (a value stored before is kept)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["modality"] = forms.ChoiceField(
            choices=modalities.choices(self.instance.modality if self.instance.pk else ""),
            help_text="Modality (0008,0060), as the modality puts it in its images")


class StationForm(_ModalityChoice, forms.ModelForm):
    class Meta:
        model = Station
        fields = ["ae_title", "name", "modality", "location", "active"]

    def clean_ae_title(self) -> str:
        value = self.cleaned_data["ae_title"].strip()
        if not AET_RE.match(value):
            raise forms.ValidationError("1-16 printable ASCII characters without a backslash.")
        if not ApplicationEntity.objects.filter(ae_title=value).exists():
            # the modality asks for its worklist under this AE title: unknown, it is refused
            # (or sees nothing) however the steps are scheduled
            raise forms.ValidationError(
                f"No AE title {value} on the AE titles page: add the modality's AE title "
                "there first (with \u201cmay query worklist\u201d), then its station.")
        return value


class ProcedureForm(_ModalityChoice, forms.ModelForm):
    class Meta:
        model = Procedure
        fields = ["code_value", "coding_scheme_designator", "code_meaning", "modality",
                  "duration_minutes", "active"]


class BoardForm(forms.Form):
    date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    view = forms.ChoiceField(required=False, choices=[("day", "day"), ("week", "week")])
    station = forms.ChoiceField(required=False)
    modality = forms.ChoiceField(required=False,
                                 choices=[("", "all"), *modalities.choices()])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["station"].choices = [("", "all"), *(
            (s.ae_title, str(s)) for s in Station.objects.filter(active=True))]


class OrderEditForm(forms.ModelForm):
    referring_family = forms.CharField(label="Referring physician: family name",
                                       max_length=64, required=False)
    referring_given = forms.CharField(label="Referring physician: given name", max_length=64,
                                      required=False)

    class Meta:
        model = Order
        fields = ["reason", "priority", "medical_alerts", "contrast_allergies"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # the alphabetic group: an ideographic or phonetic one (after "=") stays as it came
        alphabetic = self.instance.referring_physician_name.split("=")[0]
        family, _, rest = alphabetic.partition("^")
        self.fields["referring_family"].initial = family
        self.fields["referring_given"].initial = rest.split("^")[0]
        self.order_fields(["referring_family", "referring_given"])

    def clean(self):
        data = super().clean()
        _check_names(self, data, ("referring_family", "referring_given"))
        return data

    def changes(self) -> dict:
        """The order's fields as the form sets them. A name's other components (middle name,
        prefix, suffix, as HL7 may bring them) stay unless family or given name changed."""
        d = dict(self.cleaned_data)
        family, given = d.pop("referring_family"), d.pop("referring_given")
        if (family.strip().upper(), given.strip().upper()) != (
                self.fields["referring_family"].initial.upper(),
                self.fields["referring_given"].initial.upper()):
            d["referring_physician_name"] = person_name(family, given)
        return d


class PatientEditForm(forms.Form):
    """A patient's demographics on the patient page. The name's other components and groups
    (middle name, an ideographic writing, as HL7 may bring them) stay unless family or given
    name changed."""

    family_name = forms.CharField(label="Family name", max_length=64)
    given_name = forms.CharField(label="Given name", max_length=64, required=False)
    birth_date = forms.DateField(label="Birth date", required=False,
                                 widget=forms.DateInput(attrs={"type": "date"}))
    sex = forms.ChoiceField(label="Sex", choices=SEX, required=False)

    def __init__(self, *args, patient, **kwargs) -> None:
        self.patient = patient
        family, _, rest = patient.patient_name.split("=")[0].partition("^")
        birth = patient.patient_birth_date
        kwargs.setdefault("initial", {
            "family_name": family, "given_name": rest.split("^")[0],
            "birth_date": dt.date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
            if len(birth) == 8 and birth.isdigit() else None,
            "sex": patient.patient_sex if patient.patient_sex in ("F", "M", "O") else ""})
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean()
        _check_names(self, data, ("family_name", "given_name"))
        return data

    def values(self) -> dict[str, str]:
        d = self.cleaned_data
        name = self.patient.patient_name
        if (d["family_name"].strip().upper(), d["given_name"].strip().upper()) != (
                self.initial["family_name"].upper(), self.initial["given_name"].upper()):
            name = person_name(d["family_name"], d["given_name"])
        return {"name": name, "sex": d["sex"],
                "birth_date": d["birth_date"].strftime("%Y%m%d") if d["birth_date"] else ""}


class MergeForm(forms.Form):
    """The patient to merge into this one (the prior patient of an ADT^A40)."""

    prior_patient_id = forms.CharField(label="Patient ID to merge into this patient",
                                       max_length=64)
    prior_issuer = forms.CharField(label="Its issuer (empty: the site's own)", max_length=64,
                                   required=False)
    confirm = forms.BooleanField(label="Yes: the other patient's studies and orders become "
                                       "this patient's, and the other record goes away")


def overlap_error(form: forms.Form, conflicts: list) -> bool:
    """Tell the scheduler which bookings the chosen time meets (unless *Book anyway* is
    ticked); whether the form may go on."""
    if not conflicts or form.cleaned_data.get("confirm_overlap"):
        return True
    taken = "; ".join(
        f"{c.requested_procedure.order.accession_number} at {c.start_time[:2]}:"
        f"{c.start_time[2:4]} for {c.duration_minutes} min" for c in conflicts[:5])
    form.add_error(None, f"{conflicts[0].scheduled_station_ae_title} is booked then ({taken}). "
                         "Choose another time, or tick Book anyway to double-book.")
    return False
