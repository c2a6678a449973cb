"""Application entity services: C-ECHO a remote AE and record the result."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from core import audit
from dicomnet.scu import echo
from pacs.models import ApplicationEntity


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    detail: str
    elapsed_ms: float


def echo_application_entity(*, ae: ApplicationEntity, actor: str = "") -> EchoResult:
    started = time.perf_counter()
    ok, detail = echo(
        host=ae.host, port=ae.port, called_aet=ae.ae_title, calling_aet=settings.DIMSE_AET,
        use_tls=ae.use_tls,
    )
    elapsed = (time.perf_counter() - started) * 1000
    ApplicationEntity.objects.filter(pk=ae.pk).update(
        last_echo_at=timezone.now(), last_echo_ok=ok, last_echo_detail=detail[:255]
    )
    audit.record(
        category="admin",
        action="C-ECHO",
        outcome="success" if ok else "failure",
        actor=actor,
        source=f"{ae.ae_title}@{ae.host}:{ae.port}",
        detail=detail,
    )
    return EchoResult(ok=ok, detail=detail, elapsed_ms=round(elapsed, 1))
