"""DICOM JSON -> Native DICOM Model XML (PS3.19 A.1), for application/dicom+xml answers.

pydicom writes DICOM JSON but not this XML; the mapping is one element per attribute, so it is
written here rather than pulled in from another toolkit.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

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
