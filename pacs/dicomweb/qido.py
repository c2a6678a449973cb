"""QIDO-RS (PS3.18 10.6): query parameters -> the shared query engine -> DICOM JSON datasets.

Answers are built from index columns; attributes without a column (``includefield``) come
from the stored DICOM JSON of the instance (at series and study level: of the first instance),
never from files. Keys without a column are matched against that same stored header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from core.errors import BadRequest
from pacs import query
from pacs.dicomjson import pn_json

CONTROL_PARAMS = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}

# Default return attributes (PS3.18 Tables 10.6.3-3, -4, -5), besides the matching keys.
STUDY_DEFAULTS = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
SERIES_DEFAULTS = (
    "Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID", "SeriesNumber",
    "NumberOfSeriesRelatedInstances", "StudyInstanceUID",
)
INSTANCE_DEFAULTS = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber",
    "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "SeriesInstanceUID",
    "StudyInstanceUID",
)
# What includefield=all adds at study and series level, besides every indexed attribute:
# the Patient, General Study and General Series/Equipment module attributes of the first
# instance's stored header.
STUDY_ALL = (
    "IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientSize",
    "PatientWeight", "PatientComments", "EthnicGroup", "IssuerOfAccessionNumberSequence",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription", "ReferencedStudySequence", "TimezoneOffsetFromUTC",
)
SERIES_ALL = (
    "Laterality", "PerformingPhysicianName", "ProtocolName", "OperatorsName",
    "PatientPosition", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "Manufacturer",
    "InstitutionName", "StationName", "ManufacturerModelName", "FrameOfReferenceUID",
    "RequestAttributesSequence",
)
_ALL = object()


@dataclass
class SearchRequest:
    identifier: Dataset
    includefields: set[str] | object = field(default_factory=set)  # keywords, or _ALL
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0


@dataclass
class SearchResult:
    datasets: list[dict[str, Any]]
    truncated: bool  # more matches than the server returns at most
    unmatched: list[str] = field(default_factory=list)  # keys that could not be matched


def _tag_of(name: str) -> int:
    """A keyword or an 8-digit hex tag, as in '00100010' or 'PatientName'."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise BadRequest(f"unknown attribute {name!r}: use a DICOM keyword or an 8-digit tag")
    return tag


def _vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError as exc:
        raise BadRequest(f"unknown attribute {tag:08X}") from exc
    return "US" if vr == "US or SS" else vr.split(" ")[0]


def parse(params, scope: dict[str, str]) -> SearchRequest:
    """A QIDO-RS query (``params``: a Django QueryDict, already percent-decoded) and the
    UIDs fixed by the resource path."""
    request = SearchRequest(Dataset())
    ds = request.identifier
    for name in params:
        values = params.getlist(name)
        if name in CONTROL_PARAMS:
            continue
        value = values[-1]
        path = [_tag_of(part) for part in name.split(".")]
        _set_key(ds, path, value)
    for keyword, uid in scope.items():
        tag = tag_for_keyword(keyword)
        ds[tag] = DataElement(tag, "UI", uid)
    includes: set[str] = set()
    for value in params.getlist("includefield"):
        for item in value.split(","):
            item = item.strip()
            if item.lower() == "all":
                request.includefields = _ALL
                break
            if item:
                tag = _tag_of(item.split(".")[0])
                includes.add(keyword_for_tag(tag) or f"{tag:08X}")
        if request.includefields is _ALL:
            break
    else:
        request.includefields = includes
    request.fuzzy = params.get("fuzzymatching", "false").strip().lower() == "true"
    request.limit = _non_negative(params, "limit")
    request.offset = _non_negative(params, "offset") or 0
    return request


def _set_key(ds: Dataset, path: list[int], value: str) -> None:
    tag = path[0]
    vr = _vr(tag)
    if len(path) > 1:
        if vr != "SQ":
            raise BadRequest(f"{tag:08X} is not a sequence")
        if tag not in ds:
            ds[tag] = DataElement(tag, "SQ", [Dataset()])
        _set_key(ds[tag].value[0], path[1:], value)
        return
    if vr == "SQ":
        ds[tag] = DataElement(tag, "SQ", [])
        return
    if vr in _LIST_VRS:  # a comma-separated list is several values (PS3.18 8.3.4.1): UID
        value = value.replace(",", "\\")  # list and multiple value matching (PS3.4 C.2.2.2)
    try:
        ds[tag] = DataElement(tag, vr, value)
        _ = ds[tag].value  # numbers (IS, DS...) are converted here, and may not be numbers
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"{keyword_for_tag(tag) or f'{tag:08X}'}: {value[:40]!r} is not a "
                         f"valid {vr} value") from exc


# VRs whose values hold no comma of their own, so that a comma can only separate values
# (text and names can hold commas: "Chest, PA"; they take the DICOM separator, a backslash)
_LIST_VRS = {"UI", "CS", "AE", "IS", "DS", "US", "SS", "UL", "SL"}


