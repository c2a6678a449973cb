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
        counts = summary.counts
        self.stdout.write(
            f"{len(files)} file(s): {counts['stored']} stored, {counts['duplicate']} duplicate, "
            f"{counts['replaced']} replaced, {counts['rejected']} rejected, "
            f"{counts['skipped']} skipped"
        )
        for reason, where in sorted(summary.reasons.items()):
            shown = ", ".join(where[:3]) + (f" (+{len(where) - 3} more)" if len(where) > 3 else "")
            self.stdout.write(f"  {reason}: {shown}")
