"""One error hierarchy for the services of every app. Each error carries the DIMSE status
(PS3.4, PS3.7; STOW-RS and UPS-RS report it too) and the HTTP status it is answered with;
dicomnet.status answers it on a DIMSE association, the DICOMweb exception handler over HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class. ``dimse_status`` is the PS3.4/PS3.7 status a DIMSE face answers with."""

    dimse_status = 0xC000
    http_status = 400

    def log_text(self) -> str:
        """The error as a plain log may carry it (no patient data: that goes to the audit
        trail and the answer to the caller only)."""
        return str(self)


class InvalidDicom(ServiceError):
    """The bytes are not a readable DICOM dataset (PS3.4 B.2.3: 0xC000 'Cannot understand')."""

    dimse_status = 0xC000


class MissingAttribute(ServiceError):
    """A required identifying attribute is missing or not a valid UID."""

    dimse_status = 0xC000


class SopClassMismatch(ServiceError):
    """The dataset does not match the SOP class/instance of the request (0xA900)."""

    dimse_status = 0xA900
    http_status = 409


class IdentityConflict(ServiceError):
    """An instance that would file images under another patient, study or series than the
    archive holds them: refused (PS3.4 B.2.3 failure 0xC000 'Cannot understand', with the
    reason in the Error Comment), the disagreement kept for reconciliation."""

    dimse_status = 0xC000
    http_status = 409

    def __init__(self, message: str, *, kind: str, study_uid: str, sop_uid: str,
                 patient: str) -> None:
        super().__init__(message)
        self.kind, self.study_uid, self.sop_uid, self.patient = kind, study_uid, sop_uid, patient

    def log_text(self) -> str:
        return (f"{self.kind} conflict for SOP Instance {self.sop_uid}: see the "
                "Reconciliation page")


class StorageFull(ServiceError):
    """The bytes could not be written (PS3.4 B.2.3: 0xA700 'Out of resources')."""

    dimse_status = 0xA700
    http_status = 503


class NotAuthorized(ServiceError):
    """The peer is not allowed to do this (PS3.7 C: 0x0124 'Refused: Not authorized')."""

    dimse_status = 0x0124
    http_status = 403


class NotFound(ServiceError):
    """The study, series, instance or frame asked for is not in the archive."""

    dimse_status = 0xA801  # retrieve: unknown; HTTP faces answer 404
    http_status = 404


class NotAcceptable(ServiceError):
    """None of the media types or transfer syntaxes the client accepts can be produced."""

    http_status = 406


class UnsupportedMediaType(ServiceError):
    """The request body's media type is not one this resource takes."""

    http_status = 415


class BadRequest(ServiceError):
    """A request that cannot be understood (bad parameter, malformed body)."""

    http_status = 400


class PayloadTooLarge(ServiceError):
    """The request body is larger than the configured limit."""

    http_status = 413
