"""Outbound status messages: when a scheduled step starts, completes or is discontinued (by
MPPS, the portal, UPS or HL7 itself), each configured receiver gets an ORM^O01 (or OMI^O23)
with ORC-1 SC over MLLP. The message is a queue row first; each receiver's queue is sent in
order, and retried with backoff (core.delivery), so a receiver that is down loses nothing
and gets its messages in the order they were made."""

from __future__ import annotations

import itertools
import logging
import socket
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import audit, delivery
from core.retry import retry_delay
from hl7gw.er7 import Encoding, codec_for, escape
from hl7gw.framing import END, START
from hl7gw.models import Outbound, OutboundAttempt, Receiver
from worklist.models import ScheduledProcedureStep

log = logging.getLogger("hl7gw")

Status = ScheduledProcedureStep.Status
# step status -> ORC-5 order status (HL7 table 0038)
ORDER_STATUS = {Status.IN_PROGRESS: "IP", Status.COMPLETED: "CM",
                Status.DISCONTINUED: "DC", Status.CANCELED: "CA"}
_ids = itertools.count(1)


def on_step_status_changed(sender, *, step: ScheduledProcedureStep, previous: str,
                           source: str, note: str = "", **kwargs) -> None:
    """Signal receiver (connected in Hl7GwConfig.ready): queue one message per receiver.
    ``note``: why (a cancellation's reason), sent as ORC-16."""
    order_status = ORDER_STATUS.get(step.status)
    if order_status is None:
        return
    wanted = {"IP": "on_started", "CM": "on_completed", "DC": "on_discontinued",
              "CA": "on_discontinued"}[order_status]
    for receiver in Receiver.objects.filter(active=True, **{wanted: True}):
        queue_status_message(receiver, step, order_status, reason=note)


def queue_status_message(receiver: Receiver, step: ScheduledProcedureStep,
                         order_status: str, *, reason: str = "") -> Outbound:
    control_id = f"PORTAL{int(time.time())}{next(_ids):05d}"
    outbound = Outbound.objects.create(
        receiver=receiver, step_id=step.pk, order_status=order_status, control_id=control_id,
        text=build_status_message(receiver, step, order_status, control_id, reason=reason))
    transaction.on_commit(lambda: enqueue(receiver.pk))
    return outbound


def build_status_message(receiver: Receiver, step: ScheduledProcedureStep, order_status: str,
                         control_id: str, *, reason: str = "") -> str:
    """ORC-1 SC with ORC-5 the order status; ``reason`` (why it was cancelled or
    discontinued) as ORC-16 Order Control Code Reason, CWE text only (^reason)."""
    rp = step.requested_procedure
    order, patient = rp.order, rp.order.patient
    e = Encoding()

    def x(value: str) -> str:
        return escape(value or "", e)

    kind = "ORM^O01" if receiver.kind == Receiver.Kind.ORM else "OMI^O23^OMI_O23"
    name = "^".join(x(p) for p in patient.patient_name.split("^"))
    msh = ["MSH", "^~\\&", "PORTAL", settings.DIMSE_AET, receiver.receiving_application,
           receiver.receiving_facility, timezone.localtime().strftime("%Y%m%d%H%M%S"), "",
           kind, control_id, "P", receiver.version, "", "", "", "", "", receiver.charset]
    obr = ["OBR", "1", x(order.placer_order_number), x(order.filler_order_number),
           f"{x(rp.code_value)}^{x(rp.code_meaning or rp.description)}"
           f"^{x(rp.coding_scheme_designator)}"] + [""] * 21
    obr[18], obr[19], obr[20] = x(order.accession_number), x(rp.requested_procedure_id), \
        x(step.scheduled_procedure_step_id)
    obr[24] = x(step.modality)
    obr[25] = {"CM": "F", "IP": "I", "DC": "X", "CA": "X"}[order_status]  # result status
    segments = [
        "|".join(msh),
        f"PID|||{x(patient.patient_id)}^^^{x(patient.issuer_of_patient_id)}||{name}||"
        f"{patient.patient_birth_date}|{patient.patient_sex}",
        f"ORC|SC|{x(order.placer_order_number)}|{x(order.filler_order_number)}||"
        f"{order_status}" + (f"|||||||||||^{x(reason)}" if reason else ""),
        "|".join(obr).rstrip("|"),
        f"ZDS|{x(rp.study_instance_uid)}^^Application^DICOM",
    ]
    if receiver.kind == Receiver.Kind.OMI:
        segments.insert(4, "|".join(["IPC", x(order.accession_number),
                                     x(rp.requested_procedure_id), x(rp.study_instance_uid),
                                     x(step.scheduled_procedure_step_id), x(step.modality)]))
    return "\r".join(segments) + "\r"


