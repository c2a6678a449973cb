"""Scheduler pages: create and change orders, the day board; catalog and stations (admins)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Max
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from core.crud import list_and_edit
from core.errors import ServiceError
from core.navigation import back_to
from core.roles import allowed, permission_required
from pacs.models import Discrepancy
from pacs.services import reconciliation as discrepancies
from worklist import explain, mpps, selectors, services, ups_events
from worklist.forms import (
    BoardForm,
    OrderEditForm,
    OrderForm,
    ProcedureForm,
    RescheduleForm,
    StationForm,
    overlap_error,
)
from worklist.models import (
    Order,
    PerformedProcedureStep,
    Procedure,
    ScheduledProcedureStep,
    Station,
    UpsEvent,
    UpsSubscription,
    WorklistQuery,
)
from worklist.ups import states


@permission_required("worklist.view")
def board(request):
    """The day planner: each station's steps on a time grid (their durations, overlaps
    flagged, priorities shown), a day or a week, by station and modality. With ``fragment``
    the grid alone: the page's script fetches it to update without a reload."""
    form = BoardForm(request.GET or None)
    day, modality, station, week = timezone.localdate(), "", "", False
    if form.is_valid():
        day = form.cleaned_data["date"] or day
        modality = form.cleaned_data["modality"].strip().upper()
        station = form.cleaned_data["station"]
        week = form.cleaned_data["view"] == "week"
    first = day - dt.timedelta(days=day.weekday()) if week else day
    days = [first + dt.timedelta(days=n) for n in range(7 if week else 1)]
    stations = selectors.day_board(first, modality=modality, station=station,
                                   days=len(days))
    context = {"form": form, "day": day, "days": days, "week": week, "modality": modality,
               "stations": stations, "unroutable": selectors.UNROUTABLE,
               "grid": _grid(stations), "today": timezone.localdate(),
               "previous": day - dt.timedelta(days=7 if week else 1),
               "next": day + dt.timedelta(days=7 if week else 1)}
    if week:
        context["week_rows"] = [
            (name, [[s for s in steps if s.start_date == f"{d:%Y%m%d}"] for d in days])
            for name, steps in stations]
    query = request.GET.copy()
    query.pop("fragment", None)
    # where the Arrived buttons come back to: the page, never its fragment
    context["page_path"] = request.path + (f"?{query.urlencode()}" if query else "")
    query.pop("date", None)
    context["query"] = query.urlencode()
    if not week:
        _slots(request, stations, context["page_path"])
    template = "worklist/_planner.html" if request.GET.get("fragment") else \
        "worklist/board.html"
    return render(request, template, context)


GRID_FIRST, GRID_LAST = 7 * 60, 19 * 60  # minutes: the working day, widened to the steps


def _slots(request, stations, page_path: str) -> None:
    """Each step's block of the planner as HTML (``step.html``), made here rather than in the
    template: the template engine's lookups cost about 0.2 ms a block, and a busy day has
    hundreds (bench/dayboard.py). Every value is escaped by format_html."""
    may_mark = allowed(request.user, "worklist.status")
    token = get_token(request) if may_mark else ""
    order_url = reverse("order-detail", args=[0])[:-2]  # ".../orders/" + pk + "/"
    status_url = reverse("step-status", args=[0])[:-len("0/status/")]
    for name, steps in stations:
        if name == selectors.UNROUTABLE:
            continue
        for step in steps:
            order = step.requested_procedure.order
            patient = order.patient
            badge = (format_html('<span class="priority-badge{}">{}</span>',
                                 " high" if order.priority == "HIGH" else "", order.priority)
                     if order.priority in ("STAT", "HIGH") else "")
            overlaps = (format_html('<div class="warn-mark">overlaps {}</div>',
                                    ", ".join(step.overlaps)) if step.overlaps else "")
            arrived = (format_html(
                '<form method="post" action="{}{}/status/" class="inline">'
                '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<input type="hidden" name="status" value="ARRIVED">'
                '<input type="hidden" name="next" value="{}">'
                '<button type="submit" class="small">Arrived</button></form>',
                status_url, step.pk, token, page_path)
                if may_mark and step.status == "SCHEDULED" else "")
            step.html = format_html(
                '<article class="slot status-{}{}" data-top="{}" data-height="{}" '
                'data-step="{}"><div class="slot-head"><span class="time">{}:{}</span> '
                '<span class="minutes">{} min</span> {} <span class="status">{}</span></div>'
                '<div class="who">{} [{}]</div><div class="what">{} · '
                '<a href="{}{}/">{}</a></div>{}{}</article>',
                step.status.lower().replace(" ", "-"), " overlap" if step.overlaps else "",
                step.top, step.duration_minutes, step.pk, step.start_time[:2],
                step.start_time[2:4], step.duration_minutes, badge, step.get_status_display(),
                patient.patient_name, patient.patient_id, step.description, order_url,
                order.pk, order.accession_number, overlaps, arrived)


