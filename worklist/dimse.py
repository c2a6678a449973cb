"""The worklist's DIMSE services, registered on the one DIMSE listener: Modality Worklist
C-FIND (PS3.4 K), MPPS N-CREATE/N-SET (PS3.4 F.7), and UPS Push, Pull and Query (PS3.4 CC:
N-CREATE, N-GET, N-SET, N-ACTION, C-FIND) on the same services as UPS-RS."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import TypeVar

from django.db.models import QuerySet
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom.dsutils import decode, encode

from core import connections
from core.errors import NotAuthorized
from dicomnet import status, wire
from dicomnet.engine import Association
from pacs import query
from pacs.dimse.handlers import (
    Service,
    _authorize,
    make_find_service,
)
from pacs.dimse.policy import AePolicy, Permissions
from worklist import explain, mpps, ups_events
from worklist.query import WORKLIST, worklist_charset, worklist_search
from worklist.ups import changes, lookup, rendering, states, tags

log = logging.getLogger("pacs.dimse")
T = TypeVar("T")

MWL_FIND = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"
UPS_PUSH = states.UPS_PUSH
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_CLASSES = (UPS_PUSH, UPS_PULL, UPS_QUERY, UPS_WATCH)
# What each UPS SOP class may do (PS3.4 CC.2: the DIMSE services of each)
_UPS_OPERATIONS = {
    wire.N_CREATE_RQ: {UPS_PUSH}, wire.N_GET_RQ: {UPS_PUSH, UPS_PULL, UPS_WATCH},
    wire.N_SET_RQ: {UPS_PULL}, wire.N_ACTION_RQ: {UPS_PUSH, UPS_PULL, UPS_WATCH},
}
# N-ACTION Action Type IDs (PS3.4 CC.2.1.2, CC.2.2.2, CC.2.3.2) and the classes offering them
CHANGE_STATE, REQUEST_CANCEL, SUBSCRIBE, UNSUBSCRIBE, SUSPEND = 1, 2, 3, 4, 5
_ACTIONS = {CHANGE_STATE: {UPS_PULL, UPS_PUSH}, REQUEST_CANCEL: {UPS_PUSH, UPS_WATCH},
            SUBSCRIBE: {UPS_WATCH}, UNSUBSCRIBE: {UPS_WATCH}, SUSPEND: {UPS_WATCH}}


# Modality Worklist extended negotiation (PS3.4 K.5.1): bytes 1-2 reserved (1), byte 3 fuzzy
# semantic matching of person names, byte 4 timezone adjustment (declined).
MWL_EXTENDED_SUPPORT = bytes([1, 1, 1, 0])
FUZZY_NAMES_BYTE = 2


def _mwl_search(assoc: Association, message: wire.Message, identifier: Dataset,
                permissions: Permissions) -> tuple[query.Level, QuerySet, str]:
    own = assoc.calling_aet if permissions.worklist_own_station_only else None
    charset = worklist_charset(identifier, permissions.worklist_charset)
    fuzzy = assoc.extended_flag(message, FUZZY_NAMES_BYTE)
    explain.record_query(assoc.calling_aet, assoc.peer_host, identifier, fuzzy)
    return WORKLIST, worklist_search(identifier, station_ae_title=own, fuzzy=fuzzy), charset


def make_mwl_service(policy: AePolicy) -> Service:
    return make_find_service(policy, models={MWL_FIND}, permission="may_query_worklist",
                             search=_mwl_search, what="MWL C-FIND")


def _dataset(assoc: Association, message: wire.Message) -> Dataset:
    if message.dataset is None:
        return Dataset()
    syntax = UID(assoc.context(message).transfer_syntax)
    try:
        ds = decode(io.BytesIO(message.dataset), syntax.is_implicit_VR, syntax.is_little_endian,
                    syntax.is_deflated)
        ds.to_json_dict()  # decode every element now: garbage fails here, not later
    except Exception as exc:
        raise mpps.InvalidAttributeValue(f"cannot decode the data set: {type(exc).__name__}"
                                         ) from exc
    return ds


def _mpps_service(policy: AePolicy, action) -> Service:
    def handle(assoc: Association, message: wire.Message) -> None:
        if assoc.context(message).abstract_syntax != MPPS:
            assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED,
                          comment="only MPPS is supported for N-CREATE/N-SET")
            return
        connections.before_request()

        def run() -> str:
            _authorize(policy, assoc.calling_aet, "may_send_mpps", "send MPPS")
            return action(assoc, message, _dataset(assoc, message))

        uid = _answered(assoc, message, "MPPS", run)
        if uid is not None:
            assoc.respond(message, status.SUCCESS, extra={wire.AFFECTED_SOP_INSTANCE_UID: uid})

    return handle


def _create(assoc: Association, message: wire.Message, ds: Dataset) -> str:
    # The SCU may leave the instance UID to us (PS3.4 F.7.2.1.1); we return it then.
    uid = message.text(wire.AFFECTED_SOP_INSTANCE_UID) or generate_uid()
    mpps.create_performed_step(sop_instance_uid=uid, ds=ds, calling_aet=assoc.calling_aet)
    return uid


def _set(assoc: Association, message: wire.Message, ds: Dataset) -> str:
    uid = message.text(wire.REQUESTED_SOP_INSTANCE_UID)
    mpps.update_performed_step(sop_instance_uid=uid, ds=ds, calling_aet=assoc.calling_aet)
    return uid


def _answered(assoc: Association, message: wire.Message, what: str,
              call: Callable[[], T]) -> T | None:
    """Run one request; a refusal (ServiceError) or a crash is answered here with its status,
    and None returned."""
    try:
        return call()
    except Exception as exc:
        status.answer_failure(assoc, message, exc, what)
    return None


def make_ncreate_service(policy: AePolicy) -> Service:
    return _by_sop_class(_mpps_service(policy, _create), _ups_service(policy, _ups_create))


def make_nset_service(policy: AePolicy) -> Service:
    return _by_sop_class(_mpps_service(policy, _set), _ups_service(policy, _ups_set))


def make_nget_service(policy: AePolicy) -> Service:
    return _ups_service(policy, _ups_get)


def make_naction_service(policy: AePolicy) -> Service:
    return _ups_service(policy, _ups_action)


def make_ups_find_service(policy: AePolicy) -> Service:
    return make_find_service(policy, models={UPS_PULL, UPS_QUERY, UPS_WATCH},
                             permission="may_query_worklist", search=_ups_search,
                             what="UPS C-FIND")


def _by_sop_class(mpps_service: Service, ups_service: Service) -> Service:
    def handle(assoc: Association, message: wire.Message) -> None:
        if assoc.context(message).abstract_syntax in UPS_CLASSES:
            ups_service(assoc, message)
        else:
            mpps_service(assoc, message)

    return handle


# --- UPS -------------------------------------------------------------------------------------

# an operation returns its status, the response data set if any, and the affected instance
UpsResult = tuple[int, bytes | None, str]
UpsAction = Callable[[Association, wire.Message, Dataset], UpsResult]


def _ups_service(policy: AePolicy, action: UpsAction) -> Service:
    """One UPS DIMSE operation: the SOP class allows it, the AE may do it (reading and
    watching need *may query the worklist*, changing needs *may send MPPS*), then the UPS
    service."""

    def handle(assoc: Association, message: wire.Message) -> None:
        sop_class = assoc.context(message).abstract_syntax
        if sop_class not in _UPS_OPERATIONS.get(message.command_field, ()):
            assoc.respond(message, status.SOP_CLASS_NOT_SUPPORTED,
                          comment="this operation is not part of the SOP class")
            return
        connections.before_request()
        # reading and watching need "may query the worklist"; changing needs "may send MPPS"
        reading = message.command_field == wire.N_GET_RQ or (
            message.command_field == wire.N_ACTION_RQ
            and message.command.get(wire.ACTION_TYPE_ID) in (SUBSCRIBE, UNSUBSCRIBE, SUSPEND))

        def run() -> UpsResult:
            _authorize(policy, assoc.calling_aet,
                       "may_query_worklist" if reading else "may_send_mpps",
                       "read workitems" if reading else "change workitems")
            return action(assoc, message, _dataset(assoc, message))

        result = _answered(assoc, message, "UPS request", run)
        if result is None:
            return
        answer, dataset, uid = result
        extra: dict[int, object] = {wire.AFFECTED_SOP_INSTANCE_UID: uid}
        if message.command_field == wire.N_ACTION_RQ:
            extra[wire.ACTION_TYPE_ID] = message.command.get(wire.ACTION_TYPE_ID)
        assoc.respond(message, answer, dataset=dataset, extra=extra)

    return handle


def _requested_uid(message: wire.Message) -> str:
    return message.text(wire.REQUESTED_SOP_INSTANCE_UID) or message.text(
        wire.AFFECTED_SOP_INSTANCE_UID)


def _ups_create(assoc: Association, message: wire.Message, ds: Dataset
                ) -> UpsResult:
    step = changes.create(ds.to_json_dict(), uid=message.text(wire.AFFECTED_SOP_INSTANCE_UID),
                      actor=assoc.calling_aet)
    return status.SUCCESS, None, step.ups_instance_uid


def _ups_get(assoc: Association, message: wire.Message, ds: Dataset
             ) -> UpsResult:
    step = states.get_workitem(_requested_uid(message))
    workitem = Dataset.from_json(rendering.workitem_json(step))
    wanted = message.command.get(wire.ATTRIBUTE_IDENTIFIER_LIST)
    if wanted:
        tags = {int(t) for t in (wanted if isinstance(wanted, list | tuple) else [wanted])}
        for tag in [e.tag for e in workitem if e.tag not in tags]:
            del workitem[tag]
    syntax = UID(assoc.context(message).transfer_syntax)
    return status.SUCCESS, encode(workitem, syntax.is_implicit_VR, syntax.is_little_endian,
                                  syntax.is_deflated), step.ups_instance_uid


def _ups_set(assoc: Association, message: wire.Message, ds: Dataset
             ) -> UpsResult:
    attributes = ds.to_json_dict()
    transaction_uid = str(ds.get("TransactionUID", "") or "")
    attributes.pop(tags.TRANSACTION_UID, None)
    uid = _requested_uid(message)
    changes.update(uid, attributes, transaction_uid, actor=assoc.calling_aet)
    return status.SUCCESS, None, uid


def _ups_action(assoc: Association, message: wire.Message, ds: Dataset) -> UpsResult:
    action = int(message.command.get(wire.ACTION_TYPE_ID) or 0)  # type: ignore[arg-type]
    uid = _requested_uid(message)
    if assoc.context(message).abstract_syntax not in _ACTIONS.get(action, ()):
        raise states.UpsError(status.NO_SUCH_ACTION,
                           f"action type {action} is not offered on this SOP class")
    if action == CHANGE_STATE:
        change = states.change_state(uid, str(ds.get("ProcedureStepState", "") or ""),
                                  str(ds.get("TransactionUID", "") or ""),
                                  actor=assoc.calling_aet, source="ups")
        return (change.warning or status.SUCCESS), None, uid
    if action == REQUEST_CANCEL:
        changes.request_cancel(uid, reason=str(ds.get("ReasonForCancellation", "") or ""),
                           actor=assoc.calling_aet)
        return status.SUCCESS, None, uid
    # UPS Watch: the subscriber is Receiving AE (0074,1236), else the calling AE. An AE
    # subscribes itself only: naming another would send that AE's events where it never asked
    # (an admin subscribes others, over UPS-RS).
    subscriber = str(ds.get("ReceivingAE", "") or "").strip() or assoc.calling_aet
    if subscriber != assoc.calling_aet.strip():
        raise NotAuthorized(f"{assoc.calling_aet} may (un)subscribe itself only, "
                            f"not {subscriber}")
    if action == SUBSCRIBE:
        keys = {e.keyword: str(e.value) for e in ds if e.keyword and e.VR != "SQ" and e.value
                and e.keyword not in ("DeletionLock", "ReceivingAE")}
        ups_events.subscribe(uid, subscriber, actor=assoc.calling_aet, delivery="dimse",
                             deletion_lock=str(ds.get("DeletionLock", "")).upper() == "TRUE",
                             filter_keys=keys)
    elif action == UNSUBSCRIBE:
        ups_events.unsubscribe(uid, subscriber)
    else:
        ups_events.suspend(subscriber)
    return status.SUCCESS, None, uid


def _ups_search(assoc: Association, message: wire.Message, identifier: Dataset,
                permissions: Permissions) -> tuple[query.Level, QuerySet, str]:
    charset = worklist_charset(identifier, permissions.worklist_charset)
    return lookup.UPS_LEVEL, lookup.search(identifier), charset
