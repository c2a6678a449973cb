"""Retrieve a study or series from a remote AE into the archive (C-MOVE to us, or C-GET)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from pacs.management.jobcli import add_target_arguments, level_and_keys, remote_ae, run_and_follow
from pacs.models import Job


class Command(BaseCommand):
    help = "Retrieve from a remote AE: --ae TITLE --study UID [--series UID] [--get]."

    def add_arguments(self, parser) -> None:
        add_target_arguments(parser)
        parser.add_argument("--get", action="store_true",
                            help="use C-GET instead of C-MOVE (no need for the remote to "
                                 "know our AE title)")

    def handle(self, *args, **opts) -> None:
        level, keys = level_and_keys(opts["patient"], opts["study"], opts["series"])
        run_and_follow(self, kind=Job.Kind.GET if opts["get"] else Job.Kind.MOVE,
                       remote=remote_ae(opts["ae"]), level=level, keys=keys,
                       no_progress=opts["no_progress"])
