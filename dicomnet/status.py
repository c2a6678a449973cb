"""DIMSE status codes, and the one way a service's failure is answered on an association.

The codes are those of PS3.7 Annex C (general) and PS3.4 (per service). A service refuses with
a ``core.errors.ServiceError``, which carries its status; anything else is a crash of ours,
answered with the failure status the service's part of PS3.4 names for it."""

from __future__ import annotations

import logging
from typing import Protocol

from core.errors import ServiceError

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
STORE_WARNING = 0xB000  # PS3.4 B.2.3: coercion of data elements, and the like
SUB_OPERATIONS_WARNING = 0xB000  # PS3.4 C.4.2.1.5: one or more sub-operations failed
PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.1
NO_SUCH_SOP_INSTANCE = 0x0112  # PS3.7 C.4.4
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.5.4
NO_SUCH_ACTION = 0x0123  # PS3.7 C.4.7
UNABLE_TO_PROCESS = 0xC000  # PS3.4 C.4.1.1.4: a C-FIND, C-MOVE or C-GET failure
MOVE_DESTINATION_UNKNOWN = 0xA801
SUB_OPERATIONS_FAILED = 0xA702

log = logging.getLogger("dicomnet")


class Answering(Protocol):
    """What answer_failure needs of an association (dicomnet.engine.Association)."""

    calling_aet: str

    def respond(self, message, status: int, *, dataset: bytes | None = None,
                comment: str | None = None, extra: dict[int, object] | None = None) -> None: ...


def answer_failure(assoc: Answering, message: object, exc: BaseException, what: str, *,
                   crash_status: int = PROCESSING_FAILURE,
                   extra: dict[int, object] | None = None) -> str:
    """Answer the request ``message`` that failed with ``exc``: a ServiceError with its own
    status and its text as the Error Comment, anything else with ``crash_status`` and only the
    exception's type (its text may hold patient data). ``what`` names the request in the log.
    Returns the outcome for the audit trail, "refused" or "failure"."""
    if isinstance(exc, ServiceError):
        log.warning("%s from %s refused: %s", what, assoc.calling_aet, exc.log_text())
        assoc.respond(message, exc.dimse_status, extra=extra, comment=str(exc))
        return "refused"
    log.error("%s from %s failed", what, assoc.calling_aet, exc_info=exc)
    kind = "processing failure" if crash_status == PROCESSING_FAILURE else "unable to process"
    assoc.respond(message, crash_status, extra=extra, comment=f"{kind}: {type(exc).__name__}")
    return "failure"
