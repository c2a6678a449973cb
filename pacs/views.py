from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import ProtectedError
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import access, records
from core.errors import NotFound, ServiceError
from core.navigation import back_to
from core.paging import FromBothEnds
from core.roles import allowed, permission_required
from pacs import selectors
from pacs.dicomjson import tag_tree
from pacs.forms import (
    AnonymizeForm,
    ApplicationEntityForm,
    ForwardingRuleForm,
    SendForm,
    SeriesModifyForm,
    StudyModifyForm,
    StudySearchForm,
)
from pacs.models import ApplicationEntity, ForwardingRule, ForwardItem, Instance, Series, Study
from pacs.rendering import NotRenderable, TooManyPixels, render_png
from pacs.services import anonymize, deletion, forwarding, media, modify
from pacs.services import jobs as transfers
from pacs.storage import get_storage
from pacs.tasks import echo_ae

PAGE_SIZES = (25, 50, 100, 200)
# the study list's columns that sort (keys of selectors.STUDY_SORTS), in the table's order
STUDY_COLUMNS = [("name", "Patient"), ("id", "Patient ID"), ("date", "Study date"),
                 ("modality", "Modalities"), ("description", "Description"),
                 ("accession", "Accession"), ("instances", "Instances"),
                 ("received", "Last received")]


@permission_required("archive.view")
def study_list(request):
    form = StudySearchForm(request.GET or None)
    studies = Study.objects.none()
    sort = request.GET.get("sort", "-date")
    if sort.lstrip("-") not in selectors.STUDY_SORTS:
        sort = "-date"
    if form.is_valid() or not form.is_bound:
        d = form.cleaned_data if form.is_bound else {}
        studies = selectors.study_search(selectors.StudyFilter(
            patient_name=d.get("patient_name", ""), patient_id=d.get("patient_id", ""),
            date_from=d["date_from"].strftime("%Y%m%d") if d.get("date_from") else "",
            date_to=d["date_to"].strftime("%Y%m%d") if d.get("date_to") else "",
            modality=d.get("modality", ""), accession_number=d.get("accession_number", ""),
            sort=sort))
    size = int(request.GET["size"]) if request.GET.get("size") in map(str, PAGE_SIZES) \
        else PAGE_SIZES[0]
    page = FromBothEnds(studies, size).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    unsorted = query.copy()
    unsorted.pop("sort", None)
    return render(request, "pacs/study_list.html", {
        "form": form, "page": page, "query": query.urlencode(), "sort": sort,
        "unsorted": unsorted.urlencode(), "size": size, "sizes": PAGE_SIZES,
        "time_zone": settings.TIME_ZONE, "columns": STUDY_COLUMNS,
        # one form for every bulk action: the AE is required by Send alone (checked there)
        "send_form": SendForm(use_required_attribute=False)})


@permission_required("archive.view")
def study_detail(request, study_uid: str):
    try:
        study = selectors.study_detail(study_uid)
    except Study.DoesNotExist as exc:
        raise Http404("No such study") from exc
    return render(request, "pacs/study_detail.html",
                  {"study": study, "series_list": selectors.series_of_study(study),
                   "send_form": SendForm(), "anonymize_form": AnonymizeForm(),
                   "discrepancies": study.discrepancies.filter(resolved_at__isnull=True)})


@permission_required("admin")
@require_POST
def study_delete(request, study_uid: str):
    done = _delete(request, "study", study_uid)
    messages.success(request, f"Deleted the study: {done.series} series, "
                              f"{_instances(done.instances)}.")
    return redirect("study-list")


@permission_required("admin")
@require_POST
def series_delete(request, series_uid: str):
    done = _delete(request, "series", series_uid)
    messages.success(request, f"Deleted the series: {_instances(done.instances)}"
                              + (" (the study's last series: the study is gone too)."
                                 if done.studies else "."))
    if done.studies:
        return redirect("study-list")
    return redirect("study-detail", done.study_uid)


@permission_required("admin")
@require_POST
def instance_delete(request, sop_uid: str):
    series_uid = Instance.objects.filter(sop_instance_uid=sop_uid).values_list(
        "series__series_instance_uid", flat=True).first()
    done = _delete(request, "instance", sop_uid)
    if done.studies:
        messages.success(request, "Deleted the instance (the study's last: the study is gone "
                                  "too).")
        return redirect("study-list")
    if done.series:
        messages.success(request, "Deleted the instance (the series' last: the series is gone "
                                  "too).")
        return redirect("study-detail", done.study_uid)
    messages.success(request, "Deleted the instance.")
    return redirect("series-detail", series_uid)


