"""Create orders from worklist item files (e.g. DCMTK's wlistdb *.wl), one order per file."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from pydicom import dcmread

from core.errors import ServiceError
from worklist.services import import_worklist_item


class Command(BaseCommand):
    help = "Import worklist items (DICOM files with a Scheduled Procedure Step Sequence)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", help="files or folders (*.wl, *.dcm)")

    def handle(self, *args, **opts) -> None:
        files = []
        for name in opts["paths"]:
            path = Path(name)
            if not path.exists():
                raise CommandError(f"{path} does not exist")
            files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        created = failed = 0
        for path in files:
            try:
                order = import_worklist_item(dcmread(path, force=True), actor="import_worklist")
            except (ServiceError, ValueError, OSError) as exc:
                failed += 1
                self.stderr.write(f"{path}: {exc}")
                continue
            created += 1
            self.stdout.write(f"{path.name}: order {order.accession_number}")
        self.stdout.write(f"{created} order(s) created, {failed} file(s) rejected")