def _non_negative(params, name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        number = int(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a whole number") from exc
    if number < 0:
        raise BadRequest(f"{name} must not be negative")
    if number > 2**31 - 1:
        raise BadRequest(f"{name} must be at most {2**31 - 1}")
    return number


@dataclass(frozen=True)
class _Out:
    """One returned attribute: where its value comes from and how it is written."""

    tag: str
    vr: str
    keyword: str
    column: int | None = None  # index in the row of values
    kind: str = "str"
    items: tuple[_Out, ...] = ()
    from_metadata: bool = False


def search(level_name: str, request: SearchRequest, *, defaults: tuple[str, ...],
           base_url: str) -> SearchResult:
    """Run a QIDO-RS search at STUDY, SERIES or IMAGE level."""
    level = query.FLAT_LEVELS[level_name]
    qs = query.search_level(level, request.identifier, fuzzy=request.fuzzy)
    header = query.header_keys(level, request.identifier)  # keys without an index column
    columns = list(_LINK_COLUMNS[level_name])
    outs = _plan(level, request, defaults, columns)
    needs_metadata = request.includefields is _ALL or any(o.from_metadata for o in outs)
    maximum = settings.QIDO_MAX_RESULTS
    wanted = min(request.limit, maximum) if request.limit is not None else maximum
    rows = list(query.matching_rows(level, qs, columns, header=header, fuzzy=request.fuzzy,
                                    with_metadata=needs_metadata, offset=request.offset,
                                    limit=wanted + 1))
    truncated = len(rows) > wanted and (request.limit is None or request.limit > maximum)
    rows = rows[:wanted]
    encode = _Encoder(level_name, outs, base_url, request.includefields is _ALL,
                      needs_metadata)
    return SearchResult([encode(row) for row in rows], truncated, header.unmatchable)


# Columns every answer needs for its RetrieveURL, first in each row.
_LINK_COLUMNS = {
    "STUDY": ("study_instance_uid",),
    "SERIES": ("study__study_instance_uid", "series_instance_uid"),
    "IMAGE": ("series__study__study_instance_uid", "series__series_instance_uid",
              "sop_instance_uid"),
}


def _plan(level: query.Level, request: SearchRequest, defaults: tuple[str, ...],
          columns: list[str]) -> list[_Out]:
    keywords = dict.fromkeys(defaults)
    keywords.update(dict.fromkeys(e.keyword or f"{e.tag:08X}" for e in request.identifier))
    if request.includefields is _ALL:
        keywords.update(dict.fromkeys(level.attributes))
        extra = {"STUDY": STUDY_ALL, "SERIES": STUDY_ALL + SERIES_ALL}.get(level.name, ())
        keywords.update(dict.fromkeys(extra))
    else:
        keywords.update(dict.fromkeys(request.includefields))  # type: ignore[arg-type]
    outs = []
    for keyword in keywords:
        out = _out(level.attributes, keyword, columns)
        if out is not None:
            outs.append(out)
    return sorted(outs, key=lambda o: o.tag)


def _out(attributes: dict[str, query.Attribute], keyword: str, columns: list[str]
         ) -> _Out | None:
    tag = tag_for_keyword(keyword) if not keyword[:1].isdigit() else int(keyword, 16)
    if tag is None or keyword == "SpecificCharacterSet":
        return None
    tag_hex = f"{tag:08X}"
    if (tag >> 16) & 1:  # private: returned as stored, with the VR it was stored with
        return _Out(tag_hex, "UN", keyword, from_metadata=True)
    vr = _vr(tag)
    if keyword in ("RetrieveURL", "InstanceAvailability"):
        return _Out(tag_hex, vr, keyword)
    attr = attributes.get(keyword)
    if attr is not None and attr.kind == "seq" and attr.items:
        items = tuple(o for o in (_out({a.keyword: a for a in attr.items}, a.keyword, columns)
                                  for a in attr.items) if o is not None)
        return _Out(tag_hex, vr, keyword, kind="seq", items=items)
    if attr is not None and attr.field:
        columns.append(attr.field)
        return _Out(tag_hex, vr, keyword, column=len(columns) - 1, kind=attr.kind)
    return _Out(tag_hex, vr, keyword, from_metadata=True)


class _Encoder:
    def __init__(self, level_name: str, outs: list[_Out], base_url: str, everything: bool,
                 has_metadata: bool) -> None:
        self.level_name, self.outs, self.base = level_name, outs, base_url.rstrip("/")
        self.everything = everything and level_name == "IMAGE"
        self.has_metadata = has_metadata

    def __call__(self, row: tuple) -> dict[str, Any]:
        metadata = row[-1] if self.has_metadata else {}
        if self.everything:
            result = {k: v for k, v in metadata.items()
                      if "BulkDataURI" not in v and "InlineBinary" not in v}
        else:
            result = {}
        result["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        for out in self.outs:
            value = self._value(out, row, metadata)
            if value is not None:
                result[out.tag] = value
        return dict(sorted(result.items()))

    def _value(self, out: _Out, row: tuple, metadata: dict) -> dict | None:
        if out.keyword == "RetrieveURL":
            return {"vr": "UR", "Value": [self._url(row)]}
        if out.keyword == "InstanceAvailability":
            return {"vr": "CS", "Value": ["ONLINE"]}
        if out.kind == "seq":
            item = {o.tag: v for o in out.items if (v := self._value(o, row, metadata))
                    and "Value" in v}
            if not item:
                return metadata.get(out.tag) or {"vr": "SQ"}
            return {"vr": "SQ", "Value": [item]}
        if out.from_metadata:
            return metadata.get(out.tag) or {"vr": out.vr}
        return column_json(out.vr, out.kind, row[out.column])

    def _url(self, row: tuple) -> str:
        url = f"{self.base}/studies/{row[0]}"
        if self.level_name in ("SERIES", "IMAGE"):
            url += f"/series/{row[1]}"
        if self.level_name == "IMAGE":
            url += f"/instances/{row[2]}"
        return url


def column_json(vr: str, kind: str, value: object) -> dict[str, Any]:
    """An index column's value as a DICOM JSON attribute."""
    if value is None or value == "":
        return {"vr": vr}
    if kind == "pn":
        return pn_json(str(value))
    if kind == "multi":
        return {"vr": vr, "Value": [v for v in str(value).split("\\") if v]}
    if kind == "int":
        return {"vr": vr, "Value": [int(value)]}  # type: ignore[call-overload]
    return {"vr": vr, "Value": [str(value)]}
