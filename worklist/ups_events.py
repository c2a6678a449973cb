"""UPS subscriptions and their events (PS3.4 CC.2.3, CC.2.4; PS3.18 11.10-11.11).

Events are written to an outbox (``UpsEvent``) for each subscriber, in the same transaction as
the change where there is one; event channels (the WebSocket consumer) send and mark them.
The channel layer (Redis in scale mode) only wakes the consumer of a subscriber; a consumer
also looks at its outbox twice a second, so nothing depends on the wake-up arriving.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import F
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from core import statements
from core.delivery import courier as make_courier
from core.errors import BadRequest
from core.retry import retry_delay
from worklist.models import ScheduledProcedureStep, UpsEvent, UpsSubscription
from worklist.ups import lookup, rendering, states, tags

log = logging.getLogger(__name__)

GLOBAL = "1.2.840.10008.5.1.4.34.5"  # the well-known UID of all workitems
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"  # the SOP class (context) events travel on
GLOBAL_FILTERED = "1.2.840.10008.5.1.4.34.5.1"


def group_name(ae_title: str) -> str:
    """The channel-layer group of a subscriber's event channels (letters, digits, dots)."""
    return "ups." + "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in ae_title.strip())


def _check_aet(ae_title: str) -> str:
    ae_title = ae_title.strip()
    if not ae_title or len(ae_title) > 16 or "\\" in ae_title:
        raise BadRequest("the subscriber is an AE title of 1 to 16 characters")
    return ae_title


def subscribe(target: str, ae_title: str, *, deletion_lock: bool = False,
              filter_keys: dict[str, str] | None = None, actor: str = "",
              delivery: str = "websocket") -> UpsSubscription:
    """Subscribe ``ae_title`` to one workitem, or (``target`` = GLOBAL or GLOBAL_FILTERED) to
    every workitem matching ``filter_keys``. The subscriber gets the current state of each
    workitem now subscribed (PS3.4 CC.2.3.1: initial State Reports)."""
    ae_title = _check_aet(ae_title)
    with transaction.atomic():
        if target in (GLOBAL, GLOBAL_FILTERED):
            filter_keys = filter_keys or {}
            if target == GLOBAL_FILTERED and not filter_keys:
                raise BadRequest("a filtered global subscription needs a filter")
            _matching(filter_keys)  # refuse a bad filter now, not at the first event
            subscription, _ = UpsSubscription.objects.update_or_create(
                ae_title=ae_title, step=None,
                defaults={"filter": filter_keys, "deletion_lock": deletion_lock,
                          "suspended": False, "created_by": actor, "delivery": delivery})
            open_steps = _matching(filter_keys).exclude(status__in=ScheduledProcedureStep.FINAL)
            for step in open_steps[:1000]:
                _event(ae_title, delivery, step, UpsEvent.Type.STATE_REPORT,
                       _state_report(step))
        else:
            step = states.get_workitem(target)
            subscription, _ = UpsSubscription.objects.update_or_create(
                ae_title=ae_title, step=step,
                defaults={"deletion_lock": deletion_lock, "created_by": actor,
                          "delivery": delivery})
            _event(ae_title, delivery, step, UpsEvent.Type.STATE_REPORT, _state_report(step))
    transaction.on_commit(lambda: _wake({ae_title: delivery}))
    return subscription


def unsubscribe(target: str, ae_title: str) -> int:
    """Remove a subscription; from GLOBAL: every subscription of the AE (PS3.4 CC.2.3.2)."""
    ae_title = _check_aet(ae_title)
    if target in (GLOBAL, GLOBAL_FILTERED):
        deleted, _ = UpsSubscription.objects.filter(ae_title=ae_title).delete()
    else:
        step = states.get_workitem(target)
        deleted, _ = UpsSubscription.objects.filter(ae_title=ae_title, step=step).delete()
    return deleted


def suspend(ae_title: str) -> None:
    """Suspend Global Subscription: no new workitems; the ones it covers now keep reporting
    (they become subscriptions of their own, PS3.4 CC.2.3.2)."""
    ae_title = _check_aet(ae_title)
    with transaction.atomic():
        subscription = UpsSubscription.objects.filter(ae_title=ae_title, step=None).first()
        if subscription is None:
            raise states.UpsError(0xC314, f"{ae_title} has no global subscription",
                               http_status=404)
        covered = _matching(subscription.filter).exclude(
            status__in=ScheduledProcedureStep.FINAL)
        for step in covered[:1000]:
            UpsSubscription.objects.get_or_create(
                ae_title=ae_title, step=step,
                defaults={"delivery": subscription.delivery,
                          "deletion_lock": subscription.deletion_lock,
                          "created_by": subscription.created_by})
        subscription.suspended = True
        subscription.save(update_fields=["suspended"])


