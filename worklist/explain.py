"""Why a modality does or does not see an order in its worklist.

The most frequent support question of a worklist broker. The answer comes from the modality's
last actual query (its C-FIND identifier, kept as it came: ``record_query``), run again against
the order's steps with the same matching engine the worklist uses (``worklist.query``), and
then key by key, each key alone, so that the page can say which key lets the step through and
which one keeps it out. The AE title's own settings (may query the worklist, only its own
station's items, the answer character set) and the step's status are checked beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import reduce

from django.conf import settings
from django.utils import timezone
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

from core import statements
from pacs import query
from pacs.models import ApplicationEntity
from worklist.models import ScheduledProcedureStep, WorklistQuery
from worklist.query import OPEN_STATUSES, WORKLIST, worklist_charset, worklist_search

log = logging.getLogger("worklist")

MATCH, NO_MATCH, WARNING, INFO = "match", "no match", "warning", "info"


def record_query(ae_title: str, host: str, identifier: Dataset, fuzzy: bool) -> None:
    """Keep this worklist query (the last ``PORTAL_MWL_QUERIES_KEPT`` per AE title). Two plain
    statements (core.statements): a modality's worklist query stays as fast as it was. Never
    fails the query it records: a failure to keep it is logged."""
    kept = settings.MWL_QUERIES_KEPT
    if kept <= 0:
        return
    try:
        row = statements.insert(WorklistQuery(
            ae_title=ae_title.strip()[:16], host=host[:255], received_at=timezone.now(),
            identifier=identifier.to_json_dict(), fuzzy=fuzzy))
        table = WorklistQuery._meta.db_table
        statements.execute(
            f"DELETE FROM {table} WHERE ae_title = %s AND id <= (SELECT id FROM {table} "
            "WHERE ae_title = %s ORDER BY id DESC LIMIT 1 OFFSET %s)",
            [row.ae_title, row.ae_title, kept])
    except Exception:
        log.exception("the worklist query of %s was not kept", ae_title)


@dataclass
class Check:
    """One reason: what was compared, its outcome (MATCH, NO_MATCH, WARNING, INFO), and the
    values on both sides in words."""

    what: str
    outcome: str
    detail: str


@dataclass
class StepAnswer:
    step: ScheduledProcedureStep
    seen: bool
    checks: list[Check] = field(default_factory=list)


@dataclass
class Explanation:
    ae_title: str
    query: WorklistQuery | None
    permissions: list[Check]
    steps: list[StepAnswer]


def explain(steps: list[ScheduledProcedureStep], ae_title: str) -> Explanation:
    """For each step: would the AE title's last worklist query return it, and why (not)."""
    ae_title = ae_title.strip()
    last = WorklistQuery.objects.filter(ae_title=ae_title).first()
    ae = ApplicationEntity.objects.filter(ae_title=ae_title).first()
    permissions, permitted = _permissions(ae, ae_title)
    identifier = Dataset.from_json(last.identifier) if last else None
    fuzzy = last.fuzzy if last else False
    answers = []
    for step in steps:
        checks: list[Check] = []
        own = _own_station(ae, ae_title, step, checks)
        if identifier is None:
            checks.append(Check("Last query", INFO, f"No worklist query from {ae_title} is "
                                "kept: the checks below use a query with no keys (only the "
                                "status and the AE's settings can keep a step out)."))
            asked = Dataset()
        else:
            asked = identifier
        checks += _keys(asked, step, fuzzy)
        checks.append(_status(asked, step))
        checks.append(_charset(ae, asked, step))
        found = worklist_search(asked, station_ae_title=ae_title if own else None,
                                fuzzy=fuzzy).filter(pk=step.pk)
        answers.append(StepAnswer(step, permitted and found.exists(), checks))
    return Explanation(ae_title, last, permissions, answers)


def _permissions(ae: ApplicationEntity | None, ae_title: str) -> tuple[list[Check], bool]:
    """The AE table's answer (the same fields the DIMSE policy reads)."""
    if ae is None:
        if settings.DIMSE_ALLOW_UNKNOWN_AE:
            return [Check("AE title", WARNING, f"{ae_title} is not in the AE table; unknown AE "
                          "titles are admitted here (PORTAL_DIMSE_ALLOW_UNKNOWN_AE).")], True
        return [Check("AE title", NO_MATCH, f"{ae_title} is not in the AE table: its "
                       "associations are refused. Add it on the AE titles page.")], False
    checks = [Check("AE title", MATCH, f"{ae_title} is in the AE table (host {ae.host}).")]
    if not ae.may_query_worklist:
        checks.append(Check("May query the worklist", NO_MATCH, "Off for this AE title: its "
                            "worklist queries are refused. Tick it on the AE titles page."))
        return checks, False
    checks.append(Check("May query the worklist", MATCH, "On for this AE title."))
    return checks, True


def _own_station(ae: ApplicationEntity | None, ae_title: str, step: ScheduledProcedureStep,
                 checks: list[Check]) -> bool:
    if ae is None or not ae.worklist_own_station_only:
        return False
    station = step.scheduled_station_ae_title
    ok = ae_title in station.split("\\")
    checks.append(Check(
        "Only items scheduled on this AE title", MATCH if ok else NO_MATCH,
        f"On for {ae_title}: it sees steps scheduled on {ae_title} only; this step is "
        f"scheduled on {station or 'no station'}."
        + ("" if ok else " Reschedule it to that station, or untick the option.")))
    return True


