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
from django.db import transaction
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from pacs.errors import BadRequest
from worklist import ups
from worklist.models import ScheduledProcedureStep, UpsEvent, UpsSubscription

log = logging.getLogger(__name__)

GLOBAL = "1.2.840.10008.5.1.4.34.5"  # the well-known UID of all workitems
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
              filter_keys: dict[str, str] | None = None, actor: str = "") -> UpsSubscription:
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
                          "suspended": False, "created_by": actor})
            open_steps = _matching(filter_keys).exclude(status__in=ScheduledProcedureStep.FINAL)
            for step in open_steps[:1000]:
                _event(ae_title, step, UpsEvent.Type.STATE_REPORT, _state_report(step))
        else:
            step = ups.get_workitem(target)
            subscription, _ = UpsSubscription.objects.update_or_create(
                ae_title=ae_title, step=step,
                defaults={"deletion_lock": deletion_lock, "created_by": actor})
            _event(ae_title, step, UpsEvent.Type.STATE_REPORT, _state_report(step))
    _wake([ae_title])
    return subscription


def unsubscribe(target: str, ae_title: str) -> int:
    """Remove a subscription; from GLOBAL: every subscription of the AE (PS3.4 CC.2.3.2)."""
    ae_title = _check_aet(ae_title)
    if target in (GLOBAL, GLOBAL_FILTERED):
        deleted, _ = UpsSubscription.objects.filter(ae_title=ae_title).delete()
    else:
        step = ups.get_workitem(target)
        deleted, _ = UpsSubscription.objects.filter(ae_title=ae_title, step=step).delete()
    return deleted


def suspend(ae_title: str) -> None:
    """Suspend Global Subscription: no new workitems, existing subscriptions stay."""
    updated = UpsSubscription.objects.filter(ae_title=_check_aet(ae_title), step=None).update(
        suspended=True)
    if not updated:
        raise ups.UpsError(0xC314, f"{ae_title} has no global subscription", http_status=404)


def _matching(filter_keys: dict[str, str]):
    identifier = Dataset()
    for keyword, value in filter_keys.items():
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        tag = tag_for_keyword(keyword)
        if tag is None:
            raise BadRequest(f"unknown filter attribute {keyword!r}")
        identifier[tag] = DataElement(tag, dictionary_VR(tag), value)
    return ups.search(identifier)


def _subscribers(step: ScheduledProcedureStep, *, new: bool = False) -> list[str]:
    """AE titles to tell about ``step``: its own subscribers, and global subscribers whose
    filter it matches (a suspended global subscription does not take new workitems)."""
    names = set(UpsSubscription.objects.filter(step=step).values_list("ae_title", flat=True))
    for subscription in UpsSubscription.objects.filter(step=None):
        if subscription.suspended and new:
            continue
        if subscription.suspended and not UpsSubscription.objects.filter(
                ae_title=subscription.ae_title, step=step).exists():
            continue
        if not subscription.filter or _matching(subscription.filter).filter(pk=step.pk).exists():
            names.add(subscription.ae_title)
    return sorted(names)


def _state_report(step: ScheduledProcedureStep) -> dict[str, Any]:
    return {"00741000": {"vr": "CS", "Value": [ups.ups_state(step)]},
            "00404041": {"vr": "CS", "Value": ["READY"]}}


def _event(ae_title: str, step: ScheduledProcedureStep, event_type: int,
           info: dict[str, Any]) -> None:
    payload = {
        "00001000": {"vr": "UI", "Value": [step.ups_instance_uid]},  # Affected SOP Instance
        "00001002": {"vr": "US", "Value": [int(event_type)]},  # Event Type ID
        **info,
    }
    UpsEvent.objects.create(ae_title=ae_title, workitem_uid=step.ups_instance_uid,
                            event_type=event_type, payload=payload)


def publish(step: ScheduledProcedureStep, event_type: int, info: dict[str, Any], *,
            new: bool = False) -> list[str]:
    """Write ``step``'s event for each of its subscribers; wake their channels on commit."""
    names = _subscribers(step, new=new)
    for name in names:
        _event(name, step, event_type, info)
    if names:
        transaction.on_commit(lambda: _wake(names))
    return names


def on_step_status_changed(sender, step: ScheduledProcedureStep, previous: str, source: str,
                           **kwargs) -> None:
    """Signal receiver: every status change, whatever its source, is a UPS State Report."""
    step.refresh_from_db()
    publish(step, UpsEvent.Type.STATE_REPORT, _state_report(step))


def on_step_created(sender, step: ScheduledProcedureStep, **kwargs) -> None:
    publish(step, UpsEvent.Type.STATE_REPORT, _state_report(step), new=True)


def cancel_requested(step: ScheduledProcedureStep, reason: str) -> None:
    info = {"00741238": {"vr": "LT", "Value": [reason]}} if reason else {}
    publish(step, UpsEvent.Type.CANCEL_REQUESTED, info)


def _wake(names: list[str]) -> None:
    """Tell the subscribers' open channels to look at their outbox (best effort)."""
    try:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        for name in names:
            async_to_sync(layer.group_send)(group_name(name), {"type": "ups.wake"})
    except Exception as exc:  # the channel polls its outbox anyway
        log.debug("UPS wake-up not sent: %r", exc)


def pending(ae_title: str, limit: int = 100) -> list[UpsEvent]:
    return list(UpsEvent.objects.filter(ae_title=ae_title, delivered_at__isnull=True)[:limit])


def mark_delivered(events: list[UpsEvent]) -> None:
    from django.utils import timezone

    UpsEvent.objects.filter(pk__in=[e.pk for e in events]).update(delivered_at=timezone.now())
