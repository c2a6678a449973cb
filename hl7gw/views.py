"""The HL7 message log (search, read, replay) and the senders (admins)."""

from __future__ import annotations

from django.contrib import messages as flash
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.crud import list_and_edit
from core.errors import ServiceError
from core.roles import admin_required
from hl7gw import stats, viewer
from hl7gw.forms import ReceiverForm, SenderForm
from hl7gw.inbound.service import replay, resend_edited
from hl7gw.models import Message, Outbound, Receiver, Sender
from hl7gw.outbound import service as outbound_service


@admin_required
def message_list(request):
    qs = Message.objects.select_related("sender")
    q = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    if q:
        qs = qs.filter(Q(control_id=q) | Q(message_type__icontains=q) | Q(text__icontains=q))
    if status:
        qs = qs.filter(status=status)
    page = Paginator(qs.defer("raw", "text"), 50).get_page(request.GET.get("page"))
    return render(request, "hl7gw/message_list.html", {
        "page": page, "q": q, "status": status, "statuses": Message.Status.choices})


@admin_required
def message_detail(request, pk: int):
    message = get_object_or_404(Message.objects.select_related("sender", "replay_of"), pk=pk)
    return render(request, "hl7gw/message_detail.html", {
        "message": message, "segments": message.text.replace("\r", "\n").splitlines(),
        "ack_segments": message.ack.replace("\r", "\n").splitlines(),
        "fields": viewer.view(message.text, message.version),
        "ack_fields": viewer.view(message.ack, message.version),
        "replays": Message.objects.filter(replay_of=message)})


@admin_required
@require_POST
def message_replay(request, pk: int):
    original = get_object_or_404(Message, pk=pk)
    again = replay(original, actor=request.user.username)
    flash.info(request, f"Replayed as message {again.pk}: {again.get_status_display()}.")
    return redirect("hl7-message", pk=again.pk)


@admin_required
@require_POST
def message_resend(request, pk: int):
    """An edited copy of a logged message, processed as a new message linked to it."""
    original = get_object_or_404(Message.objects.select_related("sender"), pk=pk)
    try:
        again = resend_edited(original, request.POST.get("text", ""),
                              actor=request.user.username)
    except ServiceError as exc:
        flash.error(request, f"Not sent: {exc}")
        return redirect("hl7-message", pk=original.pk)
    flash.info(request, f"The edited copy was processed as message {again.pk}: "
                        f"{again.get_status_display()}.")
    return redirect("hl7-message", pk=again.pk)


HINT = ('See docs/hl7-interface.md. <a href="/hl7/senders/">Senders</a> · '
        '<a href="/hl7/receivers/">Receivers</a> · <a href="/hl7/outbound/">Outbound queue</a>')


@admin_required
def senders(request, pk: int | None = None):
    return list_and_edit(request, model=Sender, form_class=SenderForm, pk=pk,
                         title="HL7 senders", list_url="hl7-senders",
                         edit_url="hl7-sender-edit", hint=HINT)


@admin_required
def outbound_list(request):
    qs = Outbound.objects.select_related("receiver")
    status = request.GET.get("status", "")
    if status:
        qs = qs.filter(status=status)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "hl7gw/outbound_list.html", {
        "page": page, "status": status, "statuses": Outbound.Status.choices,
        "active": any(o.status == Outbound.Status.PENDING for o in page)})


@admin_required
@require_POST
def outbound_retry(request, pk: int):
    outbound = get_object_or_404(Outbound, pk=pk)
    outbound_service.retry(outbound)
    flash.info(request, f"Message {outbound.control_id} queued again.")
    if request.POST.get("from") == "detail":
        return redirect("hl7-outbound-detail", pk=outbound.pk)
    return redirect("hl7-outbound")


@admin_required
def outbound_detail(request, pk: int):
    """The exact message sent, and every attempt with the receiver's ACK or the error."""
    outbound = get_object_or_404(Outbound.objects.select_related("receiver"), pk=pk)
    return render(request, "hl7gw/outbound_detail.html", {
        "outbound": outbound, "segments": outbound.text.replace("\r", "\n").splitlines(),
        "tries": [(t, t.ack.replace("\r", "\n").splitlines()) for t in outbound.tries.all()]})


@admin_required
@require_POST
def outbound_cancel(request, pk: int):
    outbound = get_object_or_404(Outbound.objects.select_related("receiver"), pk=pk)
    if outbound_service.cancel(outbound, actor=request.user.username):
        flash.info(request, f"Message {outbound.control_id} canceled: it will not be sent.")
    else:
        flash.error(request, f"Message {outbound.control_id} was sent already.")
    return redirect("hl7-outbound-detail", pk=outbound.pk)


@admin_required
def receivers(request, pk: int | None = None):
    return list_and_edit(request, model=Receiver, form_class=ReceiverForm, pk=pk,
                         title="HL7 receivers (status messages)", list_url="hl7-receivers",
                         edit_url="hl7-receiver-edit", hint=HINT)


@admin_required
def traffic(request):
    """Per sender and receiver: messages per day, error rate, the last message."""
    return render(request, "hl7gw/traffic.html", {
        "days": stats.days(), "senders": stats.senders(), "receivers": stats.receivers()})


@admin_required
@require_POST
def receiver_test(request, pk: int):
    receiver = get_object_or_404(Receiver, pk=pk)
    result = stats.test_connection(receiver, actor=request.user.get_username())
    (flash.success if result.ok else flash.error)(request, f"{receiver.name}: {result.detail}")
    return redirect("hl7-traffic")
