"""A one-pass reader of Part 10 headers for the store path: DICOM JSON straight from the bytes.

Every received instance needs its header as DICOM JSON (PS3.18 F.2) and a few index values.
Reading it through pydicom (dcmread, then a DataElement per element, then to_json_dict) costs
~2 ms for a CT header on the CI machine, more than writing the file; this reader walks the
elements once with struct and builds the JSON directly, in ~0.2 ms (docs/benchmarks.md).

It covers what modalities send: Little Endian transfer syntaxes (Implicit VR, Explicit VR and
the encapsulated ones), sequences of defined or undefined length, character sets that one
Python codec decodes. For anything else it answers None and the caller reads the file with
pydicom as before (pacs.dicomfile.read_header), so the result never differs from pydicom's:
big endian and deflated data, VR UN or UR, private elements or ambiguous VRs (US or SS, ...)
in Implicit VR, text in ISO 2022 character sets, a character set inside a sequence item, and
every malformed structure (pydicom then words the error). tests/unit/test_dicomscan.py
compares the output with pydicom's on every sample file.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR

from pacs.dicomjson import (
    BULK_THRESHOLD,
    LONG_TEXT_VRS,
    SIMPLE_CHARSETS,
    TEXT_BULK_THRESHOLD,
    convert_value,
    item_bulk_uris,
)

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
# Encapsulated transfer syntaxes: Explicit VR Little Endian data sets (PS3.5 A.4).
_ENCAPSULATED_PREFIXES = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # where pydicom stops too
ITEM, ITEM_DELIM, SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
CHARSET = 0x00080005
PIXEL_REPRESENTATION = 0x00280103
# Implicit VR "US or SS" elements whose VR follows Pixel Representation (0 unsigned, 1 signed)
# in the same data set: pydicom's rule (filewriter.correct_ambiguous_vr_element).
_PIXEL_VALUE_TAGS = frozenset({0x00280104, 0x00280105, 0x00280106, 0x00280107, 0x00280108,
                               0x00280109, 0x00280110, 0x00280111, 0x00280120, 0x00280121})

# Explicit VR: these have 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
_SHORT_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
                        "PN", "SH", "SL", "SS", "ST", "SV", "TM", "UI", "UL", "US", "UV"})
_READ_VRS = (_LONG_VRS | _SHORT_VRS) - {"UN", "UR"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
# Binary values longer than this become BulkDataURI entries, as in pydicom's to_json_dict
# (a base64 text longer than the threshold).
_INLINE_LIMIT = (BULK_THRESHOLD // 4) * 3

_unpack_tag = struct.Struct("<HH").unpack_from
_unpack_short = struct.Struct("<H").unpack_from
_unpack_long = struct.Struct("<I").unpack_from


class _Fallback(Exception):  # noqa: N818 - control flow, not an error
    """Something this reader leaves to pydicom."""


@dataclass(frozen=True)
class Scan:
    transfer_syntax_uid: str
    metadata: dict[str, Any]  # DICOM JSON of the data set before the pixel data
    end: int  # offset of the pixel data element (or of the end of the data)


def scan(data: bytes) -> Scan | None:
    """The header of Part 10 ``data`` as DICOM JSON, or None to read it with pydicom."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    try:
        pos, tsyntax = _file_meta(data)
        if tsyntax == IMPLICIT_VR_LE:
            implicit = True
        elif tsyntax == EXPLICIT_VR_LE or tsyntax.startswith(_ENCAPSULATED_PREFIXES):
            implicit = False
        else:
            return None
        first_vr = data[pos + 4:pos + 6].decode("latin-1")
        if pos + 6 <= len(data) and (first_vr in _LONG_VRS or first_vr in _SHORT_VRS) == implicit:
            return None  # encoded otherwise than the transfer syntax says: pydicom guesses
        reader = _Reader(data, implicit)
        metadata, end = reader.dataset(pos, len(data), top=True)
    except (_Fallback, struct.error, UnicodeDecodeError, ValueError, KeyError, RecursionError):
        return None  # RecursionError: sequences nested hundreds deep
    return Scan(tsyntax, metadata, end)


def _file_meta(data: bytes) -> tuple[int, str]:
    """Where the data set starts and the transfer syntax (group 0002, Explicit VR LE)."""
    pos, size, tsyntax = 132, len(data), ""
    while pos + 8 <= size:
        group, element = _unpack_tag(data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6].decode("ascii")
        if vr in _LONG_VRS:
            length = _unpack_long(data, pos + 8)[0]
            start = pos + 12
        elif vr in _SHORT_VRS:
            length = _unpack_short(data, pos + 6)[0]
            start = pos + 8
        else:
            raise _Fallback
        if length == UNDEFINED or start + length > size:
            raise _Fallback
        if element == 0x0010:
            tsyntax = data[start:start + length].decode("ascii").strip(" \x00")
        pos = start + length
    if not tsyntax:
        raise _Fallback
    return pos, tsyntax


