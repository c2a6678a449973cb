"""DICOM JSON (PS3.18 F.2) of an instance's header, without bulk data.

This runs for every received instance. pydicom's Dataset.to_json_dict() first converts every
raw element into a DataElement (~3 ms for a CT header); here the plain, fixed-format VRs are
converted straight from the raw bytes and everything else (text in a character set, person
names, sequences, binary) goes through pydicom, so the result is the same
(tests/unit/test_dicomjson.py compares both on every sample file).
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

BULK_THRESHOLD = 1024  # binary values larger than this become BulkDataURI references
# Text values larger than this do too (PS3.18 10.4.1.1.2 allows a BulkDataURI for LT, ST, UC
# and UT): a 20 MB report text is kept out of the index and of every /metadata answer.
TEXT_BULK_THRESHOLD = 64 * 1024
LONG_TEXT_VRS = frozenset({"LT", "ST", "UC", "UT"})
PIXEL_DATA_REFERENCE = {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}

_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d",
                   "UV": "Q", "SV": "q"}


def _bulk_uri(element: DataElement) -> str:
    # Relative reference resolved by WADO-RS against the instance URL (PS3.18 F.2.6).
    return f"bulkdata/{element.tag:08X}"


def header_json(ds: Dataset, *, has_pixel_data: bool) -> dict[str, Any]:
    """The dataset as DICOM JSON; bulk values (and pixel data) become BulkDataURI entries."""
    result: dict[str, Any] = {}
    codec = _simple_codec(ds)
    for tag, raw in ds._dict.items():
        if not tag & 0xFFFF:
            continue  # group length: never in DICOM JSON (PS3.18 F.2.2)
        key = f"{tag:08X}"
        if _long_text(raw):
            result[key] = {"vr": raw.VR, "BulkDataURI": f"bulkdata/{tag:08X}"}
            continue
        converted = _fast(raw, codec) if isinstance(raw, RawDataElement) else None
        if converted is None:
            try:
                converted = ds[tag].to_json_dict(_bulk_uri, BULK_THRESHOLD)
            except Exception:  # one bad element must not reject the file: leave it out
                continue
            if converted.get("vr") == "SQ":
                _drop_empty_sequences(converted)
                item_bulk_uris(converted, f"bulkdata/{key}")
        result[key] = converted
    if has_pixel_data:
        result["7FE00010"] = dict(PIXEL_DATA_REFERENCE)
    return result


def _long_text(raw) -> bool:
    if not isinstance(raw, RawDataElement) or raw.VR not in LONG_TEXT_VRS:
        return False
    return raw.value is not None and len(raw.value) > TEXT_BULK_THRESHOLD


def _drop_empty_sequences(element: dict[str, Any]) -> None:
    """pydicom gives an empty sequence ``"Value": []``; an empty attribute has no Value
    (PS3.18 F.2.5), as our other paths write it. Group lengths inside items go too (F.2.2)."""
    items = element.get("Value")
    if items == []:
        del element["Value"]
        return
    for item in items or ():
        for key in [k for k in item if k.endswith("0000")]:
            del item[key]
        for child in item.values():
            if child.get("vr") == "SQ":
                _drop_empty_sequences(child)


def item_bulk_uris(element: dict[str, Any], prefix: str) -> None:
    """Each bulk value inside a sequence item gets its own URI, by its path: the sequence's
    tag, the item's index from 0, the element's tag (``bulkdata/60031010/1/60031011``), as
    PS3.18 F.2.6 needs one URI per value (pydicom names only the innermost tag)."""
    for index, item in enumerate(element.get("Value") or ()):
        for key, child in item.items():
            path = f"{prefix}/{index}/{key}"
            if "BulkDataURI" in child:
                child["BulkDataURI"] = path
            elif child.get("vr") == "SQ":
                item_bulk_uris(child, path)


# Character sets whose text decodes with one Python codec (no ISO 2022 code extensions).
SIMPLE_CHARSETS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin_1",
                   "ISO_IR 192": "utf_8"}
_TEXT_VRS = frozenset({"LO", "SH", "UC"})  # multi-valued text
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})  # backslash is a character, not a delimiter


def _simple_codec(ds: Dataset) -> str | None:
    raw = ds._dict.get(0x00080005)
    if raw is None:
        return "ascii"
    value = raw.value if isinstance(raw, RawDataElement) else None
    if not isinstance(value, bytes):
        return None
    return SIMPLE_CHARSETS.get(value.decode("ascii", "replace").strip(" \x00"))


def _text(value: bytes, vr: str, codec: str) -> dict[str, Any] | None:
    try:
        text = value.rstrip(b"\x00 ").decode(codec)
    except UnicodeDecodeError:
        return None
    if not text:
        return {"vr": vr}
    if vr in _SINGLE_TEXT_VRS:
        return {"vr": vr, "Value": [text]}
    if vr == "PN":
        if any(not name.strip("=") for name in text.split("\\")):
            return None  # a value with no components: pydicom's turn
        return pn_json(text)
    return {"vr": vr, "Value": [item.rstrip("\x00 ") for item in text.split("\\")]}


def pn_json(text: str) -> dict[str, Any]:
    """A decoded PN value ('FAMILY^GIVEN=ideographic=phonetic', backslash-separated values)
    as DICOM JSON (PS3.18 F.2.2). Empty trailing components are left out, as pydicom does."""
    if not text:
        return {"vr": "PN"}
    names = []
    for name in text.split("\\"):
        parts = name.split("=")
        while len(parts) > 1 and not parts[-1]:
            parts.pop()
        comps = {"Alphabetic": parts[0]}
        if len(parts) > 1:
            comps["Ideographic"] = parts[1]
        if len(parts) > 2:
            comps["Phonetic"] = parts[2]
        names.append(comps)
    return {"vr": "PN", "Value": names}


def _fast(raw: RawDataElement, codec: str | None) -> dict[str, Any] | None:
    """Convert a raw element of a fixed-format VR, or return None to let pydicom do it."""
    vr = raw.VR
    if vr is None:
        if raw.tag & 0x10000:  # private: VR unknown in implicit VR
            return None
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    value = raw.value
    if value is None:
        return None
    return convert_value(vr, value, codec, little_endian=raw.is_little_endian)


def convert_value(vr: str, value: bytes, codec: str | None, *,
                  little_endian: bool) -> dict[str, Any] | None:
    """DICOM JSON of a raw value of a fixed-format or text VR, or None (pydicom's turn):
    text in a character set other than ``codec``, values that do not parse, other VRs."""
    if not value:
        return {"vr": vr}
    if vr in _ASCII_VRS or vr in ("IS", "DS"):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
        items = [item.strip(" \x00") for item in text.split("\\")]
        if vr == "IS":
            try:
                return {"vr": vr, "Value": [int(i) if i else None for i in items]}
            except ValueError:
                return None
        if vr == "DS":
            try:
                return {"vr": vr, "Value": [_number(i) if i else None for i in items]}
            except ValueError:
                return None
        if items == [""]:
            return {"vr": vr}
        return {"vr": vr, "Value": [i if i else None for i in items]}
    if codec and (vr in _TEXT_VRS or vr in _SINGLE_TEXT_VRS or vr == "PN"):
        return _text(value, vr, codec)
    code = _BINARY_NUMBERS.get(vr)
    if code:
        size = struct.calcsize("<" + code)  # standard sizes, not native
        if len(value) % size:
            return None
        end = "<" if little_endian else ">"
        return {"vr": vr, "Value": list(struct.unpack(f"{end}{len(value) // size}{code}", value))}
    return None


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() \
        else number


def tag_tree(metadata: dict[str, Any], *, limit: int = 256) -> list[dict[str, Any]]:
    """A stored header (DICOM JSON) as the tag viewer shows it: one node per attribute in
    tag order, with its tag, name (from pydicom's dictionary; private ones as such), VR and
    value as text, and a sequence's items as lists of nodes."""
    from pydicom.datadict import dictionary_description, dictionary_has_tag

    nodes = []
    for key in sorted(metadata):
        element = metadata[key]
        tag = int(key, 16)
        group, number = tag >> 16, tag & 0xFFFF
        private = bool(group % 2)
        if private:
            name = "Private Creator" if 0x0010 <= number <= 0x00FF else "Private attribute"
        elif dictionary_has_tag(tag):
            name = dictionary_description(tag)
        else:
            name = "(unknown)"
        vr = element.get("vr", "")
        node: dict[str, Any] = {"tag": f"({group:04X},{number:04X})", "name": name, "vr": vr,
                                "private": private, "items": None, "value": ""}
        if vr == "SQ":
            node["items"] = [tag_tree(item or {}, limit=limit)
                             for item in element.get("Value", [])]
        elif "BulkDataURI" in element or "InlineBinary" in element:
            node["value"] = "(binary data, not shown)"
        else:
            values = []
            for value in element.get("Value", []):
                if isinstance(value, dict):  # PN: its groups, as in the header
                    value = "=".join(value.get(g, "") for g in
                                     ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
                values.append("" if value is None else str(value))
            text = "\\".join(values)
            node["value"] = text if len(text) <= limit else text[:limit] + "…"
        nodes.append(node)
    return nodes
