"""DICOM JSON <-> Native DICOM Model XML (PS3.19 A.1): application/dicom+xml answers, and
the XML metadata of a STOW-RS request.

pydicom reads and writes DICOM JSON but not this XML; the mapping is one element per
attribute, so it is written here rather than pulled in from another toolkit. XML from
clients is parsed with defusedxml: no entity expansion, no external entities.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from defusedxml import ElementTree as SafeElementTree
from pydicom.datadict import keyword_for_tag

from core.errors import BadRequest

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_NUMBER_VRS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int,
               "FL": float, "FD": float}

_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def dataset_xml(dataset: dict[str, Any]) -> bytes:
    body = "".join(_attributes(dataset))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">{body}'
        "</NativeDicomModel>\n"
    ).encode()


def _attributes(dataset: dict[str, Any]):
    for tag, attr in dataset.items():
        vr = attr.get("vr", "UN")
        keyword = keyword_for_tag(int(tag, 16))
        kw = f" keyword={quoteattr(keyword)}" if keyword else ""
        yield f'<DicomAttribute tag="{tag}" vr="{vr}"{kw}>'
        yield from _values(vr, attr)
        yield "</DicomAttribute>"


def _values(vr: str, attr: dict[str, Any]):
    if "BulkDataURI" in attr:
        yield f"<BulkData uri={quoteattr(attr['BulkDataURI'])}/>"
        return
    if "InlineBinary" in attr:
        yield f"<InlineBinary>{escape(attr['InlineBinary'])}</InlineBinary>"
        return
    for number, value in enumerate(attr.get("Value", []), start=1):
        if vr == "SQ":
            yield f'<Item number="{number}">'
            yield from _attributes(value or {})
            yield "</Item>"
        elif vr == "PN":
            yield f'<PersonName number="{number}">{_person_name(value or {})}</PersonName>'
        elif value is None:
            yield f'<Value number="{number}"/>'
        else:
            yield f'<Value number="{number}">{escape(str(value))}</Value>'


def _person_name(value: dict[str, str]) -> str:
    out = []
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        text = value.get(group)
        if not text:
            continue
        parts = text.split("^")
        inner = "".join(f"<{name}>{escape(part)}</{name}>"
                        for name, part in zip(_PN_PARTS, parts, strict=False) if part)
        out.append(f"<{group}>{inner}</{group}>")
    return "".join(out)


# --- XML -> DICOM JSON ------------------------------------------------------------------------

def dataset_json(xml: bytes) -> dict[str, Any]:
    """One NativeDicomModel document as a DICOM JSON dataset (PS3.18 F.2), to be read like
    the JSON form of STOW-RS metadata. BadRequest names what is wrong."""
    try:
        root = SafeElementTree.fromstring(xml)
    except Exception as exc:  # ParseError, and defusedxml's refusals (entities, DTDs)
        raise BadRequest(f"the application/dicom+xml part is not usable XML: {exc}") from exc
    if _local(root.tag) != "NativeDicomModel":
        raise BadRequest(f"the XML root is {_local(root.tag)!r}, not NativeDicomModel "
                         "(PS3.19 A.1)")
    return _dataset(root)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: Element, name: str) -> list[Element]:
    return [c for c in element if _local(c.tag) == name]


def _dataset(element: Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in _children(element, "DicomAttribute"):
        tag, vr = attribute.get("tag", ""), attribute.get("vr", "UN")
        if len(tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in tag):
            raise BadRequest(f"DicomAttribute tag {tag!r} is not 8 hexadecimal digits")
        out[tag.upper()] = _attribute(attribute, vr)
    return out


def _numbered(element: Element, name: str) -> list[Element]:
    found = _children(element, name)
    try:
        return sorted(found, key=lambda e: int(e.get("number", "0")))
    except ValueError as exc:
        raise BadRequest(f"a {name} number is not a number") from exc


def _attribute(attribute: Element, vr: str) -> dict[str, Any]:
    result: dict[str, Any] = {"vr": vr}
    bulk = _children(attribute, "BulkData")
    if bulk:
        result["BulkDataURI"] = bulk[0].get("uri", "") or bulk[0].get("uuid", "")
        return result
    inline = _children(attribute, "InlineBinary")
    if inline:
        result["InlineBinary"] = (inline[0].text or "").strip()
        return result
    if vr == "SQ":
        values: list[Any] = [_dataset(item) for item in _numbered(attribute, "Item")]
    elif vr == "PN":
        values = [_person_name_json(name) for name in _numbered(attribute, "PersonName")]
    else:
        values = [_value(vr, v.text) for v in _numbered(attribute, "Value")]
    if values:
        result["Value"] = values
    return result


def _value(vr: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    convert = _NUMBER_VRS.get(vr)
    if convert is None:
        return text
    try:
        return convert(text.strip())
    except ValueError as exc:
        raise BadRequest(f"{text[:20]!r} is not a {vr} value") from exc


def _person_name_json(element: Element) -> dict[str, str]:
    out = {}
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        found = _children(element, group)
        if not found:
            continue
        parts = [next((c.text or "" for c in found[0] if _local(c.tag) == name), "")
                 for name in _PN_PARTS]
        out[group] = "^".join(parts).rstrip("^")
    return out
