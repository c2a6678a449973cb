"""C-FIND answers encoded straight from index rows (PS3.5 7.1, little endian).

A C-FIND answer is a dozen short text elements. Building a pydicom Dataset and writing it
costs ~1.5 ms per answer on the CI machine; an answer of 1,200 matches would take seconds.
Here each requested key has a plan (tag, VR, where its value comes from) made once per
query, and every row becomes bytes with a few struct.pack calls. Other transfer syntaxes
(big endian, deflate) go through pydicom from these bytes.
"""

from __future__ import annotations

import base64
import io
import struct
from collections.abc import Sequence
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import format_number_as_ds
from pynetdicom.dsutils import decode, encode

from pacs.identity import person_name
from pacs.query import Attribute, Level, first_item, requested_keywords

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
_CODECS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
UTF8 = "ISO_IR 192"
_CHARSET_TAG = 0x00080005
_RETRIEVE_AET_TAG = 0x00080054


class _Key:
    __slots__ = ("column", "constant", "empty", "header", "implicit", "items", "stored", "tag",
                 "vr", "wanted")

    def __init__(self, tag: int, vr: str, column: int | None, constant: str | None,
                 implicit: bool, items: list[_Key] | None = None, stored: str | None = None,
                 wanted: frozenset[str] | None = None) -> None:
        """``stored``: the tag (hex) whose value comes from the row's stored header, for a
        key without an index column; ``wanted``: for such a sequence, the item keys asked
        for (None: all, as for an empty item, C.2.2.2.6)."""
        self.tag, self.vr, self.column, self.constant = tag, vr, column, constant
        self.implicit, self.items, self.stored, self.wanted = implicit, items, stored, wanted
        group, element = tag >> 16, tag & 0xFFFF
        if implicit:
            self.header = struct.pack("<HH", group, element)
        elif vr in _LONG_VRS:
            self.header = struct.pack("<HH2s2x", group, element, vr.encode())
        else:
            self.header = struct.pack("<HH2s", group, element, vr.encode())
        self.empty = self.element(b"")

    def element(self, raw: bytes) -> bytes:
        if len(raw) % 2:
            raw += b"\x00" if self.vr in ("UI", "OB", "UN") else b" "
        if self.implicit or self.vr in _LONG_VRS:
            return self.header + struct.pack("<I", len(raw)) + raw
        return self.header + struct.pack("<H", len(raw)) + raw


class AnswerEncoder:
    """Encodes the requested keys of each matching row, in the requested character set."""

    def __init__(self, level: Level, identifier: Dataset, charset: str,
                 transfer_syntax: str, *, retrieve_aet: str = "") -> None:
        """``retrieve_aet``: the AE title a Query/Retrieve answer names as where to retrieve
        from (Retrieve AE Title, which PS3.4 C.4.1.1.3.2 puts in every such answer)."""
        syntax = UID(transfer_syntax)
        self.native = syntax.is_little_endian and not syntax.is_deflated
        self.syntax = syntax
        self.implicit = syntax.is_implicit_VR and self.native
        self.charset = charset
        self.retrieve_aet = retrieve_aet
        self.columns: list[str] = []
        # keys without an index column come from each row's stored header, the last value
        # of a row (query.matching_rows with_metadata), where the level keeps headers
        self.from_headers = level.metadata is not None
        self.needs_metadata = False
        self.keys = self._plan(level.name, level.attributes, identifier)
        if retrieve_aet and all(key.tag != _RETRIEVE_AET_TAG for key in self.keys):
            self.keys = sorted([*self.keys, _Key(_RETRIEVE_AET_TAG, "AE", None, retrieve_aet,
                                                 self.implicit)], key=lambda k: k.tag)
        self._charset_key = _Key(_CHARSET_TAG, "CS", None, None, self.implicit)

    def _plan(self, level_name: str, attributes: dict[str, Attribute], ds: Dataset
              ) -> list[_Key]:
        keys: list[_Key] = []
        for keyword in dict.fromkeys(requested_keywords(ds)):
            tag = tag_for_keyword(keyword)
            if tag is None or keyword == "SpecificCharacterSet" or tag >> 16 == 0x0002:
                continue  # group 0002 is the file meta of a Part 10 file, not a query key
            attr = attributes.get(keyword)
            column = constant = items = None
            if keyword == "QueryRetrieveLevel":
                constant = level_name
            elif keyword == "RetrieveAETitle" and self.retrieve_aet:
                constant = self.retrieve_aet
            elif attr is not None and attr.kind == "seq":
                item = first_item(ds, keyword)
                if item is None or not requested_keywords(item):
                    # PS3.4 C.2.2.2.6: a sequence key with no item, or with one empty item,
                    # is a universal match and asks for every attribute of the item
                    item = _every_key(attr.items)
                # one item with the requested keys of the query's item
                items = self._plan(level_name, {a.keyword: a for a in attr.items}, item)
            elif attr is not None and attr.field:
                column = len(self.columns)
                self.columns.append(attr.field)
            elif attr is None and self.from_headers and keyword != "RetrieveAETitle":
                self.needs_metadata = True
                item = first_item(ds, keyword) if dictionary_VR(tag) == "SQ" else None
                wanted = frozenset(f"{e.tag:08X}" for e in item) if item is not None and \
                    len(item) else None
                keys.append(_Key(tag, dictionary_VR(tag), None, None, self.implicit,
                                 stored=f"{tag:08X}", wanted=wanted))
                continue
            keys.append(_Key(tag, dictionary_VR(tag), column, constant, self.implicit, items))
        return sorted(keys, key=lambda k: k.tag)

    def encode(self, row: Sequence[object]) -> bytes:
        try:
            data = self._encode(row, self.charset)
        except UnicodeEncodeError:
            data = self._encode(row, UTF8)  # this answer needs UTF-8 (PS3.5 6.1.2.5.3)
        if self.native:
            return data
        ds = decode(io.BytesIO(data), False, True)
        return encode(ds, self.syntax.is_implicit_VR, self.syntax.is_little_endian,
                      self.syntax.is_deflated) or b""

    def _encode(self, row: Sequence[object], charset: str) -> bytes:
        if not charset:
            # the request named no character set: none in an ASCII answer (the default
            # repertoire, PS3.5 6.1.2.2); an answer that needs more is UTF-8, and says so
            return _elements(self.keys, row, "ascii")
        codec = _CODECS.get(charset, "utf_8")
        return self._charset_key.element(charset.encode("ascii")) + _elements(
            self.keys, row, codec)


