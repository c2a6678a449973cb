"""Reads for the portal pages."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet, Subquery, Sum
from pydicom.dataset import Dataset

from pacs import query
from pacs.matching import date_range_q, name_words_q, prefix_q, single_value_q
from pacs.models import ApplicationEntity, Instance, Patient, Series, Study


@dataclass(frozen=True)
class StudyFilter:
    patient_name: str = ""
    patient_id: str = ""
    date_from: str = ""  # YYYYMMDD
    date_to: str = ""
    modality: str = ""
    accession_number: str = ""
    sort: str = "-date"  # a key of STUDY_SORTS, "-" first for descending


# The study list's sortable columns: the index columns each sorts by
STUDY_SORTS = {
    "date": ("study_date", "study_time"),
    "name": ("patient__patient_name_norm",),
    "id": ("patient__patient_id",),
    "accession": ("accession_number",),
    "description": ("study_description",),
    "modality": ("modalities_in_study",),
    "instances": ("number_of_instances",),
    "received": ("updated_at",),
}


def study_search(f: StudyFilter) -> QuerySet[Study]:
    """The study list: the name matches any of its words, accents and case aside
    (pacs.matching.name_words_q), or, written with ^, component by component; the other keys
    as C-FIND matches them."""
    # FAMILY^GIVEN typed as DICOM writes it: its components in their places, as C-FIND
    # matches; words without ^: any part of the name, accents aside
    name = (prefix_q("patient__patient_name_norm", f.patient_name.upper())
            if "^" in f.patient_name else
            name_words_q("patient__patient_name_words", f.patient_name))
    q = (
        name
        & single_value_q("patient__patient_id", f.patient_id)
        & single_value_q("accession_number", f.accession_number)
    )
    if f.date_from or f.date_to:
        q &= date_range_q("study_date", f"{f.date_from}-{f.date_to}")
    if f.modality:
        # ModalitiesInStudy holds 'CT\\MR'; match one modality as a whole value.
        q &= single_value_q("modalities_in_study", f"*{f.modality.upper()}*")
    descending = f.sort.startswith("-")
    columns = STUDY_SORTS.get(f.sort.lstrip("-"), STUDY_SORTS["date"])
    order = [("-" if descending else "") + c for c in (*columns, "id")]
    return Study.objects.filter(q).select_related("patient").order_by(*order)


def study_detail(study_uid: str) -> Study:
    return Study.objects.select_related("patient").get(study_instance_uid=study_uid)


def series_of_study(study: Study) -> QuerySet[Series]:
    return study.series.order_by("series_number", "id")


def instances_of_series(series: Series) -> QuerySet[Instance]:
    return series.instances.defer("metadata").order_by("instance_number", "id")


def archive_totals() -> dict[str, int]:
    return {
        "patients": Patient.objects.count(),
        "studies": Study.objects.count(),
        "series": Series.objects.count(),
        "instances": Instance.objects.count(),
        "bytes": Instance.objects.aggregate(total=Sum("file_size"))["total"] or 0,
        "aes": ApplicationEntity.objects.count(),
    }


def recent_studies(limit: int = 10) -> QuerySet[Study]:
    return Study.objects.select_related("patient").order_by("-updated_at")[:limit]


def instances_for(
    *, patient_id: str | None = None, issuer: str | None = None,
    study_uid: str | None = None, series_uid: str | None = None,
):
    qs = Instance.objects.select_related("series__study__patient").order_by("id")
    if patient_id is not None:
        qs = qs.filter(series__study__patient__patient_id=patient_id)
        if issuer is not None:
            qs = qs.filter(series__study__patient__issuer_of_patient_id=issuer)
    if study_uid:
        qs = qs.filter(series__study__study_instance_uid=study_uid)
    if series_uid:
        qs = qs.filter(series__series_instance_uid=series_uid)
    return qs


@dataclass(frozen=True)
class RetrievalItem:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_key: str


def retrieval_items(level_name: str, identifier: Dataset) -> list[RetrievalItem]:
    """The stored files a retrieve identifier names (C-MOVE/C-GET SCP, send jobs)."""
    rows = query.retrieve_instances(level_name, identifier).values_list(
        "sop_instance_uid", "sop_class_uid", "transfer_syntax_uid", "file_key")
    return [RetrievalItem(*row) for row in rows]


def forwarding_queues() -> list[dict]:
    """Per destination with forwarded items: pending, sent and failed counts, last error."""
    from django.db.models import Count, OuterRef, Q, Subquery

    from pacs.models import ApplicationEntity, ForwardItem

    items = ForwardItem.objects.filter(destination=OuterRef("pk"))
    last_error = items.exclude(last_error="").order_by("-pk").values("last_error")[:1]
    return list(ApplicationEntity.objects.filter(forward_items__isnull=False).annotate(
        pending=Count("forward_items", filter=Q(forward_items__status=ForwardItem.Status.PENDING)),
        sent=Count("forward_items", filter=Q(forward_items__status=ForwardItem.Status.SENT)),
        failed=Count("forward_items", filter=Q(forward_items__status=ForwardItem.Status.FAILED)),
        last_error=Subquery(last_error),
    ).order_by("ae_title").values("pk", "ae_title", "pending", "sent", "failed", "last_error"))


def forward_items(*, destination: int | None = None, status: str = "") -> QuerySet:
    """The forwarding queue item by item, newest first, each with whether its instance is
    still in the archive (``source_exists``) and where it is (``study_uid``)."""
    from django.db.models import Exists, OuterRef

    from pacs.models import ForwardItem

    stored = Instance.objects.filter(sop_instance_uid=OuterRef("sop_instance_uid"))
    items = ForwardItem.objects.select_related("destination", "rule").annotate(
        source_exists=Exists(stored),
        study_uid=Subquery(stored.values("series__study__study_instance_uid")[:1]))
    if destination:
        items = items.filter(destination_id=destination)
    if status:
        items = items.filter(status=status)
    return items.order_by("-id")
