"""Storage Commitment Push Model SCP (PS3.4 J.3): the N-ACTION face. The request is
recorded by pacs.services.commitment, which sends the result as an N-EVENT-REPORT on an
association of its own."""

from __future__ import annotations

import logging

from django.db import close_old_connections

from pacs import query
from pacs.dimse import wire
from pacs.dimse.engine import Association
from pacs.dimse.handlers import (
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    _authorize,
    decode_identifier,
)
from pacs.dimse.policy import AePolicy
from pacs.dimse.registry import Service
from pacs.errors import PacsError
from pacs.services import commitment

log = logging.getLogger("pacs.dimse")

STATUS_NO_SUCH_SOP_INSTANCE = 0x0112
STATUS_NO_SUCH_ACTION = 0x0123


def make_commitment_service(policy: AePolicy) -> Service:
    def handle(assoc: Association, message: wire.Message) -> None:
        extra = {wire.ACTION_TYPE_ID: message.command.get(wire.ACTION_TYPE_ID),
                 wire.AFFECTED_SOP_INSTANCE_UID: commitment.WELL_KNOWN_INSTANCE}
        if message.command.get(wire.ACTION_TYPE_ID) != commitment.REQUEST_ACTION:
            assoc.respond(message, STATUS_NO_SUCH_ACTION, extra=extra,
                          comment="the only action is 1, Request Storage Commitment")
            return
        if message.text(wire.REQUESTED_SOP_INSTANCE_UID) != commitment.WELL_KNOWN_INSTANCE:
            assoc.respond(message, STATUS_NO_SUCH_SOP_INSTANCE, extra=extra,
                          comment=f"the SOP Instance is {commitment.WELL_KNOWN_INSTANCE}")
            return
        close_old_connections()
        try:
            _authorize(policy, assoc.calling_aet, "may_store", "request storage commitment")
            ds = decode_identifier(assoc, message)
            commitment.request(assoc.calling_aet, ds)
        except query.InvalidQuery as exc:  # the data set cannot be decoded
            assoc.respond(message, STATUS_PROCESSING_FAILURE, extra=extra, comment=str(exc))
            return
        except PacsError as exc:
            log.warning("storage commitment from %s refused: %s", assoc.calling_aet,
                        exc.log_text())
            assoc.respond(message, exc.dimse_status, extra=extra, comment=str(exc))
            return
        except Exception as exc:
            log.exception("storage commitment from %s failed", assoc.calling_aet)
            assoc.respond(message, STATUS_PROCESSING_FAILURE, extra=extra,
                          comment=f"processing failure: {type(exc).__name__}")
            return
        assoc.respond(message, STATUS_SUCCESS, extra=extra)

    return handle
