"""Auto-routing: instances received that match a forwarding rule (from these AE titles, of these
modalities) are sent on to the rule's destination with C-STORE.

An instance is queued (a ForwardItem row) in the same transaction that indexes it, so nothing
received is forgotten by a crash. Each destination's queue is sent oldest first, in batches on
one association, by ``courier`` (core.delivery: one sender per destination, a thread in
embedded mode, a Celery task in scale mode). While the destination cannot be reached the batch
is tried again with backoff (core.retry); after the last attempt it is marked failed, and an
admin can send the failed items again. An instance the destination answers with a failure
status is marked failed with that status; objects it cannot take in their stored syntax are
sent decoded (dicomnet.transcode), as C-MOVE does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.forms import ModelForm
from django.utils import timezone

from core import audit, delivery, records, statements
from core.errors import ServiceError
from core.reloaded import Reloaded
from core.retry import retry_delay
from dicomnet.scu import Peer, PeerUnavailable, StoreSession
from pacs.dicomfile import ParsedHeader
from pacs.models import ApplicationEntity, ForwardingRule, ForwardItem, Instance
from pacs.services.sending import send_stored
from pacs.storage import get_storage

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(frozen=True)
class _Rule:
    pk: int
    destination_id: int
    sources: frozenset[str]
    modalities: frozenset[str]

    def matches(self, source: str, modality: str) -> bool:
        return ((not self.sources or source in self.sources)
                and (not self.modalities or modality in self.modalities))


def words(text: str) -> frozenset[str]:
    """The AE titles or modalities of a rule's field (spaces, commas or backslashes)."""
    return frozenset(w for w in re.split(r"[\s,\\]+", text.upper()) if w)


def _load_rules() -> list[_Rule]:
    return [_Rule(pk, destination, words(sources), words(modalities))
            for pk, destination, sources, modalities in ForwardingRule.objects
            .filter(enabled=True)
            .values_list("pk", "destination_id", "source_ae_titles", "modalities")]


# the enabled rules: a store with no rules to apply costs a clock reading, not a query
rules = Reloaded(_load_rules, settings.CONFIG_CACHE_SECONDS)


def save_rule(form: ModelForm, *, actor: str, source: str = "") -> ForwardingRule:
    """Add or change a rule (audited); this process applies it at once, the others within
    PORTAL_CONFIG_CACHE_SECONDS."""
    rule = records.save(form, actor=actor, source=source)
    rules.forget()
    return rule  # type: ignore[return-value]


def delete_rule(rule: ForwardingRule, *, actor: str, source: str = "") -> None:
    records.delete(rule, actor=actor, source=source)
    rules.forget()


def destinations(origin: str, header: ParsedHeader) -> dict[int, int]:
    """The destinations the enabled rules send an instance to: {destination id: rule id}."""
    active = rules.get()
    if not active:
        return {}
    source = origin[6:].rpartition("@")[0].upper() if origin.startswith("dimse:") else ""
    modality = header.text("Modality").strip().upper()
    found: dict[int, int] = {}
    for rule in active:
        if rule.matches(source, modality):
            found.setdefault(rule.destination_id, rule.pk)
    return found


def queue(origin: str, header: ParsedHeader, sop_instance_uid: str) -> None:
    """Part of the indexing transaction of a stored instance: queue it for each destination
    whose rule matches. ``origin`` is the instance's received_from ("dimse:AET@host", ...)."""
    for destination_id, rule_id in destinations(origin, header).items():
        statements.insert_row(ForwardItem, destination_id=destination_id, rule_id=rule_id,
                        sop_instance_uid=sop_instance_uid)
        transaction.on_commit(lambda key=str(destination_id): courier.wake(key))