def _matching(filter_keys: dict[str, str]):
    identifier = Dataset()
    for keyword, value in filter_keys.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise BadRequest(f"unknown filter attribute {keyword!r}")
        identifier[tag] = DataElement(tag, dictionary_VR(tag), value)
    return lookup.search(identifier)


def _subscribers(step: ScheduledProcedureStep, *, new: bool = False) -> dict[str, str]:
    """AE titles to tell about ``step`` (with how to reach each): its own subscribers (a
    ``new`` one has none yet), and global subscribers (not suspended) whose filter it
    matches."""
    names = {} if new else {s.ae_title: s.delivery
                            for s in statements.select(UpsSubscription, step=step.pk)}
    for subscription in statements.select(UpsSubscription, step=None, suspended=False,
                                    order_by="ae_title"):
        if subscription.ae_title in names:
            continue
        if not subscription.filter or _matching(subscription.filter).filter(pk=step.pk).exists():
            names[subscription.ae_title] = subscription.delivery
    return names


def _state_report(step: ScheduledProcedureStep) -> dict[str, Any]:
    return {tags.PROCEDURE_STEP_STATE: {"vr": "CS", "Value": [states.ups_state(step)]},
            tags.INPUT_READINESS_STATE: {"vr": "CS", "Value": ["READY"]}}


def _event(ae_title: str, delivery: str, step: ScheduledProcedureStep, event_type: int,
           info: dict[str, Any]) -> None:
    payload = {
        tags.AFFECTED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [step.ups_instance_uid]},
        tags.EVENT_TYPE_ID: {"vr": "US", "Value": [int(event_type)]},
        **info,
    }
    UpsEvent.objects.create(ae_title=ae_title, delivery=delivery,
                            workitem_uid=step.ups_instance_uid, event_type=event_type,
                            payload=payload)


def publish(step: ScheduledProcedureStep, event_type: int, info: dict[str, Any], *,
            new: bool = False) -> list[str]:
    """Write ``step``'s event for each of its subscribers; deliver on commit."""
    names = _subscribers(step, new=new)
    for name, delivery in names.items():
        _event(name, delivery, step, event_type, info)
    if names:
        transaction.on_commit(lambda: _wake(names))
    return sorted(names)


def on_step_status_changed(sender, step: ScheduledProcedureStep, previous: str, source: str,
                           **kwargs) -> None:
    """Signal receiver: every status change, whatever its source, is a UPS State Report."""
    step.refresh_from_db()
    publish(step, UpsEvent.Type.STATE_REPORT, _state_report(step))


def on_step_created(sender, step: ScheduledProcedureStep, **kwargs) -> None:
    publish(step, UpsEvent.Type.STATE_REPORT, _state_report(step), new=True)


def on_step_assigned(sender, step: ScheduledProcedureStep, **kwargs) -> None:
    """A step moved to another station: UPS Assigned with the new station (PS3.4 CC.2.4.3)."""
    stations = [s for s in step.scheduled_station_ae_title.split("\\") if s]
    publish(step, UpsEvent.Type.UPS_ASSIGNED, {
        tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE: {"vr": "SQ", "Value": [
            {tags.CODE_VALUE: {"vr": "SH", "Value": [s]},
             tags.CODING_SCHEME_DESIGNATOR: {"vr": "SH", "Value": ["DCM_AET"]}}
            for s in stations]}})


def progress_report(step: ScheduledProcedureStep) -> None:
    """The performer updated the progress: UPS Progress Report with the Procedure Step
    Progress Information Sequence as it now is (PS3.4 CC.2.4, Event Type ID 3)."""
    publish(step, UpsEvent.Type.PROGRESS_REPORT, rendering.progress_information(step))


def cancel_requested(step: ScheduledProcedureStep, reason: str) -> None:
    info = {tags.REASON_FOR_CANCELLATION: {"vr": "LT", "Value": [reason]}} if reason else {}
    publish(step, UpsEvent.Type.CANCEL_REQUESTED, info)


def _wake(names: dict[str, str]) -> None:
    """Deliver: DIMSE subscribers get N-EVENT-REPORTs (a thread, or a Celery task in scale
    mode); WebSocket channels are told to look at their outbox (best effort: they poll)."""
    for name, delivery in names.items():
        if delivery == "dimse":
            courier.wake(name)
    websocket = [name for name, delivery in names.items() if delivery != "dimse"]
    if not websocket:
        return
    try:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        for name in websocket:
            async_to_sync(layer.group_send)(group_name(name), {"type": "ups.wake"})
    except Exception as exc:  # the channel polls its outbox anyway
        log.debug("UPS wake-up not sent: %r", exc)


def resume_pending(**kwargs) -> list[str]:
    """Signal receiver (core.signals.deliveries_due): send to the DIMSE subscribers whose
    events are still pending, if no sender has them (those of before a restart, or whose task
    was lost). Returns them."""
    names = sorted(set(UpsEvent.objects.filter(delivery="dimse", delivered_at__isnull=True)
                       .values_list("ae_title", flat=True)))
    for name in names:
        courier.wake(name)
    return names


