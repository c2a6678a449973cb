from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pacs.services import storage_check

SHOWN = 10


class Command(BaseCommand):
    help = ("Check the stored files against the index: files no instance points at (orphans, "
            "left by a crash; leftovers of a deletion cut short among them), instances whose "
            "file is missing, files of the wrong size, and data files or folders others than "
            "the portal's account may read. Exits with status 1 while any of them remain.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--reindex-orphans", action="store_true",
                            help="index orphan files through the ingest path (as import)")
        parser.add_argument("--delete-orphans", action="store_true",
                            help="delete the orphan files and the leftovers of deletions "
                                 "(after --reindex-orphans if given)")
        parser.add_argument("--forget-missing", action="store_true",
                            help="delete the instances whose file is missing")
        parser.add_argument("--fix-modes", action="store_true",
                            help="make data files 0600 and folders 0700")
        parser.add_argument("--fix-counts", action="store_true",
                            help="count studies' and series' numbers of series and instances "
                                 "again from the rows")
        parser.add_argument("--min-age", type=float, default=storage_check.MIN_AGE,
                            help="seconds; younger files are not judged (default %(default)s)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, reindex_orphans: bool, delete_orphans: bool, forget_missing: bool,
               fix_modes: bool, fix_counts: bool, min_age: float, no_progress: bool,
               **options) -> None:
        if min_age < 0:
            raise CommandError("--min-age must be 0 or more")
        actor = "check_storage"
        with tqdm(unit="file", desc="checking", disable=no_progress or None) as bar:
            report = storage_check.check(min_age=min_age, progress=lambda: bar.update(1))
        self._report(report)
        if report.orphans and reindex_orphans:
            with tqdm(total=len(report.orphans), unit="file", desc="reindexing",
                      disable=no_progress or None) as bar:
                summary = storage_check.reindex_orphans(report.orphans, actor=actor,
                                                        progress=lambda: bar.update(1))
            self.stdout.write(f"reindexed orphans: {summary.counts_line()}")
            for line in summary.reason_lines(SHOWN):
                self.stdout.write(line)
        if (report.orphans or report.leftovers) and delete_orphans:
            gone = storage_check.delete_orphans(report.orphans + report.leftovers, actor=actor)
            self.stdout.write(f"deleted {gone} orphan file(s)")
        if report.missing and forget_missing:
            forgotten = storage_check.forget_missing(report.missing, actor=actor)
            self.stdout.write(f"deleted {forgotten} instance(s) whose file was missing")
        if report.open_modes and fix_modes:
            changed = storage_check.make_private(report.open_modes, actor=actor)
            self.stdout.write(f"made {changed} file(s) or folder(s) private")
        if report.wrong_counts and fix_counts:
            counted = storage_check.fix_counts(actor=actor)
            self.stdout.write(f"counted {counted} study(ies) again")
        if reindex_orphans or delete_orphans or forget_missing or fix_modes or fix_counts:
            report = storage_check.check(min_age=min_age)
            self.stdout.write("after repair:")
            self._report(report)
        if not report.clean:
            raise CommandError(
                f"storage has problems: {len(report.orphans)} orphan file(s), "
                f"{len(report.leftovers)} left by a deletion, "
                f"{len(report.missing)} missing file(s), {len(report.wrong_size)} of the "
                f"wrong size, {len(report.open_modes)} readable by others, "
                f"{len(report.wrong_counts)} wrongly counted")

    def _report(self, report: storage_check.StorageReport) -> None:
        self.stdout.write(
            f"{report.files} file(s), {report.instances} instance(s); "
            f"{len(report.orphans)} orphan file(s), {len(report.leftovers)} left by a "
            f"deletion, {len(report.missing)} missing, "
            f"{len(report.wrong_size)} of the wrong size, "
            f"{len(report.open_modes)} readable by others, "
            f"{len(report.wrong_counts)} wrongly counted"
            + (f"; {report.too_new} too new to judge" if report.too_new else ""))
        self._list("orphan file", report.orphans)
        self._list("left by a deletion", report.leftovers)
        self._list("missing file", [m.file_key for m in report.missing])
        self._list("wrong size", [f"{w.file_key} ({w.on_disk} bytes, indexed {w.indexed})"
                                  for w in report.wrong_size])
        self._list("readable by others (chmod go-rwx, or --fix-modes)", report.open_modes)
        self._list("wrongly counted (--fix-counts)", report.wrong_counts)

    def _list(self, what: str, items: list[str]) -> None:
        for item in items[:SHOWN]:
            self.stdout.write(f"  {what}: {item}")
        if len(items) > SHOWN:
            self.stdout.write(f"  ... and {len(items) - SHOWN} more")

