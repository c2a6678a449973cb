"""Send a patient, study or series to a remote AE (C-STORE SCU) as a job with progress."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from pacs.management.jobcli import add_target_arguments, level_and_keys, remote_ae, run_and_follow
from pacs.models import Job


class Command(BaseCommand):
    help = "Send stored instances to a remote AE: --ae TITLE and --patient, --study or --series."

    def add_arguments(self, parser) -> None:
        add_target_arguments(parser)

    def handle(self, *args, **opts) -> None:
        level, keys = level_and_keys(opts["patient"], opts["study"], opts["series"])
        run_and_follow(self, kind=Job.Kind.SEND, remote=remote_ae(opts["ae"]), level=level,
                       keys=keys, no_progress=opts["no_progress"])