def _every_key(attributes: Sequence[Attribute]) -> Dataset:
    """A query item asking for each of ``attributes`` (universally, sequences too)."""
    item = Dataset()
    for attribute in attributes:
        tag = tag_for_keyword(attribute.keyword)
        if tag is not None:
            vr = dictionary_VR(tag)
            item.add(DataElement(tag, vr, [] if vr == "SQ" else None))
    return item


def _elements(keys: list[_Key], row: Sequence[object], codec: str) -> bytes:
    parts = []
    append = parts.append
    for key in keys:
        if key.stored is not None:
            header: dict[str, Any] = row[-1]  # type: ignore[assignment]
            attribute = header.get(key.stored)
            if key.vr == "SQ" and attribute:
                append(key.element(_json_items(attribute, codec, key.implicit, key.wanted)))
            else:
                append(key.element(_json_value(key.vr, attribute, codec)) if attribute
                       else key.empty)
            continue
        if key.items is not None:
            if all(_empty(row, item) for item in key.items):
                continue  # nothing known for this (type 1C/3) sequence: leave it out, as DCMTK
            content = _elements(key.items, row, codec)
            raw = _ITEM + _pack_ul(len(content)) + content
        else:
            column = key.column
            value = row[column] if column is not None else key.constant
            if value is None or value == "":
                append(key.empty)
                continue
            raw = _raw(value, key.vr, codec)
        append(key.element(raw))
    return b"".join(parts)


def _empty(row: Sequence[object], key: _Key) -> bool:
    if key.items is not None:
        return all(_empty(row, item) for item in key.items)
    value = row[key.column] if key.column is not None else key.constant
    return value is None or value == ""


_pack_ul = struct.Struct("<I").pack
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)


def _raw(value: object, vr: str, codec: str) -> bytes:
    if value is None or value == "" or vr == "SQ":
        return b""
    if vr == "US":
        return struct.pack("<H", int(value))  # type: ignore[call-overload]
    if vr == "UL":
        return struct.pack("<I", int(value))  # type: ignore[call-overload]
    return str(value).encode(codec)


# --- values from a stored DICOM JSON header (PS3.18 F.2) ---------------------------------------

_PACKED = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q",
           "SV": "q"}


def _json_value(vr: str, attribute: dict[str, Any], codec: str) -> bytes:
    """One stored DICOM JSON attribute's value, encoded as ``vr`` (little endian)."""
    vr = attribute.get("vr", vr)
    if "InlineBinary" in attribute:
        return base64.b64decode(attribute["InlineBinary"])
    values = attribute.get("Value") or []
    if not values or "BulkDataURI" in attribute:
        return b""  # bulk data is not in the header: the key comes back empty
    if vr in _PACKED:
        return struct.pack(f"<{len(values)}{_PACKED[vr]}", *values)
    if vr == "AT":
        return b"".join(struct.pack("<HH", int(v[:4], 16), int(v[4:], 16)) for v in values)
    if vr == "PN":
        text = "\\".join(person_name(v) for v in values)
    elif vr == "DS":
        text = "\\".join(v if isinstance(v, str) else format_number_as_ds(v) for v in values)
    else:
        text = "\\".join("" if v is None else str(v) for v in values)
    return text.encode(codec)


def _json_items(attribute: dict[str, Any], codec: str, implicit: bool,
                wanted: frozenset[str] | None) -> bytes:
    """A stored sequence's items (each with the ``wanted`` attributes, or all), encoded with
    defined lengths."""
    out = []
    for item in attribute.get("Value") or []:
        content = b"".join(
            _json_element(int(tag, 16), child, codec, implicit)
            for tag, child in sorted(item.items())
            if (wanted is None or tag in wanted) and int(tag[4:], 16) != 0)
        out.append(_ITEM + _pack_ul(len(content)) + content)
    return b"".join(out)


def _json_element(tag: int, attribute: dict[str, Any], codec: str, implicit: bool) -> bytes:
    vr = attribute.get("vr", "UN")
    if vr == "SQ":
        raw = _json_items(attribute, codec, implicit, None)
    else:
        raw = _json_value(vr, attribute, codec)
        if len(raw) % 2:
            raw += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, element, len(raw)) + raw
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", group, element, vr.encode(), len(raw)) + raw
    return struct.pack("<HH2sH", group, element, vr.encode(), len(raw)) + raw