def _grid(stations) -> dict:
    """The time grid's first and last minute (whole hours) and its hour lines."""
    minutes = [m for _, steps in stations for s in steps for m in (s.minute, s.end)]
    first = min([GRID_FIRST, *minutes]) // 60 * 60
    last = min(24 * 60, -(-max([GRID_LAST, *minutes]) // 60) * 60)
    for _, steps in stations:
        for step in steps:
            step.top = step.minute - first
    return {"first": first, "last": last, "height": last - first,
            "hours": [(h, (h * 60 - first)) for h in range(first // 60, last // 60)]}


@permission_required("worklist.schedule")
def order_new(request):
    found = selectors.find_patients(request.GET.get("find", "")) if "find" in request.GET else None
    initial = {"date": timezone.localdate(),
               **selectors.patient_initial(request.GET.get("patient", ""))}
    form = OrderForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid() and overlap_error(
            form, services.booking_conflicts(
                form.cleaned_data["station"].ae_title, form.start(),
                form.cleaned_data["procedure"].duration_minutes)):
        d = form.cleaned_data
        try:
            order = services.create_order(
                patient=services.PatientData(
                    d["patient_id"], form.patient_name(),
                    birth_date=d["birth_date"].strftime("%Y%m%d") if d["birth_date"] else "",
                    sex=d["sex"]),
                procedure=d["procedure"],
                step=services.station_step(d["station"], form.start()),
                actor=request.user.username, referring_physician_name=form.referring_physician(),
                reason=d["reason"], priority=d["priority"])
        except ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Order {order.accession_number} scheduled.")
            return redirect("order-detail", pk=order.pk)
    return render(request, "worklist/order_form.html", {
        "form": form, "found": found, "find": request.GET.get("find", "")})


@permission_required("worklist.view")
def order_detail(request, pk: int):
    order = get_object_or_404(Order.objects.select_related("patient"), pk=pk)
    steps = (ScheduledProcedureStep.objects.filter(requested_procedure__order=order)
             .select_related("requested_procedure").prefetch_related("events", "performed"))
    for step in steps:
        step.reschedule_form = RescheduleForm.for_step(step)
    return render(request, "worklist/order_detail.html", {
        "order": order, "steps": steps,
        # only an order with a step still to do can be cancelled (services.cancel_order)
        "cancellable": any(s.status in services.CANCELLABLE for s in steps),
        "edit": OrderEditForm(instance=order), "studies": selectors.stored_studies(order)})


@permission_required("worklist.view")
def order_explain(request, pk: int):
    """Why a modality (an AE title) does or does not see this order in its worklist, from its
    last actual worklist query (worklist.explain)."""
    order = get_object_or_404(Order.objects.select_related("patient"), pk=pk)
    steps = list(ScheduledProcedureStep.objects.filter(requested_procedure__order=order)
                 .select_related("requested_procedure__order__patient"))
    ae_title = request.GET.get("ae", "").strip()[:16]
    if not ae_title and steps:
        ae_title = steps[0].scheduled_station_ae_title.split("\\")[0]
    return render(request, "worklist/order_explain.html", {
        "order": order, "ae_title": ae_title, "kept": settings.MWL_QUERIES_KEPT,
        "explanation": explain.explain(steps, ae_title) if ae_title else None,
        "ae_titles": sorted(set(WorklistQuery.objects.values_list("ae_title", flat=True))
                            | {s.scheduled_station_ae_title for s in steps} - {""})})


@permission_required("worklist.view")
def worklist_queries(request):
    """The last worklist queries of each AE title, as they came."""
    ae_title = request.GET.get("ae", "").strip()
    rows = WorklistQuery.objects.all()
    if ae_title:
        rows = rows.filter(ae_title=ae_title)
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "worklist/queries.html", {
        "page": page, "ae_title": ae_title, "kept": settings.MWL_QUERIES_KEPT,
        "query": f"ae={quote(ae_title)}" if ae_title else "",
        "queries": [(q, explain.describe(q)) for q in page]})


@permission_required("worklist.schedule")
@require_POST
def order_edit(request, pk: int):
    order = get_object_or_404(Order, pk=pk)
    form = OrderEditForm(request.POST, instance=order)
    if form.is_valid():
        services.update_order(order, changes=form.changes(), actor=request.user.username)
        messages.success(request, "Order updated.")
    else:
        messages.error(request, "Not saved: " + "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
    return redirect("order-detail", pk=order.pk)


@permission_required("worklist.schedule")
@require_POST
def order_cancel(request, pk: int):
    """Cancel with a reason: it is kept in each step's history and goes to the RIS in the
    status message (ORC-16), so nobody has to ask why an order disappeared."""
    order = get_object_or_404(Order, pk=pk)
    reason = " ".join(request.POST.get("reason", "").split())[:200]
    if not reason:
        messages.error(request, "Say why the order is cancelled: nothing was cancelled.")
        return redirect("order-detail", pk=order.pk)
    count = services.cancel_order(order, actor=request.user.username, note=reason)
    messages.info(request, f"{count} step(s) of order {order.accession_number} canceled.")
    return redirect("order-detail", pk=order.pk)


@permission_required("worklist.status")
@require_POST
def step_status(request, pk: int):
    step = get_object_or_404(ScheduledProcedureStep, pk=pk)
    try:
        services.set_step_status(step, request.POST.get("status", ""), source="portal",
                                 actor=request.user.username)
    except ServiceError as exc:
        messages.error(request, str(exc))
    # back to the day board with its filter, or wherever the form came from on our site
    return redirect(back_to(request, "next", "worklist-board"))


@permission_required("worklist.schedule")
@require_POST
def step_reschedule(request, pk: int):
    step = get_object_or_404(ScheduledProcedureStep.objects.select_related(
        "requested_procedure"), pk=pk)
    form = RescheduleForm(request.POST)
    order_pk = step.requested_procedure.order_id
    if not form.is_valid():
        messages.error(request, "Not rescheduled: " + " ".join(
            " ".join(errors) for errors in form.errors.values()))
        return redirect("order-detail", pk=order_pk)
    d = form.cleaned_data
    start = dt.datetime.combine(d["date"], d["time"])
    station = d["station"].ae_title if d["station"] else step.scheduled_station_ae_title
    if not overlap_error(form, services.booking_conflicts(
            station, start, d["duration"] or step.duration_minutes, exclude=step)):
        messages.error(request, "Not rescheduled: " + " ".join(form.non_field_errors()))
        return redirect("order-detail", pk=order_pk)
    try:
        services.reschedule(step, start=start, station=d["station"],
                            actor=request.user.username, duration_minutes=d["duration"])
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Rescheduled.")
    return redirect("order-detail", pk=order_pk)


@permission_required("admin")
def stations(request, pk: int | None = None):
    return list_and_edit(request, model=Station, form_class=StationForm, pk=pk,
                         title="Stations", list_url="stations", edit_url="stations-edit",
                         hint="One per modality room: where steps are scheduled.")


@permission_required("admin")
def catalog(request, pk: int | None = None):
    return list_and_edit(request, model=Procedure, form_class=ProcedureForm, pk=pk,
                         title="Procedure catalog", list_url="catalog", edit_url="catalog-edit",
                         hint="Requested procedures schedulers pick from.")


@permission_required("worklist.view")
def workitem_list(request):
    """The worklist seen as UPS workitems: state, performer, progress."""
    states = [s for s in request.GET.getlist("state") if s in selectors.WORKITEM_STATES]
    if "state" not in request.GET:
        states = ["SCHEDULED", "IN PROGRESS"]
    patient = request.GET.get("patient", "").strip()
    page = Paginator(selectors.workitems(states=states, patient=patient), 50).get_page(
        request.GET.get("page"))
    return render(request, "worklist/workitem_list.html", {
        "page": page, "states": states, "patient": patient,
        "all_states": selectors.WORKITEM_STATES})


@permission_required("worklist.view")
def workitem_detail(request, uid: str):
    step = get_object_or_404(selectors.workitems(states=[]), ups_instance_uid=uid)
    return render(request, "worklist/workitem_detail.html", {
        "step": step, "ups_state": states.ups_state(step),
        "events": step.events.order_by("at", "pk")})


@permission_required("admin")
def subscriptions(request):
    """Who follows which workitems, and the events on their way (admins)."""
    undelivered = UpsEvent.objects.filter(delivered_at__isnull=True)
    return render(request, "worklist/subscriptions.html", {
        "subscriptions": UpsSubscription.objects.select_related("step").order_by(
            "ae_title", "id"),
        "events": UpsEvent.objects.order_by("-id")[:100],
        "pending": undelivered.count(),
        "waiting": undelivered.filter(delivery="dimse").values("ae_title").annotate(
            count=Count("id"), attempts=Max("attempts")).order_by("ae_title"),
    })


@permission_required("admin")
@require_POST
def subscriber_retry(request, ae_title: str):
    count = ups_events.retry_now(ae_title)
    messages.info(request, f"{count} event(s) for {ae_title} are being sent again.")
    return redirect("ups-subscriptions")


@permission_required("reconcile")
def reconciliation(request):
    """What disagrees and what matches nothing, to be settled by hand (IHE SWF and PIR's
    'unscheduled' and 'mismatch' cases): open discrepancies, MPPS linked to no step, studies
    linked to no order."""
    return render(request, "worklist/reconciliation.html", {
        "discrepancies": Discrepancy.objects.filter(resolved_at__isnull=True)
        .select_related("study")[:200],
        "mpps": selectors.unlinked_mpps(),
        "studies": selectors.studies_without_order(),
    })


@permission_required("reconcile")
@require_POST
def discrepancy_resolve(request, pk: int):
    found = get_object_or_404(Discrepancy, pk=pk, resolved_at__isnull=True)
    discrepancies.resolve(found, actor=request.user.username,
                           note=request.POST.get("note", "").strip())
    messages.success(request, "Marked as settled.")
    return redirect("reconciliation")


@permission_required("reconcile")
@require_POST
def mpps_link(request, pk: int):
    found = get_object_or_404(PerformedProcedureStep, pk=pk)
    step = get_object_or_404(ScheduledProcedureStep, pk=_posted_pk(request, "step"))
    try:
        mpps.link(found, step, actor=request.user.username)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"MPPS linked to step {step.scheduled_procedure_step_id}.")
    return redirect("reconciliation")


@permission_required("reconcile")
@require_POST
def study_link(request, study_uid: str):
    order = get_object_or_404(Order, pk=_posted_pk(request, "order"))
    try:
        services.link_study(order, study_uid, actor=request.user.username)
    except ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Study linked to order {order.accession_number}.")
    return redirect("reconciliation")


def _posted_pk(request, name: str) -> int:
    """The row a form's select names; 0 (found nowhere: 404) when it names none or garbage."""
    value = request.POST.get(name, "")
    return int(value) if value.isdigit() and len(value) < 19 else 0
