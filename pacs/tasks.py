"""Celery tasks of the archive. Embedded mode runs them in-process (CELERY_TASK_ALWAYS_EAGER)."""

from __future__ import annotations

from celery import shared_task

from core.delivery import celery_task
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


send_commitment_reports_task = celery_task(
    commitment_courier, "pacs.send_commitment_reports",
    "Scale mode: Storage Commitment reports to an AE, oldest first, from a worker.")
send_forward_queue_task = celery_task(
    forward_courier, "pacs.send_forward_queue",
    "Scale mode: forwarded instances to a destination AE (its pk), from a worker.")