def send_queue(key: str) -> float | None:
    """One batch of destination ``key``'s queue on one association (the courier's ``send``):
    the seconds before the next pass (0: more now), or None when nothing is left to try."""
    items = list(ForwardItem.objects.filter(destination_id=int(key),
                                            status=ForwardItem.Status.PENDING)[:BATCH])
    if not items:
        return None
    destination = ApplicationEntity.objects.filter(pk=int(key)).first()
    if destination is None:  # deleted meanwhile, and its queue with it
        return None
    stored = {uid: (sop_class, syntax, file_key) for uid, sop_class, syntax, file_key in
              Instance.objects.filter(sop_instance_uid__in=[i.sop_instance_uid for i in items])
              .values_list("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid",
                           "file_key")}
    gone = [i for i in items if i.sop_instance_uid not in stored]
    _finish(gone, ForwardItem.Status.FAILED, GONE)
    items = [i for i in items if i.sop_instance_uid in stored]
    if not items:
        return 0
    storage = get_storage()
    peer = Peer.of(destination)
    pairs = {stored[i.sop_instance_uid][:2] for i in items}
    sent = 0
    try:
        with StoreSession(peer, calling_aet=settings.DIMSE_AET, pairs=pairs) as session:
            for item in items:
                sop_class, syntax, file_key = stored[item.sop_instance_uid]
                status = send_stored(session, file_key, sop_class, syntax, storage)
                if status == 0x0000 or status & 0xF000 == 0xB000:  # success or warning
                    _finish([item], ForwardItem.Status.SENT)
                elif session.last_error:  # we could not send it at all
                    _finish([item], ForwardItem.Status.FAILED, f"not sent: {session.last_error}")
                else:
                    _finish([item], ForwardItem.Status.FAILED, f"answered 0x{status:04X}")
                sent += 1
    except PeerUnavailable as exc:
        return _unreachable(items[sent:], str(exc))
    except ServiceError as exc:  # e.g. more SOP class/syntax pairs than one association holds
        _finish(items[sent:], ForwardItem.Status.FAILED, str(exc))
    return 0


courier = delivery.courier("forward", send_queue, task="pacs.send_forward_queue")


def _finish(items: list[ForwardItem], status: str, error: str = "") -> None:
    if items:
        ForwardItem.objects.filter(pk__in=[i.pk for i in items]).update(
            status=status, done_at=timezone.now(), last_error=error[:255])


def _unreachable(items: list[ForwardItem], error: str) -> float | None:
    """Count an attempt on the batch; after the last one the batch is failed."""
    ForwardItem.objects.filter(pk__in=[i.pk for i in items]).update(
        attempts=F("attempts") + 1, last_error=error[:255])
    log.warning("forwarding to AE %s: %s", items[0].destination_id, error)
    delay = retry_delay(items[0].attempts + 1)
    if delay is None:
        _finish(items, ForwardItem.Status.FAILED, f"out of attempts: {error}")
        return 0  # the next batch, if any, starts its own attempts
    return delay


GONE = "no longer in the archive"


def retry_failed(destination: ApplicationEntity) -> int:
    """Send the destination's failed items again, at once, but those whose instance is no
    longer in the archive (a retry could only fail again). How many."""
    count = ForwardItem.objects.filter(destination=destination,
                                       status=ForwardItem.Status.FAILED).filter(
        Exists(Instance.objects.filter(sop_instance_uid=OuterRef("sop_instance_uid")))).update(
        status=ForwardItem.Status.PENDING, attempts=0, done_at=None)
    transaction.on_commit(lambda: courier.wake(str(destination.pk), now=True))
    return count


def resume_pending(**kwargs) -> list[int]:
    """Signal receiver (core.signals.deliveries_due): send the queues still pending."""
    keys = sorted(set(ForwardItem.objects.filter(status=ForwardItem.Status.PENDING)
                      .values_list("destination_id", flat=True)))
    for key in keys:
        courier.wake(str(key))
    return keys


def retry_item(item: ForwardItem, *, actor: str) -> None:
    """Queue one failed or canceled item again; refused when its instance is gone."""
    if item.status not in (ForwardItem.Status.FAILED, ForwardItem.Status.CANCELED):
        raise ServiceError(f"item {item.pk} is {item.get_status_display().lower()}: "
                           "only a failed or canceled item is sent again")
    if not Instance.objects.filter(sop_instance_uid=item.sop_instance_uid).exists():
        raise ServiceError(f"item {item.pk} cannot be sent again: its instance is {GONE} "
                           "(deleted after it was queued)")
    ForwardItem.objects.filter(pk=item.pk).update(status=ForwardItem.Status.PENDING,
                                                  attempts=0, done_at=None)
    audit.record(category="admin", action="forward item retried", actor=actor,
                 detail=f"item {item.pk} to AE {item.destination_id}: {item.sop_instance_uid}")
    transaction.on_commit(lambda: courier.wake(str(item.destination_id), now=True))


def cancel_item(item: ForwardItem, *, actor: str) -> bool:
    """Take a pending or failed item out of the queue (it is kept, as canceled); whether it
    was. An item being sent at this moment may still arrive."""
    done = ForwardItem.objects.filter(
        pk=item.pk, status__in=(ForwardItem.Status.PENDING, ForwardItem.Status.FAILED)).update(
        status=ForwardItem.Status.CANCELED, done_at=timezone.now())
    if done:
        audit.record(category="admin", action="forward item canceled", actor=actor,
                     detail=f"item {item.pk} to AE {item.destination_id}: "
                            f"{item.sop_instance_uid}")
    return bool(done)