def _keys(asked: Dataset, step: ScheduledProcedureStep, fuzzy: bool) -> list[Check]:
    """Each matching key of the query alone against the step (universal keys are left out:
    they only ask for the value back)."""
    checks = []
    for element in asked:
        if element.keyword == "ScheduledProcedureStepSequence":
            items = element.value or []
            for item in (items[0] if len(items) else Dataset()):
                if item.keyword == "ScheduledProcedureStepStatus":
                    continue  # _status says it
                alone = Dataset()
                alone.ScheduledProcedureStepSequence = [_only(item)]
                checks += _one_key(alone, item, step, fuzzy, in_item=True)
        elif element.keyword in WORKLIST.attributes and element.VR != "SQ":
            alone = _only(element)
            checks += _one_key(alone, element, step, fuzzy, in_item=False)
    return checks


def _only(element) -> Dataset:
    ds = Dataset()
    ds.add(element)
    return ds


def _one_key(alone: Dataset, element, step: ScheduledProcedureStep, fuzzy: bool,
             in_item: bool) -> list[Check]:
    value = element.value
    text = "" if value is None else str(value)
    if not text or text == "*":
        return []
    attribute = WORKLIST.attributes.get(element.keyword)
    if attribute is None:  # a key of the item
        attribute = next((a for a in _sps_items() if a.keyword == element.keyword), None)
    if attribute is None or not attribute.field:
        return [Check(element.keyword, INFO, f"asked {text!r}: not a matching key here")]
    ok = query.search_level(WORKLIST, alone, fuzzy=fuzzy).filter(pk=step.pk).exists()
    has = _value(step, attribute.field)
    detail = f"The query asks {text!r}; the step has {has!r}."
    if element.keyword == "ScheduledProcedureStepStartDate":
        detail += (f" Dates are the portal's, in its time zone ({settings.TIME_ZONE}; now "
                   f"{timezone.localtime():%Y-%m-%d %H:%M}); the modality's own clock and "
                   "zone are not taken into account (timezone adjustment, PS3.4 K.5.1, is "
                   "declined).")
    elif element.keyword == "ScheduledStationAETitle" and not ok:
        detail += " The modality asks for its own AE title: schedule the step on it."
    return [Check(element.keyword, MATCH if ok else NO_MATCH, detail)]


def _sps_items():
    return WORKLIST.attributes["ScheduledProcedureStepSequence"].items


def _value(step: ScheduledProcedureStep, path: str) -> str:
    try:
        value = reduce(getattr, path.split("__"), step)
    except AttributeError:
        return ""
    return "" if value is None else str(value)


def _status(asked: Dataset, step: ScheduledProcedureStep) -> Check:
    items = asked.get("ScheduledProcedureStepSequence") or []
    status = str(items[0].get("ScheduledProcedureStepStatus", "") or "") if len(items) else ""
    if status:
        ok = worklist_search(_status_only(status)).filter(pk=step.pk).exists()
        return Check("ScheduledProcedureStepStatus", MATCH if ok else NO_MATCH,
                     f"The query asks {status!r}; the step is {step.status}.")
    ok = step.status in OPEN_STATUSES
    return Check("Step status", MATCH if ok else NO_MATCH,
                 f"The step is {step.status}. A query that names no status sees the steps "
                 f"still to do ({', '.join(OPEN_STATUSES)})"
                 + ("." if ok else ": this one is not."))


def _status_only(status: str) -> Dataset:
    item = Dataset()
    item.ScheduledProcedureStepStatus = status
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def _charset(ae: ApplicationEntity | None, asked: Dataset,
             step: ScheduledProcedureStep) -> Check:
    """The answer's character set (the AE's setting, else as the query asks) and whether the
    step's names fit in it. This never hides a step; an answer that does not fit goes out in
    UTF-8 instead (PS3.5 6.1.2.5.3), which a modality reading only its own set shows garbled."""
    charset = worklist_charset(asked, ae.worklist_charset if ae else "")
    if not charset:
        return Check("Character set", MATCH, "The query names no character set: answers are "
                     "in the default repertoire, or in UTF-8 where a name needs it.")
    codec = python_encoding.get(charset, "utf_8")
    order = step.requested_procedure.order
    try:
        for text in (order.patient.patient_name, order.referring_physician_name,
                     step.description):
            text.encode(codec)
    except UnicodeEncodeError:
        return Check("Character set", WARNING,
                     f"Answers are written in {charset}, which cannot hold every character of "
                     "this step's names: this answer goes out in UTF-8 (ISO_IR 192) instead, "
                     "and a modality that reads only "
                     f"{charset} shows those names garbled.")
    return Check("Character set", MATCH, f"Answers are written in {charset}; this step's "
                 "names fit.")


def describe(kept: WorklistQuery) -> list[tuple[str, str]]:
    """A kept query's keys as (keyword, value asked), the Scheduled Procedure Step item's
    keys flattened; an empty value is a return key (it matches everything)."""
    keys = []
    try:
        identifier = Dataset.from_json(kept.identifier)
    except Exception:  # kept as it came: a query we could answer but not read back
        return [("(unreadable)", "")]
    for element in identifier:
        if element.keyword == "ScheduledProcedureStepSequence":
            items = element.value or []
            for item in (items[0] if len(items) else Dataset()):
                keys.append((f"> {item.keyword or item.tag}", _shown(item)))
        elif element.VR == "SQ":
            keys.append((element.keyword or str(element.tag), "(sequence)"))
        else:
            keys.append((element.keyword or str(element.tag), _shown(element)))
    return keys


def _shown(element) -> str:
    if element.VR == "SQ":
        return "(sequence)"
    value = "" if element.value is None else str(element.value)
    return value or "(return key)"
