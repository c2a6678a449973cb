from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core import audit
from pacs.models import Patient


class Command(BaseCommand):
    help = ("Give the patients that have no issuer the site's own (PORTAL_LOCAL_ISSUER): run "
            "once after setting it on a portal that has patients already, so that their "
            "images, orders and HL7 messages keep finding them. A patient whose ID exists "
            "with the local issuer too is left alone and listed: merge the two.")

    def handle(self, *args, **options) -> None:
        issuer = settings.LOCAL_ISSUER
        if not issuer:
            raise CommandError("PORTAL_LOCAL_ISSUER is not set")
        with transaction.atomic():
            bare = Patient.objects.filter(issuer_of_patient_id="")
            taken = set(Patient.objects.filter(
                issuer_of_patient_id=issuer, patient_id__in=bare.values("patient_id"))
                .values_list("patient_id", flat=True))
            moved = bare.exclude(patient_id__in=taken).update(issuer_of_patient_id=issuer)
            audit.record(category="patient", action="local issuer adopted",
                         actor="adopt_local_issuer",
                         detail=f"{moved} patient(s) given issuer {issuer}; {len(taken)} left "
                                "alone (the ID exists with that issuer: merge them)")
        self.stdout.write(f"{moved} patient(s) now have issuer {issuer}")
        for patient_id in sorted(taken):
            self.stdout.write(f"  left alone (exists as {patient_id}^^^{issuer} too, merge "
                              f"them): {patient_id}")