def _delete(request, level: str, uid: str) -> deletion.Deleted:
    try:
        return deletion.delete(level, uid, actor=request.user.username)
    except NotFound as exc:
        raise Http404(str(exc)) from exc


def _instances(n: int) -> str:
    return f"{n} instance" + ("" if n == 1 else "s")


@permission_required("archive.view")
def series_detail(request, series_uid: str):
    series = get_object_or_404(
        Series.objects.select_related("study__patient"), series_instance_uid=series_uid
    )
    page = Paginator(selectors.instances_of_series(series), 48).get_page(request.GET.get("page"))
    return render(request, "pacs/series_detail.html",
                  {"series": series, "page": page, "send_form": SendForm()})


@permission_required("archive.view")
def instance_preview(request, sop_uid: str):
    inst = get_object_or_404(Instance.objects.only("file_key", "has_pixel_data"),
                             sop_instance_uid=sop_uid)
    if not inst.has_pixel_data:
        return HttpResponse("This instance has no image (e.g. a structured report).",
                            status=415, content_type="text/plain")
    try:
        frame = _count(request.GET.get("frame"), "frame", default=0)
        size = _count(request.GET.get("size"), "size", default=None)
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    try:
        with get_storage().local_copy(inst.file_key) as path:
            png = render_png(str(path), frame=frame, max_size=size)
    except (NotRenderable, TooManyPixels) as exc:
        return HttpResponse(str(exc), status=exc.http_status, content_type="text/plain")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _count(text: str | None, name: str, *, default: int | None) -> int | None:
    """A whole number of a query parameter (0 to 100000), or ValueError saying what."""
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) > 100_000:
        raise ValueError(f"{name} must be a whole number from 0 to 100000")
    return int(text)


@permission_required("archive.view")
def instance_file(request, sop_uid: str):
    inst = get_object_or_404(Instance.objects.only("file_key"), sop_instance_uid=sop_uid)
    return FileResponse(get_storage().open(inst.file_key), as_attachment=True,
                        filename=f"{sop_uid}.dcm", content_type="application/dicom")


@permission_required("admin")
def ae_list(request):
    return render(request, "pacs/ae_list.html", {
        "aes": ApplicationEntity.objects.all(),
        "allow_unknown": settings.DIMSE_ALLOW_UNKNOWN_AE,
    })


@permission_required("admin")
def ae_edit(request, pk: int | None = None):
    instance = get_object_or_404(ApplicationEntity, pk=pk) if pk else None
    form = ApplicationEntityForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        ae = records.save(form, actor=request.user.username,
                          source=request.META.get("REMOTE_ADDR", ""))
        messages.success(request, f"Saved {ae.ae_title}.")
        return redirect("ae-list")
    return render(request, "pacs/ae_form.html", {"form": form, "ae": instance})


@permission_required("admin")
@require_POST
def ae_delete(request, pk: int):
    ae = get_object_or_404(ApplicationEntity, pk=pk)
    try:
        records.delete(ae, actor=request.user.username,
                       source=request.META.get("REMOTE_ADDR", ""))
    except ProtectedError as exc:  # transfer jobs name it: their history stays
        messages.error(request, f"{ae.ae_title} is not deleted: {len(exc.protected_objects)} "
                                "transfer job(s) refer to it. Remove its rights instead.")
        return redirect("ae-list")
    messages.success(request, f"Deleted {ae.ae_title}.")
    return redirect("ae-list")


@permission_required("admin")
@require_POST
def ae_echo(request, pk: int):
    ae = get_object_or_404(ApplicationEntity, pk=pk)
    result = echo_ae.delay(ae.pk, actor=request.user.username).get(timeout=60)
    level = messages.SUCCESS if result["ok"] else messages.ERROR
    messages.add_message(
        request, level, f"C-ECHO {ae.ae_title}: {result['detail']} ({result['elapsed_ms']} ms)"
    )
    return redirect("ae-list")


