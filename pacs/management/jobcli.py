"""Shared by the transfer commands: start a job and follow it with a progress bar."""

from __future__ import annotations

import time

from django.core.management.base import CommandError
from tqdm import tqdm

from core.errors import ServiceError
from pacs.models import ApplicationEntity, Job
from pacs.services import jobs


def add_target_arguments(parser) -> None:
    parser.add_argument("--ae", required=True, help="AE title from the AE table")
    parser.add_argument("--patient", help="Patient ID")
    parser.add_argument("--study", help="Study Instance UID")
    parser.add_argument("--series", help="Series Instance UID (with --study)")
    parser.add_argument("--no-progress", action="store_true")


def remote_ae(ae_title: str) -> ApplicationEntity:
    ae = ApplicationEntity.objects.filter(ae_title=ae_title).first()
    if ae is None:
        raise CommandError(f"AE title {ae_title!r} is not in the AE table (add it in the portal)")
    return ae


def level_and_keys(patient: str | None, study: str | None, series: str | None
                   ) -> tuple[str, dict[str, str]]:
    if series:
        if not study:
            raise CommandError("--series needs --study as well")
        return "SERIES", {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    if study:
        return "STUDY", {"StudyInstanceUID": study}
    if patient:
        return "PATIENT", {"PatientID": patient}
    raise CommandError("give --patient, --study or --study and --series")


def run_and_follow(command, *, kind: str, remote: ApplicationEntity, level: str,
                   keys: dict[str, str], no_progress: bool) -> Job:
    try:
        job = jobs.create_job(kind=kind, remote=remote, level=level, keys=keys,
                              actor="cli", description=f"{kind} {level.lower()} (command line)")
    except ServiceError as exc:
        raise CommandError(str(exc)) from exc
    with tqdm(unit="instance", disable=no_progress or None) as bar:
        while True:
            job.refresh_from_db()
            bar.total = job.total
            bar.n = job.done_count
            bar.set_postfix_str(job.state)
            bar.refresh()
            if job.is_final:
                break
            time.sleep(0.3)
    command.stdout.write(f"job {job.pk}: {job.get_state_display()}; {job.completed} completed, "
                         f"{job.failed} failed, {job.warning} warning")
    if job.error:
        command.stderr.write(f"error: {job.error}")
    if job.state in (Job.State.FAILED, Job.State.CANCELED):
        raise CommandError(f"job {job.pk} {job.state}")
    return job
