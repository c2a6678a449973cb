"""Pages for transfers with remote AEs: jobs (send, retrieve) and the remote search."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.errors import ServiceError
from core.roles import permission_required
from pacs.forms import RemoteQueryForm, SendForm
from pacs.models import ApplicationEntity, Job, Series, Study
from pacs.services import jobs, remote


@permission_required("archive.view")
def job_list(request):
    page = Paginator(Job.objects.select_related("remote"), 50).get_page(request.GET.get("page"))
    active = any(not job.is_final for job in page)
    return render(request, "pacs/job_list.html", {"page": page, "active": active})


@permission_required("archive.view")
def job_detail(request, pk: int):
    job = get_object_or_404(Job.objects.select_related("remote"), pk=pk)
    return render(request, "pacs/job_detail.html", {"job": job})


@permission_required("archive.view")
def job_progress(request, pk: int):
    job = get_object_or_404(Job, pk=pk)
    return JsonResponse({"id": job.pk, "state": job.state, "total": job.total,
                         "completed": job.completed, "failed": job.failed,
                         "warning": job.warning, "percent": job.percent, "error": job.error})


@permission_required("archive.send")
@require_POST
def job_cancel(request, pk: int):
    job = get_object_or_404(Job, pk=pk)
    jobs.cancel_job(job=job, actor=request.user.username)
    messages.info(request, f"Cancel requested for job {job.pk}.")
    return redirect("job-detail", pk=job.pk)


@permission_required("archive.send")
@require_POST
def job_retry(request, pk: int):
    job = get_object_or_404(Job, pk=pk)
    jobs.retry_job(job=job, actor=request.user.username)
    messages.info(request, f"Job {job.pk} queued again.")
    return redirect("job-detail", pk=job.pk)


def _create(request, *, kind: str, remote_ae: ApplicationEntity, level: str,
            keys: dict[str, str], description: str):
    try:
        job = jobs.create_job(kind=kind, remote=remote_ae, level=level, keys=keys,
                              actor=request.user.username, description=description)
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect(request.META.get("HTTP_REFERER") or "job-list")
    messages.success(request, f"Job {job.pk} started: {job.get_kind_display()} "
                              f"with {remote_ae.ae_title}.")
    return redirect("job-detail", pk=job.pk)


@permission_required("archive.send")
@require_POST
def send(request, level: str, uid: str):
    """Send a patient (by study), a study or a series of ours to a remote AE."""
    form = SendForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose an AE to send to.")
        return redirect(request.META.get("HTTP_REFERER") or "study-list")
    if level == "SERIES":
        series = get_object_or_404(Series.objects.select_related("study"),
                                   series_instance_uid=uid)
        keys = {"StudyInstanceUID": series.study.study_instance_uid,
                "SeriesInstanceUID": uid}
        what = f"series {series.series_description or uid}"
    else:
        study = get_object_or_404(Study.objects.select_related("patient"),
                                  study_instance_uid=uid)
        if level == "PATIENT":
            keys = {"PatientID": study.patient.patient_id}
            what = f"patient {study.patient.patient_id}"
        else:
            level, keys = "STUDY", {"StudyInstanceUID": uid}
            what = f"study {study.study_description or uid}"
    return _create(request, kind=Job.Kind.SEND, remote_ae=form.cleaned_data["remote"],
                   level=level, keys=keys, description=f"send {what}")


@permission_required("archive.send")
def remote_search(request):
    form = RemoteQueryForm(request.GET or None)
    results, error = None, ""
    if form.is_bound and form.is_valid():
        d = form.cleaned_data
        try:
            results = remote.find_studies(
                d["remote"], patient_name=d["patient_name"], patient_id=d["patient_id"],
                date_range=form.date_range(), modality=d["modality"],
                accession_number=d["accession_number"])
        except ServiceError as exc:
            error = str(exc)
    return render(request, "pacs/remote_search.html", {
        "form": form, "results": results, "error": error,
        "remote": form.cleaned_data.get("remote") if form.is_bound and form.is_valid() else None,
    })


@permission_required("archive.send")
def remote_study(request, ae_pk: int, study_uid: str):
    remote_ae = get_object_or_404(ApplicationEntity, pk=ae_pk)
    series, error = [], ""
    try:
        series = remote.find_series(remote_ae, study_uid)
    except ServiceError as exc:
        error = str(exc)
    return render(request, "pacs/remote_study.html", {
        "remote": remote_ae, "study_uid": study_uid, "series": series, "error": error})


@permission_required("archive.send")
@require_POST
def remote_retrieve(request, ae_pk: int):
    remote_ae = get_object_or_404(ApplicationEntity, pk=ae_pk)
    method = request.POST.get("method", "move")
    study_uid = request.POST.get("study_uid", "").strip()
    series_uid = request.POST.get("series_uid", "").strip()
    keys = {"StudyInstanceUID": study_uid}
    level = "STUDY"
    if series_uid:
        keys["SeriesInstanceUID"], level = series_uid, "SERIES"
    kind = Job.Kind.GET if method == "get" else Job.Kind.MOVE
    return _create(request, kind=kind, remote_ae=remote_ae, level=level, keys=keys,
                   description=f"retrieve {level.lower()} {series_uid or study_uid}")
