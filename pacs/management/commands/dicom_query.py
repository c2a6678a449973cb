"""Query a remote AE for studies (C-FIND SCU) and print one line per match."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from core.errors import ServiceError
from pacs.management.jobcli import remote_ae
from pacs.services import remote


class Command(BaseCommand):
    help = "Search studies at a remote AE: --ae TITLE [--name A*] [--id X] [--date 2024-]."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--ae", required=True)
        parser.add_argument("--name", default="", help="PatientName, wildcards * and ?")
        parser.add_argument("--id", default="", help="PatientID")
        parser.add_argument("--date", default="", help="StudyDate or range YYYYMMDD-YYYYMMDD")
        parser.add_argument("--modality", default="")
        parser.add_argument("--accession", default="")

    def handle(self, *args, **opts) -> None:
        try:
            rows = remote.find_studies(
                remote_ae(opts["ae"]), patient_name=opts["name"], patient_id=opts["id"],
                date_range=opts["date"], modality=opts["modality"],
                accession_number=opts["accession"])
        except ServiceError as exc:
            raise CommandError(str(exc)) from exc
        for r in rows:
            self.stdout.write("\t".join([r["StudyDate"], r["PatientID"], r["PatientName"],
                                         r["ModalitiesInStudy"], r["AccessionNumber"],
                                         r["StudyInstanceUID"]]))
        self.stdout.write(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'}")