def retry_now(ae_title: str) -> int:
    """An admin's Retry now for a DIMSE subscriber: its undelivered events start a fresh
    backoff and are tried at once. Returns how many are waiting."""
    waiting = UpsEvent.objects.filter(ae_title=ae_title, delivery="dimse",
                                      delivered_at__isnull=True)
    count = waiting.update(attempts=0)
    if count:
        transaction.on_commit(lambda: courier.wake(ae_title, now=True))
    return count


BATCH = 500


def send_dimse_events(ae_title: str) -> float | None:
    """Send the AE's pending events as N-EVENT-REPORTs (UPS Event SOP Class) to its address in
    the AE table; what cannot be sent stays pending. Returns the seconds to wait before trying
    again (0: more to send), or None when nothing is left, or when the oldest event has been
    tried core.retry.MAX_ATTEMPTS times (then the AE's next event tries again). Run through
    ``courier`` (core.delivery): one sender at a time per AE, so that the events go out once
    each and in order."""
    from pydicom.dataset import Dataset as PydicomDataset
    from pynetdicom.presentation import build_context

    from dicomnet.scu import Peer, PeerUnavailable, associate
    from pacs.models import ApplicationEntity

    events = list(UpsEvent.objects.filter(ae_title=ae_title, delivery="dimse",
                                          delivered_at__isnull=True)[:BATCH])
    if not events:
        return None
    peer = ApplicationEntity.objects.filter(ae_title=ae_title).first()
    if peer is None:
        return _failed(events, f"{ae_title} is not in the AE table")
    try:
        assoc = associate(Peer.of(peer), settings.DIMSE_AET,
                          [build_context(UPS_EVENT)], 15)
    except PeerUnavailable as exc:
        return _failed(events, str(exc))
    try:
        for event in events:
            info = {k: v for k, v in event.payload.items() if not k.startswith("0000")}
            status, _ = assoc.send_n_event_report(
                PydicomDataset.from_json(info), event.event_type, states.UPS_PUSH,
                event.workitem_uid, meta_uid=UPS_EVENT)
            if status is None or status.get("Status", 0xFFFF) != 0x0000:
                code = status.Status if status is not None and "Status" in status else None
                return _failed([event], f"answered 0x{code:04X}" if code is not None
                               else "no response")
            mark_delivered([event])
    finally:
        assoc.release()
    return 0 if len(events) == BATCH else None


courier = make_courier("ups-events", send_dimse_events, task="worklist.send_ups_events")


def _failed(events: list[UpsEvent], error: str) -> float | None:
    """Count the attempt on ``events``; the delay before the next (see send_dimse_events)."""
    UpsEvent.objects.filter(pk__in=[e.pk for e in events]).update(
        attempts=F("attempts") + 1, last_error=error[:255])
    log.warning("UPS events for %s not delivered: %s", events[0].ae_title, error)
    return retry_delay(events[0].attempts + 1)


SUBSCRIBER, WATCHER = "subscriber", "watcher"


def channel_mode(user, ae_title: str) -> str | None:
    """How ``user`` may hold ``ae_title``'s event channel: as its SUBSCRIBER (the events are
    sent and marked delivered: the AE's queue), as a WATCHER (a copy of each new event; the
    queue is left to the subscriber), or not at all (None).

    The subscriber is the portal account bound to the AE title in the AE table; where none is
    bound, an admin's channel is the subscriber. An admin watches an AE whose account is
    someone else. Nobody else may read an AE's events."""
    from core.roles import is_admin
    from pacs.models import ApplicationEntity

    if user is None or not user.is_authenticated or not user.is_active:
        return None
    ae = ApplicationEntity.objects.filter(ae_title=ae_title.strip()).first()
    account_id = ae.account_id if ae is not None else None
    if account_id is not None and account_id == user.pk:
        return SUBSCRIBER
    if not is_admin(user):
        return None
    return WATCHER if account_id is not None else SUBSCRIBER


def last_event_id() -> int:
    return UpsEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_after(ae_title: str, after: int, limit: int = 100) -> list[UpsEvent]:
    """A watcher's view: the AE's WebSocket events newer than ``after``, delivered or not."""
    return list(UpsEvent.objects.filter(ae_title=ae_title, delivery="websocket", id__gt=after)
                .order_by("id")[:limit])


def pending(ae_title: str, limit: int = 100) -> list[UpsEvent]:
    """The undelivered events of a WebSocket subscriber, oldest first."""
    return list(UpsEvent.objects.filter(ae_title=ae_title, delivery="websocket",
                                        delivered_at__isnull=True)[:limit])


def mark_delivered(events: list[UpsEvent]) -> None:
    from django.utils import timezone

    UpsEvent.objects.filter(pk__in=[e.pk for e in events]).update(delivered_at=timezone.now())