def enqueue(receiver_id: int, *, now: bool = False) -> None:
    """Send the receiver's queue (call once the new message is committed); ``now``: try at
    once, even while waiting out a backoff (Retry now)."""
    courier.wake(str(receiver_id), now=now)


def send_queue(receiver_key: str) -> float | None:
    """One pass over a receiver's queue: its pending messages oldest first, each until it is
    sent or failed for good. Returns the delay before trying again while the oldest cannot be
    delivered (the ones after it wait: a RIS must not see CM before IP), or None when nothing
    is pending. Run through ``courier``: one sender at a time per receiver."""
    while True:
        outbound = (Outbound.objects.select_related("receiver")
                    .filter(receiver_id=int(receiver_key), status=Outbound.Status.PENDING)
                    .order_by("pk").first())
        if outbound is None:
            return None
        delay = send(outbound)
        if delay is not None:
            return delay


def send(outbound: Outbound) -> float | None:
    """One attempt. Returns the delay before the next attempt, or None when done with this
    message (sent, refused by the receiver, or out of attempts: then it waits for a manual
    retry, and the messages after it go)."""
    outbound.attempts += 1
    outbound.save(update_fields=["attempts"])
    receiver = outbound.receiver
    try:
        ack = exchange(receiver.host, receiver.port,
                       outbound.text.encode(codec_for(receiver.charset), "replace"))
    except OSError as exc:
        outbound.last_error = f"attempt {outbound.attempts}: {exc.strerror or exc}"
        OutboundAttempt.objects.create(outbound=outbound, error=str(exc.strerror or exc))
        delay = retry_delay(outbound.attempts)
        if delay is None:
            outbound.status = Outbound.Status.FAILED
        # not over an admin's cancel made meanwhile: that one stands
        Outbound.objects.filter(pk=outbound.pk, status=Outbound.Status.PENDING).update(
            last_error=outbound.last_error, status=outbound.status)
        return delay
    outbound.ack = ack
    code = _msa_code(ack)
    OutboundAttempt.objects.create(outbound=outbound, code=code, ack=ack)
    if code in ("AA", "CA"):
        outbound.status, outbound.sent_at = Outbound.Status.SENT, timezone.now()
    else:
        outbound.status = Outbound.Status.FAILED
        outbound.last_error = f"receiver answered {code or 'without MSA'}"
    outbound.save()
    return None


courier = delivery.courier("hl7-out", send_queue, task="hl7gw.send_receiver_queue")


def exchange(host: str, port: int, payload: bytes, timeout: float = 10) -> str:
    """Send one framed message and read the ACK frame (our small MLLP client)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(START + payload + END)
        data = b""
        while END not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the ACK")
            data += chunk
    return data[data.find(START) + 1:data.find(END)].decode("utf-8", "replace")


def _msa_code(ack: str) -> str:
    for segment in ack.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            return segment[4:6]
    return ""


def resume_pending(**kwargs) -> int:
    """Signal receiver (core.signals.deliveries_due): send the messages still pending, if
    no sender has them (those of before a restart, or whose task was lost). Returns how many."""
    pending = Outbound.objects.filter(status=Outbound.Status.PENDING)
    for receiver_id in sorted(set(pending.values_list("receiver_id", flat=True))):
        enqueue(receiver_id)
    return pending.count()


def retry(outbound: Outbound) -> None:
    Outbound.objects.filter(pk=outbound.pk).exclude(status=Outbound.Status.SENT).update(
        status=Outbound.Status.PENDING, attempts=0)
    transaction.on_commit(lambda: enqueue(outbound.receiver_id, now=True))


def cancel(outbound: Outbound, *, actor: str) -> bool:
    """Take a message that is not sent out of the queue (the ones after it go); whether it
    was. Audited: a RIS then misses that status update."""
    done = bool(Outbound.objects.filter(pk=outbound.pk).exclude(
        status=Outbound.Status.SENT).update(status=Outbound.Status.CANCELED))
    if done:
        audit.record(category="hl7", action="outbound message canceled", actor=actor,
                     detail=f"{outbound.control_id} to {outbound.receiver.name} "
                            f"(ORC-5 {outbound.order_status})")
    return done
