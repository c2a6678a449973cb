"""ACK messages (HL7 v2.5 ch. 2.9, 2.14.1): MSA-2 echoes MSH-10; errors carry an ERR segment."""

from __future__ import annotations

import itertools
import time

from django.utils import timezone

from hl7gw.er7 import Encoding, Segment, escape

_counter = itertools.count(1)
ERROR_TEXT = {0: "Message accepted", 100: "Segment sequence error", 101: "Required field missing",
              102: "Data type error", 103: "Table value not found",
              200: "Unsupported message type", 201: "Unsupported event code",
              203: "Unsupported version id", 204: "Unknown key identifier",
              205: "Duplicate key identifier", 207: "Application internal error"}


def build_ack(msh: Segment | None, code: str, *, error: int | None = None, text: str = "",
              location: str = "", charset: str = "",
              warnings: list[tuple[str, str]] | None = None) -> str:
    """AA / AE / AR for ``msh`` (None when the message had no readable MSH). ``warnings``:
    (text, location) of an accepted message that needs attention, each an ERR segment of
    severity W (v2.5+; before, the first text is MSA-3)."""
    enc = msh.enc if msh else Encoding()
    f, c = enc.field, enc.component
    version = (msh.get(12) if msh else "") or "2.5.1"
    trigger = msh.get(9, 2) if msh else ""
    control_id = msh.get(10) if msh else ""
    now = timezone.localtime().strftime("%Y%m%d%H%M%S")
    ack_id = f"ACK{int(time.time())}{next(_counter):06d}"
    encoding_chars = msh.raw(2) if msh else "^~\\&"
    fields = ["MSH", encoding_chars,
              msh.raw(5) if msh else "", msh.raw(6) if msh else "",
              msh.raw(3) if msh else "", msh.raw(4) if msh else "", now, "",
              f"ACK{c}{trigger}{c}ACK" if trigger else "ACK", ack_id,
              msh.raw(11) if msh and msh.raw(11) else "P", version]
    if charset:
        fields += [""] * 5 + [charset]
    warnings = warnings or []
    note = text if error else (warnings[0][0] if warnings and not _at_least_25(version) else "")
    segments = [f.join(fields), f.join(["MSA", code, escape(control_id, enc),
                                         escape(note[:80], enc)])]
    if error is not None:
        segments.append(_err(enc, version, error, text, location))
    if _at_least_25(version):
        segments += [_err(enc, version, 0, warning, where, severity="W")
                     for warning, where in warnings]
    return "\r".join(segments) + "\r"


def _err(enc: Encoding, version: str, error: int, text: str, location: str,
         severity: str = "E") -> str:
    f, c, s = enc.field, enc.component, enc.subcomponent
    meaning = ERROR_TEXT.get(error, "Error")
    if _at_least_25(version):
        message = escape(text[:250], enc)
        # ERR-2 location, ERR-3 HL7 error code (CWE, table 0357), ERR-4 severity, ERR-8 text
        loc = c.join(escape(p, enc) for p in location.split("-")) if location else ""
        return f.join(["ERR", "", loc, f"{error}{c}{meaning}{c}HL70357", severity, "", "", "",
                       message])
    # v2.1-2.4: ERR-1 error code and location (ELD): segment^seq^field^code&text&HL70357
    # (the text itself is in MSA-3 for these versions)
    seg, _, field = location.partition("-")
    return f.join(["ERR", c.join([seg, "1" if seg else "", field, f"{error}{s}{meaning}{s}"
                                  f"HL70357"])])


def _at_least_25(version: str) -> bool:
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    return tuple(parts) >= (2, 5)
