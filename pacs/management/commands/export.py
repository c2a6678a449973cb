from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pacs.selectors import instances_for
from pacs.services.importer import export_instances


class Command(BaseCommand):
    help = "Export stored files (all, or one patient/study/series) to a folder."

    def add_arguments(self, parser) -> None:
        parser.add_argument("out_dir")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true")
        which.add_argument("--patient", metavar="PATIENT_ID")
        which.add_argument("--study", metavar="STUDY_INSTANCE_UID")
        which.add_argument("--series", metavar="SERIES_INSTANCE_UID")
        parser.add_argument("--issuer", help="IssuerOfPatientID, with --patient")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, out_dir: str, **opts) -> None:
        qs = instances_for(
            patient_id=opts["patient"], issuer=opts["issuer"],
            study_uid=opts["study"], series_uid=opts["series"],
        )
        total = qs.count()
        if total == 0:
            raise CommandError("nothing to export: no stored instance matches")
        with tqdm(total=total, unit="file", disable=opts["no_progress"] or None) as bar:
            count = export_instances(qs, Path(out_dir), progress=lambda: bar.update(1))
        self.stdout.write(f"exported {count} file(s) to {out_dir}")