@permission_required("admin")
def forwarding_rules(request, pk: int | None = None):
    rule = get_object_or_404(ForwardingRule, pk=pk) if pk else None
    form = ForwardingRuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        saved = forwarding.save_rule(form, actor=request.user.username,
                                     source=request.META.get("REMOTE_ADDR", ""))
        messages.success(request, f"Saved {saved.name}.")
        return redirect("forwarding")
    return render(request, "pacs/forwarding.html", {
        "form": form, "rule": rule,
        "rules": ForwardingRule.objects.select_related("destination"),
        "queues": selectors.forwarding_queues()})


@permission_required("admin")
@require_POST
def forwarding_delete(request, pk: int):
    rule = get_object_or_404(ForwardingRule, pk=pk)
    forwarding.delete_rule(rule, actor=request.user.username,
                           source=request.META.get("REMOTE_ADDR", ""))
    messages.success(request, f"Deleted {rule.name}.")
    return redirect("forwarding")


@permission_required("admin")
@require_POST
def forwarding_retry(request, ae_pk: int):
    destination = get_object_or_404(ApplicationEntity, pk=ae_pk)
    count = forwarding.retry_failed(destination)
    messages.success(request, f"Sending {count} failed instance(s) to "
                              f"{destination.ae_title} again.")
    return redirect("forwarding")


@permission_required("admin")
def study_modify(request, study_uid: str):
    study = get_object_or_404(Study, study_instance_uid=study_uid)
    return _modify_page(request, study, StudyModifyForm, modify.STUDY_ATTRIBUTES,
                        modify.modify_study, study_uid, "study-detail", "study")


@permission_required("admin")
def series_modify(request, series_uid: str):
    series = get_object_or_404(Series, series_instance_uid=series_uid)
    return _modify_page(request, series, SeriesModifyForm, modify.SERIES_ATTRIBUTES,
                        modify.modify_series, series_uid, "series-detail", "series")


