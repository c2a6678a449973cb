from __future__ import annotations

import datetime as dt
from collections import OrderedDict

from pacs.models import Study
from worklist.models import Order, ScheduledProcedureStep, Station


def day_board(day: dt.date, *, modality: str = "") -> list[tuple[str, list]]:
    """The day's steps grouped by station (stations without steps included), in time order."""
    steps = (ScheduledProcedureStep.objects.filter(start_date=f"{day:%Y%m%d}")
             .select_related("requested_procedure__order__patient")
             .order_by("scheduled_station_ae_title", "start_time", "id"))
    stations = Station.objects.filter(active=True)
    if modality:
        steps = steps.filter(modality=modality)
        stations = stations.filter(modality=modality)
    board: OrderedDict[str, list] = OrderedDict((s.ae_title, []) for s in stations)
    for step in steps:
        board.setdefault(step.scheduled_station_ae_title or "(no station)", []).append(step)
    return list(board.items())


def stored_studies(order: Order) -> dict[str, Study]:
    """The archive's studies for the order's requested procedures and performed steps, by
    Study Instance UID: images that arrived link back to the order."""
    uids = set(order.procedures.values_list("study_instance_uid", flat=True))
    uids |= set(ScheduledProcedureStep.objects.filter(requested_procedure__order=order)
                .values_list("performed__study_instance_uid", flat=True))
    uids.discard(None)
    uids.discard("")
    return {s.study_instance_uid: s for s in Study.objects.filter(study_instance_uid__in=uids)}
