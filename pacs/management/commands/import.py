from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pacs.services.importer import collect_files, import_files


class Command(BaseCommand):
    help = "Import DICOM files, folders (recursively) and DICOMDIRs into the archive."

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, paths: list[str], no_progress: bool, **options) -> None:
        try:
            files = collect_files(paths)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        with tqdm(total=len(files), unit="file", disable=no_progress or None) as bar:
            summary = import_files(files, progress=lambda: bar.update(1))
        self.stdout.write(f"{len(files)} file(s): {summary.counts_line()}")
        for line in summary.reason_lines():
            self.stdout.write(line)
