from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from core.errors import ServiceError
from pacs import identity
from pacs.models import Job, Patient
from pacs.services import anonymize


class Command(BaseCommand):
    help = ("Make an anonymised copy of a study, or of all of a patient's studies, in the "
            "archive (PS3.15 Annex E Basic Application Level Confidentiality Profile: new "
            "UIDs consistent across the copy, private attributes removed). The original "
            "stays. Prints the new Study Instance UID (a study) or Patient ID (a patient).")

    def add_arguments(self, parser) -> None:
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--study", metavar="STUDY_UID", help="Study Instance UID")
        what.add_argument("--patient", metavar="PATIENT_ID", help="the patient's ID")
        parser.add_argument("--issuer", default="", help="the patient ID's issuer")
        parser.add_argument("--new-patient-id", default="",
                            help="the copy's Patient ID (default: made up, ANON-...)")
        parser.add_argument("--new-patient-name", default="ANONYMOUS")
        parser.add_argument("--retain-dates", action="store_true",
                            help="Retain Longitudinal Temporal Information with Full Dates")
        parser.add_argument("--retain-device", action="store_true",
                            help="Retain Device Identity")
        parser.add_argument("--retain-institution", action="store_true",
                            help="Retain Institution Identity")
        parser.add_argument("--retain-patient-characteristics", action="store_true",
                            help="Retain Patient Characteristics (sex, age, size, weight)")
        parser.add_argument("--keep-descriptions", action="store_true",
                            help="keep study, series and protocol descriptions as they are "
                                 "(check first that they name nobody)")

    def handle(self, *args, **o) -> None:
        if o["study"]:
            level, what = "STUDY", o["study"]
        else:
            patient = Patient.objects.filter(
                patient_id=o["patient"],
                issuer_of_patient_id=identity.issuer_or_local(o["issuer"])).first()
            if patient is None:
                raise CommandError(f"no patient with ID {o['patient']!r}")
            level, what = "PATIENT", patient.pk
        options = anonymize.Options(
            retain_dates=o["retain_dates"], retain_device=o["retain_device"],
            retain_institution=o["retain_institution"],
            retain_patient_characteristics=o["retain_patient_characteristics"],
            keep_descriptions=o["keep_descriptions"], patient_id=o["new_patient_id"],
            patient_name=o["new_patient_name"])
        try:
            job = anonymize.start(level=level, uid_or_patient=what, options=options,
                                  actor="manage.py anonymize", run_now=True)
        except ServiceError as exc:
            raise CommandError(str(exc)) from exc
        if job.state != Job.State.DONE:
            raise CommandError(f"job {job.pk} {job.get_state_display()}: "
                               f"{job.completed} copied, {job.failed} failed. {job.error}")
        self.stdout.write(job.result.removeprefix("patient "))
        self.stderr.write(f"{job.completed} instance(s) copied (job {job.pk})")