def _modify_page(request, row, form_class, attributes: dict, change, uid: str,
                 detail: str, level: str):
    """The study's or the series' attribute form: prefilled from the index, saved through
    ``change`` (pacs.services.modify), back to the detail page."""
    initial = {k: getattr(row, column) for k, (column, _) in attributes.items()
               if k in form_class.base_fields}
    form = form_class(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = change(uid, _posted(request, form), actor=request.user.username,
                         source=request.META.get("REMOTE_ADDR", ""))
        except ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            _modified(request, job)
            return redirect(detail, uid)
    return render(request, "pacs/modify.html", {"form": form, "level": level, "back": row,
                                                "title": f"Change the {level}"})


def _posted(request, form) -> dict[str, str]:
    """The fields the request sent: one left out is left as it is, not emptied."""
    return {k: v for k, v in form.cleaned_data.items() if k in request.POST}


def _modified(request, job) -> None:
    if job is None:
        messages.info(request, "Nothing changed.")
    else:
        messages.success(request, f"Saved: {job.description}. The stored headers are being "
                                  f"rewritten (job {job.pk}).")


@permission_required("admin")
@require_POST
def study_anonymize(request, study_uid: str):
    return _anonymize(request, "STUDY", study_uid)


@permission_required("admin")
@require_POST
def patient_anonymize(request, pk: int):
    return _anonymize(request, "PATIENT", pk)


def _anonymize(request, level: str, what):
    form = AnonymizeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The anonymisation options are not valid: "
                       + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("study-detail", what) if level == "STUDY" else redirect(
            "patient-detail", what)
    try:
        job = anonymize.start(level=level, uid_or_patient=what,
                              options=anonymize.Options(**form.cleaned_data),
                              actor=request.user.username,
                              source=request.META.get("REMOTE_ADDR", ""))
    except NotFound as exc:
        raise Http404(str(exc)) from exc
    except ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("study-list")
    messages.success(request, f"Making the anonymised copy (job {job.pk}); its page links to "
                              "the new study when it is done.")
    return redirect("job-detail", job.pk)


@permission_required("archive.view")
def instance_tags(request, sop_uid: str):
    inst = get_object_or_404(Instance.objects.select_related("series__study__patient"),
                             sop_instance_uid=sop_uid)
    return render(request, "pacs/instance_tags.html", {
        "instance": inst, "tree": tag_tree(inst.metadata)})


@permission_required("archive.view")
def study_download(request, study_uid: str):
    return _download(request, media.instances_of(study_uids=[study_uid]), "study")


@permission_required("archive.view")
def series_download(request, series_uid: str):
    return _download(request, media.instances_of(series_uid=series_uid), "series")


@permission_required("archive.view")
@require_POST
def selection_download(request):
    uids = request.POST.getlist("uid")[:1000]
    if not uids:
        return HttpResponse("Tick the studies to download.", status=400,
                            content_type="text/plain")
    response = _download(request, media.instances_of(study_uids=uids), "studies")
    # a POST: the access audit middleware records reads by GET only
    access.record(actor=request.user.get_username(), source=request.META.get("REMOTE_ADDR", ""),
                  action="download", detail=f"POST {request.path}: {len(uids)} studies "
                                            f"({', '.join(uids[:20])}) -> {response.status_code}")
    return response


def _download(request, instances, what: str):
    """The ZIP as it is made (Content-Length known first: the browser shows progress);
    ``?format=dicomdir`` (or the form's ``format``) for a DICOM media folder."""
    kind = request.POST.get("format") or request.GET.get("format") or "zip"
    if kind not in ("zip", "dicomdir"):
        return HttpResponse("format is zip or dicomdir", status=400, content_type="text/plain")
    try:
        download = media.zip_of(instances, name=media.download_name(
            what if kind == "zip" else f"{what}-dicomdir"), media=kind == "dicomdir")
    except NotFound as exc:
        raise Http404(str(exc)) from exc
    response = StreamingHttpResponse(download.chunks, content_type="application/zip")
    response["Content-Length"] = str(download.size)
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


@permission_required("archive.view")
@require_POST
def study_bulk(request):
    """The study list's selection: send each study (archive.send) or delete each (admin)."""
    uids = request.POST.getlist("uid")[:1000]
    action = request.POST.get("action", "")
    if not uids:
        messages.error(request, "Tick the studies first.")
    elif action == "send":
        if not allowed(request.user, "archive.send"):
            return render(request, "403.html", {"action": "archive.send"}, status=403)
        form = SendForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose an AE to send to.")
        else:
            started = transfers.send_studies(uids, form.cleaned_data["remote"],
                                             actor=request.user.username)
            messages.success(request, f"{len(started)} send job(s) started to "
                                      f"{form.cleaned_data['remote'].ae_title}.")
            return redirect("job-list")
    elif action == "delete":
        if not allowed(request.user, "admin"):
            return render(request, "403.html", {"action": "admin"}, status=403)
        gone = 0
        for uid in uids:
            try:
                deletion.delete("study", uid, actor=request.user.username)
                gone += 1
            except NotFound:
                pass
        messages.success(request, f"Deleted {gone} stud{'y' if gone == 1 else 'ies'}.")
    else:
        messages.error(request, "Unknown action.")
    return redirect(back_to(request, "back", "study-list"))


@permission_required("archive.store")
def upload(request):
    """Drag-and-drop upload: the page; its script sends each file to STOW-RS."""
    return render(request, "pacs/upload.html")


@permission_required("admin")
def forwarding_queue(request):
    """The forwarding queue item by item: what, where to, its state and last error; retry
    and cancel one by one (no retry for an item whose instance is gone)."""
    destination = request.GET.get("destination", "")
    status = request.GET.get("status", "")
    items = selectors.forward_items(
        destination=int(destination) if destination.isdigit() else None,
        status=status if status in ForwardItem.Status.values else "")
    page = Paginator(items, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "pacs/forwarding_queue.html", {
        "page": page, "query": query.urlencode(), "status": status, "destination": destination,
        "statuses": ForwardItem.Status.choices,
        "destinations": ApplicationEntity.objects.filter(forward_items__isnull=False)
        .distinct().order_by("ae_title"),
        "gone": forwarding.GONE})


@permission_required("admin")
@require_POST
def forward_item_retry(request, pk: int):
    item = get_object_or_404(ForwardItem, pk=pk)
    try:
        forwarding.retry_item(item, actor=request.user.username)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Item {item.pk} queued again.")
    return redirect(back_to(request, "back", "forwarding-queue"))


@permission_required("admin")
@require_POST
def forward_item_cancel(request, pk: int):
    item = get_object_or_404(ForwardItem, pk=pk)
    if forwarding.cancel_item(item, actor=request.user.username):
        messages.success(request, f"Item {item.pk} canceled: it will not be sent.")
    else:
        messages.info(request, f"Item {item.pk} is {item.get_status_display().lower()}: "
                               "nothing to cancel.")
    return redirect(back_to(request, "back", "forwarding-queue"))
