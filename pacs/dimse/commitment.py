"""Storage Commitment Push Model SCP (PS3.4 J.3): the N-ACTION face. The request is
recorded by pacs.services.commitment, which sends the result as an N-EVENT-REPORT on an
association of its own."""

from __future__ import annotations

import logging

from core import connections
from dicomnet import status, wire
from dicomnet.engine import Association
from dicomnet.registry import Service
from pacs import query
from pacs.dimse.handlers import _authorize, decode_identifier
from pacs.dimse.policy import AePolicy
from pacs.services import commitment

log = logging.getLogger("pacs.dimse")



def make_commitment_service(policy: AePolicy) -> Service:
    def handle(assoc: Association, message: wire.Message) -> None:
        extra = {wire.ACTION_TYPE_ID: message.command.get(wire.ACTION_TYPE_ID),
                 wire.AFFECTED_SOP_INSTANCE_UID: commitment.WELL_KNOWN_INSTANCE}
        if message.command.get(wire.ACTION_TYPE_ID) != commitment.REQUEST_ACTION:
            assoc.respond(message, status.NO_SUCH_ACTION, extra=extra,
                          comment="the only action is 1, Request Storage Commitment")
            return
        if message.text(wire.REQUESTED_SOP_INSTANCE_UID) != commitment.WELL_KNOWN_INSTANCE:
            assoc.respond(message, status.NO_SUCH_SOP_INSTANCE, extra=extra,
                          comment=f"the SOP Instance is {commitment.WELL_KNOWN_INSTANCE}")
            return
        connections.before_request()
        try:
            _authorize(policy, assoc.calling_aet, "may_store", "request storage commitment")
            ds = decode_identifier(assoc, message)
            commitment.request(assoc.calling_aet, ds)
        except query.InvalidQuery as exc:  # the data set cannot be decoded
            assoc.respond(message, status.PROCESSING_FAILURE, extra=extra, comment=str(exc))
            return
        except Exception as exc:
            status.answer_failure(assoc, message, exc, "storage commitment", extra=extra)
            return
        assoc.respond(message, status.SUCCESS, extra=extra)

    return handle
