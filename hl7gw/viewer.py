"""A logged HL7 message for people: every segment and field named from its HL7 version's
definitions (hl7apy's), repetitions and components split out, escapes decoded, and for the
fields the gateway reads, what they became in the worklist or the patient registry
(hl7gw.inbound.mapping reads them; ``MAPPED`` says so in words, and a test holds the two
together)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from hl7gw import er7

# What hl7gw.inbound.mapping makes of each field it reads (orders: ORM^O01, OMI^O23; patients:
# ADT). The DICOM attribute is the worklist's or the registry's.
MAPPED: dict[str, str] = {
    "PID-2": "Patient ID (0010,0020) when PID-3 is empty (older messages)",
    "PID-3": "Patient ID (0010,0020) from component 1, Issuer of Patient ID (0010,0021) "
             "from component 4",
    "PID-5": "Patient's Name (0010,0010); repetitions with name representation codes "
             "(XPN-8) become its alphabetic, ideographic and phonetic groups",
    "PID-7": "Patient's Birth Date (0010,0030)",
    "PID-8": "Patient's Sex (0010,0040): M, F or O",
    "MRG-1": "the prior Patient ID a merge (ADT^A40) or an ID change moves from",
    "PV1-8": "Referring Physician's Name (0008,0090)",
    "ORC-1": "what to do: NW new order, CA/DC cancel, XO change, SC status",
    "ORC-2": "Placer Order Number (0040,2016); the accession number if the sender says so",
    "ORC-3": "Filler Order Number (0040,2017); the accession number if the sender says so",
    "ORC-5": "the step's new status (SC status messages)",
    "ORC-7": "priority (component 6) and start (component 4), when OBR-27 has none",
    "ORC-12": "Requesting Physician (0032,1032)",
    "OBR-4": "Requested Procedure Code Sequence (0032,1064) and Description (0032,1060); "
             "the catalog entry with this code gives the step's protocol and duration",
    "OBR-5": "Requested Procedure Priority (0040,1003) when OBR-27 and ORC-7 have none",
    "OBR-7": "the step's start when no other field gives one",
    "OBR-18": "Accession Number (0008,0050) unless IPC-1 has one (the sender's setting "
              "may name ORC-2 or ORC-3 instead)",
    "OBR-19": "Requested Procedure ID (0040,1001) unless IPC-2 has one",
    "OBR-20": "Scheduled Procedure Step ID (0040,0009) unless IPC-4 has one",
    "OBR-24": "Modality (0008,0060) unless IPC-5 has one",
    "OBR-27": "Scheduled Procedure Step Start Date/Time (0040,0002/0003) from component 4, "
              "priority from component 6",
    "OBR-31": "Reason for the Requested Procedure (0040,1002)",
    "OBR-34": "Scheduled Performing Physician's Name (0040,0006)",
    "OBR-36": "the step's start when TQ1-7 and OBR-27 have none",
    "TQ1-7": "Scheduled Procedure Step Start Date/Time (0040,0002/0003)",
    "IPC-1": "Accession Number (0008,0050)",
    "IPC-2": "Requested Procedure ID (0040,1001)",
    "IPC-3": "Study Instance UID (0020,000D)",
    "IPC-4": "Scheduled Procedure Step ID (0040,0009)",
    "IPC-5": "Modality (0008,0060)",
    "IPC-6": "Scheduled Protocol Code Sequence (0040,0008)",
    "IPC-7": "Scheduled Station Name (0040,0010)",
    "IPC-8": "Scheduled Procedure Step Location (0040,0011)",
    "IPC-9": "Scheduled Station AE Title (0040,0001), one per repetition",
    "ZDS-1": "Study Instance UID (0020,000D) unless IPC-3 has one",
}

_VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1",
             "2.8", "2.8.1", "2.8.2")


@dataclass
class Component:
    n: int
    name: str
    value: str


@dataclass
class FieldView:
    n: int
    name: str  # e.g. "Patient Name"; "" where the version defines none
    datatype: str
    raw: str  # as it came, escapes and all
    repetitions: list[list[Component]] = field(default_factory=list)
    mapped: str = ""


@dataclass
class SegmentView:
    name: str
    known: bool  # defined in this version (a Z segment is not)
    fields: list[FieldView]


def view(text: str, version: str) -> list[SegmentView]:
    """The message's segments, named from ``version``'s definitions (the nearest version
    hl7apy knows when it knows not this one)."""
    segments = er7.split_segments(text)
    if not segments:
        return []
    enc = er7.encoding_of(segments[0])
    known = _nearest(version)
    shown = []
    for seg_text in segments:
        seg = er7.Segment(seg_text, enc)
        definitions = _fields(seg.name, known)
        fields = []
        for n in range(1, len(seg) + 1):
            raw = seg.raw(n)
            if not raw:
                continue
            name, datatype, components = definitions.get(n, ("", "", ()))
            repetitions = []
            for rep in seg[n]:
                repetitions.append([
                    Component(i, components[i - 1] if i <= len(components) else "", value)
                    for i, value in enumerate(rep, start=1)])
            fields.append(FieldView(n, name, datatype, raw, repetitions,
                                    MAPPED.get(f"{seg.name}-{n}", "")))
        shown.append(SegmentView(seg.name, bool(definitions), fields))
    return shown


def _nearest(version: str) -> str:
    version = version.strip()
    if version in _VERSIONS:
        return version
    older = [v for v in _VERSIONS if _key(v) <= _key(version)] if _parses(version) else []
    return older[-1] if older else "2.5"


def _parses(version: str) -> bool:
    return all(part.isdigit() for part in version.split(".")) and bool(version)


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@lru_cache(maxsize=512)
def _fields(segment: str, version: str) -> dict[int, tuple[str, str, tuple[str, ...]]]:
    """{field number: (name, data type, component names)} of a segment in a version, from
    hl7apy's definitions; {} for a segment the version does not define."""
    from hl7apy import load_reference
    from hl7apy.exceptions import ChildNotFound

    try:
        reference = load_reference(segment, "Segment", version)
    except (ChildNotFound, KeyError, ValueError, AttributeError):
        return {}
    found = {}
    for child in reference[1]:
        name, definition = child[0], child[1]
        try:
            n = int(name.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            continue
        components: tuple[str, ...] = ()
        if definition[0] == "sequence":
            components = tuple(_title(c[1][3]) for c in definition[1])
        found[n] = (_title(definition[3]), definition[2] or "", components)
    return found


def _title(name: str | None) -> str:
    """hl7apy's PATIENT_NAME as people read it: Patient Name."""
    if not name:
        return ""
    words = name.replace("_", " ").lower().split()
    small = {"of", "or", "and", "the", "for", "to", "e", "g", "id"}
    return " ".join(w.upper() if w == "id" else (w if w in small and i else w.capitalize())
                    for i, w in enumerate(words))
