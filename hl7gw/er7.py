"""HL7 v2 ER7 text: segments, fields, repetitions, components, escapes (HL7 v2.5 ch. 2.7).

hl7apy checks the header (MSH) and names the segments each version knows (hl7gw.inbound); the
whole message is not run through its parser, which costs more than everything else together.
Field values are read here from each segment's ER7 text, with the message's own encoding
characters, so that the mapping reads `pid[5][0][1]` the same way in every version from 2.1 to
2.5.1.
"""

from __future__ import annotations

from dataclasses import dataclass

from hl7gw.errors import DATA_TYPE_ERROR, Hl7Error

# HL7 v2 MSH-18 -> Python codec (HL7 table 0211)
CHARSETS = {"": None, "ASCII": "ascii", "8859/1": "latin_1", "8859/2": "iso8859_2",
            "8859/5": "iso8859_5", "8859/7": "iso8859_7", "8859/8": "iso8859_8",
            "8859/9": "iso8859_9", "8859/15": "iso8859_15", "UNICODE UTF-8": "utf_8",
            "UTF-8": "utf_8"}


@dataclass(frozen=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    codec: str = "latin_1"  # of the message (MSH-18): what \Xhh..\ escapes are decoded with


class Segment:
    """One segment; ``seg[n]`` is field n (MSH-1 is the field separator, as in the standard),
    as a list of repetitions, each a list of components (strings, unescaped)."""

    def __init__(self, text: str, enc: Encoding, *, for_dicom: bool = False) -> None:
        """``for_dicom``: the values read go into DICOM attributes (the worklist, the patient
        registry), so get() refuses one that holds a backslash, DICOM's separator of values;
        the ACK and the log read the same segments without that rule."""
        self.text, self.enc, self.for_dicom = text, enc, for_dicom
        parts = text.split(enc.field)
        self.name = parts[0][:3]
        if self.name == "MSH":
            parts = [parts[0], enc.field, *parts[1:]]
        self._fields = parts
        self._split: dict[int, list[list[str]]] = {}
        self._got: dict[tuple[int, int, int], str] = {}

    def raw(self, n: int) -> str:
        return self._fields[n] if n < len(self._fields) else ""

    def __len__(self) -> int:
        """The number of its last field present (MSH counts MSH-1, the separator)."""
        return len(self._fields) - 1

    def _reps(self, n: int) -> list[list[str]]:
        """Field n split into repetitions and components, still escaped."""
        found = self._split.get(n)
        if found is None:
            value = self.raw(n)
            if self.name == "MSH" and n in (1, 2):
                found = [[value]]
            else:
                found = [rep.split(self.enc.component)
                         for rep in value.split(self.enc.repetition)] if value else []
            self._split[n] = found
        return found

    def __getitem__(self, n: int) -> list[list[str]]:
        return [[unescape(c, self.enc) for c in rep] for rep in self._reps(n)]

    def get(self, n: int, component: int = 1, repetition: int = 0) -> str:
        """One component (1-based) of one repetition; '' when absent. Subcomponents beyond the
        first are dropped (e.g. the assigning authority's namespace ID is kept); escapes are
        resolved after that split, so an escaped ``\\T\\`` stays in the value as ``&``."""
        key = (n, component, repetition)
        found = self._got.get(key)
        if found is None:
            reps = self._reps(n)
            if repetition >= len(reps) or component > len(reps[repetition]):
                found = ""
            else:
                first = reps[repetition][component - 1].split(self.enc.subcomponent)[0]
                found = unescape(first, self.enc).strip()
                if self.for_dicom and "\\" in found and not (self.name == "MSH" and n <= 2):
                    # DICOM reads a backslash as the separator of values (PS3.5 6.4)
                    raise Hl7Error(DATA_TYPE_ERROR, f"{self.name}-{n} holds a backslash "
                                   "(an \\E\\ escape), which DICOM reads as a separator of "
                                   "values", location=f"{self.name}-{n}")
            self._got[key] = found
        return found

    def repetitions(self, n: int, component: int = 1) -> list[str]:
        return [self.get(n, component, i) for i in range(len(self._reps(n)))]


def unescape(value: str, enc: Encoding) -> str:
    """An ER7 value with its escape sequences resolved (HL7 v2.5 2.7.4-2.7.6): the delimiters
    (F S T R E), hexadecimal data (Xhh..., bytes in the message's character set), and the
    formatting ones, which a DICOM value cannot carry (H N, .br and the other commands of
    2.7.6; a line break becomes a space). An unknown sequence is left as it came."""
    e = enc.escape
    if e not in value:
        return value
    out, pos = [], 0
    while True:
        start = value.find(e, pos)
        end = value.find(e, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(value[pos:])
            return "".join(out)
        out.append(value[pos:start])
        out.append(_escaped(value[start + 1:end], enc) if end > start + 1 else e + e)
        pos = end + 1


def _escaped(code: str, enc: Encoding) -> str:
    simple = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition,
              "E": enc.escape, "H": "", "N": "", ".br": " "}
    if code in simple:
        return simple[code]
    if code[0] == "X" and len(code) % 2 and all(c in "0123456789ABCDEFabcdef" for c in code[1:]):
        return bytes.fromhex(code[1:]).decode(enc.codec, errors="replace")
    if code[:1] == "." and code[1:3] in ("sp", "in", "ti", "sk", "ce", "fi", "nf"):
        return ""
    return f"{enc.escape}{code}{enc.escape}"


def escape(value: str, enc: Encoding = Encoding()) -> str:
    e = enc.escape
    value = value.replace(e, f"{e}E{e}")
    for code, char in (("F", enc.field), ("S", enc.component), ("T", enc.subcomponent),
                       ("R", enc.repetition)):
        value = value.replace(char, f"{e}{code}{e}")
    return value


def encoding_of(msh_text: str, codec: str = "latin_1") -> Encoding:
    if len(msh_text) < 8 or not msh_text.startswith("MSH"):
        raise ValueError("the message does not start with an MSH segment")
    chars = msh_text[4:8]
    return Encoding(msh_text[3], chars[0], chars[1], chars[2],
                    chars[3] if len(chars) > 3 else "&", codec)


def split_segments(text: str) -> list[str]:
    """Segments separated by CR; LF and CRLF tolerated (files edited on other systems)."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [s for s in text.split("\r") if s.strip()]


def raw_msh_field(raw: bytes, n: int) -> str:
    """First component of MSH-n read from the raw bytes, before anything is decoded (MSH is
    ASCII): MSH-18 picks the decoding, MSH-3/4 the sender."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 5:
        return ""
    ends = [p for p in (raw.find(b"\r", start), raw.find(b"\n", start)) if p >= 0]
    fields = raw[start:min(ends or [len(raw)])].split(raw[start + 3:start + 4])
    # fields[0] is "MSH" and fields[1] MSH-2 (the field separator itself is MSH-1)
    value = fields[n - 1] if len(fields) > n - 1 else b""
    return value.split(raw[start + 4:start + 5])[0].decode("latin_1").strip()


def decode(raw: bytes, default_charset: str = "") -> tuple[str, str]:
    """(text, charset used): MSH-18, else the sender's default, else UTF-8 with a Latin-1
    fallback when the bytes are not UTF-8."""
    declared = raw_msh_field(raw, 18) or default_charset
    codec = CHARSETS.get(declared.upper() if declared else "", "utf_8")
    if codec is None:
        try:
            return raw.decode("utf_8"), "UNICODE UTF-8"
        except UnicodeDecodeError:
            return raw.decode("latin_1"), "8859/1"
    return raw.decode(codec, errors="replace"), declared


def codec_for(charset: str) -> str:
    return CHARSETS.get(charset.upper(), None) or "utf_8"
