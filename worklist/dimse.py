"""The worklist's DIMSE services: Modality Worklist C-FIND (PS3.4 K) and MPPS N-CREATE/N-SET
(PS3.4 F.7), registered on the one DIMSE listener."""

from __future__ import annotations

import io
import logging

from django.db import close_old_connections
from django.db.models import QuerySet
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom.dsutils import decode

from pacs import query
from pacs.dimse import wire
from pacs.dimse.engine import Association
from pacs.dimse.handlers import (
    STATUS_PROCESSING_FAILURE,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_SUCCESS,
    Service,
    _authorize,
    charset_of,
    make_find_service,
)
from pacs.dimse.policy import AePolicy, Permissions
from pacs.errors import PacsError
from worklist import mpps
from worklist.query import WORKLIST, worklist_search

log = logging.getLogger("pacs.dimse")

MWL_FIND = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"


def _mwl_search(assoc: Association, message: wire.Message, identifier: Dataset,
                permissions: Permissions) -> tuple[query.Level, QuerySet, str]:
    own = assoc.calling_aet if permissions.worklist_own_station_only else None
    charset = permissions.worklist_charset or query.answer_charset(charset_of(identifier))
    return WORKLIST, worklist_search(identifier, station_ae_title=own), charset


def make_mwl_service(policy: AePolicy) -> Service:
    return make_find_service(policy, models={MWL_FIND}, permission="may_query_worklist",
                             search=_mwl_search)


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
            assoc.respond(message, STATUS_SOP_CLASS_NOT_SUPPORTED,
                          comment="only MPPS is supported for N-CREATE/N-SET")
            return
        close_old_connections()
        try:
            _authorize(policy, assoc.calling_aet, "may_send_mpps", "send MPPS")
            uid = action(assoc, message, _dataset(assoc, message))
        except PacsError as exc:
            log.warning("MPPS from %s refused: %s", assoc.calling_aet, exc)
            assoc.respond(message, exc.dimse_status, comment=str(exc))
            return
        except Exception as exc:
            log.exception("MPPS from %s failed", assoc.calling_aet)
            assoc.respond(message, STATUS_PROCESSING_FAILURE,
                          comment=f"processing failure: {type(exc).__name__}")
            return
        assoc.respond(message, STATUS_SUCCESS, extra={wire.AFFECTED_SOP_INSTANCE_UID: uid})

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


def make_ncreate_service(policy: AePolicy) -> Service:
    return _mpps_service(policy, _create)


def make_nset_service(policy: AePolicy) -> Service:
    return _mpps_service(policy, _set)
