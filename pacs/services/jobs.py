"""Transfer jobs with a remote AE: send (C-STORE SCU), retrieve by C-MOVE (we are the
destination) or C-GET. Created by the portal or the command line; run in a thread of the
web process in embedded mode and on a Celery worker in scale mode."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from pydicom.dataset import Dataset

from core import audit
from core.errors import ServiceError
from core.tasks import send_task
from dicomnet import scu
from pacs.models import ApplicationEntity, Job
from pacs.selectors import retrieval_items
from pacs.services import anonymize, modify
from pacs.services.ingest import store_instance
from pacs.services.sending import send_stored

log = logging.getLogger(__name__)

LEVEL_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
}
PROGRESS_INTERVAL = 0.3  # seconds between progress writes


def create_job(*, kind: str, remote: ApplicationEntity, level: str, keys: dict[str, str],
               actor: str, description: str = "") -> Job:
    if level not in LEVEL_KEYS or not all(keys.get(k) for k in LEVEL_KEYS[level]):
        raise ServiceError(f"a {level} job needs {', '.join(LEVEL_KEYS.get(level, ('a level',)))}")
    with transaction.atomic():
        job = Job.objects.create(kind=kind, remote=remote, level=level, keys=keys,
                                 description=description[:255], created_by=actor)
        audit.record(category="job", action=f"create {kind}", actor=actor,
                     detail=f"job {job.pk} with {remote.ae_title}, {level}")
        transaction.on_commit(lambda: enqueue(job.pk))
    return job


def enqueue(job_id: int) -> None:
    if settings.SCALE_MODE:
        send_task("pacs.run_job", job_id)
    else:
        threading.Thread(target=_run_in_thread, args=(job_id,), name=f"job-{job_id}",
                         daemon=True).start()


def _run_in_thread(job_id: int) -> None:
    try:
        run_job(job_id)
    finally:
        connection.close()


def cancel_job(*, job: Job, actor: str) -> None:
    if job.is_final:
        return
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
            state=Job.State.CANCELED, cancel_requested=True, finished_at=timezone.now()):
        pass  # never started
    else:
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    audit.record(category="job", action="cancel", actor=actor, detail=f"job {job.pk}")


def retry_job(*, job: Job, actor: str) -> None:
    """Run a finished job again from the start (a retrieve skips what is already stored)."""
    if not job.is_final:
        return
    Job.objects.filter(pk=job.pk).update(
        state=Job.State.QUEUED, cancel_requested=False, total=None, completed=0, failed=0,
        warning=0, failed_instances=[], error="", started_at=None, finished_at=None)
    audit.record(category="job", action="retry", actor=actor, detail=f"job {job.pk}")
    transaction.on_commit(lambda: enqueue(job.pk))


def run_job(job_id: int) -> Job | None:
    """Run a queued job to its end. Safe to call twice: only one caller claims the job."""
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1)
    if not claimed:
        return None
    job = Job.objects.select_related("remote").get(pk=job_id)
    reporter = _Reporter(job)
    try:
        if job.kind == Job.Kind.SEND:
            _send(job, reporter)
        elif job.kind == Job.Kind.MODIFY:
            modify.run(job, reporter)
        elif job.kind == Job.Kind.ANONYMIZE:
            anonymize.run(job, reporter)
        else:
            _retrieve(job, reporter)
    except ServiceError as exc:
        job.error = str(exc)
    except Exception as exc:  # a job failure must be visible on the page, not only in logs
        log.exception("job %s failed", job_id)
        job.error = f"{type(exc).__name__}: {exc}"
    reporter.finish()
    return job


class _Reporter:
    """Writes progress to the job row (throttled) and reads the cancel flag back."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.cancelled = False
        self._written = 0.0

    def update(self, progress: scu.Progress, *, force: bool = False) -> bool:
        job = self.job
        job.completed, job.failed, job.warning = (progress.completed, progress.failed,
                                                  progress.warning)
        if progress.remaining is not None:
            job.total = progress.remaining + job.done_count
        if progress.failed_uids:
            job.failed_instances = progress.failed_uids
        if force or time.monotonic() - self._written > PROGRESS_INTERVAL:
            Job.objects.filter(pk=job.pk).update(
                total=job.total, completed=job.completed, failed=job.failed,
                warning=job.warning, failed_instances=job.failed_instances)
            self._written = time.monotonic()
            self.cancelled = Job.objects.filter(pk=job.pk, cancel_requested=True).exists()
        return not self.cancelled

    def finish(self) -> None:
        job = self.job
        if self.cancelled or Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
            job.state = Job.State.CANCELED
        elif job.error or (job.failed and not job.completed and not job.warning):
            job.state = Job.State.FAILED
        elif job.failed:
            job.state = Job.State.PARTIAL
        else:
            job.state = Job.State.DONE
        if job.total is None:
            job.total = job.done_count
        job.finished_at = timezone.now()
        Job.objects.filter(pk=job.pk).update(
            state=job.state, total=job.total, completed=job.completed, failed=job.failed,
            warning=job.warning, failed_instances=job.failed_instances, error=job.error,
            finished_at=job.finished_at)


def identifier_for(job: Job) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = job.level
    for keyword in LEVEL_KEYS[job.level]:
        setattr(ds, keyword, job.keys[keyword])
    return ds


def _peer(job: Job) -> scu.Peer:
    return scu.Peer.of(job.remote)


def _send(job: Job, reporter: _Reporter) -> None:
    items = retrieval_items(job.level, identifier_for(job))
    if not items:
        raise ServiceError("nothing in the archive matches this job")
    progress = scu.Progress(remaining=len(items))
    pairs = {(item.sop_class_uid, item.transfer_syntax_uid) for item in items}
    with scu.StoreSession(_peer(job), calling_aet=settings.DIMSE_AET, pairs=pairs) as session:
        for item in items:
            if not reporter.update(progress):
                break
            progress.record(item.sop_instance_uid, send_stored(
                session, item.file_key, item.sop_class_uid, item.transfer_syntax_uid))
    reporter.update(progress, force=True)


def _retrieve(job: Job, reporter: _Reporter) -> None:
    peer, identifier = _peer(job), identifier_for(job)
    if job.kind == Job.Kind.MOVE:
        progress = scu.move(peer, identifier, calling_aet=settings.DIMSE_AET,
                            destination=settings.DIMSE_AET, on_progress=reporter.update)
    else:
        progress = scu.get(peer, identifier, calling_aet=settings.DIMSE_AET,
                           store=_store_from(peer), on_progress=reporter.update)
    reporter.update(progress, force=True)


def _store_from(peer: scu.Peer):
    origin = f"dimse:{peer.ae_title}@{peer.host} (C-GET)"

    def store(data: bytes) -> int:
        try:
            store_instance(data=data, received_from=origin)
        except ServiceError as exc:
            log.warning("C-GET from %s: instance refused: %s", peer.ae_title, exc.log_text())
            return exc.dimse_status
        return 0x0000

    return store


def send_studies(study_uids: list[str], remote: ApplicationEntity, *, actor: str) -> list[Job]:
    """A send job per study of a selection (the study list's bulk send)."""
    from pacs.models import Study

    found = Study.objects.filter(study_instance_uid__in=study_uids).values_list(
        "study_instance_uid", "study_description")
    return [create_job(kind=Job.Kind.SEND, remote=remote, level="STUDY",
                       keys={"StudyInstanceUID": uid}, actor=actor,
                       description=f"send study {description or uid}")
            for uid, description in found]
