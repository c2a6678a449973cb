"""HL7 errors with their HL7 table 0357 codes; each becomes an ACK (AE, or AR when rejected)."""

from __future__ import annotations

# HL7 table 0357 (message error condition codes)
SEGMENT_SEQUENCE = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT = 201
UNSUPPORTED_VERSION = 203
UNKNOWN_KEY = 204
DUPLICATE_KEY = 205
INTERNAL_ERROR = 207
# Table 0357 has no code for "not allowed": a refused sender gets AR with 207 and ERR-8 saying
# why (not registered, wrong address, no right for this message type).
NOT_AUTHORIZED = 207


class Hl7Error(Exception):
    def __init__(self, code: int, text: str, *, location: str = "", reject: bool = False):
        super().__init__(text)
        self.code, self.text, self.location, self.reject = code, text, location, reject
