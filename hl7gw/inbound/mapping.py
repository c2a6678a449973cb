"""HL7 v2 orders and patient updates -> the work-item store (worklist.services).

Field choices follow IHE RAD-4 (ORM^O01: OBR-18/19/20 accession / requested procedure ID /
step ID, OBR-24 modality, ZDS-1 Study Instance UID) and RAD-4 v2.5.1 (OMI^O23: IPC-1..9);
per-sender differences are set on the Sender (docs/hl7-interface.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone

from core import statements
from hl7gw import errors
from hl7gw.er7 import Segment
from hl7gw.models import Sender
from pacs.models import Patient
from worklist import services
from worklist.models import Order, Procedure, ScheduledProcedureStep, Station

Status = ScheduledProcedureStep.Status


@dataclass
class Parsed:
    segments: list[Segment]

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def require(self, name: str) -> Segment:
        seg = self.first(name)
        if seg is None:
            raise errors.Hl7Error(errors.SEGMENT_SEQUENCE, f"{name} segment missing",
                                  location=name)
        return seg


@dataclass
class Outcome:
    orders: list[Order] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    # (text, location) of what was applied but needs a person: the ACK carries each as an
    # ERR segment of severity W
    warnings: list[tuple[str, str]] = field(default_factory=list)


# --- patients ------------------------------------------------------------------------------


def patient_data(pid: Segment) -> services.PatientData:
    patient_id = pid.get(3, 1) or pid.get(2, 1)  # PID-2 (external ID) in old messages
    if not patient_id:
        raise errors.Hl7Error(errors.REQUIRED_FIELD_MISSING, "PID-3 patient identifier missing",
                              location="PID-3")
    return services.PatientData(
        patient_id=patient_id[:64], patient_name=person_name(pid, 5),
        issuer_of_patient_id=pid.get(3, 4)[:64], birth_date=pid.get(7)[:8],
        sex={"M": "M", "F": "F", "O": "O"}.get(pid.get(8)[:1].upper(), ""))


def person_name(seg: Segment, n: int, *, xcn: bool = False) -> str:
    """XPN family^given^middle^suffix^prefix (XCN: ID first) -> DICOM PN
    family^given^middle^prefix^suffix, without trailing empty components.

    Repetitions of the field that name one person in other writings become the PN's
    component groups (PS3.5 6.2.1.1): by their name representation code (XPN-8, XCN-15;
    HL7 table 0465), A alphabetic, I ideographic, P phonetic: ``YAMADA^TARO=山田^太郎=
    やまだ^たろう``. A repetition without a code is alphabetic; of several of one kind the
    first is kept (the others are aliases, maiden or display names)."""
    off = 1 if xcn else 0
    code_at = 15 if xcn else 8
    groups: dict[str, str] = {}
    for repetition in range(max(len(seg[n]), 1)):
        kind = seg.get(n, code_at, repetition).upper()[:1] or "A"
        if kind not in ("A", "I", "P") or kind in groups:
            continue
        parts = [seg.get(n, i + off, repetition) for i in (1, 2, 3, 5, 4)]
        groups[kind] = "^".join(parts).rstrip("^")[:64]
    return "=".join(groups.get(kind, "") for kind in "AIP").rstrip("=")[:324]


def apply_adt(msg: Parsed, trigger: str, actor: str, source: str) -> Outcome:
    """``source`` names the message in the audit trail of each patient change."""
    pid = msg.require("PID")
    data = patient_data(pid)
    if trigger == "A40":
        prior, issuer = _prior_id(msg)
        patient = services.merge_patients(prior_id=prior, prior_issuer=issuer, survivor=data,
                                          actor=actor, source=source)
        return Outcome(patients=[patient])
    if trigger == "A47":
        old, issuer = _prior_id(msg)
        try:
            patient = services.change_patient_id(old_id=old, new_id=data.patient_id,
                                                 issuer=issuer, actor=actor, source=source)
        except services.WorklistError as exc:
            raise errors.Hl7Error(errors.UNKNOWN_KEY, str(exc), location="MRG-1") from exc
        return Outcome(patients=[patient])
    return Outcome(patients=[services.find_or_create_patient(data, actor=actor,
                                                             source=source)])


def _prior_id(msg: Parsed) -> tuple[str, str]:
    """MRG-1: the prior (A40) or old (A47) patient identifier and its issuer."""
    mrg = msg.require("MRG")
    if not mrg.get(1, 1):
        raise errors.Hl7Error(errors.REQUIRED_FIELD_MISSING, "MRG-1 prior patient ID missing",
                              location="MRG-1")
    return mrg.get(1, 1), mrg.get(1, 4)


# --- orders --------------------------------------------------------------------------------


def apply_order(msg: Parsed, sender: Sender | None, actor: str) -> Outcome:
    """Every order of the message: ORM^O01 and OMI^O23 repeat the order group (ORC with its
    OBR, TQ1, IPC, ...) under one patient. All of them are applied, in the message's one
    transaction, or none: one that fails refuses the whole message."""
    msg.require("ORC")
    outcome = Outcome(orders=[_apply_one(group, sender, actor) for group in order_groups(msg)])
    for order in outcome.orders:
        for step in ScheduledProcedureStep.objects.filter(
                requested_procedure__order=order, scheduled_station_ae_title=""):
            outcome.warnings.append((
                f"order {order.accession_number}: no station for modality {step.modality} "
                "(no IPC-9, no station of that modality, no sender default), so no modality "
                "asking by its AE title sees it; it is on the day board as unroutable",
                "IPC-9"))
    return outcome


def order_groups(msg: Parsed) -> list[Parsed]:
    """One Parsed per order group: the segments before the first ORC (MSH, PID, PV1...),
    then the group's own, from its ORC up to the next ORC."""
    starts = [i for i, s in enumerate(msg.segments) if s.name == "ORC"]
    shared = msg.segments[:starts[0]] if starts else msg.segments
    return [Parsed(shared + msg.segments[start:end])
            for start, end in zip(starts, [*starts[1:], len(msg.segments)], strict=True)]


