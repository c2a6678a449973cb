"""The HL7 gateway's data: configured senders and the message log (raw text kept first)."""

from __future__ import annotations

from django.db import models

from pacs.models import Patient
from worklist.models import Order


class Sender(models.Model):
    """A RIS/HIS sending to us, recognised by MSH-3 (and MSH-4 when set) and admitted from its
    addresses only, with the rights it was given. Where real systems differ, the mapping is
    chosen here."""

    class AccessionField(models.TextChoices):
        OBR_18 = "OBR-18", "OBR-18 placer field 1 (IHE RAD-4)"
        ORC_2 = "ORC-2", "ORC-2 placer order number"
        ORC_3 = "ORC-3", "ORC-3 filler order number"

    sending_application = models.CharField("MSH-3 sending application", max_length=64,
                                           blank=True)
    sending_facility = models.CharField("MSH-4 sending facility (empty: any)", max_length=64,
                                        blank=True)
    description = models.CharField(max_length=255, blank=True)
    default_charset = models.CharField(
        "character set when MSH-18 is empty", max_length=32, blank=True, default="",
        help_text="e.g. 8859/1 or UNICODE UTF-8; empty: UTF-8, else Latin-1")
    accession_field = models.CharField(
        "accession number from (ORM; OMI uses IPC-1 when present)", max_length=8,
        choices=AccessionField.choices, default=AccessionField.OBR_18)
    default_station_ae_title = models.CharField(
        "station AE title when the message names none", max_length=16, blank=True,
        help_text="empty: the first active station of the order's modality")
    addresses = models.CharField(
        "accepted from", max_length=255, default="",
        help_text="IP addresses, networks (10.1.2.0/24) or host names, separated by commas; "
                  "* for any address")
    may_order = models.BooleanField("may send orders (ORM^O01, OMI^O23)", default=False)
    may_update_patients = models.BooleanField(
        "may register and update patients (ADT A01, A04, A05, A08)", default=False)
    may_merge_patients = models.BooleanField(
        "may merge patients and change their IDs (ADT A40, A47)", default=False)
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sending_application", "sending_facility"],
                                               name="uniq_hl7_sender")]

    def __str__(self) -> str:
        return "/".join(p for p in (self.sending_application, self.sending_facility) if p)


class Message(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        ERROR = "error"  # answered AE
        REJECTED = "rejected"  # answered AR (or nothing to answer)

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    peer = models.CharField(max_length=64, blank=True)
    raw = models.BinaryField()  # exactly the bytes inside the MLLP frame
    text = models.TextField(blank=True)  # decoded for reading and searching
    sender = models.ForeignKey(Sender, null=True, blank=True, on_delete=models.SET_NULL)
    control_id = models.CharField("MSH-10", max_length=64, blank=True, db_index=True)
    message_type = models.CharField("MSH-9", max_length=32, blank=True, db_index=True)
    version = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED,
                              db_index=True)
    error = models.TextField(blank=True)
    ack = models.TextField(blank=True)
    orders = models.ManyToManyField(Order, blank=True, related_name="hl7_messages")
    patients = models.ManyToManyField(Patient, blank=True, related_name="hl7_messages")
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.message_type or 'HL7'} {self.control_id} ({self.status})"


class Receiver(models.Model):
    """A system that wants step status changes as HL7 (RIS, billing...)."""

    class Kind(models.TextChoices):
        ORM = "ORM", "ORM^O01 with ORC-1 SC"
        OMI = "OMI", "OMI^O23 with ORC-1 SC"

    name = models.CharField(max_length=64, unique=True)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    kind = models.CharField(max_length=4, choices=Kind.choices, default=Kind.ORM)
    version = models.CharField(max_length=8, default="2.5.1")
    receiving_application = models.CharField("MSH-5", max_length=64, blank=True)
    receiving_facility = models.CharField("MSH-6", max_length=64, blank=True)
    charset = models.CharField("MSH-18", max_length=32, default="UNICODE UTF-8")
    # which step statuses are reported
    on_started = models.BooleanField("send when started (IP)", default=True)
    on_completed = models.BooleanField("send when completed (CM)", default=True)
    on_discontinued = models.BooleanField("send when discontinued or canceled (DC/CA)",
                                          default=True)
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"


class Outbound(models.Model):
    """One status message to one receiver: the visible queue. Kept until sent; a down
    receiver only delays it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"  # answered AE/AR, or gave up after many attempts (retry by hand)
        CANCELED = "canceled"  # by an admin: never sent (retry queues it again)

    receiver = models.ForeignKey(Receiver, on_delete=models.CASCADE, related_name="queue")
    step_id = models.BigIntegerField(db_index=True)
    order_status = models.CharField(max_length=4)  # ORC-5: IP, CM, DC, CA
    text = models.TextField()  # the message as it will be / was sent
    control_id = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    ack = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class OutboundAttempt(models.Model):
    """One try at sending an outbound message: when, and the ACK the receiver gave or the
    error that kept it from answering."""

    outbound = models.ForeignKey(Outbound, on_delete=models.CASCADE, related_name="tries")
    at = models.DateTimeField(auto_now_add=True)
    code = models.CharField(max_length=4, blank=True)  # MSA-1 of the ACK, "" without one
    ack = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
