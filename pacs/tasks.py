"""Celery tasks of the archive. Embedded mode runs them in-process (CELERY_TASK_ALWAYS_EAGER)."""

from __future__ import annotations

from celery import shared_task

from pacs.models import ApplicationEntity
from pacs.services.aes import echo_application_entity
from pacs.services.commitment import courier as commitment_courier
from pacs.services.forwarding import courier as forward_courier
from pacs.services.jobs import run_job


@shared_task(name="pacs.echo_ae")
def echo_ae(ae_id: int, actor: str = "") -> dict:
    ae = ApplicationEntity.objects.get(pk=ae_id)
    result = echo_application_entity(ae=ae, actor=actor)
    return {"ok": result.ok, "detail": result.detail, "elapsed_ms": result.elapsed_ms}


@shared_task(name="pacs.run_job", acks_late=True)
def run_job_task(job_id: int) -> str | None:
    job = run_job(job_id)
    return job.state if job else None


@shared_task(name="pacs.send_commitment_reports", bind=True, max_retries=None, acks_late=True)
def send_commitment_reports_task(self, ae_title: str, token: str = "") -> None:
    """Scale mode: Storage Commitment reports to an AE, from a worker; while the AE cannot be
    reached, the task runs again with backoff (portal.retry, portal.delivery)."""
    delay = commitment_courier.run_task(ae_title, token)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task(name="pacs.send_forward_queue", bind=True, max_retries=None, acks_late=True)
def send_forward_queue_task(self, destination: str, token: str = "") -> None:
    """Scale mode: forwarded instances to a destination AE (its pk), from a worker; while it
    cannot be reached, the task runs again with backoff (portal.retry, portal.delivery)."""
    delay = forward_courier.run_task(destination, token)
    if delay is not None:
        raise self.retry(countdown=delay)