def _apply_one(msg: Parsed, sender: Sender | None, actor: str) -> Order:
    orc = msg.require("ORC")
    control = orc.get(1).upper()
    if control == "NW":
        return _new_order(msg, orc, sender, actor)
    order = _find_order(msg, orc, sender)
    if control in ("CA", "OC", "DC", "OD"):
        _stop(order, control, actor)
    elif control == "XO":
        _change(msg, order, actor)
    elif control == "SC":
        _status(orc, order, actor)
    else:
        raise errors.Hl7Error(errors.TABLE_VALUE_NOT_FOUND,
                              f"order control {control!r} is not supported", location="ORC-1")
    return order


def _accession(msg: Parsed, orc: Segment, sender: Sender | None) -> str:
    ipc, obr = msg.first("IPC"), msg.first("OBR")
    if ipc is not None and ipc.get(1):
        return ipc.get(1)[:16]
    choice = sender.accession_field if sender else Sender.AccessionField.OBR_18
    if choice == Sender.AccessionField.ORC_2:
        return orc.get(2)[:16]
    if choice == Sender.AccessionField.ORC_3:
        return orc.get(3)[:16]
    return obr.get(18)[:16] if obr else ""


def _find_order(msg: Parsed, orc: Segment, sender: Sender | None) -> Order:
    accession = _accession(msg, orc, sender)
    order = Order.objects.filter(accession_number=accession).first() if accession else None
    if order is None and orc.get(2):
        order = Order.objects.filter(placer_order_number=orc.get(2)).first()
    if order is None:
        raise errors.Hl7Error(errors.UNKNOWN_KEY,
                              f"no order with accession {accession!r} or placer number "
                              f"{orc.get(2)!r}", location="ORC-2")
    return order


def _new_order(msg: Parsed, orc: Segment, sender: Sender | None, actor: str) -> Order:
    pid, obr = msg.require("PID"), msg.require("OBR")
    ipc, zds, pv1 = msg.first("IPC"), msg.first("ZDS"), msg.first("PV1")
    accession = _accession(msg, orc, sender)
    if not accession:
        raise errors.Hl7Error(errors.REQUIRED_FIELD_MISSING, "accession number missing",
                              location="OBR-18")
    modality = ((ipc.get(5) if ipc else "") or obr.get(24)).upper()[:16]
    if not modality:
        raise errors.Hl7Error(errors.REQUIRED_FIELD_MISSING, "modality missing",
                              location="OBR-24")
    stations = [a for a in (ipc.repetitions(9) if ipc else []) if a]
    station_name = ipc.get(7) if ipc else ""
    location = ipc.get(8) if ipc else ""
    if not stations:
        station = _default_station(sender, modality)
        if station:
            stations, station_name = [station.ae_title], station_name or station.name
            location = location or station.location
    code = services.Code(obr.get(4, 1), obr.get(4, 3) or "L", obr.get(4, 2)) if obr.get(4) \
        else None
    if ipc is not None and ipc.get(6):  # protocol code
        code = services.Code(ipc.get(6, 1), ipc.get(6, 3) or "L", ipc.get(6, 2))
    procedure = _catalog_entry(code) if code else None
    try:
        return services.create_order(
            patient=patient_data(pid), procedure=procedure,
            step=services.StepData(modality=modality, start=_start(msg, obr, orc),
                                   station_ae_title="\\".join(stations)[:64],
                                   station_name=station_name[:16], location=location[:16],
                                   performing_physician_name=person_name(obr, 34, xcn=True)),
            actor=actor, source="hl7", accession_number=accession,
            referring_physician_name=person_name(pv1, 8, xcn=True) if pv1 else "",
            requesting_physician=person_name(orc, 12, xcn=True), reason=obr.get(31, 2)
            or obr.get(31, 1), priority=_priority(obr, orc), placer_order_number=orc.get(2),
            filler_order_number=orc.get(3), description=obr.get(4, 2),
            identifiers=services.Identifiers(
                (ipc.get(2) if ipc else "") or obr.get(19),
                (ipc.get(4) if ipc else "") or obr.get(20),
                (ipc.get(3) if ipc else "") or (zds.get(1) if zds else "")),
            code=code)
    except services.WorklistError as exc:
        raise errors.Hl7Error(errors.DUPLICATE_KEY, str(exc), location="OBR-18") from exc


