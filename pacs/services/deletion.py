"""Deleting a study, a series or an instance from the archive (an admin's action).

One transaction removes the rows and keeps the parents' computed keys true (numbers of series
and instances, Modalities in Study); a series or study left empty goes too, as in Orthanc.
The files are deleted once that transaction has committed, so a failure deletes nothing. The
patient stays: the patient registry also serves the worklist's orders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count

from core import audit
from core.errors import NotFound
from core.models import AuditEvent
from pacs.models import Instance, Series, Study
from pacs.storage import get_storage

LEVELS = ("study", "series", "instance")


@dataclass(frozen=True)
class Deleted:
    studies: int
    series: int
    instances: int
    study_uid: str  # the study it was in (gone too when ``studies``)


def delete(level: str, uid: str, *, actor: str) -> Deleted:
    """Delete the study, series or instance ``uid``; NotFound when it is not in the archive."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    storage = get_storage()
    with transaction.atomic():
        study = _locked_study(level, uid)
        instances = Instance.objects.filter(series__study=study)
        if level == "series":
            instances = instances.filter(series__series_instance_uid=uid)
        elif level == "instance":
            instances = instances.filter(sop_instance_uid=uid)
        keys = list(instances.values_list("file_key", flat=True))
        instances.delete()
        n_series, study_gone = tidy(study)
        transaction.on_commit(lambda: [storage.delete(key) for key in keys])
        deleted = Deleted(int(study_gone), n_series, len(keys), study.study_instance_uid)
        audit.record(category="admin", action=f"{level} deleted", actor=actor,
                     detail=f"{level} {uid}: {deleted.studies} study, {deleted.series} series, "
                            f"{deleted.instances} instances")
    return deleted


def deleted_at(uids: Iterable[str]) -> dict[str, datetime]:
    """When each of ``uids`` (study, series or SOP instance UIDs) was last deleted, from the
    audit trail; those never deleted are left out."""
    wanted = set(uids)
    found: dict[str, datetime] = {}
    if not wanted:
        return found
    events = AuditEvent.objects.filter(
        category="admin", action__in=[f"{level} deleted" for level in LEVELS]
    ).order_by("created_at").values_list("detail", "created_at")
    for detail, when in events.iterator(chunk_size=2000):
        _level, _, rest = detail.partition(" ")
        uid = rest.partition(":")[0]
        if uid in wanted:
            found[uid] = when
    return found


def _locked_study(level: str, uid: str) -> Study:
    """The study holding ``uid``, with its series rows and then its own row locked
    (PostgreSQL; SQLite has one writer). A store into it waits, and then retries on the rows
    left (pacs.services.ingest). Series first, as a store takes them: no deadlock."""
    lookup = {"study": "study_instance_uid", "series": "series__series_instance_uid",
              "instance": "series__instances__sop_instance_uid"}[level]
    found = Study.objects.filter(**{lookup: uid}).values_list("pk", flat=True).first()
    if found is None:
        raise NotFound(f"{level} {uid} is not in the archive")
    list(Series.objects.select_for_update().filter(study_id=found).values_list("pk"))
    study = Study.objects.select_for_update().filter(pk=found).first()
    if study is None:  # deleted meanwhile
        raise NotFound(f"{level} {uid} is not in the archive")
    return study


def tidy(study: Study) -> tuple[int, bool]:
    """After instances left ``study`` (deleted, or moved by a replacing store): its emptied
    series go, its computed keys are counted again from the rows, and it goes itself when
    nothing is left. (series deleted, whether the study went)"""
    emptied = Series.objects.filter(study=study, instances__isnull=True)
    n_series = emptied.count()
    emptied.delete()
    gone = not _recount(study)
    if gone:
        study.delete()
    return n_series, gone


def _recount(study: Study) -> int:
    """Set the study's and its series' computed keys from what is left; the series left."""
    left = list(Series.objects.filter(study=study).annotate(n=Count("instances"))
                .values_list("pk", "modality", "n"))
    for pk, _modality, n in left:
        Series.objects.filter(pk=pk).update(number_of_instances=n)
    if left:
        Study.objects.filter(pk=study.pk).update(
            number_of_series=len(left), number_of_instances=sum(n for *_, n in left),
            modalities_in_study="\\".join(sorted({m for _, m, _n in left if m})))
    return len(left)
