from __future__ import annotations

import datetime as dt
from collections import OrderedDict

from worklist.models import ScheduledProcedureStep, Station


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
