"""Traffic per HL7 sender and receiver, for the interface analyst: messages per day, error
rate and the last message; and a receiver's connection test."""

from __future__ import annotations

import datetime as dt
import socket
import time
from dataclasses import dataclass, field

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from core import audit
from hl7gw.models import Message, Outbound, OutboundAttempt, Receiver, Sender

DAYS = 7


@dataclass
class Traffic:
    """One sender's or receiver's last DAYS days, oldest day first."""

    name: str
    pk: int | None
    per_day: list[int] = field(default_factory=lambda: [0] * DAYS)
    errors: int = 0
    total: int = 0
    last: dt.datetime | None = None
    pending: int = 0  # receivers: waiting to be sent

    @property
    def error_rate(self) -> float | None:
        return None if not self.total else 100 * self.errors / self.total


def days() -> list[dt.date]:
    today = timezone.localdate()
    return [today - dt.timedelta(days=DAYS - 1 - n) for n in range(DAYS)]


def _since() -> dt.datetime:
    first = days()[0]
    return timezone.make_aware(dt.datetime.combine(first, dt.time()))


def senders() -> list[Traffic]:
    """Each registered sender (and "unregistered" for messages from none), inbound messages
    per day, answered AE or AR (error rate), the last one received."""
    index = {d: n for n, d in enumerate(days())}
    rows: dict[int | None, Traffic] = {s.pk: Traffic(str(s), s.pk) for s in Sender.objects.all()}
    bad = Q(status__in=(Message.Status.ERROR, Message.Status.REJECTED))
    counted = (Message.objects.filter(received_at__gte=_since())
               .annotate(day=TruncDate("received_at"))
               .values("sender_id", "day").annotate(n=Count("id"), bad=Count("id", filter=bad)))
    for row in counted:
        traffic = rows.setdefault(row["sender_id"], Traffic("(not registered)", None))
        if row["day"] in index:
            traffic.per_day[index[row["day"]]] += row["n"]
        traffic.total += row["n"]
        traffic.errors += row["bad"]
    for row in Message.objects.values("sender_id").annotate(last=Max("received_at")):
        if row["sender_id"] in rows:
            rows[row["sender_id"]].last = row["last"]
    return list(rows.values())


def receivers() -> list[Traffic]:
    """Each receiver: messages sent per day, attempts that failed (no ACK, AE or AR) over
    all attempts, the last one sent, and how many wait."""
    index = {d: n for n, d in enumerate(days())}
    rows = {r.pk: Traffic(str(r), r.pk) for r in Receiver.objects.all()}
    sent = (Outbound.objects.filter(sent_at__gte=_since()).annotate(day=TruncDate("sent_at"))
            .values("receiver_id", "day").annotate(n=Count("id")))
    for row in sent:
        if row["receiver_id"] in rows and row["day"] in index:
            rows[row["receiver_id"]].per_day[index[row["day"]]] += row["n"]
    bad = ~Q(code="AA") & ~Q(code="CA")
    tries = (OutboundAttempt.objects.filter(at__gte=_since())
             .values("outbound__receiver_id")
             .annotate(n=Count("id"), bad=Count("id", filter=bad)))
    for row in tries:
        traffic = rows.get(row["outbound__receiver_id"])
        if traffic:
            traffic.total, traffic.errors = row["n"], row["bad"]
    for row in Outbound.objects.values("receiver_id").annotate(
            last=Max("sent_at"), pending=Count("id", filter=Q(status=Outbound.Status.PENDING))):
        if row["receiver_id"] in rows:
            rows[row["receiver_id"]].last = row["last"]
            rows[row["receiver_id"]].pending = row["pending"]
    return list(rows.values())


@dataclass(frozen=True)
class ConnectionTest:
    ok: bool
    detail: str


def test_connection(receiver: Receiver, *, actor: str, timeout: float = 5) -> ConnectionTest:
    """Open a TCP connection to the receiver's MLLP port and close it: no message is sent,
    so nothing is processed over there. Audited."""
    started = time.perf_counter()
    try:
        with socket.create_connection((receiver.host, receiver.port), timeout=timeout):
            pass
    except TimeoutError:
        result = ConnectionTest(False, f"no answer from {receiver.host}:{receiver.port} "
                                       f"within {timeout:.0f} s")
    except ConnectionRefusedError:
        result = ConnectionTest(False, f"{receiver.host}:{receiver.port} refused the "
                                       "connection: nothing listens there")
    except OSError as exc:
        result = ConnectionTest(False, f"{receiver.host}:{receiver.port}: "
                                       f"{exc.strerror or type(exc).__name__}")
    else:
        result = ConnectionTest(True, f"connected to {receiver.host}:{receiver.port} in "
                                      f"{(time.perf_counter() - started) * 1000:.0f} ms "
                                      "(no message sent)")
    audit.record(category="hl7", action="receiver connection test", actor=actor,
                 outcome="success" if result.ok else "failure",
                 detail=f"{receiver.name}: {result.detail}")
    return result