class _Reader:
    def __init__(self, data: bytes, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.codec = "ascii"
        self.pixel_rep: int | None = None

    def dataset(self, pos: int, end: int, *, top: bool = False,
                delimited: bool = False) -> tuple[dict[str, Any], int]:
        """Elements from ``pos`` up to ``end`` (or an item delimiter if ``delimited``)."""
        data, implicit = self.data, self.implicit
        out: dict[str, Any] = {}
        last = -1
        while pos < end:
            if pos + 8 > end:
                raise _Fallback
            group, element = _unpack_tag(data, pos)
            tag = (group << 16) | element
            if delimited and tag == ITEM_DELIM:
                return out, pos + 8
            if top and tag in PIXEL_TAGS:
                return out, pos
            if group == 0xFFFE or tag <= last:
                raise _Fallback  # stray item tag, elements out of order or repeated
            last = tag
            if implicit:
                if group & 1:
                    raise _Fallback  # private: its VR depends on the private dictionary
                vr = _implicit_vr(tag)
                if vr not in _READ_VRS:
                    if top and tag in _PIXEL_VALUE_TAGS and self.pixel_rep is not None:
                        vr = "SS" if self.pixel_rep else "US"  # as pydicom decides
                    else:
                        raise _Fallback  # ambiguous (OB or OW, ...), UN or UR
                length = _unpack_long(data, pos + 4)[0]
                pos += 8
            else:
                vr = data[pos + 4:pos + 6].decode("latin-1")
                if vr in _SHORT_VRS:
                    length = _unpack_short(data, pos + 6)[0]
                    pos += 8
                elif vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise _Fallback
                    length = _unpack_long(data, pos + 8)[0]
                    pos += 12
                else:
                    raise _Fallback
            if vr == "SQ":
                items, pos = self.sequence(pos, length, end)
                # no items: no Value, like any empty attribute (PS3.18 F.2.5)
                key = f"{tag:08X}"
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                if top and items:
                    item_bulk_uris(out[key], f"bulkdata/{key}")
                continue
            if length == UNDEFINED or pos + length > end:
                raise _Fallback
            value = data[pos:pos + length]
            pos += length
            if tag == CHARSET:
                if not top:
                    raise _Fallback  # a character set of the item's own
                self.codec = SIMPLE_CHARSETS.get(
                    value.decode("ascii").strip(" \x00"))  # type: ignore[assignment]
            if not element:
                continue  # group length: never in DICOM JSON (PS3.18 F.2.2)
            out[f"{tag:08X}"] = converted = self.element(tag, vr, value)
            if tag == PIXEL_REPRESENTATION and top and vr == "US" and converted.get("Value"):
                self.pixel_rep = converted["Value"][0]
        if delimited:
            raise _Fallback  # no item delimiter
        return out, pos

    def sequence(self, pos: int, length: int, end: int) -> tuple[list[dict[str, Any]], int]:
        data = self.data
        stop = end if length == UNDEFINED else pos + length
        if stop > end:
            raise _Fallback
        items = []
        while pos < stop:
            if pos + 8 > stop:
                raise _Fallback
            group, element = _unpack_tag(data, pos)
            tag = (group << 16) | element
            item_length = _unpack_long(data, pos + 4)[0]
            pos += 8
            if tag == SEQ_DELIM and length == UNDEFINED:
                return items, pos
            if tag != ITEM:
                raise _Fallback
            if item_length == UNDEFINED:
                item, pos = self.dataset(pos, stop, delimited=True)
            else:
                if pos + item_length > stop:
                    raise _Fallback
                item, pos = self.dataset(pos, pos + item_length)
            items.append(item)
        if length == UNDEFINED:
            raise _Fallback  # no sequence delimiter
        return items, pos

    def element(self, tag: int, vr: str, value: bytes) -> dict[str, Any]:
        if not value:
            return {"vr": vr}
        if vr in _BINARY_VRS:
            if len(value) > _INLINE_LIMIT:
                return {"vr": vr, "BulkDataURI": f"bulkdata/{tag:08X}"}
            return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
        if vr in LONG_TEXT_VRS and len(value) > TEXT_BULK_THRESHOLD:
            return {"vr": vr, "BulkDataURI": f"bulkdata/{tag:08X}"}
        if vr == "AT":
            if len(value) % 4:
                raise _Fallback
            return {"vr": vr, "Value": [f"{(g << 16) | e:08X}"
                                        for g, e in struct.iter_unpack("<HH", value)]}
        converted = convert_value(vr, value, self.codec, little_endian=True)
        if converted is None:
            raise _Fallback
        return converted


_vr_cache: dict[int, str] = {}


def _implicit_vr(tag: int) -> str:
    vr = _vr_cache.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise _Fallback from None  # unknown to the dictionary: pydicom says UN
        _vr_cache[tag] = vr
    return vr