def _catalog_entry(code: services.Code) -> Procedure | None:
    """The procedure catalog's entry for an ordered code: the one with its code value and
    coding scheme; else the only one with its code value (HL7 senders often name no scheme or
    another spelling of it, such as L for LOCAL). Two entries of that value in other schemes:
    none, rather than a guess."""
    entries = statements.select(Procedure, code_value=code.value)
    schemes = {code.scheme, "LOCAL"} if code.scheme == "L" else {code.scheme}
    same_scheme = [p for p in entries if p.coding_scheme_designator in schemes]
    if same_scheme:
        return same_scheme[0]
    return entries[0] if len(entries) == 1 else None


def _default_station(sender: Sender | None, modality: str) -> Station | None:
    if sender and sender.default_station_ae_title:
        return Station(ae_title=sender.default_station_ae_title, modality=modality)
    return statements.first(Station, modality=modality, active=True, order_by="ae_title")


def _priority(obr: Segment, orc: Segment) -> str:
    value = (obr.get(27, 6) or orc.get(7, 6) or obr.get(5)).upper()
    return {"S": "STAT", "A": "HIGH", "R": "ROUTINE", "P": "ROUTINE", "T": "HIGH"}.get(
        value[:1], Order.Priority.ROUTINE)


def _start(msg: Parsed, obr: Segment, orc: Segment) -> dt.datetime:
    """Scheduled start: TQ1-7 (v2.5), OBR-27.4 or ORC-7.4 (TQ), OBR-36, else now."""
    tq1 = msg.first("TQ1")
    for value in ((tq1.get(7) if tq1 else ""), obr.get(27, 4), orc.get(7, 4), obr.get(36),
                  obr.get(7)):
        parsed = _hl7_datetime(value)
        if parsed:
            return parsed
    return timezone.localtime().replace(tzinfo=None, microsecond=0)


def _hl7_datetime(value: str) -> dt.datetime | None:
    digits = "".join(ch for ch in value.split("+")[0].split("-")[0] if ch.isdigit())
    if len(digits) < 8:
        return None
    digits = (digits + "000000")[:14]
    try:
        return dt.datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None


def _stop(order: Order, control: str, actor: str) -> None:
    """CA/OC cancel what has not started; DC/OD also discontinue what is in progress."""
    services.cancel_order(order, actor=actor, source="hl7", note=f"ORC-1 {control}")
    if control in ("DC", "OD"):
        for step in ScheduledProcedureStep.objects.filter(requested_procedure__order=order,
                                                          status=Status.IN_PROGRESS):
            services.set_step_status(step, Status.DISCONTINUED, source="hl7", actor=actor,
                                     note=f"ORC-1 {control}")


def _change(msg: Parsed, order: Order, actor: str) -> None:
    obr = msg.require("OBR")
    start = _start(msg, obr, msg.require("ORC"))
    for step in ScheduledProcedureStep.objects.filter(requested_procedure__order=order):
        if step.status in (Status.SCHEDULED, Status.ARRIVED):
            services.reschedule(step, start=start, station=None, actor=actor)
    reason = obr.get(31, 2) or obr.get(31, 1)
    if reason:
        services.update_order(order, changes={"reason": reason[:64]}, actor=actor)


# ORC-5 order status (HL7 table 0038) -> step status
ORDER_STATUS = {"SC": Status.SCHEDULED, "IP": Status.IN_PROGRESS, "CM": Status.COMPLETED,
                "DC": Status.DISCONTINUED, "CA": Status.CANCELED, "A": Status.ARRIVED}


def _status(orc: Segment, order: Order, actor: str) -> None:
    status = ORDER_STATUS.get(orc.get(5).upper())
    if status is None:
        raise errors.Hl7Error(errors.TABLE_VALUE_NOT_FOUND,
                              f"order status {orc.get(5)!r} is not supported", location="ORC-5")
    for step in ScheduledProcedureStep.objects.filter(requested_procedure__order=order):
        try:
            services.set_step_status(step, status, source="hl7", actor=actor, note="ORC-1 SC")
        except services.WorklistError as exc:
            raise errors.Hl7Error(errors.TABLE_VALUE_NOT_FOUND, str(exc),
                                  location="ORC-5") from exc
